"""The source measured and controlled: held-out accuracy of the collective model, the joint-source control, the
structure control, the frozen learngene and the EWC grid's upward extension."""
import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import pipeline
from conftest import run_script
from utils import fewshot, learngene, methods, source, tuning
from utils.cli import UserError
from utils.engine import normalize, sgd, train_epoch, seeded_generator
from utils.runstore import RunKey
from utils.splits import Split


def test_continual_learning_summary_by_hand():
    m = np.array([[60.0, 20.0, 21.0],
                  [50.0, 70.0, 19.0],
                  [40.0, 65.0, 80.0]])
    s = source.summary(m, 2)
    assert s["average_accuracy"] == pytest.approx((40 + 65 + 80) / 3)
    assert s["backward_transfer"] == pytest.approx(((40 - 60) + (65 - 70)) / 2)  # forgetting is negative
    assert s["just_learned_accuracy"] == pytest.approx((60 + 70 + 80) / 3)
    assert source.summary(m, 1)["backward_transfer"] == pytest.approx(50 - 60)
    assert source.summary(m, 0) == {"after_task": 0, "average_accuracy": 60.0, "backward_transfer": 0.0,
                                    "just_learned_accuracy": 60.0, "tasks": 1}


def test_collective_run_is_measured_on_held_out_images(collective_run, tiny_split):
    split = Split(tiny_split)
    rows = list(csv.DictReader(open(collective_run / "heldout_accuracy.csv")))
    assert [(int(r["after_task"]), int(r["task"])) for r in rows] == [(i, j) for i in range(3) for j in range(3)]
    summary = json.loads((collective_run / "heldout_summary.json").read_text())
    art = learngene.load(collective_run / "learngene.pt")
    assert summary["extraction"]["after_task"] == art["source_task"] and summary["heldout_images_per_class"] == 3
    assert (collective_run / "heldout_matrix.png").stat().st_size > 1000
    features = summary["features"]
    assert features["after_task"] == art["source_task"] and len(features["per_task"]) == art["source_task"] + 1
    assert all(0 <= v <= 100 for v in features["per_task"] + features["random_network_per_task"])
    # one cell recomputed from first principles: the checkpoint, the held-out images, the 5 outputs the tasks use
    ck = torch.load(collective_run / "checkpoints" / "task_001.pt", weights_only=True)
    model = methods.collective_net(ck).eval()
    x, y = split.heldout(0)
    with torch.no_grad():
        predicted = model(normalize(torch.from_numpy(x).permute(0, 3, 1, 2)))[:, :5].argmax(1).numpy()
    cell = next(float(r["accuracy"]) for r in rows if r["after_task"] == "1" and r["task"] == "0")
    assert abs(cell - 100 * (predicted == y).mean()) <= 100 / len(y) + 1e-6  # one image of float slack


def ids_of(per_class):
    return {i for ids in per_class.values() for i in ids}


def test_held_out_images_are_disjoint_from_every_training_image(tiny_split):
    m = Split(tiny_split).manifest
    held = ids_of(m["heldout"])
    assert len(held) == 3 * len(m["heldout"])
    assert {c for t in m["continual"] for c in t["classes"]} <= set(m["heldout"]) <= set(m["classes"]["base"])
    for task in m["continual"]:
        assert not held & ids_of(task["samples"])
    for section in ("target", "validation"):
        for tasks in m[section].values():
            for task in tasks:
                assert not held & (ids_of(task["train"]) | ids_of(task["test"]))


