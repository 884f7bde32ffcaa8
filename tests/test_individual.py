"""Individual models: construction from a learngene, task independence, the script and its bad inputs."""
import contextlib
import csv
import json

import pytest
import torch
from conftest import assert_clean_error, run_script

from utils import fewshot, learngene, methods, report, repro, runstore
from utils.engine import DeviceData
from utils.ewc import fisher_diagonal, fisher_with_batch_statistics
from utils.splits import Split


Key, Inputs = runstore.RunKey, methods.Inputs


def settings(**kw):
    """Short runs in fp32 (bit-stable on one machine), a mild EWC."""
    return fewshot.TrainSettings(**{"epochs": 2, "batch_size": 4, "ewc_lambda": 40.0, "precision": "fp32", **kw})


def test_model_construction(collective_run, joint_run):
    art = learngene.load(collective_run / "learngene.pt")
    split = Split(json.loads((collective_run / "config.json").read_text())["args"]["path"])
    collective = methods.load_collective(None, art, split)
    joint = methods.load_collective(joint_run / "joint.pt", art, split)
    for method in [name for name, m in methods.METHODS.items() if not m.probe]:
        torch.manual_seed(0)
        model, layers = methods.build_model(method, Inputs(art, "", collective, joint), 32)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
        if method in ("learngene", "learngene-noewc", "learngene-frozen"):
            assert layers == art["layers"]
            for j in range(3):
                assert torch.equal(model.inherited[j].conv.weight, art["state"][f"{j}.conv.weight"])
        if method == "learngene-joint":
            assert layers == art["layers"]
            assert torch.equal(model.inherited[0].conv.weight, joint["model"][f"features.{layers[0]}.conv.weight"])
        if method == "other-layers":
            assert layers != art["layers"] and len(layers) == 3
            assert torch.equal(model.inherited[0].conv.weight, collective["model"][f"features.{layers[0]}.conv.weight"])
        if method == "scratch":
            assert not torch.equal(model.inherited[0].conv.weight, art["state"]["0.conv.weight"])


def test_tasks_are_independent_of_order(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")

    def data(t):
        xtr, ytr, xte, yte = split.few_shot("target", 2, t)
        return DeviceData.from_numpy(xtr, ytr, cpu), DeviceData.from_numpy(xte, yte, cpu)

    def one(t):
        return fewshot.train_one(Key("learngene", 2, t, 0), Inputs(art, ""), *data(t), settings(), cpu)

    forward = [one(0)["curve"], one(1)["curve"]]
    backward = [one(1)["curve"], one(0)["curve"]][::-1]
    assert forward == backward


@pytest.mark.slow
def test_script_end_to_end_and_resume(collective_run, tiny_split, tmp_path):
    script = "individual-model/inheritable_imagenet_wEWC.py"
    common = ["--path", tiny_split, "--learngene", collective_run / "learngene.pt", "--epochs", "2", "--batch_size",
              "4", "--num_works_tt", "1", "--out", tmp_path / "res", "--no-cuda"]
    proc = run_script(script, *common)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "res" / "results.csv")))
    assert {(r["shots"], r["method"]) for r in rows} == {(s, m) for s in ("2", "4") for m in methods.METHODS
                                                                    if m in methods.DEFAULT_METHODS}
    assert all(0 <= float(r["final_acc"]) <= 100 and r["runs"] == "1" for r in rows)
    assert (tmp_path / "res" / "curves.png").exists() and "| shots | method |" in (tmp_path / "res" / "results.md").read_text()
    again = run_script(script, *common)
    assert again.returncode == 0 and "14 runs already" in again.stdout and "0 to go" in again.stdout
    # each run keeps the commit and device it was trained with; a table rewritten later names them, not its own
    record = tmp_path / "res" / "runs.jsonl"
    lines = record.read_text().splitlines()
    assert all(json.loads(line)["result"]["trained"]["commit"] == repro.COMMIT_AT_START for line in lines)
    record.write_text("".join(line.replace(repro.COMMIT_AT_START, "0123456789abcdef") + "\n" for line in lines))
    assert run_script(script, *common).returncode == 0
    assert "Runs trained at commit 0123456789ab (14) on cpu" in (tmp_path / "res" / "results.md").read_text()
    assert_clean_error(run_script(script, *common, "--lr", "0.1"), "other settings")
    # another learngene with the same layers is another experiment: its runs are not the old ones relabelled
    other = tmp_path / "other.pt"
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["state"]["0.conv.weight"] = art["state"]["0.conv.weight"] * 2
    torch.save(art, other)
    changed = [str(other) if str(a) == str(collective_run / "learngene.pt") else str(a) for a in common]
    assert_clean_error(run_script(script, *changed), "learngene_sha256")
    # the grouped path through the script gives a table of the same rows (that it computes the same numbers is
    # test_grouped_training_matches_one_by_one, in float64: float32 results drift apart with the summation order)
    grouped = [str(a) if a != tmp_path / "res" else str(tmp_path / "grouped") for a in common]
    proc = run_script(script, *grouped, "--grouped")
    assert proc.returncode == 0, proc.stderr
    rows_b = list(csv.DictReader(open(tmp_path / "grouped" / "results.csv")))
    assert [(r["shots"], r["method"], r["runs"]) for r in rows_b] == [(r["shots"], r["method"], r["runs"]) for r in rows]


