"""The released protocol beside the clean one: why did the paper see a gain?

The released individual-model script ran its target tasks in a chain (each task starting from the model the
previous one ended with, head included), re-created its optimizer every epoch, and its EWC penalty was always
zero; the released scratch baseline trained each task fresh for 100 epochs at batch 64. Each choice is a switch
of the individual script (utils/fewshot.Protocol, --protocol released). This study runs each one alone on top of
the clean protocol, then all of them, plus the control that isolates chaining from inheritance: the same chain
from a model whose layers all start random (chained scratch). If chained scratch gains as much as the chained
learngene, the released protocol's gain is the chain's. The pipeline (study `released`) runs the invocations of
RUNS; this module turns their runs into the decomposition table, its CSV and the chain-position figure.

Statistics: a chain's tasks share one model, so they are not independent samples; the unit of the table's first
interval is a chain (the tasks' paired differences averaged within each chain of RELEASED_CHAIN tasks), as for the
unchained rows, so the rows compare alike; the per-task interval beside it treats the tasks as independent, which
understates a chained row's uncertainty, and is given so a reader sees by how much. With a single chain (fewer than
two chains' worth of target tasks) only the per-task interval exists, and the table says so.

The mechanism by which a chain could help: the target tasks share their novel classes, so a chained task may
already have trained on some of its classes earlier in its chain. `seen_before` counts them for every chained run,
and the overlap table and figure give the chained rows' accuracy, against fresh scratch on the same tasks, by that
count."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import study_figures
from utils.fewshot import RELEASED_CHAIN, Protocol
from utils.files import write_csv, write_text
from utils.repro import provenance_lines
from utils.runstore import read_runs
from utils.stats import mean_ci95, t_quantile


@dataclass(frozen=True)
class Run:
    """One invocation of the individual script: its folder under the study's, methods and flags."""
    folder: str
    methods: tuple
    flags: tuple


def chain_length(manifest, section="target"):
    """The released chain length, or one chain of all the tasks where a shot count has fewer."""
    return min(RELEASED_CHAIN, *(len(tasks) for tasks in manifest[section].values()))


RELEASED_SCRATCH_EPOCHS = 100  # baseline_random_trainnum200_woEWC.py's default


def runs(chain, scratch_epochs=RELEASED_SCRATCH_EPOCHS):
    """The invocations, for chains of `chain` tasks (beside the clean protocol's, the individual study's); the
    released scratch baseline's epochs can be cut for a preset that only checks the plumbing."""
    return [Run("chained", ("learngene", "scratch"), ("--chain", str(chain))),
            Run("optimizer-per-epoch", ("learngene",), ("--optimizer_per_epoch",)),
            Run("no-ewc", ("learngene",), ("--ewc_lambda", "0")),
            # what --protocol released sets, spelled out (the preset's own --epochs comes earlier on the line)
            Run("released-scratch", ("scratch",), ("--epochs", str(scratch_epochs), "--batch_size", "64")),
            Run("released", ("learngene",), ("--chain", str(chain), "--optimizer_per_epoch", "--ewc_lambda", "0")),
            Run("released-chained-scratch", ("scratch",), ("--chain", str(chain), "--optimizer_per_epoch"))]


# the table's rows: (label, folder of its learngene runs, of its scratch runs, of its chained scratch runs or None);
# "clean" is the individual study's folder
ROWS = [("clean protocol", "clean", "clean", None),
        ("+ target tasks chained", "chained", "clean", "chained"),
        ("+ optimizer re-created every epoch", "optimizer-per-epoch", "clean", None),
        ("+ no EWC (the released penalty is always zero)", "no-ewc", "clean", None),
        ("+ the released scratch baseline's settings", "clean", "released-scratch", None),
        ("released protocol (all of the above)", "released", "released-scratch", "released-chained-scratch")]
METRICS = {"final_acc": "after the last epoch", "best_acc": "best epoch, chosen on the test set (as released)"}
HEADER = ["row", "shots", "metric", "learngene", "scratch", "chained_scratch", "diff_vs_scratch", "diff_ci95",
          "chained_scratch_vs_scratch", "chained_scratch_ci95", "units", "unit", "diff_ci95_per_task",
          "chained_scratch_ci95_per_task", "tasks"]


def per_task(runs, method, shots, metric):
    """{task: mean over seeds} of a metric (%)."""
    by_task = {}
    for key, r in runs.items():
        if key.method == method and key.shots == shots:
            by_task.setdefault(key.task, []).append(r[metric])
    return {t: float(np.mean(v)) for t, v in sorted(by_task.items())}


