"""Two runs of the same individual stage compared run by run: the same tasks, seeds and initialisations under
another precision, machine or commit. Prints, per runs.jsonl, the mean accuracy of each and their paired
difference (mean and 95% interval over the tasks both hold: a task's runs are averaged first). Two runs.jsonl files are compared directly, e.g. a
study's runs at other settings against the individual study's (--by_method: a line per method and shot count).

    python bench/paired_runs.py /tmp/quick-main/checkpoints/tiny-imagenet-100-quick \
        /tmp/quick-fp32/checkpoints/tiny-imagenet-100-quick
    python bench/paired_runs.py <work>/tuned/runs.jsonl <work>/individual/runs.jsonl --by_method
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
    p.add_argument("a", metavar="RUNS", help="a folder holding runs.jsonl files (a pipeline's checkpoints/<dataset>-<preset>), "
                   "or one runs.jsonl")
    p.add_argument("b", metavar="RUNS", help="the same for the other run")
    p.add_argument("--by_method", action="store_true", help="a line per method and shot count instead of one per file")
    args = p.parse_args(argv)
    a_root, b_root = Path(args.a), Path(args.b)
    if a_root.is_file() and b_root.is_file():
        found = [(a_root.parent.name, a_root, b_root)]
    else:
        found = [(f.relative_to(a_root).parent, f, b_root / f.relative_to(a_root)) for f in sorted(a_root.rglob("runs.jsonl"))
                 if (b_root / f.relative_to(a_root)).exists()]
    require(found, f"no runs.jsonl in {a_root} has a counterpart in {b_root}")
    for label, a_file, b_file in found:
        a, b = final_accuracies(a_file), final_accuracies(b_file)
        groups = {}
        for k in sorted(set(a) & set(b)):  # key_of: (method, shots, task, seed)
            groups.setdefault(f"{label} {k[0]} {k[1]}-shot" if args.by_method else str(label), []).append(k)
        require(groups, f"{a_file} and {b_file} hold no run in common")
        for name, keys in groups.items():
            diff, half, tasks = over_tasks({k: a[k] - b[k] for k in keys})
            print(f"{name}: {len(keys)} paired runs on {tasks} tasks; a {sum(a[k] for k in keys) / len(keys):.1f}%, "
                  f"b {sum(b[k] for k in keys) / len(keys):.1f}%; a - b = {diff:+.2f} +- {half:.2f} points (95% "
                  f"over tasks), mean |a - b| {sum(abs(a[k] - b[k]) for k in keys) / len(keys):.2f}")


def over_tasks(diffs):
    """Mean paired difference and its 95% half-width with the task as the unit: runs of one task (its methods, shot
    counts and seeds) share its classes and images, so they are averaged within the task first, never counted as
    independent. Returns (mean, half-width, number of tasks); the half-width is nan with one task."""
    per_task = {}
    for k, d in diffs.items():  # key_of: (method, shots, task, seed)
        per_task.setdefault(k[2], []).append(d)
    diff, half = mean_ci95([sum(v) / len(v) for v in per_task.values()])
    return diff, half, len(per_task)


if __name__ == "__main__":
    main()
