"""The benchmark scripts run and write their tables (their figures are checked by reading them, not here)."""
import csv

from conftest import assert_clean_error, needs_tiny, run_script


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@needs_tiny
def test_throughput_bench(tiny_split, tmp_path):
    out = tmp_path / "throughput.csv"
    args = ["bench/throughput.py", "--path", tiny_split, "--batch_size", "16", "--steps", "2", "--warmup", "1",
            "--no-cuda", "--precision", "fp32", "--out", out]
    proc = run_script(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = rows(out)
    assert [r["path"] for r in table] == ["released data path alone (no model)"] + [
        f"{kind}, {w} widths" for w in ("base", "final")
        for kind in ("(a) released path", "(b) this project fp32", "(b) this project bf16", "(b) fp32 + --judgement")]
    assert all(float(r["images_per_s"]) > 0 for r in table)
    assert {r["dataset"] for r in table} == {"tiny-imagenet-100"} and all(r["commit"] for r in table)
    assert "bf16 / fp32" in proc.stdout and "this project (fp32) / released" in proc.stdout
    before = out.read_bytes()
    assert_clean_error(run_script(*args), "--overwrite")
    assert out.read_bytes() == before


@needs_tiny
def test_individual_phase_bench(tiny_split, collective_run, tmp_path):
    out = tmp_path / "phase.csv"
    proc = run_script("bench/individual_phase.py", "--path", tiny_split, "--learngene", collective_run / "learngene.pt",
                      "--shots", "2", "--tasks", "1", "--epochs", "1", "--no-cuda", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = rows(out)
    assert int(row["runs"]) == 4 and float(row["sequential_s"]) > 0 and float(row["batched_s"]) > 0
    assert float(row["max_acc_diff"]) <= 0.2  # one 5-way test set: at most a few images apart (float order)