def units(values, tasks, chain):
    """The samples an interval is taken over: the per-task values averaged within each chain of `chain` tasks
    (the tasks in number order, as the chained runs were), or the tasks themselves where there is only one."""
    blocks = [b for b in Protocol(chain).chains(len(tasks)) if all(tasks[i] in values for i in b)]
    if len(blocks) < 2:
        return [values[t] for t in tasks if t in values], "task"
    return [float(np.mean([values[tasks[i]] for i in b])) for b in blocks], "chain"


def table(folders, chain):
    """The CSV's rows (HEADER) from {folder name: runs} ("clean" included)."""
    rows = []
    for label, lg_from, scratch_from, chained_from in ROWS:
        for k in sorted({key.shots for key in folders["clean"]}):
            for metric in METRICS:
                lg = per_task(folders[lg_from], "learngene", k, metric)
                scratch = per_task(folders[scratch_from], "scratch", k, metric)
                chained = per_task(folders[chained_from], "scratch", k, metric) if chained_from else {}
                tasks = sorted(set(lg) & set(scratch))
                per_task_diff = {t: lg[t] - scratch[t] for t in tasks}
                diff, unit = units(per_task_diff, tasks, chain)
                d, ci = mean_ci95(diff)
                ci_tasks = mean_ci95(list(per_task_diff.values()))[1]
                cs, cs_ci, cs_ci_tasks = "", "", ""
                if chained:
                    per_task_cs = {t: chained[t] - scratch[t] for t in tasks if t in chained}
                    cs, cs_ci = mean_ci95(units(per_task_cs, tasks, chain)[0])
                    cs_ci_tasks = mean_ci95(list(per_task_cs.values()))[1]
                rows.append([label, k, metric, np.mean([lg[t] for t in tasks]), np.mean([scratch[t] for t in tasks]),
                             np.mean([chained[t] for t in tasks if t in chained]) if chained else "", d, ci, cs,
                             cs_ci, len(diff), unit, ci_tasks, cs_ci_tasks, len(tasks)])
    return rows


def seen_before(runs):
    """{RunKey: how many of its task's classes the earlier tasks of its chain had trained on} for every chained run of
    `runs` (one folder's; each chained run records its chain's tasks, its position and its classes)."""
    return {key: len(set(r["classes"]) & earlier_classes(runs, key, r)) for key, r in runs.items() if "chain" in r}


def earlier_classes(runs, key, r):
    """The classes the tasks before chained run `r` (of `key`) in its chain had trained on."""
    return set().union(*(runs[key._replace(task=t)]["classes"] for t in r["chain"][:r["chain_position"]]))


# the chained rows read against fresh scratch on the same tasks: (label, chained learngene, chained scratch, fresh)
CHAINED = (("clean protocol, chained", "chained", "chained", "clean"),
           ("released protocol", "released", "released-chained-scratch", "released-scratch"))
OVERLAP_HEADER = ["protocol", "shots", "classes_seen_before", "tasks", "learngene_chained", "scratch_chained",
                  "scratch_fresh", "learngene_chained_minus_fresh", "ci95", "scratch_chained_minus_fresh", "ci95"]


def overlap_rows(folders):
    """OVERLAP_HEADER rows: per chained protocol, shot count and number of classes the chain had already trained on,
    the chained runs' accuracy and their paired difference from fresh scratch on the same task (interval over the
    tasks of that count: they come from several chains, but a chain's tasks are not independent)."""
    rows = []
    for label, lg_from, cs_from, fresh_from in CHAINED:
        if not all(f in folders for f in (lg_from, cs_from, fresh_from)):
            continue
        seen = {**seen_before(folders[lg_from]), **seen_before(folders[cs_from])}
        for k in sorted({key.shots for key in folders[lg_from]}):
            fresh = {key.task: r["final_acc"] for key, r in folders[fresh_from].items()
                     if key.method == "scratch" and key.shots == k}
            for n in sorted({c for key, c in seen.items() if key.shots == k}):
                def at(folder, method):
                    return {key.task: r["final_acc"] for key, r in folders[folder].items()
                            if key.method == method and key.shots == k and seen.get(key) == n}
                lg, cs = at(lg_from, "learngene"), at(cs_from, "scratch")
                tasks = sorted(set(lg) & set(cs) & set(fresh))
                if tasks:
                    rows.append([label, k, n, len(tasks), *(np.mean([v[t] for t in tasks]) for v in (lg, cs, fresh)),
                                 *mean_ci95([lg[t] - fresh[t] for t in tasks]),
                                 *mean_ci95([cs[t] - fresh[t] for t in tasks])])
    return rows


CLASS_HEADER = ["protocol", "shots", "class", "cells", "chains", "learngene_chained_minus_fresh", "ci95",
                "scratch_chained_minus_fresh", "ci95"]
CLASS_STATUS = ("seen earlier in its chain", "new to its chain")


