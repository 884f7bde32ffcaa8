"""The source-budget study's arithmetic (utils/budget.py), checked by hand: its points, the images a source saw,
the convergence rule, the learning rate kept (on held-out images only), the per-task trend and its extrapolation,
and the table and figure from stored runs. The study run end to end is in test_pipeline.py."""
import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from utils import budget
from utils.budget import Point
from utils.files import write_csv


def test_plan_puts_the_preset_first_and_varies_one_thing_at_a_time():
    points = budget.plan(8, 0.001, {"epochs": [2, 8, 18], "lrs": [0.01, 0.001]})
    assert points == [Point(8, 0.001, "preset"), Point(2, 0.001, "epochs"), Point(18, 0.001, "epochs"),
                      Point(8, 0.01, "lr")]
    assert [p.tag for p in points] == ["epochs-8-lr-0.001", "epochs-2-lr-0.001", "epochs-18-lr-0.001",
                                       "epochs-8-lr-0.01"]


def test_images_seen_counts_the_tasks_up_to_the_extraction_once_per_epoch():
    manifest = {"continual": [{"samples": {"a": [1, 2, 3], "b": [4, 5]}}, {"samples": {"c": [6] * 7}},
                              {"samples": {"d": [7] * 100}}]}
    assert budget.images_seen(manifest, 1, 4) == 4 * (5 + 7)  # task 2 comes after the extraction: not counted
    assert budget.images_seen(manifest, 2, 1) == 112


def write_metrics(path, losses_by_task):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "epoch", "loss", "accuracy"])
        for t, losses in enumerate(losses_by_task):
            for e, loss in enumerate(losses):
                w.writerow([t, e, loss, 0.5])


def test_convergence_reads_each_tasks_last_epoch(tmp_path):
    write_metrics(tmp_path / "m.csv", [[2.0, 1.0, 0.97], [2.0, 1.0, 0.8], [1.5]])
    drops = budget.last_epoch_drops(tmp_path / "m.csv")
    assert drops[0] == pytest.approx(0.03) and drops[1] == pytest.approx(0.2) and math.isnan(drops[2])
    assert budget.converged_tasks(drops) == 1  # 0.03 < 0.05 nats; 0.2 is still learning; one epoch says nothing
    write_metrics(tmp_path / "m.csv", [[2.0, 0.02, 0.01]])  # halved, but a loss near 0 has converged
    assert budget.converged_tasks(budget.last_epoch_drops(tmp_path / "m.csv")) == 1


def summary(ncm):
    return {"features": {"nearest_mean_accuracy": ncm}}


def test_the_learning_rate_kept_is_the_best_held_out_one_that_converged():
    slow, fast, faster = Point(8, 0.001, "preset"), Point(8, 0.01, "lr"), Point(8, 0.1, "lr")
    kept, note = budget.choose_lr({slow: (summary(60.0), [0.2, 0.01]), fast: (summary(50.0), [0.01, 0.02]),
                                   faster: (summary(45.0), [0.0, 0.04])})
    assert kept == fast  # the slow one scores higher on held-out images but its loss had not converged
    assert "lr 0.01, the best held-out feature accuracy among those whose every task converged" in note
    kept, note = budget.choose_lr({slow: (summary(60.0), [0.2]), fast: (summary(50.0), [0.1])})
    assert kept == slow and "no candidate's every task converged" in note


def test_the_learning_rate_is_chosen_without_a_target_task():
    """choose_lr is given the sources' held-out summaries and training losses, nothing else: no target run can
    enter the choice."""
    import inspect
    assert list(inspect.signature(budget.choose_lr).parameters) == ["candidates"]


def test_trend_fits_a_line_per_task_and_averages_over_tasks():
    xs = [1e4, 1e5, 1e6]
    a, b = np.array([1.0, -1.0, 0.5]), np.array([2.0, 4.0, 0.0])  # per task: diff = a + b log10(x)
    per_point = [{t: a[t] + b[t] * math.log10(x) for t in range(3)} for x in xs]
    slope, slope_ci, at_paper, at_ci, tasks = budget.trend(xs, per_point)
    assert tasks == 3
    assert slope == pytest.approx(2.0) and slope_ci == pytest.approx(4.303 * np.std(b, ddof=1) / math.sqrt(3))
    paper = a + b * math.log10(budget.PAPER_IMAGES)
    assert at_paper == pytest.approx(paper.mean()) and at_ci == pytest.approx(4.303 * np.std(paper, ddof=1) / 3 ** .5)
    assert budget.trend(xs[:1], per_point[:1]) is None  # one point has no slope