def test_joint_source_reads_base_classes_only(joint_run, collective_run, tiny_split):
    m = Split(tiny_split).manifest
    joint = torch.load(joint_run / "joint.pt", weights_only=True)
    art = learngene.load(collective_run / "learngene.pt")
    seen = [c for t in m["continual"][:art["source_task"] + 1] for c in t["classes"]]
    assert joint["classes"] == list(dict.fromkeys(seen)) and joint["config"]["num_outputs"] == len(joint["classes"])
    assert set(joint["classes"]) <= set(m["classes"]["base"])
    for section in ("target", "validation"):  # never an open-world or novel class
        for tasks in m[section].values():
            assert not set(joint["classes"]) & {c for task in tasks for c in task["classes"]}
    # the same budget and settings as the collective model up to the extraction task, at its widths
    collective = art["provenance"]["collective_config"]
    assert joint["widths"] == torch.load(art["collective_checkpoint"], weights_only=True)["widths"]
    for k in ("epochs", "lr", "batch_size", "momentum", "weight_decay", "seed"):
        assert joint["config"][k] == collective[k]
    images = sum(len(t["samples"][c]) for t in m["continual"][:art["source_task"] + 1] for c in t["classes"])
    metrics = list(csv.DictReader(open(joint_run / "metrics.csv")))
    assert len(metrics) == collective["epochs"]
    assert joint["config"]["epochs"] * images == sum(collective["epochs"] * len(x) for x in
                                                     (Split(tiny_split).continual(t)[1] for t in range(art["source_task"] + 1)))
    held = json.loads((joint_run / "heldout_summary.json").read_text())
    assert 0 <= held["task_local_accuracy"] <= 100 and held["classes"] == len(joint["classes"])
    assert 0 <= held["nearest_mean_accuracy"] <= 100 and len(held["nearest_mean_per_task"]) == art["source_task"] + 1


def test_measure_source_redoes_the_measurements_of_a_finished_run(collective_run, joint_run, tiny_split, tmp_path):
    run, joint = tmp_path / "run", tmp_path / "joint"
    shutil.copytree(collective_run, run)
    shutil.copytree(joint_run, joint)
    for f in ("heldout_accuracy.csv", "heldout_summary.json"):
        (run / f).unlink()
    (joint / "heldout_summary.json").unlink()
    proc = run_script("collective-model/measure_source.py", "--path", tiny_split, "--run", run, "--joint", joint,
                      "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    assert (run / "heldout_accuracy.csv").read_text() == (collective_run / "heldout_accuracy.csv").read_text()
    assert json.loads((joint / "heldout_summary.json").read_text()) == json.loads(
        (joint_run / "heldout_summary.json").read_text())


def interrupted_measurement(collective_run, tiny_split, folder, monkeypatch, stop_at):
    """A copy of collective_run without its measurements, whose measurement stopped at the stop_at-th read; returns
    (measure, reads): measure() measures it again, counting its reads in `reads`."""
    shutil.copytree(collective_run, folder)
    for f in ("heldout_accuracy.csv", "heldout_summary.json"):
        (folder / f).unlink()
    art = learngene.load(folder / "learngene.pt")
    seed = art["provenance"]["collective_config"]["seed"]
    measure = lambda: source.measure(folder, Split(tiny_split), 3, art["source_task"], torch.device("cpu"), "fp32",
                                     seed, "t", {})
    reads, real = [], source.choice_accuracy

    def counted(*args, stop=None, **kwargs):
        reads.append(1)
        if len(reads) == stop:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(source, "choice_accuracy", lambda *a, **k: counted(*a, stop=stop_at, **k))
    with pytest.raises(KeyboardInterrupt):
        measure()
    assert not (folder / "heldout_summary.json").exists() and (folder / source.PROGRESS).is_file()
    reads.clear()
    monkeypatch.setattr(source, "choice_accuracy", counted)
    return measure, reads


def test_an_interrupted_measurement_goes_on_where_it_stopped(collective_run, tiny_split, tmp_path, monkeypatch):
    run = tmp_path / "run"
    measure, reads = interrupted_measurement(collective_run, tiny_split, run, monkeypatch, stop_at=5)
    measure()  # stopped in checkpoint 1's row (3 tasks a row): row 0 was kept
    assert len(reads) == 2 * 3  # rows 1 and 2 only
    assert (run / "heldout_accuracy.csv").read_text() == (collective_run / "heldout_accuracy.csv").read_text()
    assert json.loads((run / "heldout_summary.json").read_text()) == json.loads(
        (collective_run / "heldout_summary.json").read_text())
    assert not (run / source.PROGRESS).exists()  # done: the next measurement starts afresh


def test_a_checkpoint_trained_again_is_measured_again(collective_run, tiny_split, tmp_path, monkeypatch):
    run = tmp_path / "run"
    measure, reads = interrupted_measurement(collective_run, tiny_split, run, monkeypatch, stop_at=4)
    shutil.copy(run / "checkpoints" / "task_002.pt", run / "checkpoints" / "task_000.pt")  # row 0 is kept, stale
    measure()
    assert len(reads) == 3 * 3
    rows = list(csv.DictReader(open(run / "heldout_accuracy.csv")))
    assert [r["accuracy"] for r in rows[:3]] == [r["accuracy"] for r in rows[6:]]


def test_a_stored_measurement_is_reused_only_for_the_same_weights(tmp_path):
    model = torch.nn.Linear(2, 2)
    progress = source.Progress(tmp_path)
    key = f"row 0, weights {source.weights_digest(model)}"
    assert progress.value(key, lambda: [1.0, 2.0]) == [1.0, 2.0]
    assert source.Progress(tmp_path).value(key, lambda: pytest.fail("measured again")) == [1.0, 2.0]
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert f"row 0, weights {source.weights_digest(model)}" != key


def test_the_sources_features_are_compared_task_by_task(collective_run, joint_run, tmp_path):
    held, joint = source.read_summary(collective_run), source.read_summary(joint_run)
    series = source.feature_series(held, joint)
    floor, collective, jointly = series.values()
    assert floor == held["features"]["random_network_per_task"] and jointly == joint["nearest_mean_per_task"]
    gaps = source.paired_gaps(series)
    n = len(collective)
    for (label, mean, ci), (a, b) in zip(gaps, [(floor, collective), (collective, jointly)]):
        d = [y - x for x, y in zip(a, b)]  # paired: the same task's images, later model minus earlier
        assert mean == pytest.approx(sum(d) / n)
        sd = (sum((v - mean) ** 2 for v in d) / (n - 1)) ** 0.5
        assert ci == pytest.approx({2: 12.706, 3: 4.303, 4: 3.182}[n] * sd / n ** 0.5)  # Student t, n - 1 df
    last = held["features"]["after_task"]
    assert [g[0] for g in gaps] == [f"collective model after task {last} minus random network of the same widths",
                                    f"joint source minus collective model after task {last}"]
    source.draw_features(tmp_path / "f.png", held, joint, "t", {})
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError):  # the two sources measured on other tasks cannot be paired
        source.feature_series(held, {**joint, "nearest_mean_per_task": joint["nearest_mean_per_task"][:-1]})