def class_rows(folders):
    """CLASS_HEADER rows, where the runs recorded each class's accuracy: per chained protocol and shot count, a
    chained run's accuracy on each class's test images minus fresh scratch's on the same task and class, for the
    classes the chain had trained on in an earlier task and for the others; the mean over (task, class) cells, its
    interval over chains (each chain's cells averaged first: a chain's tasks share one model)."""
    rows = []
    for label, lg_from, cs_from, fresh_from in CHAINED:
        if not all(f in folders for f in (lg_from, cs_from, fresh_from)):
            continue
        for k in sorted({key.shots for key in folders[lg_from]}):
            fresh = {key.task: r.get("class_acc") for key, r in folders[fresh_from].items()
                     if key.method == "scratch" and key.shots == k}
            cells = {}  # (status, method) -> {chain: [differences]}
            for method, folder in (("learngene", lg_from), ("scratch", cs_from)):
                runs = folders[folder]
                for key, r in runs.items():
                    if key.method != method or key.shots != k or "chain" not in r:
                        continue
                    if r.get("class_acc") is None or fresh.get(key.task) is None:
                        return []  # runs recorded before class_acc: nothing to read
                    earlier = earlier_classes(runs, key, r)
                    for c, acc, base in zip(r["classes"], r["class_acc"], fresh[key.task]):
                        if acc is None or base is None:  # a class without test images has no accuracy
                            continue
                        status = CLASS_STATUS[c not in earlier]
                        cells.setdefault((status, method), {}).setdefault(tuple(r["chain"]), []).append(acc - base)
            for status in CLASS_STATUS:
                lg, cs = cells.get((status, "learngene"), {}), cells.get((status, "scratch"), {})
                if lg and cs:
                    rows.append([label, k, status, sum(map(len, lg.values())), len(lg),
                                 *mean_ci95([np.mean(v) for v in lg.values()]),
                                 *mean_ci95([np.mean(v) for v in cs.values()])])
    return rows


def positions(runs, method, shots, chain_of, fresh=None):
    """(positions 1..L, mean, ci95 over chains) of a method's accuracy (%) by position in its chain; with `fresh`
    (unchained runs), the same tasks placed where the chained runs of `chain_of` had them."""
    by_position = {}
    for key, r in chain_of.items():
        if key.method != method or key.shots != shots:
            continue
        source = r if fresh is None else fresh.get(key._replace(method="scratch"))
        if source is not None:
            by_position.setdefault(r["chain_position"], []).append(source["final_acc"])
    xs = sorted(by_position)
    stats = [mean_ci95(by_position[x]) for x in xs]
    return [x + 1 for x in xs], np.array([m for m, _ in stats]), np.array([c for _, c in stats])


def study_folders(folder):
    """{name: folder} of a released study's runs (the pipeline's layout): each released choice's under the study's
    folder, the clean protocol's the individual study's beside it."""
    return {"clean": Path(folder).parent / "individual", **{run.folder: Path(folder) / run.folder for run in runs(1)}}


def report(out, dirs, chain, scratch_epochs, name, prov):
    """released.csv, results.md and chain.png in `out` from the invocations' folders ({name: folder}, "clean"
    included); returns the markdown."""
    out = Path(out)
    folders = {n: read_runs(Path(d) / "runs.jsonl") for n, d in dirs.items()}
    rows = table(folders, chain)
    write_csv(out / "released.csv", HEADER, rows, prov)
    overlaps, by_class = overlap_rows(folders), class_rows(folders)
    write_csv(out / "overlap.csv", OVERLAP_HEADER, overlaps, prov)
    if by_class:
        write_csv(out / "class_overlap.csv", CLASS_HEADER, by_class, prov)
    md = markdown(rows, chain, scratch_epochs, prov, overlaps, by_class)
    write_text(out / "results.md", md)
    draw(out / "chain.png", folders, name, prov)
    draw_overlap(out / "overlap.png", overlaps, name, prov)
    return md


def _cell(v, ci):
    if v == "":
        return "-"
    value = f"{v:+.1f}"
    return (value if value != "-0.0" else "+0.0") + ("" if np.isnan(ci) else f" ±{ci:.1f}")


def _interval(ci):
    return "-" if ci == "" or np.isnan(ci) else f"±{ci:.1f}"


