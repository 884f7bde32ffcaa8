"""The source-budget study: does the learngene's value change with how long its source was trained?

The collective model is trained again at other budgets on the same split (epochs per task; and, at the preset's
epochs, larger learning rates, of which the one whose training loss converges with the best held-out accuracy is
kept: the paper's "until the loss converges", reached sooner, chosen on the source's held-out images and never on a
target task). At every point the same target tasks are trained from that point's learngene and collective model,
each run paired against scratch, which reads no source: it is trained once and reused at every point
(utils/runstore.py), as are the runs of the preset's own budget. This module turns the points' runs and source
measurements into the study's table, CSV, figure and trend; the pipeline (pipeline.py, study `budget`) trains them.

The x axis of every figure and fit is the images the source saw before its learngene was cut: the sum over the
tasks up to the extraction task of the task's images times the epochs. The trend is a straight line in log10 of
that number, fitted per target task to the paired differences of the points at the preset's learning rate, so
that the tasks stay the independent samples: the slope per tenfold more training and the line's value at the
paper's budget are the means over tasks with Student-t 95% intervals (an extrapolation of that model, no more)."""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import readback, source, study_figures
from utils.cli import INDEX, require
from utils.files import write_csv, write_json, write_text
from utils.methods import BASELINE
from utils.repro import provenance_lines
from utils.runstore import read_runs
from utils.stats import mean_ci95, per_task

# the paper's source before extraction: tasks 0-20 of CIFAR-100, 100 epochs each of 3,000 images (600 x 5 classes)
PAPER_IMAGES = 21 * 100 * 3000
# a task's training loss has converged when its last epoch lowers it by less than this many nats (about 3% of
# ln 5 = 1.61, the loss of a uniform guess among a task's 5 classes). Absolute, not relative: a task fitted to a
# loss near 0 keeps shrinking it by a steady fraction per epoch, and the loss is measured on augmented batches
# with dropout on, so a relative tolerance there reads noise.
CONVERGED_DROP = 0.05
METHODS = ("scratch", "learngene", "finetune-collective", "probe-collective", "learngene-permuted")
HEADER = ["point", "epochs_per_task", "lr", "images_seen", "extraction_task", "tasks_converged", "tasks_trained",
          "source_average_accuracy", "source_just_learned_accuracy", "source_features_nearest_mean",
          "random_features_nearest_mean", "learngene_layers", "shots", "method", "tasks", "accuracy",
          "diff_vs_scratch", "diff_ci95"]


@dataclass(frozen=True)
class Point:
    """One source: the collective model trained for `epochs` per task at learning rate `lr`. role: "preset" (the
    preset's own collective model), "epochs" (another budget at the preset's lr) or "lr" (a learning-rate
    candidate at the preset's epochs)."""
    epochs: int
    lr: float
    role: str

    @property
    def tag(self):
        return f"epochs-{self.epochs}-lr-{self.lr:g}"


def plan(epochs, lr, budget):
    """The points of a preset whose collective stage trains `epochs` per task at `lr`, and whose `budget` entry
    lists other epochs and learning-rate candidates; the preset's point first."""
    return ([Point(epochs, lr, "preset")] + [Point(e, lr, "epochs") for e in budget["epochs"] if e != epochs]
            + [Point(epochs, r, "lr") for r in budget["lrs"] if r != lr])


def images_seen(manifest, extraction_task, epochs):
    """Images the source trained on before its learngene was cut (counting each epoch's pass)."""
    return epochs * sum(sum(len(v) for v in task["samples"].values())
                        for task in manifest["continual"][:extraction_task + 1])


def last_epoch_drops(metrics_csv):
    """Per task, how much its last epoch lowered the training loss, loss[-2] - loss[-1] (nats); nan for a task
    trained one epoch."""
    by_task = {}
    for row in readback.read_table(metrics_csv, {"task": INDEX, "loss": float}, "collective run's metrics"):
        by_task.setdefault(row["task"], []).append(row["loss"])
    return [l[-2] - l[-1] if len(l) > 1 else float("nan") for _, l in sorted(by_task.items())]


def converged_tasks(drops):
    return sum(1 for d in drops if d < CONVERGED_DROP)


def choose_lr(candidates):
    """The learning-rate point kept, from {Point: (held-out summary, last-epoch drops)}: among the candidates whose
    every task converged, the best nearest-class-mean accuracy of the features on the held-out images at the
    extraction task; if none converged, the best of all, said so. Returns (point, a line saying why)."""
    def score(p):
        return candidates[p][0]["features"]["nearest_mean_accuracy"]
    done = [p for p, (_, drops) in candidates.items() if converged_tasks(drops) == len(drops)]
    pool = done or list(candidates)
    best = max(pool, key=score)
    scores = ", ".join(f"lr {p.lr:g}: {score(p):.1f}% ({converged_tasks(d)}/{len(d)} tasks converged)"
                       for p, (_, d) in candidates.items())
    why = ("the best held-out feature accuracy among those whose every task converged" if done else
           "no candidate's every task converged: the best held-out feature accuracy of all")
    return best, f"learning rate at {best.epochs} epochs per task, held-out features (nearest class mean): {scores} " \
                 f"-> lr {best.lr:g}, {why} (a task converged: its last epoch lowers its training loss by less " \
                 f"than {CONVERGED_DROP:g} nats)"