def test_permuted_learngene_keeps_every_filters_values_and_the_batchnorm(collective_run):
    art = learngene.load(collective_run / "learngene.pt")
    inputs = methods.Inputs(art, "")
    torch.manual_seed(3)
    plain, _ = methods.build_model("learngene", inputs, 32)
    torch.manual_seed(3)
    permuted, layers = methods.build_model("learngene-permuted", inputs, 32)
    assert layers == art["layers"]
    for name, p in plain.state_dict().items():
        q = permuted.state_dict()[name]
        if name.startswith("inherited.") and name.endswith("conv.weight"):
            a, b = p.double(), q.double()
            assert not torch.equal(a, b)  # the wiring is gone ...
            assert torch.equal(a.sort(1).values, b.sort(1).values)  # ... each filter's values per position stay
            assert torch.allclose(a.flatten(1).norm(dim=1), b.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
        else:  # biases, BatchNorm weights and statistics, and the new layers' initialisation: untouched
            assert torch.equal(p, q), name


def test_frozen_learngene_trains_nothing_it_inherits(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    cpu = torch.device("cpu")
    train, _ = fewshot.FewShotData(Split(tiny_split), "target", cpu)(4, 0)
    key = RunKey("learngene-frozen", 4, 0, 0)
    settings = fewshot.TrainSettings(epochs=1, batch_size=4, precision="fp32")
    model, _, ewc = fewshot.prepare(key, methods.Inputs(art, ""), train, settings, cpu)
    assert ewc is None
    front = model.front[0].conv.weight.detach().clone()
    train_epoch(model, sgd(model, 0.05, 0.9, 5e-4), train, 4, seeded_generator(0, cpu))
    for j in range(len(art["layers"])):
        assert torch.equal(model.inherited[j].conv.weight, art["state"][f"{j}.conv.weight"])
        assert torch.equal(model.inherited[j].bn.weight, art["state"][f"{j}.bn.weight"])
    assert not torch.equal(model.front[0].conv.weight, front)  # the rest trains
    assert not methods.METHODS["learngene-frozen"].groupable  # the grouped network trains every weight


@pytest.mark.parametrize("peak", [4e6, None])
def test_ewc_grid_grows_upward_only_while_its_top_is_best_and_on_validation_tasks(tmp_path, monkeypatch, peak):
    calls = []

    def fake_stage(clock, name, script, args, done):
        if done.exists():  # as the real stage: a finished stage is not run again
            return
        args = list(map(str, args))
        calls.append(args)
        lam = float(args[args.index("--ewc_lambda") + 1])
        score = -abs(np.log10(lam) - np.log10(peak)) if peak else np.log10(lam)  # rises up to the peak
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(f"final_acc,runs,diverged\n{50 + score},2,0\n")

    monkeypatch.setattr(tuning, "stage", fake_stage)
    lam, note = tuning.tune_ewc(None, "script.py", ["--path", "s"], [], tmp_path)
    assert all(a[a.index("--section") + 1] == "validation" for a in calls)
    tried = [float(a[a.index("--ewc_lambda") + 1]) for a in calls]
    if peak:
        assert float(lam) == peak and tried == [4e4, 4e2, 4, 4e6, 4e8]  # the best lies inside the grid
    else:
        assert float(lam) == tuning.EWC_GRID_TOP and max(tried) == tuning.EWC_GRID_TOP
        assert "largest strength tried is the best" in note


@pytest.mark.parametrize("scratch_peak, tried_after", [("0.005", []), ("0.001", ["0.0002"]),
                                                       ("0.0002", ["0.0002", "4e-05"]), ("1", ["0.08", "0.32"])])
def test_each_methods_learning_rate_is_tried_on_validation_tasks_only(tmp_path, monkeypatch, scratch_peak, tried_after):
    """tuning.tune_lr: every rate of the grid, every method of the study, on the validation section, reusing the
    EWC tuning's runs; the grid grows past an end some method prefers, until the best lies inside it or the range
    ends; the flags it returns give each method the rate its validation runs preferred."""
    calls = []
    (tmp_path / "tune-ewc" / "lambda-400").mkdir(parents=True)
    peak = {"scratch": float(scratch_peak), "learngene": 0.005}

    def fake_stage(clock, name, script, args, done):
        if done.exists():  # as the real stage: a finished stage is not run again
            return
        args = list(map(str, args))
        calls.append(args)
        lr = float(args[args.index("--lr") + 1])
        done.parent.mkdir(parents=True, exist_ok=True)  # accuracy falls with the distance from the method's peak
        done.write_text("shots,method,final_acc\n"
                        + "".join(f"10,{m},{60 - abs(np.log(lr / p))}\n" for m, p in peak.items()))

    monkeypatch.setattr(tuning, "stage", fake_stage)
    tuned = dataclasses.replace(pipeline.STUDIES["tuned"], methods=("scratch", "learngene"))
    best, line = tuning.tune_lr(None, "script.py", ["--path", "s", "--ewc_lambda", "400"], [], tmp_path, tuned)
    assert [a[a.index("--lr") + 1] for a in calls] == tuning.LR_GRID + tried_after
    assert all(a[a.index("--section") + 1] == "validation" and "--reuse" in a for a in calls)
    assert all(a[a.index("--methods") + 1:a.index("--methods") + 3] == ["scratch", "learngene"] for a in calls)
    assert str(tmp_path / "tune-ewc" / "lambda-400") in calls[0]
    assert all(str(tmp_path / "tune-lr" / "lr-0.001") in a for a in calls[1:])  # each rate reuses the earlier ones
    chosen = {"1": "0.32"}.get(scratch_peak, scratch_peak)
    assert best == {"scratch": chosen, "learngene": "0.005"}
    assert line.startswith(f"scratch: {min([*tuning.LR_GRID, *tried_after], key=float)} ")  # rates in order
    assert ("scratch: the best rate tried is an end of the range" in line) == (scratch_peak == "1")
    # another study tunes into a folder of its own, reusing every validation run the tuned study holds
    (tmp_path / "tune-lr" / "lr-0.001" / "runs.jsonl").write_text("")
    calls.clear()
    knowledge = dataclasses.replace(pipeline.STUDIES["knowledge"], methods=("scratch", "learngene"))
    assert tuning.tune_lr(None, "script.py", ["--path", "s"], [], tmp_path, knowledge)[0] == best
    assert all(a[a.index("--out") + 1].startswith(str(tmp_path / "tune-lr-knowledge" / "lr-")) for a in calls)
    assert all(str(tmp_path / "tune-lr" / "lr-0.001") in a and a[a.index("--section") + 1] == "validation"
               for a in calls)


def write_runs(path, runs, **changed):
    """A runs.jsonl of (method, shots, task, final accuracy) with the cpu preset's settings (some `changed`)."""
    settings = {"epochs": 30, "batch_size": 32, "lr": 0.005, "momentum": 0.9, "weight_decay": 0.0005,
                "ewc_lambda": 40000.0, "precision": "fp32", "section": "target", "split_hash": "s", **changed}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"settings": settings, "result": {"method": m, "shots": k, "task": t, "seed": 0,
                                                                          "final_acc": acc}}) + "\n"
                            for m, k, t, acc in runs))


