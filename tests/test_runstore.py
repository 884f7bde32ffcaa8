"""The record of runs: what a run reads decides whether another folder's run can stand in for it."""
import csv
import json

import pytest
import torch
from conftest import assert_clean_error, printed_agrees, run_script

from utils import runstore
from utils.cli import UserError
from utils.methods import METHODS, reads

IDENTITY = {"epochs": 30, "lr": 0.005, "ewc_lambda": 40000.0, "section": "target", "split_hash": "s",
            "learngene_layers": [10, 11, 12], "learngene_sha256": "L", "learngene_shapes": [[512, 512, False], 32],
            "collective_sha256": "C", "collective_shapes": [64, 512, 32], "accuracy_unit": "percent", "joint_sha256": "J"}


def differs(method, **change):
    return reads(method, IDENTITY) != reads(method, {**IDENTITY, **change})


def test_a_run_reads_only_its_methods_inputs():
    another_learngene = {"learngene_sha256": "L2"}
    assert not differs("scratch", **another_learngene) and not differs("scratch", ewc_lambda=4.0)
    assert not differs("scratch", collective_sha256="C2", collective_shapes=[1])
    assert differs("scratch", learngene_shapes=[[256, 256, False], 32])  # another architecture
    assert differs("learngene", **another_learngene) and differs("learngene", ewc_lambda=4.0)
    assert not differs("learngene-noewc", ewc_lambda=4.0) and differs("learngene-noewc", **another_learngene)
    assert differs("other-layers", collective_sha256="C2") and differs("other-layers", **another_learngene)
    assert differs("finetune-collective", collective_sha256="C2")
    assert not differs("finetune-collective", **another_learngene)
    assert differs("probe-collective", collective_sha256="C2")
    assert not differs("probe-random", collective_sha256="C2") and differs("probe-random", collective_shapes=[1])
    # the controls: the structure control reads the learngene's weights, the joint-source rows the joint source's
    assert differs("learngene-permuted", **another_learngene) and differs("learngene-permuted", ewc_lambda=4.0)
    assert not differs("learngene-permuted", joint_sha256="J2") and not differs("scratch", joint_sha256="J2")
    for method in ("learngene-joint", "finetune-joint", "probe-joint"):
        assert differs(method, joint_sha256="J2") and not differs(method, **another_learngene)
    assert differs("learngene-joint", learngene_layers=[9, 10, 11]) and differs("learngene-joint", ewc_lambda=4.0)
    assert not differs("learngene-frozen", ewc_lambda=4.0) and differs("learngene-frozen", **another_learngene)
    for method in METHODS:  # the settings and the tasks are read by every method
        assert differs(method, lr=0.1) and differs(method, split_hash="t") and differs(method, section="validation")


