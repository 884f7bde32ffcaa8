"""The results of a study: the table (CSV and markdown), its provenance and its figures, from the stored runs."""
import math
from collections import Counter

import numpy as np

from utils import plots, readback
from utils.files import write_csv, write_json, write_text
from utils.methods import BASELINE, METHODS
from utils.repro import provenance
from utils.stats import curve, mean_ci95, per_task


OUTPUTS = ("results.md", "results.csv", "forest.png", "curves.png", "provenance.json")  # what summarize writes
TABLE_HEADER = ["shots", "method", "runs", "tasks", "final_acc", "ci95", "diff_vs_scratch", "diff_ci95", "diverged",
                "best_epoch_acc_test_selected", "parameters", "inherited_conv_layers", "train_seconds"]


def table_rows(runs):
    """One row per (shots, method) as TABLE_HEADER; accuracies in %, differences in points, CIs over tasks."""
    rows = []
    for k in sorted({key.shots for key in runs}):
        for m in [m for m in METHODS if any(key.method == m and key.shots == k for key in runs)]:
            rs = [r for key, r in runs.items() if key.method == m and key.shots == k]
            tasks = per_task(runs, m, k)
            final, ci = mean_ci95(list(tasks.values()))
            diffs = per_task(runs, m, k, BASELINE) if m != BASELINE else {}
            diff, diff_ci = mean_ci95(list(diffs.values())) if diffs else ("", "")
            best = float(np.mean([r["best_acc"] for r in rs]))
            layers = rs[0]["inherited_layers"]
            rows.append([k, m, len(rs), len(tasks), final, ci, diff, diff_ci, sum(bool(r.get("diverged")) for r in rs),
                         best, rs[0]["parameters"], "-".join(map(str, layers)) if layers else "",
                         sum(r["seconds"] for r in rs)])
    return rows


def summarize(out, runs, study, argv):
    """results.csv, results.md, curves.png and provenance.json for `runs`; returns the table's rows."""
    rows = table_rows(runs)
    write_csv(out / "results.csv", TABLE_HEADER, rows)
    inputs = study.inputs
    collective = inputs.collective
    prov = {**provenance(study.device, argv, study.seeds), "dataset": study.split.dataset,
            "split": str(study.split.path), "split_hash": study.split.hash, "learngene": inputs.learngene_path,
            "learngene_layers": inputs.learngene["layers"], "collective": collective["path"] if collective else None,
            "section": study.section, **({"joint": inputs.joint["path"]} if inputs.joint else {}),
            **study.protocol.identity(), "runs_trained": runs_trained(runs)}
    write_json(out / "provenance.json", prov)
    lrs = {m: study.settings_of(m).lr for m in METHODS} if study.lr_of else None  # each method's own rate
    epochs = {m: study.settings_of(m).epochs for m in METHODS} if study.epochs_of else None  # and schedule
    about = about_line(f"{study.num_tasks} {study.section}", len(study.seeds), study.settings.lr,
                       study.settings.epochs, lrs, epochs)
    draw_figures(out, rows, runs, study.name, study.settings.ewc_lambda, prov, lrs, epochs, about)
    table = results_markdown(rows, study, prov)
    write_text(out / "results.md", table)
    print(table)
    return rows


def runs_trained(runs):
    """Where and when the runs of a table were trained ({commit: runs}, {device: runs}, first and last time), from
    what each run recorded (utils/individual.record); runs recorded before they did are counted as such."""
    trained = [r["trained"] for r in runs.values() if "trained" in r]
    times = sorted(t["time_utc"] for t in trained)
    return {"commit": dict(sorted(Counter(t["commit"] for t in trained).items())),
            "device": dict(sorted(Counter(t["device"] for t in trained).items())),
            "first": times[0] if times else None, "last": times[-1] if times else None,
            "not_recorded": len(runs) - len(trained)}


def runs_trained_line(trained):
    """The table's sentence on where its runs came from (runs_trained)."""
    parts = []
    if trained["commit"]:
        parts.append("Runs trained at commit " + ", ".join(f"{c[:12]} ({n})" for c, n in trained["commit"].items())
                     + " on " + ", ".join(f"{d} ({n})" for d, n in trained["device"].items())
                     + f", {trained['first']} to {trained['last']}")
    if trained["not_recorded"]:
        n = trained["not_recorded"]
        parts.append(f"{n} run{'s' if n > 1 else ''} recorded before each run kept its own commit and device")
    return "; ".join(parts) + "." if parts else ""


def draw_figures(out, rows, runs, name, ewc_lambda, prov, lrs=None, epochs=None, about=""):
    """forest.png (the paired differences of the table's rows; none without scratch runs to pair with, as when
    tuning the EWC strength on the learngene alone) and curves.png (accuracy per epoch of the runs). `lrs`,
    `epochs`: each method's learning rate and number of epochs, where methods train with their own: every line and
    the baseline say theirs. `about`: the tasks, seeds and settings, under both figures."""
    lines = forest_rows(rows, ewc_lambda, lrs, epochs)
    caption = [about] if about else []
    if lines:
        draw_forest(out / "forest.png", lines, name, prov, caption + baseline_line(lrs, epochs))
    draw_curves(out / "curves.png", runs, name, prov, caption)


