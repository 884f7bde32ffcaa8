"""The benchmark scripts run and write their tables (their figures are checked by reading them, not here)."""
import csv
import json

import pytest
import torch
from conftest import assert_clean_error, needs_tiny, run_script

from utils.engine import resolve_precision


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@needs_tiny
def test_throughput_bench(tiny_split, tmp_path):
    out = tmp_path / "throughput.csv"
    args = ["bench/throughput.py", "--path", tiny_split, "--batch_size", "16", "--steps", "2", "--warmup", "1",
            "--no-cuda", "--precision", "fp32", "--out", out]
    proc = run_script(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = rows(out)
    precisions = ("fp32", "bf16") if resolve_precision("auto", torch.device("cpu")) == "bf16" else ("fp32",)
    ours = [f"(b) this project, {p} {layout}" for p in precisions for layout in ("contiguous", "channels_last")]
    assert [r["path"] for r in table] == ["released data path alone (no model)"] + [
        f"{kind}, {w} widths" for w in ("base", "final")
        for kind in ("(a) released path, fp32 contiguous", *ours, "(b) + --judgement, fp32 contiguous")]
    assert all(float(r["images_per_s"]) > 0 for r in table)
    assert {r["dataset"] for r in table} == {"tiny-imagenet-100"} and all(r["commit"] for r in table)
    assert "this project (fp32, contiguous) / released" in proc.stdout
    assert ("bf16 / fp32" in proc.stdout) == ("bf16" in precisions)
    before = out.read_bytes()
    assert_clean_error(run_script(*args), "--overwrite")
    assert out.read_bytes() == before


@pytest.mark.slow
@needs_tiny
def test_individual_phase_bench(tiny_split, collective_run, tmp_path):
    out = tmp_path / "phase.csv"
    proc = run_script("bench/individual_phase.py", "--path", tiny_split, "--learngene", collective_run / "learngene.pt",
                      "--shots", "2", "--num_target_tasks", "1", "--epochs", "1", "--no-cuda", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = rows(out)
    assert int(row["runs"]) == 4 and float(row["sequential_s"]) > 0 and float(row["grouped_s"]) > 0
    # one epoch of the same runs, grouped or not: the same up to float summation order, a few test images at most
    # (a 5-way test set of 250 images here: 0.4 points each)
    assert float(row["max_acc_diff_points"]) <= 2


@pytest.mark.slow
@needs_tiny
def test_preset_costs_bench(tiny_split, tmp_path):
    """The bench measures every unit it projects with and writes a projection for every stage and study."""
    out = tmp_path / "costs.csv"
    proc = run_script("bench/preset_costs.py", "--path", tiny_split, "--preset", "cpu", "--epochs", "1", "--no-cuda",
                      "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = {r["quantity"]: float(r["value"]) for r in rows(out)}
    units = [f"{kind}_images_per_s_{w}" for kind in ("collective", "eval") for w in ("base", "final")]
    stages = ["collective", "measurements", "tune", "individual", "budget_collective", "budget_target", "source_joint",
              "source_target", *(f"{study}_{part}_{bound}" for study in ("tuned", "knowledge", "knowledge-joint", "inherit")
                                 for part in ("validation", "target") for bound in ("at_least", "at_most")),
              "seed_collective", "seed_target_at_least", "seed_target_at_most", "released"]
    assert all(table[q] > 0 for q in units + [f"projected_minutes_cpu_{s}" for s in stages])
    assert {q for q in table if q.startswith("projected_minutes_")} == {f"projected_minutes_cpu_{s}" for s in stages}
    assert "source measurements (50 held-out images per class)" in proc.stdout
    for study in ("tuned", "knowledge", "knowledge-joint", "inherit"):  # an upper bound is never below its lower
        for part in ("validation", "target"):
            assert table[f"projected_minutes_cpu_{study}_{part}_at_most"] >= table[f"projected_minutes_cpu_{study}_{part}_at_least"]


def test_paired_runs_pairs_by_run_and_reads_either_unit(tmp_path):
    def write(folder, accs, percent):
        (folder / "individual").mkdir(parents=True)
        lines = [json.dumps({"settings": {"accuracy_unit": "percent"} if percent else {},
                             "result": {"method": "scratch", "shots": 10, "task": t, "seed": 0, "final_acc": acc}})
                 for t, acc in enumerate(accs)]
        (folder / "individual" / "runs.jsonl").write_text("\n".join(lines) + "\n")
    write(tmp_path / "a", [50.0, 60.0, 70.0, 40.0], percent=True)
    write(tmp_path / "b", [0.45, 0.60, 0.60], percent=False)  # fractions; task 3 missing: not paired
    proc = run_script("bench/paired_runs.py", tmp_path / "a", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    # differences 5, 0, 10: mean 5, sd 5, t(2) = 4.303 -> half-width 4.303 * 5 / sqrt(3) = 12.42
    assert "individual: 3 paired runs on 3 tasks; a 60.0%, b 55.0%; a - b = +5.00 +- 12.42 points" in proc.stdout


def test_paired_runs_takes_the_task_as_its_unit():
    """Runs of one task share its images: averaged within the task first, the interval over tasks (two tasks whose
    runs differ by 0 and 0, and by 4 and 8: per task 0 and 6, mean 3, sd 4.243, t(1) = 12.706 -> 38.12), never
    over the four runs as if independent (which would give 3 +- 5.9)."""
    from bench.paired_runs import over_tasks
    diffs = {("scratch", 10, 0, 0): 0.0, ("learngene", 10, 0, 0): 0.0, ("scratch", 10, 1, 0): 4.0,
             ("learngene", 20, 1, 0): 8.0}
    diff, half, tasks = over_tasks(diffs)
    assert tasks == 2 and diff == pytest.approx(3.0) and half == pytest.approx(12.7062 * 6 / 2 ** 0.5 / 2 ** 0.5, rel=1e-4)


def test_study_projections_count_every_run_once():
    """The bench's projections of the budget and released studies, on hand-made unit costs: a collective model per
    budget point, the source-reading methods per epoch point (scratch reused), each released invocation once."""
    from bench.preset_costs import budget_projection, released_projection
    per_run = {k: {"scratch": 1 * f, "learngene": 2 * f, "finetune-collective": 3 * f, "probe-collective": 4 * f}
               for k, f in ((10, 1), (20, 2))}
    collective, target = budget_projection({"epochs": [2, 18], "lrs": [0.003, 0.01]}, 8, 10.0, 3, per_run)
    assert collective == 10.0 * (2 + 18 + 8 + 8)
    assert target == 2 * 3 * (2 + 3 + 4 + 2) * 3  # two epoch points, 3 tasks, the permuted learngene as costly
    # chained (learngene, scratch), three learngene runs, released scratch at 100/30 of its cost, chained scratch
    assert released_projection(3, 100, 30, 3, per_run) == pytest.approx(3 * 3 * (3 + 2 + 2 + 100 / 30 + 2 + 1))


def test_source_and_tuned_projections_count_every_run_once():
    """The source study: the joint source's presentations at the final widths' rate, then each control as costly as
    the method it mirrors (learngene and scratch reused). The tuned study: every method at every rate on the
    validation tasks but the learngene at the default rate (the EWC tuning's), then at most every method once more
    on the target tasks."""
    from bench.preset_costs import source_projection, tuned_projection
    per_run = {k: {"scratch": 1 * f, "learngene": 2 * f, "finetune-collective": 3 * f, "probe-collective": 4 * f}
               for k, f in ((10, 1), (20, 2))}
    joint, target = source_projection(6000, 20.0, 3, per_run)
    assert joint == 300.0
    # frozen, permuted and joint learngene (2 each), the joint fine-tune (3) and probe (4); both shot counts (x 3)
    assert target == 3 * (2 + 2 + 2 + 3 + 4) * 3
    (low, high), (target_low, target_high) = tuned_projection(3, 4, 20, per_run, ("scratch", "learngene",
                                                                                 "finetune-collective"))
    rates = 4 * (3 * (1 + 2 + 3) * 3 - 2 * 3)
    # then the schedule's doublings at the chosen rates: 60 epochs (2x) at least, 60 and 120 (2x + 4x) at most
    assert low == rates + 4 * 2 * (1 + 2 + 3) * 3 and high == rates + 4 * (2 + 4) * (1 + 2 + 3) * 3
    assert target_low == 20 * (1 + 2 + 3) * 3 and target_high == 4 * target_low
    # a row of the source's architecture costs as the fine-tune, the lightweight model as the learngene
    assert tuned_projection(3, 4, 20, per_run, ("first4-collective", "learngene-full"))[1][0] == 20 * (3 + 2) * 3


def test_source_measurements_read_every_checkpoint_on_every_task_and_the_features_at_extraction():
    """The collective stage's measurements: each of the tasks' checkpoints (at its own widths' eval rate) on every
    task's held-out images, then the extraction model's and a random network's features on the tasks up to the
    extraction (training and held-out images); the joint source reads the same tasks through its head and its
    features."""
    from bench.preset_costs import measurement_projection
    from utils.models import WIDENING
    rates = {"base": 100.0, "final": 100.0 / 3}  # 0.01 s per image at base widths, 0.03 at final
    collective, joint = measurement_projection(3, 1, 2, 1000, 10, rates)
    per_image = [0.01 + 0.02 * min(t, 2) / max(WIDENING) for t in range(3)]
    assert collective == pytest.approx(3 * 50 * sum(per_image) + 2 * 2 * 1050 * per_image[1])
    assert joint == pytest.approx(2 * 50 * per_image[1] + 2 * 1050 * per_image[1])


def test_paired_runs_compares_two_files_method_by_method(tmp_path):
    """Two runs.jsonl files (a study at other settings against the individual study's runs), a line per method and
    shot count, each paired over the tasks both files hold."""
    def write(name, accs):
        lines = [json.dumps({"settings": {"accuracy_unit": "percent"},
                             "result": {"method": m, "shots": 10, "task": t, "seed": 0, "final_acc": acc}})
                 for m, row in accs.items() for t, acc in enumerate(row)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return tmp_path / name
    a = write("a.jsonl", {"scratch": [50.0, 60.0, 70.0], "learngene": [40.0, 40.0]})
    b = write("b.jsonl", {"scratch": [45.0, 60.0, 60.0], "learngene": [40.0, 40.0, 99.0]})
    proc = run_script("bench/paired_runs.py", a, b, "--by_method")
    assert proc.returncode == 0, proc.stderr
    assert "scratch 10-shot: 3 paired runs on 3 tasks; a 60.0%, b 55.0%; a - b = +5.00 +- 12.42 points" in proc.stdout
    assert "learngene 10-shot: 2 paired runs on 2 tasks; a 40.0%, b 40.0%; a - b = +0.00 +- 0.00 points" in proc.stdout