@pytest.mark.slow
def test_bad_inputs(collective_run, tiny_split, tmp_path):
    script = "individual-model/inheritable_imagenet_wEWC.py"
    base = ["--path", tiny_split, "--out", tmp_path / "o", "--epochs", "1"]
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "none.pt"), "not found")
    broken = tmp_path / "broken.pt"
    broken.write_bytes((collective_run / "learngene.pt").read_bytes()[:300])
    assert_clean_error(run_script(script, *base, "--learngene", broken), "corrupted")
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["dataset"] = "cifar100"
    torch.save(art, tmp_path / "cifar.pt")
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "cifar.pt"), "learngene from cifar100")
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["state"]["0.conv.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(art, tmp_path / "arch.pt")
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "arch.pt"), "header says")
    assert_clean_error(run_script(script, *base, "--learngene", collective_run / "learngene.pt",
                                  "--num_imgs_per_cat_train", "10"), "no 10-shot target tasks")
    assert_clean_error(run_script("individual-model/inheritable_cifar100_wEWC.py", *base, "--learngene",
                                  collective_run / "learngene.pt"), "is a tiny-imagenet-100 split")
    assert not (tmp_path / "o").exists()
    # results that no runs.jsonl explains are someone else's: not replaced
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.md").write_text("my table")
    assert_clean_error(run_script(script, *base, "--learngene", collective_run / "learngene.pt"), "no runs.jsonl")
    assert (tmp_path / "o" / "results.md").read_text() == "my table"