def about_line(tasks, seeds, lr, epochs, lrs=None, epochs_of=None):
    """The line under a table's figures: its tasks ("20 target") and seeds per shot count, and the SGD learning rate
    and number of epochs its rows share (None: not known, left out), or that each method has its own (`lrs`,
    `epochs_of`: {method: value}, said in each line's label)."""
    if lrs and epochs_of:
        settings = "each method at its own learning rate and epochs (in its label)"
    else:
        settings = ", ".join(s for s in ("each method at its own learning rate" if lrs else
                                         f"SGD learning rate {lr:g}" if lr else "",
                                         "each method at its own epochs (in its label)" if epochs_of else
                                         f"{epochs} epochs" if epochs else "") if s)
    return f"{tasks} tasks per shot count, {seeds} seed(s)" + (f"; {settings}" if settings else "") + "."


def baseline_line(lrs, epochs_of):
    """The forest's line on the baseline's own settings, where each method has its own ([] where they share them)."""
    own = [f"{BASELINE} at {lrs[BASELINE]:g}" if lrs else "", f"{epochs_of[BASELINE]} epochs" if epochs_of else ""]
    return [f"The baseline, {' and '.join(o for o in own if o)}."] if lrs or epochs_of else []


def draw_forest(path, lines, name, prov, caption=()):
    plots.forest(path, lines, f"{name}: test accuracy minus scratch's, paired per task, after the last epoch", prov,
                 caption)


def draw_curves(path, runs, name, prov, caption=()):
    curves = {(k, m): c for k in sorted({key.shots for key in runs}) for m in METHODS
              if (c := curve(runs, m, k)) is not None}
    plots.learning_curves(path, curves, f"{name}: test accuracy per epoch, mean over tasks", prov, caption)


def forest_rows(rows, ewc_lambda=None, lrs=None, epochs=None):
    """The forest plot's lines from table rows (TABLE_HEADER lists, or the dicts of a results.csv): every method but
    the baseline, labelled with what distinguishes its settings (the EWC strength, the inherited layers, and its
    learning rate where `lrs` gives each method its own)."""
    lines = []
    for row in rows:
        r = dict(zip(TABLE_HEADER, row)) if isinstance(row, (list, tuple)) else row
        if r["method"] == BASELINE or r["diff_vs_scratch"] in ("", None):
            continue
        method, settings = METHODS.get(r["method"]), []
        if r["method"] == "other-layers" and r["inherited_conv_layers"]:
            layers = str(r["inherited_conv_layers"]).split("-")
            settings.append(f"conv {layers[0]}-{layers[-1]}")
        if method is not None and method.ewc and ewc_lambda is not None:
            settings.append(f"EWC {float(ewc_lambda):g}")
        if lrs:
            settings.append(f"lr {lrs[r['method']]:g}")
        if epochs:
            settings.append(f"{epochs[r['method']]} epochs")
        label = r["method"] + (f" ({', '.join(settings)})" if settings else "")
        ci = r["diff_ci95"]
        lines.append({"shots": int(r["shots"]), "label": label, "diff": float(r["diff_vs_scratch"]),
                      "ci": float("nan") if ci in ("", None) else float(ci)})
    return lines


def _count(parameters):
    return f"{parameters / 1e6:.2f}M" if parameters >= 1e5 else f"{parameters / 1e3:.1f}k"


def _interval(ci):
    return "n/a (1 task)" if ci == "" or math.isnan(ci) else f"±{ci:.1f}"


