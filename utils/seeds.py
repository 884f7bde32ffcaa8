"""How much the headline rows move with the source's own training run (the seed study): the collective model trained
again with another seed on the same split and schedule, and from it the rows that carry the argument (the learngene
and the whole fine-tune; scratch and the capacity control read no source weight, so their runs are the same). Each
source's rows are paired per target task against scratch and against the capacity control; the two sources side by
side, then their mean: per task the mean of the two sources' differences, its interval over tasks (so it counts the
target tasks' spread, not the sources': two sources give no interval of their own)."""
import math
from pathlib import Path

from utils.files import write_csv, write_text
from utils.stats import mean_ci95, per_task

ROWS = ("learngene", "finetune-collective")
AGAINST = ("scratch", "scratch-collective")
HEADER = ["shots", "method", "against", "source", "tasks", "diff", "diff_ci95"]


def table_rows(runs_by_source):
    """HEADER rows: per shot count, row and baseline, each source's paired difference and then 'mean of sources'."""
    rows = []
    shots = sorted({key.shots for runs in runs_by_source.values() for key in runs})
    for k in shots:
        for method in ROWS:
            for against in AGAINST:
                per_source = {s: per_task(runs, method, k, against) for s, runs in runs_by_source.items()}
                per_source = {s: d for s, d in per_source.items() if d}
                for s, diffs in per_source.items():
                    rows.append([k, method, against, s, len(diffs), *mean_ci95(list(diffs.values()))])
                if len(per_source) > 1:
                    tasks = set.intersection(*(set(d) for d in per_source.values()))
                    mean = [sum(d[t] for d in per_source.values()) / len(per_source) for t in sorted(tasks)]
                    rows.append([k, method, against, "mean of sources", len(tasks), *mean_ci95(mean)])
    return rows


def report(out, runs_by_source, title, prov):
    """seeds.csv and results.md in `out`; returns the rows."""
    rows = table_rows(runs_by_source)
    write_csv(Path(out) / "seeds.csv", HEADER, rows, prov)
    lines = [f"#### {title}: the headline rows from each source run", "",
             "Paired difference per target task (points), its mean and 95% interval over tasks, for each collective "
             "run (its seed) and for their mean per task. Scratch and the capacity control read no source weight: "
             "their runs are the same for every source.", "",
             "| shots | row | against | source | tasks | difference | 95% CI |", "|---:|---|---|---|---:|---:|---:|"]
    lines += [f"| {k} | {m} | {a} | {s} | {n} | {d:+.1f} | " + ("n/a" if math.isnan(ci) else f"±{ci:.1f}") + " |"
              for k, m, a, s, n, d, ci in rows]
    write_text(Path(out) / "results.md", "\n".join(lines) + "\n")
    return rows