@contextlib.contextmanager
def float64():
    """Whole trainings in float64: two summation orders of the same arithmetic then agree to ~1e-15, on any CPU
    and thread count, where float32 drifts apart by ~1e-3 over a few epochs."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def test_grouped_training_matches_one_by_one(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    inputs = Inputs(art, "", methods.load_collective(None, art, split))
    data = fewshot.FewShotData(split, "target", cpu)
    group = [Key("learngene", 4, 0, 0), Key("scratch", 4, 0, 0), Key("other-layers", 4, 1, 0),
             Key("learngene-noewc", 4, 1, 0)]
    a = settings(epochs=2, eval_every=2, ewc_lambda=4000.0)  # test accuracy after the last epoch: most of the cost
    with float64():
        grouped = fewshot.train_grouped(group, inputs, data, a, cpu)
        for key, g in zip(group, grouped):
            m, t = key.method, key.task
            one = fewshot.train_one(key, inputs, *data(key.shots, t), a, cpu)
            assert g["inherited_layers"] == one["inherited_layers"] and g["parameters"] == one["parameters"]
            assert not g["diverged"] and not one["diverged"]
            for cg, co in zip(g["curve"], one["curve"]):
                assert cg[1] == pytest.approx(co[1], rel=1e-9), (m, t)   # training loss per epoch
                assert cg[4] == pytest.approx(co[4], rel=1e-9, abs=1e-12), (m, t)  # EWC penalty
                assert cg[3] == co[3], (m, t)                            # test accuracy
            assert g["class_acc"] == one["class_acc"], (m, t)            # and on each class's images
            # the run's accuracy is its classes' (this split's test set holds as many images of each class)
            assert len(one["class_acc"]) == 5 and sum(one["class_acc"]) / 5 == pytest.approx(one["final_acc"])
            if m == "learngene":
                assert one["curve"][-1][4] > 0  # EWC acts
    todo = [Key("scratch", 10, 0, 0), Key("finetune-collective", 10, 0, 0), Key("learngene", 10, 1, 0),
            Key("scratch", 20, 0, 0)]
    assert fewshot.plan_groups(todo, True) == [[todo[0], todo[2]], [todo[1]], [todo[3]]]
    assert fewshot.plan_groups(todo, False) == [[key] for key in todo]


def test_fisher_follows_the_normalisation_of_training(collective_run, tiny_split):
    """On a learngene in a fresh individual model: the Fisher is within an order of magnitude of the one computed
    with training-mode normalisation; with the new layers' initial BatchNorm statistics it is not."""
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    train = fewshot.FewShotData(split, "target", cpu)(4, 0)[0]
    torch.manual_seed(0)
    model, _ = methods.build_model("learngene", Inputs(art, ""), 32)
    names = [n for n, _ in model.named_parameters() if n.startswith("inherited.") and n.endswith("conv.weight")]
    reference = fisher_with_batch_statistics(model, train, names)
    ours = fisher_diagonal(model, train, names)
    for n in names:
        ratio = (ours[n].median() / reference[n].median()).item()
        assert 0.1 < ratio < 10, (n, ratio)
        assert torch.corrcoef(torch.stack([ours[n].flatten(), reference[n].flatten()]))[0, 1] > 0.5, n
    stale = fisher_diagonal(model, train, names, estimate_batchnorm=False)
    ratios = [(stale[n].median() / reference[n].median()).item() for n in names]
    assert min(ratios) < 0.1 or max(ratios) > 10, ratios  # the error the default avoids is real on this model