def test_each_control_is_compared_with_the_row_it_stands_in_for_paired_per_task(tmp_path):
    from utils import contrasts
    # the individual study holds the collective model's fine-tune; the source study the joint one and, reused, the
    # learngene (with the same results); learngene-joint beats the learngene by 2, 4 and 6 points on tasks 0-2
    write_runs(tmp_path / "individual" / "runs.jsonl", [("learngene", 10, t, 50.0 + t) for t in range(3)]
               + [("finetune-collective", 10, t, 40.0 + 5 * t) for t in range(3)])
    write_runs(tmp_path / "source" / "runs.jsonl", [("learngene", 10, t, 50.0 + t) for t in range(3)]
               + [("learngene-joint", 10, t, 50.0 + t + 2 * (t + 1)) for t in range(3)]
               + [("finetune-joint", 10, t, 41.0 + 5 * t) for t in range(2)]
               + [("learngene-frozen", 10, t, 49.0 + t) for t in range(3)])
    files = [tmp_path / "individual" / "runs.jsonl", tmp_path / "source" / "runs.jsonl"]
    rows = {r[1]: r for r in contrasts.contrast_rows(contrasts.read_folders(files))}
    assert set(rows) == {"learngene-joint", "finetune-joint", "learngene-frozen"}  # no probe runs: no probe rows
    _, _, against, _, tasks, diff, ci = rows["learngene-joint"]
    assert (against, tasks) == ("learngene", 3) and diff == pytest.approx(4.0)
    assert ci == pytest.approx(4.303 * 2.0 / np.sqrt(3))  # Student t, 2 degrees of freedom, sd 2
    assert rows["finetune-joint"][2] == "finetune-collective" and rows["finetune-joint"][4:6] == [2, 1.0]
    assert rows["learngene-frozen"][5] == pytest.approx(-1.0)  # no EWC of its own: its strength is not compared
    contrasts.report(tmp_path / "source", files, "test", {"commit": "c", "time_utc": "now", "command": "python x.py",
                                                          "torch": "2"})
    md = (tmp_path / "source" / "contrasts.md").read_text()
    assert "| 10 | learngene-joint minus learngene |" in md and "| 3 | +4.0 | ±5.0 |" in md
    assert "Written at commit c, now" in md
    assert "14 runs recorded before each run kept its own commit" in md  # the 3 learngene runs of both files once
    assert (tmp_path / "source" / "contrasts.png").exists()
    with open(tmp_path / "source" / "contrasts.csv", newline="") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["learngene-joint", "finetune-joint", "learngene-frozen"]