def markdown(rows, chain, scratch_epochs, prov, overlaps=(), by_class=()):
    unit = {r[11] for r in rows}
    chains = max(r[10] for r in rows) if unit == {"chain"} else 1
    lines = [f"Each released choice added alone to the clean protocol, then all of them; target test accuracy (%) "
             f"and each method minus scratch, paired per task (points). Chains of {chain} target tasks. The released "
             f"scratch baseline's settings: a fresh model per task, {scratch_epochs} epochs at batch 64. "
             + (f"Two 95% intervals: over the {chains} chains (a chain's tasks share one model, so the chain is the "
                f"sample; {chains} samples make a wide t interval, t = {t_quantile(chains):.2f}), and over the tasks as if "
                f"independent (narrower: it understates a chained row's uncertainty)."
                if unit == {"chain"} else
                "Only one chain: its intervals are over the tasks of that chain, which share one model, so they "
                "understate the uncertainty (the cpu preset's 20 target tasks make 4 chains)."), ""]
    for metric, about in METRICS.items():
        lines += [f"Accuracy {about}:", "",
                  "| protocol | shots | learngene | scratch | chained scratch | learngene - scratch | CI over chains | "
                  "CI over tasks | chained scratch - scratch | CI over chains | CI over tasks |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r[2] == metric):
            by_chain = r[11] == "chain"
            lines.append(f"| {r[0]} | {r[1]} | {r[3]:.1f} | {r[4]:.1f} | {'-' if r[5] == '' else f'{r[5]:.1f}'} | "
                         f"{_cell(r[6], float('nan'))} | {_interval(r[7]) if by_chain else 'n/a'} | "
                         f"{_interval(r[12])} | {_cell(r[8], float('nan'))} | "
                         f"{_interval(r[9]) if by_chain and r[9] != '' else ('-' if r[8] == '' else 'n/a')} | "
                         f"{_interval(r[13])} |")
        lines.append("")
    if overlaps:
        lines += ["The chain's mechanism: a chained task whose classes earlier tasks of its chain had trained on. Test "
                  "accuracy (%) after the last epoch by how many of its 5 classes the chain had seen before, and each "
                  "chained row minus fresh scratch on the same tasks (points; 95% interval over those tasks, which "
                  "come from several chains but are not independent within one).", "",
                  "| protocol | shots | classes seen before | tasks | learngene, chained | scratch, chained | scratch, "
                  "fresh | learngene chained - fresh | scratch chained - fresh |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {p} | {k} | {n} | {t} | {lg:.1f} | {cs:.1f} | {fr:.1f} | {_cell(d, ci)} | {_cell(d2, ci2)} |"
                  for p, k, n, t, lg, cs, fr, d, ci, d2, ci2 in overlaps]
        lines.append("")
    if by_class:
        lines += ["The same class by class: a chained run's accuracy on one class's test images minus fresh scratch's "
                  "on the same task and class (points), for the classes an earlier task of its chain had trained on and "
                  "for the others; mean over (task, class) cells, 95% interval over chains.", "",
                  "| protocol | shots | class | cells | chains | learngene chained - fresh | scratch chained - fresh |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {p} | {k} | {c} | {n} | {m} | {_cell(d, ci)} | {_cell(d2, ci2)} |"
                  for p, k, c, n, m, d, ci, d2, ci2 in by_class]
        lines.append("")
    lines += provenance_lines(prov)
    return "\n".join(lines)


def draw_overlap(path, overlaps, name, prov):
    """Accuracy by the number of the task's classes its chain had already trained on (nothing without chains)."""
    panels = {}
    for p, k, n, _, lg, cs, fr, *_ in overlaps:
        series = panels.setdefault((p, k), {"learngene, chained": ([], [], []), "scratch, chained": ([], [], []),
                                            "scratch, fresh per task": ([], [], [])})
        for label, v in zip(series, (lg, cs, fr)):
            series[label][0].append(n)
            series[label][1].append(v)
            series[label][2].append(float("nan"))
    if not panels:
        return
    panels = {key: {label: (xs, np.array(m), np.array(c)) for label, (xs, m, c) in series.items()}
              for key, series in panels.items()}
    study_figures.chain_positions(path, panels, f"{name}: accuracy by the classes the chain had already trained on", prov,
                          ["Mean final accuracy over the chained tasks with that many of their 5 classes trained on "
                           "earlier in the chain; fresh scratch: the same tasks, each from a new model."],
                          xlabel="classes of the task trained on earlier in its chain (of 5)")


def draw(path, folders, name, prov):
    """Accuracy by position in the chain: the chained learngene and chained scratch beside fresh scratch on the
    same tasks, under the clean protocol with chaining and under the released protocol."""
    panels = {}
    for row, lg_from, chained_from, fresh_from in CHAINED:
        for k in sorted({key.shots for key in folders[lg_from]}):
            panels[(row, k)] = {
                "learngene, chained": positions(folders[lg_from], "learngene", k, folders[lg_from]),
                "scratch, chained": positions(folders[chained_from], "scratch", k, folders[chained_from]),
                "scratch, fresh per task": positions(folders[chained_from], "scratch", k, folders[chained_from],
                                                     fresh=folders[fresh_from])}
    study_figures.chain_positions(path, panels, f"{name}: target accuracy by position in the chain", prov,
                          ["Mean over chains at each position; bar: 95% interval over chains (none with one chain). "
                           "Fresh scratch: the same tasks, each trained from a new model."])