def test_a_run_pushed_to_a_non_finite_loss_is_flagged_diverged(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    data = fewshot.FewShotData(split, "target", cpu)
    wild, inputs = settings(epochs=2, lr=1e12), Inputs(art, "")
    one = fewshot.train_one(Key("learngene", 2, 0, 0), inputs, *data(2, 0), wild, cpu)
    calm = fewshot.train_one(Key("learngene", 2, 0, 0), inputs, *data(2, 0), settings(epochs=1), cpu)
    assert one["diverged"] and not calm["diverged"]
    group = fewshot.train_grouped([Key("learngene", 2, 0, 0), Key("scratch", 2, 1, 0)], inputs, data, wild, cpu)
    assert all(r["diverged"] for r in group)
    runs = {Key("learngene", 2, 0, 0): one, Key("scratch", 2, 0, 0): calm}
    rows = {r[1]: dict(zip(report.TABLE_HEADER, r)) for r in report.table_rows(runs)}
    assert rows["learngene"]["diverged"] == 1 and rows["scratch"]["diverged"] == 0


def fake_run(method, task, seed, acc):
    return {"method": method, "shots": 10, "task": task, "seed": seed, "final_acc": acc, "best_acc": acc,
            "seconds": 1.0, "parameters": 10, "inherited_layers": None, "diverged": False}


def test_paired_differences_by_hand():
    accs = {"scratch": {(0, 0): 40, (0, 1): 50, (1, 0): 60, (1, 1): 60, (2, 0): 30, (2, 1): 50},
            "learngene": {(0, 0): 50, (0, 1): 50, (1, 0): 70, (1, 1): 80, (2, 0): 30, (2, 1): 60}}
    runs = {Key(m, 10, t, s): fake_run(m, t, s, a) for m, by in accs.items() for (t, s), a in by.items()}
    rows = {r[1]: dict(zip(report.TABLE_HEADER, r)) for r in report.table_rows(runs)}
    # per task, seeds averaged: differences 5, 15 and 5 points; mean 8.33, sd 5.774, t(2) = 4.303
    assert rows["learngene"]["diff_vs_scratch"] == pytest.approx(25 / 3)
    assert rows["learngene"]["diff_ci95"] == pytest.approx(4.303 * (10 / 3 ** 0.5) / 3 ** 0.5)
    # accuracies: per-task means 50, 75, 45 -> mean 56.67, CI over the 3 tasks
    assert rows["learngene"]["final_acc"] == pytest.approx(170 / 3)
    assert rows["learngene"]["tasks"] == 3 and rows["learngene"]["runs"] == 6
    assert rows["scratch"]["diff_vs_scratch"] == "" and rows["scratch"]["diff_ci95"] == ""


def test_baselines_start_from_the_learngenes_source(collective_run, tiny_split):
    """By default the collective baselines read the very checkpoint the learngene was cut from."""
    art = learngene.load(collective_run / "learngene.pt")
    collective = methods.load_collective(None, art, Split(tiny_split))
    assert collective["task"] == art["source_task"]
    for j, i in enumerate(art["layers"]):
        assert torch.equal(collective["model"][f"features.{i}.conv.weight"], art["state"][f"{j}.conv.weight"])
    other = methods.load_collective(collective_run / "checkpoints" / "task_000.pt", art, Split(tiny_split))
    assert other["task"] == 0 and not torch.equal(other["model"]["features.10.conv.weight"],
                                                  collective["model"]["features.10.conv.weight"])


def test_a_table_says_where_its_runs_were_trained():
    runs = {Key("scratch", 10, t, 0): {"trained": {"commit": c, "device": "cpu (x86_64, 2 threads)", "time_utc": when}}
            for t, (c, when) in enumerate([("b" * 40, "2026-01-02T00:00:00Z"), ("a" * 40, "2026-01-01T00:00:00Z"),
                                           ("b" * 40, "2026-01-03T00:00:00Z")])}
    runs[Key("scratch", 10, 3, 0)] = {}  # recorded before runs kept their provenance
    trained = report.runs_trained(runs)
    assert trained == {"commit": {"a" * 40: 1, "b" * 40: 2}, "device": {"cpu (x86_64, 2 threads)": 3},
                       "first": "2026-01-01T00:00:00Z", "last": "2026-01-03T00:00:00Z", "not_recorded": 1}
    assert report.runs_trained_line(trained) == (
        "Runs trained at commit aaaaaaaaaaaa (1), bbbbbbbbbbbb (2) on cpu (x86_64, 2 threads) (3), 2026-01-01T00:00:00Z "
        "to 2026-01-03T00:00:00Z; 1 run recorded before each run kept its own commit and device.")


def test_other_layers_share_as_few_layers_as_possible():
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]  # the paper's final widths
    art = {"layers": [10, 11, 12], "blocks": [[512, 512, False], [512, 512, False], [512, 512, True]],
           "criterion": {"windows": {"8": 0.2, "9": 0.3, "10": 0.1}}}
    assert methods.other_layers(art, {"widths": widths}) == [8, 9, 10]  # only one shared; 9-11 shares two
    art = {"layers": [4, 5, 6], "blocks": [[256, 256, False]] * 3, "criterion": {"windows": {}}}
    widths = [64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]
    assert methods.other_layers(art, {"widths": widths}) == [7, 8, 9]  # disjoint windows first


def test_probes_read_frozen_features(collective_run, joint_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    collective = methods.load_collective(None, art, split)
    joint = methods.load_collective(joint_run / "joint.pt", art, split)
    train, test = fewshot.FewShotData(split, "target", cpu)(4, 0)
    trained = methods.collective_net(collective)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    features = fewshot.conv_features(trained, train.images)
    assert features.shape == (len(train), collective["widths"][-1])  # 32px: 1x1 after the last pooling
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())  # frozen, running stats too
    for method in [name for name, m in methods.METHODS.items() if m.probe]:
        r = fewshot.train_probe(Key(method, 4, 0, 0), Inputs(art, "", collective, joint), train, test, settings(), cpu)
        assert r["method"] == method and not r["diverged"] and 0 <= r["final_acc"] <= 100
        assert len(r["class_acc"]) == 5 and sum(r["class_acc"]) / 5 == pytest.approx(r["final_acc"])
        assert r["curve"][-1][2] >= 95  # 20 shots and their mirrors in 256 dimensions: separable
        assert r["parameters"] == 5 * (collective["widths"][-1] + 1)


