"""The whole pipeline (pipeline.py --preset smoke) on the real offline images: every stage, the table, the
stage times, resuming, and refusing to overwrite results."""
import csv
import json

import pytest
from conftest import TINY, assert_clean_error, needs_tiny, run_script

STAGES = ["split", "collective", "tune-ewc lambda=40000", "tune-ewc lambda=400", "tune-ewc lambda=4", "individual"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    root = tmp_path_factory.mktemp("pipeline")
    proc = run_script("pipeline.py", "--preset", "smoke", "--root", root, "--no-cuda")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@needs_tiny
def test_pipeline_writes_the_table_and_stage_times(smoke):
    md = (smoke / "results" / "tiny-imagenet-100-smoke.md").read_text()
    with open(smoke / "results" / "tiny-imagenet-100-smoke.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {"learngene", "learngene-noewc", "scratch", "other-layers", "finetune-collective"}
    assert {(r["shots"], r["method"]) for r in rows} == {(k, m) for k in ("10", "20") for m in methods}
    assert all(int(r["runs"]) == 2 for r in rows)
    for suffix in ("-curves.png", "-heatmap.png"):
        assert (smoke / "results" / f"tiny-imagenet-100-smoke{suffix}").read_bytes()[:4] == b"\x89PNG"
    times = json.loads((smoke / "checkpoints" / "tiny-imagenet-100-smoke" / "stage_times.json").read_text())
    assert list(times) == STAGES and all(s > 0 for s in times.values())
    for name in STAGES:
        assert f"| {name} | {times[name]:.0f} |" in md
    assert "EWC lambda chosen on the validation" in md and "Provenance" in md


@needs_tiny
def test_pipeline_resumes_and_keeps_results(smoke):
    md = smoke / "results" / "tiny-imagenet-100-smoke.md"
    before = md.read_bytes()
    proc = run_script("pipeline.py", "--preset", "smoke", "--root", smoke, "--no-cuda")
    assert_clean_error(proc, "--overwrite")
    assert md.read_bytes() == before

    times_file = smoke / "checkpoints" / "tiny-imagenet-100-smoke" / "stage_times.json"
    times = json.loads(times_file.read_text())
    proc = run_script("pipeline.py", "--preset", "smoke", "--root", smoke, "--no-cuda", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in STAGES[:-1]:
        assert f"[{name}] done already" in proc.stdout
    assert "20 runs already" in proc.stdout and "0 to go" in proc.stdout  # the individual stage resumed
    again = json.loads(times_file.read_text())
    assert {k: again[k] for k in STAGES[:-1]} == {k: times[k] for k in STAGES[:-1]}
    assert again["individual"] > times["individual"]  # the time spent rechecking is added, not lost
    assert md.read_bytes() != before  # rewritten (this invocation's wall-clock time and the stage times)


def test_pipeline_bad_data_is_a_clean_error(tmp_path):
    proc = run_script("pipeline.py", "--preset", "smoke", "--root", tmp_path, "--data", tmp_path / "nowhere")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()