@pytest.mark.slow
def test_runs_are_reused_across_folders_where_they_read_the_same_inputs(collective_run, tiny_split, tmp_path):
    script = "individual-model/inheritable_imagenet_wEWC.py"
    common = ["--path", tiny_split, "--epochs", "1", "--batch_size", "4", "--num_works_tt", "1",
              "--num_imgs_per_cat_train", "2", "--methods", "learngene", "scratch", "--no-cuda"]
    first = run_script(script, *common, "--learngene", collective_run / "learngene.pt", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    # another learngene of the same shapes: its scratch runs are the same computation, its learngene runs are not
    other = tmp_path / "other.pt"
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["state"]["0.conv.weight"] = art["state"]["0.conv.weight"] * 2
    torch.save(art, other)
    second = run_script(script, *common, "--learngene", other, "--out", tmp_path / "b", "--reuse", tmp_path / "a")
    assert second.returncode == 0, second.stderr
    assert "reused 1 runs" in second.stdout and "1 to go" in second.stdout

    def runs(folder):
        return {r["result"]["method"]: r["result"] for r in map(json.loads, (folder / "runs.jsonl").open())}
    a, b = runs(tmp_path / "a"), runs(tmp_path / "b")
    assert b["scratch"]["reused_from"] == str(tmp_path / "a" / "runs.jsonl")
    assert b["scratch"]["curve"] == a["scratch"]["curve"] and "reused_from" not in b["learngene"]
    table = {r["method"]: r for r in csv.DictReader(open(tmp_path / "b" / "results.csv"))}
    assert printed_agrees(table["scratch"]["final_acc"], a["scratch"]["final_acc"])  # the CSV rounds to 6 digits
    # other settings: nothing matches, everything trains
    third = run_script(script, *common, "--lr", "0.01", "--learngene", other, "--out", tmp_path / "c", "--reuse",
                       tmp_path / "a")
    assert third.returncode == 0 and "reused 0 runs" in third.stdout and "2 to go" in third.stdout
    assert_clean_error(run_script(script, *common, "--learngene", other, "--out", tmp_path / "d", "--reuse",
                                  tmp_path / "nothing"), "no runs.jsonl there")


def test_a_run_after_an_interrupted_line_is_kept(tmp_path):
    from utils.runstore import RunKey, RunStore
    path = tmp_path / "runs.jsonl"
    identity = {"lr": 0.005}
    store = RunStore(path, identity)
    store.add(RunKey("scratch", 10, 0, 0), {"method": "scratch", "shots": 10, "task": 0, "seed": 0, "final_acc": 50.0})
    with open(path, "a") as f:
        f.write('{"settings": {"lr": 0.005}, "result": {"meth')  # a kill in the middle of a write
    RunStore(path, identity).add(RunKey("scratch", 10, 1, 0), {"method": "scratch", "shots": 10, "task": 1, "seed": 0,
                                                               "final_acc": 60.0})
    assert set(RunStore(path, identity).runs) == {RunKey("scratch", 10, 0, 0), RunKey("scratch", 10, 1, 0)}


def test_a_folder_whose_identity_holds_a_tuple_resumes(tmp_path):
    """A chained study's identity holds its task order as a tuple, which runs.jsonl reads back as a list: the
    rerun must find its runs, not refuse them as another experiment's."""
    from utils.runstore import RunKey, RunStore
    identity = {"lr": 0.005, "protocol": {"chain": 2, "order": (1, 0), "optimizer_per_epoch": True}}
    RunStore(tmp_path / "runs.jsonl", identity).add(RunKey("learngene", 2, 0, 0), {
        "method": "learngene", "shots": 2, "task": 0, "seed": 0, "final_acc": 50.0})
    assert set(RunStore(tmp_path / "runs.jsonl", dict(identity)).runs) == {RunKey("learngene", 2, 0, 0)}


def test_a_method_with_its_own_learning_rate_reads_that_rate_only():
    """--lr_of gives one method its own rate: the other methods' runs stay the same computation (reusable), and a
    run at the method's own rate equals one made with --lr at that rate."""
    own = {**IDENTITY, "lr_of": {"finetune-collective": 0.001}}
    assert reads("scratch", own) == reads("scratch", IDENTITY) and reads("learngene", own) == reads("learngene", IDENTITY)
    assert reads("finetune-collective", own) != reads("finetune-collective", IDENTITY)
    assert reads("finetune-collective", own) == reads("finetune-collective", {**IDENTITY, "lr": 0.001})


@pytest.mark.parametrize("edit, fragment", [
    (lambda r: r["result"].update(final_acc=float("nan")), "final_acc nan is not an accuracy"),
    (lambda r: r["result"].update(final_acc=140.0), "final_acc 140.0 is not an accuracy"),
    (lambda r: r["result"].update(best_acc="high"), "best_acc 'high' is not an accuracy"),
    (lambda r: r["result"].pop("task"), "its task is missing"),
    (lambda r: r["result"].update(shots=True), "its shots is missing or not an integer"),
    (lambda r: r["result"].update(class_acc=[50.0, 101.0]), "class_acc .* is not a list of accuracies"),
    (lambda r: r["result"].update(class_acc="50"), "class_acc '50' is not a list of accuracies"),
    (lambda r: r["result"].update(class_acc=[]), "class_acc .* is not a list of accuracies"),
    (lambda r: r["result"].update(class_acc=[None, None]), "class_acc .* is not a list of accuracies"),
])
def test_a_run_record_with_a_bad_field_is_refused_in_one_line_naming_the_file_and_field(tmp_path, edit, fragment):
    row = {"settings": {"lr": 0.005}, "result": {"method": "scratch", "shots": 10, "task": 0, "seed": 0,
                                                 "final_acc": 50.0, "best_acc": 52.0, "class_acc": [40.0, 60.0]}}
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(row) + "\n")
    assert [r["final_acc"] for _, r in runstore.records(good)] == [50.0]
    row["result"]["class_acc"] = [None, 60.0]  # a class without test images has no accuracy, and that is allowed
    good.write_text(json.dumps(row) + "\n")
    assert [r["class_acc"] for _, r in runstore.records(good)] == [[None, 60.0]]
    edit(row)
    bad = tmp_path / "runs.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=fragment) as refused:
        list(runstore.records(bad))
    assert str(bad) in str(refused.value) and "run 1" in str(refused.value)


def test_a_refused_rerun_names_what_differs_even_a_setting_only_the_stored_runs_have(tmp_path):
    path = tmp_path / "runs.jsonl"
    row = {"settings": {"lr": 0.005, "lr_of": {"scratch": 0.01}}, "result": {"method": "scratch", "shots": 10, "task": 0,
                                                                            "seed": 0, "final_acc": 50.0}}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"differs in: lr_of\)"):
        runstore.RunStore(path, {"lr": 0.005})