def test_runs_trained_under_other_settings_are_not_compared(tmp_path):
    from utils import contrasts
    write_runs(tmp_path / "a" / "runs.jsonl", [("learngene", 10, t, 50.0) for t in range(2)])
    write_runs(tmp_path / "b" / "runs.jsonl", [("learngene-joint", 10, t, 52.0) for t in range(2)], lr=0.001)
    with pytest.raises(UserError, match="learngene-joint and learngene .* other settings \\(lr\\)"):
        contrasts.contrast_rows(contrasts.read_folders([tmp_path / "a" / "runs.jsonl", tmp_path / "b" / "runs.jsonl"]))


def test_the_contrasts_are_drawn_again_from_stored_runs(tmp_path, capsys):
    from utils import draw_results
    write_runs(tmp_path / "individual" / "runs.jsonl", [(m, 10, t, 40.0 + t) for m in ("learngene", "probe-random")
                                                        for t in range(2)])
    write_runs(tmp_path / "source" / "runs.jsonl", [("learngene-joint", 10, t, 45.0 + t) for t in range(2)])
    args = ["--contrasts", str(tmp_path / "source"), str(tmp_path / "individual")]
    draw_results.main(args)
    md = (tmp_path / "source" / "contrasts.md").read_text()
    assert "| 10 | learngene-joint minus learngene | the joint source's layers" in md and "| 2 | +5.0 | ±0.0 |" in md
    for refused, message in ((args, "exists: pass --overwrite"),  # nothing replaced unasked
                             (["--contrasts", str(tmp_path / "individual"), "--out", str(tmp_path)],
                              "no contrast of the set has both of its rows' runs there")):
        with pytest.raises(SystemExit) as stop:
            draw_results.main(refused)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    # a knowledge study's contrasts and ladder, its rows at their own rates
    write_runs(tmp_path / "knowledge" / "runs.jsonl", [(m, 10, t, a + t) for m, a in (("scratch-collective", 40.0),
                                                                                      ("first4-collective", 43.0))
                                                       for t in range(2)])
    draw_results.main(["--contrasts", str(tmp_path / "knowledge"), "--contrast_set", "knowledge"])
    md = (tmp_path / "knowledge" / "contrasts.md").read_text()
    assert "| 10 | first4-collective minus scratch-collective |" in md and "| 2 | +3.0 | ±0.0 |" in md
    assert (tmp_path / "knowledge" / "ladder.png").read_bytes()[:4] == b"\x89PNG"