def test_each_method_trains_at_its_own_learning_rate(tiny_split, tmp_path, monkeypatch):
    """--lr_of: a method's runs train at its own rate, the others at --lr, and no group mixes two rates; every run of
    one shot count trains before any of the next, whatever their rates (a stopped study leaves whole shot counts)."""
    import argparse
    from types import SimpleNamespace

    from utils import individual
    trained, shots = [], []

    def fake_run(key, inputs, train, test, settings, device, protocol=None):
        trained.append((key.method, settings.lr))
        shots.append(key.shots)
        return {"method": key.method, "shots": key.shots, "task": key.task, "seed": key.seed, "final_acc": 1.0}

    def fake_grouped(group, inputs, data, settings, device):
        return [fake_run(key, None, None, None, settings, None) for key in group]
    monkeypatch.setattr(individual, "train_run", fake_run)
    monkeypatch.setattr(individual, "train_grouped", fake_grouped)
    base, lr_of = settings(), {"scratch": 0.02}
    study = SimpleNamespace(split=Split(tiny_split), section="target", device=torch.device("cpu"), inputs=None,
                            protocol=fewshot.Protocol(), num_tasks=2, settings=base,
                            settings_of=lambda m: individual.Study.settings_of(SimpleNamespace(settings=base,
                                                                                                 lr_of=lr_of,
                                                                                                 epochs_of={}), m))
    requested = [Key(m, k, t, 0) for k in (4, 2) for m in ("learngene", "scratch", "other-layers") for t in (0, 1)]
    for grouped in (True, False):
        trained.clear(), shots.clear()
        individual.train_missing(runstore.RunStore(tmp_path / f"runs-{grouped}.jsonl", {}), study, requested, grouped)
        assert sorted(trained) == sorted((k.method, 0.02 if k.method == "scratch" else base.lr) for k in requested)
        assert shots == sorted(shots)
    assert individual.method_lr("finetune-collective=0.001") == ("finetune-collective", 0.001)
    for bad in ("probe-collective=0.1", "scratch", "scratch=0", "nothing=0.1"):
        with pytest.raises(argparse.ArgumentTypeError):
            individual.method_lr(bad)


def test_the_suite_trains_its_scripts_at_its_stated_precision(collective_run):
    """The session's collective run was trained at LEARNGENE_TEST_PRECISION (auto: what this CPU computes natively)."""
    from conftest import SCRIPT_PRECISION
    from utils.engine import resolve_precision
    config = json.loads((collective_run / "config.json").read_text())
    assert config["precision"] == resolve_precision(SCRIPT_PRECISION, torch.device("cpu"))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_each_precision_trains_end_to_end_on_any_cpu(precision, collective_run, tiny_split, tmp_path):
    """Both paths on purpose, whatever this CPU computes natively (CPU autocast emulates bf16 where it is not
    native): the individual script trains, records the precision it ran at and gives accuracies of a 5-way task."""
    proc = run_script("individual-model/inheritable_imagenet_wEWC.py", "--path", tiny_split, "--learngene",
                      collective_run / "learngene.pt", "--epochs", "1", "--batch_size", "4", "--num_works_tt", "1",
                      "--methods", "learngene", "scratch", "--out", tmp_path / "res", "--no-cuda", "--precision", precision)
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in (tmp_path / "res" / "runs.jsonl").open()]
    assert len(runs) == 4 and all(r["settings"]["precision"] == precision for r in runs)
    assert all(0 <= r["result"]["final_acc"] <= 100 and not r["result"]["diverged"] for r in runs)