def results_markdown(rows, study, prov):
    split, settings, art, collective = study.split, study.settings, study.inputs.learngene, study.inputs.collective
    lines = [f"### Individual models on {split.dataset} ({split.image_size}px), {study.section} tasks", "",
             f"Test accuracy (%) after the last of {settings.epochs} epochs"
             + (" (or the method's own number, below)" if study.epochs_of else "") + f", 5-way; {len(study.seeds)} seed(s) per "
             f"task, averaged within each task first, so the 95% CIs are over tasks. 'vs scratch' is the paired "
             f"difference in points, per task (same classes, images, seeds, initialisation of the new layers and "
             f"batch order), then its mean and 95% CI over tasks: an interval that excludes 0 is a measured "
             f"difference. 'diverged' counts runs whose loss or EWC penalty became non-finite (their accuracy is "
             f"meaningless). The 'best epoch' column picks the epoch on the test set, as the released scripts did: "
             f"test-selected and optimistic, for comparison only.", "",
             "| shots | method | runs | accuracy (%) | 95% CI | vs scratch (points) | 95% CI | diverged "
             "| best epoch, test-selected (%) | parameters | inherited conv layers |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k, m, n, _, acc, ci, diff, diff_ci, diverged, best, params, layers, _ in rows:
        vs = "-" if diff == "" else f"{diff:+.1f}"
        vs_ci = "-" if diff == "" else _interval(diff_ci)
        lines.append(f"| {k} | {m} | {n} | {acc:.1f} | {_interval(ci)} | {vs} | {vs_ci} | {diverged} | {best:.1f} "
                     f"| {_count(params)} | {layers or '-'} |")
    other = next((r[11] for r in rows if r[1] == "other-layers"), "")
    shared = sorted(set(map(int, other.split("-"))) & set(art["layers"])) if other else []
    lines += ["", f"Learngene: conv layers {art['layers']} of the collective model after task {art['source_task']}"
              + (f"; baselines from {collective['path']} ({count_parameters_state(collective['model']) / 1e6:.2f}M "
                 f"parameters)" if collective else "") + "."]
    lr_of, epochs_of = study.lr_of, study.epochs_of
    lines.append(f"SGD learning rate {settings.lr:g}" + (" except " + ", ".join(f"{m} {lr:g}" for m, lr in lr_of.items())
                                                        + " (a method's own rate: --lr_of)" if lr_of else "") + ".")
    if epochs_of:
        lines.append(f"Epochs {settings.epochs} except " + ", ".join(f"{m} {n}" for m, n in epochs_of.items())
                     + " (a method's own schedule: --epochs_of).")
    joint = study.inputs.joint
    if joint:
        lines.append(f"Joint source (learngene-joint, finetune-joint, probe-joint): {joint['path']}, the same network "
                     f"trained on the {len(joint['classes'])} base classes of tasks 0-{joint['task']} at once, with the "
                     f"same images and image presentations as the collective model up to task {joint['task']}.")
    if shared:
        lines.append(f"other-layers inherits conv {other}, sharing conv {shared} with the learngene: no window of the "
                     f"same shapes avoids it in this collective model.")
    protocol = study.protocol
    if protocol.chain or protocol.optimizer_per_epoch:
        lines.append("Protocol: the released script's choices, not the clean protocol: "
                     + "; ".join(([f"tasks chained in chains of {protocol.chain} (order "
                                   f"{list(protocol.order) or 'as numbered'}), each starting from the model the "
                                   f"previous task ended with, head included"] if protocol.chain else [])
                                 + (["a new optimizer every epoch"] if protocol.optimizer_per_epoch else [])) + ".")
    lines += [f"Provenance: table written at commit {prov['commit']}, device {prov['device']}, precision "
              f"{settings.precision}, seeds {study.seeds}, {prov['time_utc']}, split {prov['split']} (manifest sha256 "
              f"{split.hash[:12]}). " + runs_trained_line(prov["runs_trained"]),
              f"Command: `{prov['command']}`", ""]
    return "\n".join(lines)


def count_parameters_state(state):
    return sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def best_lambda(tune_dir, grid):
    """The EWC strength with the best mean final accuracy (%) of the learngene rows on the validation tasks, and
    a line that gives every strength's accuracy and its diverged runs (a lambda too strong for SGD shows there)."""
    scores, notes = {}, []
    for lam in grid:
        rows = tuning_rows(tune_dir / f"lambda-{lam}" / "results.csv", "final_acc", "runs", "diverged")
        scores[lam] = sum(r["final_acc"] for r in rows) / len(rows)
        runs, diverged = sum(r["runs"] for r in rows), sum(r["diverged"] for r in rows)
        notes.append(f"{lam}: {scores[lam]:.1f}%" + (f" ({diverged} of {runs} runs diverged)" if diverged else ""))
    best = max(grid, key=lambda lam: scores[lam])
    return best, ", ".join(notes)


def validation_accuracy(results_csv):
    """{method: its mean final accuracy (%) over the shot counts' rows} of a tuning stage's results.csv."""
    rows = {}
    for r in tuning_rows(results_csv, "method", "final_acc"):
        rows.setdefault(r["method"], []).append(r["final_acc"])
    return {m: sum(v) / len(v) for m, v in rows.items()}


def tuning_rows(results_csv, *columns):
    """A tuning stage's results.csv as the pipeline reads it back, each of the columns it uses checked."""
    return readback.read_table(results_csv, {c: readback.TUNING_COLUMNS[c] for c in columns}, "tuning stage's table")


def best_learning_rates(tune_dir, grid, methods):
    """Per method, the learning rate of `grid` with the best mean final accuracy (%) of its rows on the validation
    tasks (a tie goes to the smaller rate), and a line that gives each method's accuracy at every rate."""
    scores = {m: {} for m in methods}
    for lr in grid:
        for r in tuning_rows(tune_dir / f"lr-{lr}" / "results.csv", "method", "final_acc"):
            if r["method"] in scores:
                scores[r["method"]].setdefault(lr, []).append(r["final_acc"])
    mean = {m: {lr: sum(v) / len(v) for lr, v in s.items()} for m, s in scores.items()}
    best = {m: max(sorted(grid, key=float), key=lambda lr: mean[m][lr]) for m in methods}
    return best, "; ".join(f"{m}: " + ", ".join(f"{lr} {a:.1f}%" for lr, a in mean[m].items()) + f" -> {best[m]}"
                           for m in methods)