def test_each_methods_number_of_epochs_is_chosen_on_validation_tasks_at_its_own_rate(tmp_path, monkeypatch):
    """tuning.tune_epochs: the preset's schedule doubled while the longer gives a method a better validation
    accuracy (up to EPOCHS_TOP times), only the methods still improving train the next doubling, each at the rate it
    chose; a tie goes to the shorter."""
    calls, peak = [], {"scratch": 60, "learngene": 30, "finetune-collective": 240}
    tune = tmp_path / "tune-lr-knowledge"
    for lr in ("0.001", "0.005"):
        (tune / f"lr-{lr}").mkdir(parents=True)
        (tune / f"lr-{lr}" / "results.csv").write_text(
            "shots,method,final_acc\n" + "".join(f"{k},{m},{50 - abs(np.log2(30 / p))}\n" for m, p in peak.items()
                                                  for k in (10, 20)))

    def fake_stage(clock, name, script, args, done):
        args = list(map(str, args))
        calls.append(args)
        of = dict(a.split("=") for a in args[args.index("--epochs_of") + 1:args.index("--num_works_tt")])
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("shots,method,final_acc\n" + "".join(
            f"10,{m},{50 - abs(np.log2(int(n) / peak[m])) if m != 'learngene' else 50.0}\n" for m, n in of.items()))

    monkeypatch.setattr(tuning, "stage", fake_stage)
    study = dataclasses.replace(pipeline.STUDIES["knowledge"], methods=tuple(peak))
    best_lr = {"scratch": "0.001", "learngene": "0.005", "finetune-collective": "0.001"}
    best, line = tuning.tune_epochs(None, "script.py", ["--path", "s"], ["--num_works_tt", "4"], tmp_path, study,
                                      best_lr, 30)
    assert best == {"scratch": 60, "learngene": 30, "finetune-collective": 120}  # 120: the top, 4 x 30
    trained = [(a[a.index("--methods") + 1:a.index("--lr_of")], a[a.index("--lr_of") + 1:a.index("--epochs_of")])
               for a in calls]
    assert trained == [(["scratch", "learngene", "finetune-collective"],
                        ["scratch=0.001", "learngene=0.005", "finetune-collective=0.001"]),
                       (["scratch", "finetune-collective"], ["scratch=0.001", "finetune-collective=0.001"])]
    assert all(a[a.index("--section") + 1] == "validation" for a in calls)
    assert "learngene: 30 50.0%, 60 50.0% -> 30" in line  # a tie: the shorter