def point_record(point, run_dir, manifest):
    """What the study reads of one point's collective run: its budget, convergence and held-out measurements."""
    run_dir = Path(run_dir)
    held = source.read_summary(run_dir)
    require(held is not None, f"{run_dir} has no heldout_summary.json: the source budget is read on held-out images")
    drops = last_epoch_drops(run_dir / "metrics.csv")
    task = held["extraction"]["after_task"]
    return {"point": point.tag, "epochs_per_task": point.epochs, "lr": point.lr, "role": point.role,
            "images_seen": images_seen(manifest, task, point.epochs), "extraction_task": task,
            "tasks_converged": converged_tasks(drops), "tasks_trained": len(drops),
            "source_average_accuracy": held["extraction"]["average_accuracy"],
            "source_just_learned_accuracy": held["extraction"]["just_learned_accuracy"],
            "source_features_nearest_mean": held["features"]["nearest_mean_accuracy"],
            "random_features_nearest_mean": held["features"]["random_network_nearest_mean_accuracy"]}


def paired(runs, methods=METHODS):
    """{(shots, method): {task: paired difference against scratch}} and {(shots, method): {task: accuracy}}."""
    shots = sorted({k.shots for k in runs})
    diffs = {(k, m): per_task(runs, m, k, BASELINE) for k in shots for m in methods if m != BASELINE}
    accs = {(k, m): per_task(runs, m, k) for k in shots for m in methods}
    return {key: v for key, v in diffs.items() if v}, {key: v for key, v in accs.items() if v}


def trend(xs, per_point_diffs):
    """A line diff = a + b log10(x) fitted per task to the points (x, {task: diff}); returns (slope per tenfold
    mean, ci95, value at PAPER_IMAGES mean, ci95, tasks), over the tasks every point has. None with fewer than two
    points or two tasks."""
    tasks = sorted(set.intersection(*(set(d) for d in per_point_diffs))) if per_point_diffs else []
    if len(xs) < 2 or len(tasks) < 2:
        return None
    logx = np.log10(np.asarray(xs, dtype=float))
    slopes, at_paper = [], []
    for t in tasks:
        b, a = np.polyfit(logx, [d[t] for d in per_point_diffs], 1)
        slopes.append(b)
        at_paper.append(a + b * math.log10(PAPER_IMAGES))
    return (*mean_ci95(slopes), *mean_ci95(at_paper), len(tasks))


