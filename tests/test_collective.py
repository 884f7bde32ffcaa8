"""The collective-model script on the real offline images: outputs, resume equality, bad inputs."""
import csv

import pytest
import torch
from conftest import assert_clean_error, run_script, write_cifar

from utils import collective, learngene

SHORT = ["--epochs", "2", "--batch_size", "16", "--num_works", "3", "--no-cuda"]


@pytest.mark.slow
def test_short_run_writes_every_output(tiny_split, tmp_path):
    out = tmp_path / "run"
    proc = run_script("collective-model/val_lifelong_imagenet.py", "--path", tiny_split, "--out", out, *SHORT)
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.csv", "criterion.csv", "criterion_heatmap.png", "last.pt", "learngene.pt", "selection.txt",
                 "config.json", "checkpoints/task_000.pt", "checkpoints/task_002.pt"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "criterion.csv")))
    assert len(rows) == 3 * 2 * 13 and all(0 <= float(r["value"]) <= 1 for r in rows)
    # the default statistic (signed g > 5e-4) measures something: well below 1, unlike |g| > 5e-10
    values = sorted(float(r["value"]) for r in rows)
    assert values[len(values) // 2] < 0.7 and values[-1] < 0.95, values[len(values) // 2]
    variants = list(csv.DictReader(open(out / "criterion_variants.csv")))
    assert len(variants) == 3 * 2 * 13 * 4  # the default is one of the four recorded statistics
    saturated = [float(r["value"]) for r in variants if r["absolute"] == "True" and float(r["threshold"]) == 5e-10]
    assert sorted(saturated)[len(saturated) // 2] > 0.9  # the reading the default replaces
    selection = (out / "selection.txt").read_text()
    assert "margin to the second-best window" in selection and "| g > 0.0005 |" in selection
    filters = list(csv.DictReader(open(out / "filters.csv")))
    assert [int(f["width"]) for f in filters][2:4] == [128, 128]
    # never widened: all distinct; widened: at most the width (how far copies drift in a few steps varies)
    assert all(0 < int(f["distinct_filters"]) <= int(f["width"]) for f in filters)
    assert [int(f["distinct_filters"]) for f in filters][:2] == [64, 64]
    metrics = list(csv.DictReader(open(out / "metrics.csv")))
    assert [m["widths"].split("-")[2:4] for m in metrics[::2]] == [["64", "64"], ["128", "64"], ["128", "128"]]
    art = learngene.load(out / "learngene.pt", "tiny-imagenet-100", 32)  # weights_only=True inside
    assert len(art["layers"]) == 3 and art["source_task"] == 2
    assert art["provenance"]["split_hash"] and "val_lifelong_imagenet.py" in art["provenance"]["command"]
    final = torch.load(out / "checkpoints" / "task_002.pt", weights_only=True)["model"]
    for j, i in enumerate(art["layers"]):
        assert torch.equal(art["state"][f"{j}.conv.weight"], final[f"features.{i}.conv.weight"])
        assert torch.equal(art["state"][f"{j}.bn.running_var"], final[f"features.{i}.bn.running_var"])
    assert "chosen: conv layers" in proc.stdout
    # a rerun refuses to clobber the run
    again = run_script("collective-model/val_lifelong_imagenet.py", "--path", tiny_split, "--out", out, *SHORT)
    assert_clean_error(again, "already holds a run")


@pytest.mark.slow
def test_resume_ends_with_the_same_weights(tiny_split, tmp_path, monkeypatch):
    argv = ["--path", str(tiny_split), *SHORT, "--epochs", "2"]
    collective.run("imagenet", argv + ["--out", str(tmp_path / "whole")])

    calls = {"n": 0}
    real = collective.train_epoch

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # in task 1, second epoch, after task 1's widening
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(collective, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collective.run("imagenet", argv + ["--out", str(tmp_path / "cut")])
    monkeypatch.setattr(collective, "train_epoch", real)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (state["next_task"], state["next_epoch"]) == (1, 1)
    collective.run("imagenet", argv + ["--out", str(tmp_path / "cut"), "--resume"])
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["widths"] == b["widths"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["record"] == b["record"]
    assert [m[:4] for m in a["metrics"]] == [m[:4] for m in b["metrics"]]


@pytest.mark.slow
def test_bad_inputs(tiny_split, tmp_path):
    script = "collective-model/val_lifelong_imagenet.py"
    assert_clean_error(run_script(script, "--path", tmp_path, "--out", tmp_path / "o"), "not a split directory")
    assert_clean_error(run_script(script, "--path", tiny_split, "--num_works", "4", "--out", tmp_path / "o"),
                       "more than the 3 tasks")
    assert_clean_error(run_script(script, "--path", tiny_split, "--resume", "--out", tmp_path / "o"),
                       "resume checkpoint not found")
    # a split of the other family
    cifar = tmp_path / "cifar"
    write_cifar(cifar / "raw")
    assert run_script("utils/data_cifar_mk.py", "--path", cifar / "raw", "--out", cifar / "split", "--no-verify",
                      "--num_tasks", "2", "--num_imgs_per_cat_train", "4", "--shots", "2").returncode == 0
    assert_clean_error(run_script(script, "--path", cifar / "split", "--out", tmp_path / "o"),
                       "is a cifar100 split")
    assert not (tmp_path / "o").exists()
    # resuming with another split or other settings
    out = tmp_path / "run"
    assert run_script(script, "--path", tiny_split, "--out", out, "--epochs", "1", "--num_works", "1",
                      "--batch_size", "30").returncode == 0
    before = (out / "last.pt").read_bytes()
    assert_clean_error(run_script("collective-model/val_lifelong_cifar100.py", "--path", cifar / "split", "--out",
                                  out, "--resume", "--epochs", "1"), "")
    assert_clean_error(run_script(script, "--path", tiny_split, "--out", out, "--resume", "--epochs", "1",
                                  "--batch_size", "30", "--lr", "0.1"), "other settings")
    assert (out / "last.pt").read_bytes() == before
    (out / "last.pt").write_bytes(before[:500])
    assert_clean_error(run_script(script, "--path", tiny_split, "--out", out, "--resume", "--epochs", "1",
                                  "--batch_size", "30"), "corrupted")


def test_ewc_across_collective_tasks_follows_the_widening(tiny_split, tmp_path):
    out = tmp_path / "ewc"
    collective.run("imagenet", ["--path", str(tiny_split), "--out", str(out), "--epochs", "1", "--num_works", "3",
                                "--batch_size", "16", "--no-cuda", "--ewc_lambda", "10"])
    state = torch.load(out / "last.pt", weights_only=True)
    anchor, fisher = state["ewc"]["anchor"], state["ewc"]["fisher"]
    for name, value in state["model"].items():
        if name in fisher:
            assert fisher[name].shape == value.shape == anchor[name].shape, name
            assert (fisher[name] >= 0).all()
    assert fisher["features.3.conv.weight"].shape[0] == 128  # widened before task 2, after task 1's Fisher
    penalty = {}
    for task, _, _, _, _, _, _, value in state["metrics"]:
        penalty[task] = penalty.get(task, 0.0) + value
    assert penalty[0] == 0 and penalty[1] > 0 and penalty[2] > 0  # no anchor before the first task ends


@pytest.mark.slow
def test_resume_refuses_fewer_tasks_than_trained(tiny_split, tmp_path):
    script, out = "collective-model/val_lifelong_imagenet.py", tmp_path / "run"
    base = ["--path", tiny_split, "--out", out, "--epochs", "1", "--batch_size", "30", "--no-cuda"]
    assert run_script(script, *base, "--num_works", "3").returncode == 0
    before = (out / "learngene.pt").read_bytes()
    assert_clean_error(run_script(script, *base, "--num_works", "2", "--resume"), "trained 3 tasks already")
    assert (out / "learngene.pt").read_bytes() == before


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_restarts(tiny_split, tmp_path):
    """config.json is written before the first epoch, last.pt after it: a stop in between must not leave a
    folder that neither a plain rerun nor --resume accepts."""
    script, out = "collective-model/val_lifelong_imagenet.py", tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    base = ["--path", tiny_split, "--out", out, "--epochs", "1", "--num_works", "1", "--batch_size", "30", "--no-cuda"]
    for extra in ([], ["--resume"]):
        (out / "last.pt").unlink(missing_ok=True)
        proc = run_script(script, *base, *extra)
        assert proc.returncode == 0 and "starting it from the beginning" in proc.stdout, proc.stderr
        assert (out / "learngene.pt").exists()


@pytest.mark.slow
def test_overwrite_replaces_a_run_and_nothing_else(tiny_split, tmp_path):
    script, out = "collective-model/val_lifelong_imagenet.py", tmp_path / "run"
    base = ["--path", tiny_split, "--out", out, "--epochs", "1", "--num_works", "1", "--batch_size", "30", "--no-cuda"]
    assert run_script(script, *base).returncode == 0
    (out / "src").mkdir()
    (out / "src" / "thesis.tex").write_text("keep me")
    assert_clean_error(run_script(script, *base, "--overwrite"), "did not write (src/thesis.tex)")
    assert (out / "src" / "thesis.tex").read_text() == "keep me" and (out / "learngene.pt").exists()
    (out / "src" / "thesis.tex").unlink()
    assert run_script(script, *base, "--overwrite").returncode == 0  # only its own files: replaced


def test_released_selection_flags(tiny_split, tmp_path):
    """--judgement_abs records |g| > threshold instead of the released signed g > threshold, and
    --learngene_layers takes the given layers as the released scripts hard-coded them (10 11 12 there)."""
    out = tmp_path / "run"
    collective.run("imagenet", ["--path", str(tiny_split), "--out", str(out), "--epochs", "1", "--num_works", "2",
                                "--batch_size", "16", "--no-cuda", "--judgement_abs", "--learngene_layers", "4", "5",
                                "6"])
    recorded = {(r["task"], r["layer"]): r["value"] for r in csv.DictReader(open(out / "criterion.csv"))}
    variant = {(r["task"], r["layer"]): r["value"] for r in csv.DictReader(open(out / "criterion_variants.csv"))
               if r["absolute"] == "True" and float(r["threshold"]) == 5e-4}
    assert recorded == variant and len(recorded) == 2 * 13
    assert learngene.load(out / "learngene.pt")["layers"] == [4, 5, 6]
    assert "--learngene_layers" in (out / "selection.txt").read_text()