def test_trend_uses_only_the_tasks_every_point_has():
    per_point = [{0: 0.0, 1: 1.0, 2: 5.0}, {0: 1.0, 1: 2.0}]
    *_, tasks = budget.trend([10, 100], per_point)
    assert tasks == 2


def write_runs(path, accs):
    """A runs.jsonl of {(method, shots, task): final accuracy}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for (m, k, t), acc in accs.items():
            f.write(json.dumps({"settings": {}, "result": {"method": m, "shots": k, "task": t, "seed": 0,
                                                           "final_acc": acc, "inherited_layers": [10, 11, 12]}}) + "\n")


def record(tag, role, images, ncm):
    return {"point": tag, "epochs_per_task": 1, "lr": 0.001, "role": role, "images_seen": images,
            "extraction_task": 5, "tasks_converged": 0, "tasks_trained": 6, "source_average_accuracy": 30.0,
            "source_just_learned_accuracy": 60.0, "source_features_nearest_mean": ncm,
            "random_features_nearest_mean": 40.0}


def test_report_pairs_every_point_against_the_same_scratch_runs(tmp_path):
    scratch = {("scratch", k, t): 50.0 + t for k in (10, 20) for t in range(3)}
    targets = {}
    for tag, gain in (("small", -2.0), ("large", 1.0)):
        targets[tag] = tmp_path / tag
        write_runs(tmp_path / tag / "runs.jsonl", {**scratch, **{(m, k, t): 50.0 + t + gain + (t - 1)
                                                                 for m in budget.METHODS[1:] for k in (10, 20)
                                                                 for t in range(3)}})
    records = [record("small", "preset", 1000, 45.0), record("large", "epochs", 10000, 50.0)]
    md = budget.report(tmp_path / "out", records, targets, "lr note", "test",
                       {"commit": "c", "device": "cpu", "time_utc": "now", "command": "python x.py", "torch": "2"})
    with open(tmp_path / "out" / "budget.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * len(budget.METHODS) and {(r["commit"], r["command"]) for r in rows} == {("c", "python x.py")}
    learngene = {r["point"]: r for r in rows if r["method"] == "learngene" and r["shots"] == "10"}
    # per task t the difference is gain + (t - 1): mean gain, interval t(2) * 1 / sqrt(3)
    assert float(learngene["small"]["diff_vs_scratch"]) == pytest.approx(-2.0)
    assert float(learngene["large"]["diff_vs_scratch"]) == pytest.approx(1.0)
    assert float(learngene["large"]["diff_ci95"]) == pytest.approx(4.303 / math.sqrt(3))
    assert {r["diff_vs_scratch"] for r in rows if r["method"] == "scratch"} == {""}
    trend = json.loads((tmp_path / "out" / "trend.json").read_text())["10-shot learngene"]
    assert trend["slope_per_tenfold"] == pytest.approx(3.0) and trend["slope_ci95"] == pytest.approx(0.0, abs=1e-9)
    assert "| small (preset) |" in md and "lr note." in md and "slope per tenfold" in md
    with Image.open(tmp_path / "out" / "budget.png") as img:
        assert img.width > 1000 and img.height > 300


def test_each_methods_learning_rate_is_its_best_on_the_validation_runs(tmp_path):
    """tuning.tune_lr's choice (report.best_learning_rates), from hand-made validation tables: per method the rate
    of the best mean final accuracy over its rows, a tie to the smaller rate."""
    from utils import report
    accs = {"0.001": {"scratch": (40, 44), "learngene": (50, 50)}, "0.005": {"scratch": (45, 47), "learngene": (49, 51)},
            "0.02": {"scratch": (46, 45), "learngene": (30, 20)}}
    for lr, by_method in accs.items():
        rows = [[k, m, a] for m, pair in by_method.items() for k, a in zip((10, 20), pair)]
        write_csv(tmp_path / f"lr-{lr}" / "results.csv", ["shots", "method", "final_acc"], rows)
    best, line = report.best_learning_rates(tmp_path, list(accs), ["scratch", "learngene"])
    assert best == {"scratch": "0.005", "learngene": "0.001"}  # 46.0 beats 45.5; 50.0 ties 50.0: the smaller
    assert "scratch: 0.001 42.0%, 0.005 46.0%, 0.02 45.5% -> 0.005" in line