def study_rows(records, runs_by_point):
    """The CSV's rows: one per point, shot count and method, in HEADER's order."""
    rows = []
    for rec in records:
        diffs, accs = paired(runs_by_point[rec["point"]])
        for (k, m), by_task in sorted(accs.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
            acc, _ = mean_ci95(list(by_task.values()))
            d = diffs.get((k, m))
            diff, ci = mean_ci95(list(d.values())) if d else ("", "")
            layers = next((r["inherited_layers"] for key, r in runs_by_point[rec["point"]].items()
                           if key.method == "learngene"), None)
            rows.append({**{h: rec[h] for h in HEADER[:11]}, "learngene_layers": "-".join(map(str, layers or [])),
                         "shots": k, "method": m, "tasks": len(by_task), "accuracy": acc, "diff_vs_scratch": diff,
                         "diff_ci95": ci})
    return rows


def report(out, records, target_dirs, lr_note, name, prov):
    """budget.csv, results.md and budget.png in `out` from the points' records (point_record, the preset's
    first; the lr point kept last) and their target runs ({tag: folder with runs.jsonl}); returns the markdown."""
    out = Path(out)
    runs_by_point = {rec["point"]: read_runs(Path(target_dirs[rec["point"]]) / "runs.jsonl") for rec in records}
    rows = study_rows(records, runs_by_point)
    write_csv(out / "budget.csv", HEADER, [[r[h] for h in HEADER] for r in rows], prov)
    series = sorted((r for r in records if r["role"] != "lr"), key=lambda r: r["images_seen"])
    trends = {}
    for k in sorted({r["shots"] for r in rows}):
        for m in METHODS[1:]:
            per_point = [paired(runs_by_point[r["point"]])[0].get((k, m), {}) for r in series]
            if all(per_point):
                trends[(k, m)] = trend([r["images_seen"] for r in series], per_point)
    write_json(out / "trend.json", {f"{k}-shot {m}": dict(zip(("slope_per_tenfold", "slope_ci95", "at_paper_budget",
                                                               "at_paper_ci95", "tasks"), t))
                                    for (k, m), t in trends.items() if t})
    draw(out / "budget.png", rows, records, name, prov)
    md = markdown(rows, records, trends, lr_note, prov)
    write_text(out / "results.md", md)
    return md


def _signed(v, ci):
    if v == "":
        return "-"
    value = f"{v:+.1f}"
    value = "+0.0" if value == "-0.0" else value  # a difference that rounds to zero has no sign
    return value if math.isnan(ci) else f"{value} ±{ci:.1f}"


def markdown(rows, records, trends, lr_note, prov):
    shots = sorted({r["shots"] for r in rows})
    by = {(r["point"], r["shots"], r["method"]): r for r in rows}
    lines = ["The collective model trained again at other budgets on the same split; every point is read on the same "
             "target tasks. Images seen: the source's training images up to the extraction task, counted once per "
             "epoch. The source on held-out images of its classes at the extraction task (%): average accuracy "
             "over the tasks so far and just-learned accuracy through its shared head (5-way), and the nearest class "
             "mean on its frozen conv features (a random network of the same widths in brackets).", "",
             "| point | epochs/task | lr | images seen | tasks converged | average acc. | just learned | features "
             "(random) | learngene layers |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for rec in records:
        layers = next((r["learngene_layers"] for r in rows if r["point"] == rec["point"]), "") or "-"
        lines.append(f"| {rec['point']} ({rec['role']}) | {rec['epochs_per_task']} | {rec['lr']:g} | "
                     f"{rec['images_seen']:,} | {rec['tasks_converged']}/{rec['tasks_trained']} | "
                     f"{rec['source_average_accuracy']:.1f} | {rec['source_just_learned_accuracy']:.1f} | "
                     f"{rec['source_features_nearest_mean']:.1f} ({rec['random_features_nearest_mean']:.1f}) | "
                     f"{layers} |")
    lines += ["", lr_note + ".", "",
              "Each method minus scratch on the target tasks, paired per task (points; mean ± 95% interval over "
              "tasks); scratch reads no source, so its runs are the same at every point.", "",
              "| point | shots | scratch (%) | " + " | ".join(METHODS[1:]) + " |",
              "|---|---:|---:|" + "---:|" * (len(METHODS) - 1)]
    for rec in records:
        for k in shots:
            base = by.get((rec["point"], k, BASELINE))
            cells = [_signed(by[key]["diff_vs_scratch"], by[key]["diff_ci95"]) if (key := (rec["point"], k, m)) in by
                     else "-" for m in METHODS[1:]]
            lines.append(f"| {rec['point']} | {k} | {base['accuracy']:.1f} | " if base else f"| {rec['point']} | {k} | - | ")
            lines[-1] += " | ".join(cells) + " |"
    lines.append("")
    if trends:
        lines += [f"Trend over the points at the preset's learning rate, a line in log10(images seen) fitted per "
                  f"target task: slope in points per tenfold more source training, and the line's value at the "
                  f"paper's budget ({PAPER_IMAGES:,} images: tasks 0-20, 100 epochs of 3,000 images), an "
                  f"extrapolation of that straight line and of nothing else; mean over tasks ± 95% interval.", "",
                  "| shots | method | slope per tenfold (points) | at the paper's budget (points) | tasks |",
                  "|---:|---|---:|---:|---:|"]
        for (k, m), t in trends.items():
            if t:
                lines.append(f"| {k} | {m} | {_signed(t[0], t[1])} | {_signed(t[2], t[3])} | {t[4]} |")
        lines.append("")
    lines += provenance_lines(prov)
    return "\n".join(lines)


def draw(path, rows, records, name, prov):
    """Paired differences against scratch per method (one panel per shot count) and the source's held-out accuracy,
    against the images the source saw (log scale); the learning-rate point kept is drawn hollow."""
    diffs = {}
    for r in rows:
        if r["diff_vs_scratch"] != "":
            rec = next(x for x in records if x["point"] == r["point"])
            diffs.setdefault(r["shots"], {}).setdefault(r["method"], []).append(
                (r["images_seen"], r["diff_vs_scratch"], r["diff_ci95"], rec["role"] == "lr"))
    source = {label: [(rec["images_seen"], rec[key], rec["role"] == "lr") for rec in records]
              for label, key in (("average accuracy, tasks up to extraction (5-way head)", "source_average_accuracy"),
                                 ("just-learned accuracy (5-way head)", "source_just_learned_accuracy"),
                                 ("features, nearest class mean", "source_features_nearest_mean"),
                                 ("random network's features (floor)", "random_features_nearest_mean"))}
    lr_point = next((rec for rec in records if rec["role"] == "lr"), None)
    caption = [f"Hollow markers: the learning-rate point (lr {lr_point['lr']:g}, {lr_point['epochs_per_task']} "
               f"epochs per task); lines join the points at the preset's learning rate." if lr_point else
               "Lines join the points at the preset's learning rate."]
    study_figures.source_budget(path, diffs, source, f"{name}: the learngene's value against its source's training", prov,
                        caption)
