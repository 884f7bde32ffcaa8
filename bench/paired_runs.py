"""Two runs of the same individual stage compared run by run: the same tasks, seeds and initialisations under
another precision, machine or commit. Prints, per runs.jsonl, the mean accuracy of each and their paired
difference (mean and 95% interval over the runs both hold).

    python bench/paired_runs.py /tmp/quick-main/checkpoints/tiny-imagenet-100-quick \
        /tmp/quick-fp32/checkpoints/tiny-imagenet-100-quick
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import cli, require  # noqa: E402
from utils.runstore import key_of, records  # noqa: E402
from utils.stats import mean_ci95  # noqa: E402


def final_accuracies(path):
    """{(method, shots, task, seed): final accuracy in %} of a runs.jsonl (older files hold fractions)."""
    return {key_of(r): (1 if settings.get("accuracy_unit") == "percent" else 100) * r["final_acc"]
            for settings, r in records(path)}


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", metavar="RUNS", help="a folder holding runs.jsonl files (a pipeline's checkpoints/<dataset>-<preset>)")
    p.add_argument("b", metavar="RUNS", help="the same for the other run")
    args = p.parse_args(argv)
    a_root, b_root = Path(args.a), Path(args.b)
    found = sorted(f.relative_to(a_root) for f in a_root.rglob("runs.jsonl") if (b_root / f.relative_to(a_root)).exists())
    require(found, f"no runs.jsonl in {a_root} has a counterpart in {b_root}")
    for rel in found:
        a, b = final_accuracies(a_root / rel), final_accuracies(b_root / rel)
        keys = sorted(set(a) & set(b))
        diff, half = mean_ci95([a[k] - b[k] for k in keys])
        print(f"{rel.parent}: {len(keys)} paired runs; a {sum(a[k] for k in keys) / len(keys):.1f}%, "
              f"b {sum(b[k] for k in keys) / len(keys):.1f}%; a - b = {diff:+.2f} +- {half:.2f} points (95%), mean "
              f"|a - b| {sum(abs(a[k] - b[k]) for k in keys) / len(keys):.2f}")


if __name__ == "__main__":
    main()
