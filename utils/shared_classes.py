"""Do the target tasks' shared classes make the intervals too narrow? The target tasks of a shot count are each 5
classes drawn from the same 20 novel classes, so a class sits in several tasks and its test images are read by each
of them. The tables' intervals are Student t over tasks, as if the tasks were independent. If a class moved the
paired difference (a method minus its baseline) of every task that holds it, tasks sharing classes would be
correlated and those intervals too narrow. Three readings, from the committed runs and the split's target tasks, no
retraining:

- a permutation test of "tasks that share classes have alike differences": the sum over pairs of tasks of their
  shared classes times the product of their centred differences, against the same with the differences shuffled
  over the tasks' class sets (with 20 tasks its power is limited: a p-value far from 0 does not show the tasks
  independent);
- how much dependence each conclusion tolerates. With one effect per class (a task's difference = the mean of its
  classes' effects + its own noise), the mean's variance over what the tables assume is the design effect; it
  depends on this split's task-class layout and the ratio of the class effects' SD to the noise's, and is at most
  the value it tends to as the ratio grows. A row's interval excludes 0 as long as the design effect stays below
  (difference / half-width)^2; above the largest possible design effect, no class dependence of this kind can undo
  it;
- where the runs recorded each class's accuracy (class_acc), the class effects themselves: the per-class paired
  differences (5 per task) fitted with crossed class and task effects (REML), which 20 task means alone cannot
  separate, and the variance of the tables' mean under that fit: the interval that allows for the shared classes.

    python utils/shared_classes.py results/reference/records/<run>/individual \
        --split results/reference/records/<run>/split_tasks.json --out DIR
"""
import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import UserError, cli, require  # noqa: E402
from utils.files import require_apart, require_replaceable, starts_with, write_csv, write_text  # noqa: E402
from utils.methods import BASELINE, METHODS  # noqa: E402
from utils.repro import provenance  # noqa: E402
from utils.runstore import key_of, record_file, records  # noqa: E402
from utils.splits import Split  # noqa: E402
from utils.stats import mean_ci95, per_task, t_quantile  # noqa: E402

HEADER = ["shots", "method", "against", "tasks", "diff", "diff_ci95", "class_effect_p", "design_effect_tolerated",
          "diff_ci95_class_sd_equal", "design_effect_max", "class_sd", "task_sd", "noise_sd", "design_effect_fitted",
          "diff_ci95_fitted"]
RATIOS = np.concatenate([[0.0], np.logspace(-2, 2, 21)])  # variance ratios to the noise's searched by REML
DRAWS = 2000  # permutations of the class-effect test
TASKS_FILE = "split_tasks.json"  # the split's tasks' classes, kept with a run's records (utils/keep_records.py)


def membership(tasks):
    """Z (tasks x classes): 1/ways where the task holds the class, so Z @ effects is each task's mean effect."""
    classes = sorted(set().union(*tasks))
    z = np.zeros((len(tasks), len(classes)))
    for t, task in enumerate(tasks):
        for c in task:
            z[t, classes.index(c)] = 1.0 / len(task)
    return z


def design_effect(tasks, ratio):
    """The variance of the mean task difference over what independent tasks give (the expected s^2 / n), when each
    class moves its tasks' differences by an effect of SD `ratio` times the task noise's (math.inf: classes only)."""
    n, z = len(tasks), membership(tasks)
    zz = z @ z.T
    v = zz if math.isinf(ratio) else ratio ** 2 * zz + np.eye(n)
    expected = float(np.trace(v) - v.sum() / n) / (n - 1) / n  # what s^2 / n expects
    return float(v.sum() / n ** 2) / expected if expected > 0 else math.inf  # tasks of the same classes only


def class_effect_p(diffs, tasks, draws=DRAWS, seed=0):
    """Permutation p-value of 'tasks that share classes have alike differences': the sum over pairs of tasks of
    their shared classes times the product of their centred differences, against the same with the differences
    shuffled over the tasks' class sets."""
    y = np.asarray(diffs, dtype=float)
    held = (membership(tasks) > 0).astype(float)
    shared = held @ held.T
    np.fill_diagonal(shared, 0.0)

    def statistic(values):
        r = values - values.mean()
        return float(r @ shared @ r)

    observed = statistic(y)
    rng = np.random.default_rng(seed)
    hits = sum(statistic(rng.permutation(y)) >= observed - 1e-9 for _ in range(draws))
    return (1 + hits) / (1 + draws)


def class_diffs(runs, method, shots, against, tasks):
    """[(task, class, paired difference on that class's test images, mean over seeds)] from the runs' class_acc
    (each task's classes in label order, as `tasks` lists them); None where some run has none."""
    by_cell = {}
    for key, r in runs.items():
        other = runs.get(key._replace(method=against))
        if key.method != method or key.shots != shots or other is None:
            continue
        if r.get("class_acc") is None or other.get("class_acc") is None:
            return None
        require(len(r["class_acc"]) == len(other["class_acc"]) == len(tasks[key.task]), f"{method} and {against} "
                f"runs of task {key.task} ({shots} shots) do not give one accuracy per class of the split's task")
        for c, a, b in zip(tasks[key.task], r["class_acc"], other["class_acc"]):
            if a is not None and b is not None:  # a class without test images has no accuracy
                by_cell.setdefault((key.task, c), []).append(a - b)
    return [(t, c, float(np.mean(d))) for (t, c), d in sorted(by_cell.items())] or None


def crossed_model(cells):
    """REML fit of d[t, c] = mu + class effect + task effect + noise on per-class paired differences (cells from
    class_diffs); returns the SDs of the class effects, the task effects and the noise, and the variance of the
    tables' estimate (the mean over tasks of each task's mean over its classes) under the fit."""
    tasks, classes = sorted({t for t, _, _ in cells}), sorted({c for _, c, _ in cells})
    y = np.array([d for _, _, d in cells])
    za = np.array([[c == k for k in classes] for _, c, _ in cells], dtype=float)
    zb = np.array([[t == k for k in tasks] for t, _, _ in cells], dtype=float)
    a, b, n = za @ za.T, zb @ zb.T, len(y)
    one = np.ones(n)
    best = None
    for ra in RATIOS:
        for rb in RATIOS:
            h = np.eye(n) + ra * a + rb * b  # V / sigma^2
            hi = np.linalg.inv(h)
            w = one @ hi @ one
            sigma2 = float(y @ (hi - np.outer(hi @ one, one @ hi) / w) @ y) / (n - 1)
            if sigma2 <= 0:
                continue
            loglik = -0.5 * ((n - 1) * math.log(sigma2) + np.linalg.slogdet(h)[1] + math.log(w))
            if best is None or loglik > best[0]:
                best = (loglik, ra, rb, sigma2)
    if best is None:  # every cell the same difference
        return 0.0, 0.0, 0.0, 0.0
    _, ra, rb, sigma2 = best
    per_task = zb.sum(0)
    weights = zb @ (1 / (len(tasks) * per_task))  # each cell's weight in the mean over tasks of task means
    variance = sigma2 * float(weights @ (np.eye(n) + ra * a + rb * b) @ weights)
    return math.sqrt(ra * sigma2), math.sqrt(rb * sigma2), math.sqrt(sigma2), variance


def table_rows(runs, tasks_by_shots, against=BASELINE, draws=DRAWS):
    """HEADER rows: every method with runs paired against `against`, per shot count, over the tasks both have."""
    rows = []
    for shots in sorted({key.shots for key in runs}):
        tasks = tasks_by_shots.get(shots)
        require(tasks is not None, f"the split has no target tasks of {shots} shots, which the runs have: another split?")
        for method in sorted({key.method for key in runs if key.shots == shots} - {against}):
            diffs = per_task(runs, method, shots, against)
            if len(diffs) < 2:
                continue
            require(max(diffs) < len(tasks), f"the runs have task {max(diffs)} at {shots} shots; the split has "
                    f"{len(tasks)}: another split?")
            held = [tasks[t] for t in sorted(diffs)]
            y = [diffs[t] for t in sorted(diffs)]
            diff, ci = mean_ci95(y)
            tolerated = (diff / ci) ** 2 if ci > 0 and abs(diff) > ci else math.nan
            cells = class_diffs(runs, method, shots, against, tasks)
            fitted = [math.nan] * 5
            if cells:  # the class effects estimated from each class's accuracy in every task that holds it
                class_sd, task_sd, noise_sd, variance = crossed_model(cells)
                width = t_quantile(len(y)) * math.sqrt(variance)
                fitted = [class_sd, task_sd, noise_sd, variance / (np.var(y, ddof=1) / len(y)) if ci > 0 else math.nan,
                          width]
            rows.append([shots, method, against, len(y), diff, ci, class_effect_p(y, held, draws), tolerated,
                         ci * math.sqrt(design_effect(held, 1.0)), design_effect(held, math.inf), *fitted])
    return rows


def tasks_text(manifest):
    """TASKS_FILE's text for a split's manifest.json: its sha256 (what runs name as their split_hash), the command
    that made it, and the classes of each target and validation task, per shot count, in label order (a run's
    class_acc follows it; a split's images stay out of the records, its tasks' classes are all this script needs)."""
    data = Path(manifest).read_bytes()
    m = json.loads(data)
    tasks = {section: {shots: [list(task["classes"]) for task in m[section][shots]] for shots in m[section]}
             for section in ("target", "validation")}
    return json.dumps({"split_hash": hashlib.sha256(data).hexdigest(), "command": m.get("command"), **tasks},
                      indent=1) + "\n"


def target_tasks(path, split_hash):
    """{shots: [classes of each target task, in label order]} of a split directory (read and checked as every script
    reads one) or of the TASKS_FILE kept with a run's records (or the records folder holding it), checked against
    the split the runs were trained on."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        split = Split(path)
        found, target = split.hash, {k: [t["classes"] for t in v] for k, v in split.manifest["target"].items()}
    else:
        file = path / TASKS_FILE if path.is_dir() else path
        require(file.is_file(), f"--split {path}: neither a split directory (manifest.json) nor a {TASKS_FILE}")
        try:
            content = json.loads(file.read_bytes())
            found, target = content["split_hash"], content["target"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"--split {file} is not a {TASKS_FILE} ({e})")
    require(isinstance(target, dict) and all(
        k.isdigit() and isinstance(v, list) and all(isinstance(t, list) and t and all(isinstance(c, str) for c in t)
                                                     for t in v) for k, v in target.items()),
        f"--split {path}: its target tasks are not lists of class names per shot count")
    require(found == split_hash, f"--split {path} is not the split these runs were trained on (its sha256 "
            f"{str(found)[:12]}, the runs' split_hash {str(split_hash)[:12]})")
    return {int(k): [list(t) for t in v] for k, v in target.items()}


def markdown(rows, title, prov):
    def cell(value, form):
        return "-" if math.isnan(value) else form.format(value)
    lines = [f"#### {title}: the intervals and the classes the target tasks share", "",
             "Per row: the paired difference and the tables' 95% interval (Student t over tasks, as if independent); "
             "the permutation p-value of 'tasks that share classes have alike differences' (weak: a large p does not "
             "show independence); the design effect the row's exclusion of 0 tolerates ((difference / half-width)^2; "
             "'-' where the interval holds 0); the interval if the class effects' SD equalled the task noise's; the "
             "largest design effect this split's task-class layout allows. Where the runs recorded each class's "
             "accuracy: the class effects', task effects' and per-class noise's SDs fitted on the per-class paired "
             "differences (REML), the design effect under that fit, and the interval it gives (Student t, tasks - 1 "
             "degrees of freedom).", "",
             "| shots | method | minus | tasks | difference (points) | 95% CI, tasks independent | class effect p "
             "| design effect tolerated | 95% CI, class SD = task SD | largest design effect | class SD, fitted "
             "| task SD | noise SD | design effect, fitted | 95% CI, fitted |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {m} | {a} | {n} | {d:+.1f} | ±{ci:.1f} | {p:.3f} | {cell(tol, '{:.1f}')} | ±{eq:.1f} "
              f"| {top:.1f} | {cell(cs, '{:.1f}')} | {cell(ts, '{:.1f}')} | {cell(ns, '{:.1f}')} | {cell(de, '{:.2f}')} "
              f"| {cell(fw, '±{:.1f}')} |"
              for k, m, a, n, d, ci, p, tol, eq, top, cs, ts, ns, de, fw in rows]
    lines += ["", f"Written at commit {prov['commit']}, {prov['time_utc']}: `{prov['command']}`."]
    return "\n".join(lines) + "\n"


def rows_of(runs_file, split, baselines):
    """table_rows of a study's runs.jsonl against each of `baselines`, the runs and the split read once and checked:
    one split (the one given), target tasks only, runs of every baseline to pair with."""
    stored = list(records(runs_file))
    hashes = {settings.get("split_hash") for settings, _ in stored}
    require(len(hashes) == 1 and None not in hashes, f"{runs_file} holds runs of {len(hashes)} splits: give one "
            f"study's runs")
    sections = {settings.get("section") for settings, _ in stored}
    require(sections == {"target"}, f"{runs_file} holds {', '.join(map(str, sorted(sections, key=str)))} runs; this "
            f"reads target tasks' runs")
    runs = {key_of(r): r for _, r in stored}
    for against in baselines:
        require(any(key.method == against for key in runs), f"{runs_file} has no {against} runs to pair with")
    tasks = target_tasks(split, hashes.pop())
    return [row for against in baselines for row in table_rows(runs, tasks, against)]


def write(out, rows, title, prov):
    """shared_classes.csv and shared_classes.md in `out`; returns the markdown."""
    prov = {**prov, "device": "none (computed from the stored runs)"}
    write_csv(Path(out) / "shared_classes.csv", HEADER, rows, prov)
    text = markdown(rows, title, prov)
    write_text(Path(out) / "shared_classes.md", text)
    return text


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", metavar="RUNS", help="a runs.jsonl (or the folder that holds it)")
    p.add_argument("--split", required=True, metavar="SPLIT", help="the split the runs were trained on (its "
                   f"directory or manifest.json, or the {TASKS_FILE} kept with the run's records): its target tasks' "
                   "classes")
    p.add_argument("--against", default=BASELINE, choices=list(METHODS), help="the row every other is paired "
                   "against (e.g. scratch-collective, the capacity control, for a knowledge study)")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="where shared_classes.{csv,md} go")
    p.add_argument("--title", default="target tasks", metavar="TEXT")
    p.add_argument("--overwrite", action="store_true", help="replace this script's earlier files in --out")
    args = p.parse_args(argv)
    runs_file = record_file(args.runs)
    require(runs_file.is_file(), f"{args.runs}: no runs.jsonl there")
    rows = rows_of(runs_file, args.split, [args.against])
    require(rows, f"{runs_file}: no method has 2 or more tasks paired with {args.against}")
    out = Path(args.out)
    for name, first in (("shared_classes.csv", ",".join(HEADER)), ("shared_classes.md", "#### ")):
        require_apart(out / name, [("RUNS", runs_file)])
        require_replaceable(out / name, args.overwrite, starts_with(first.encode()))
    print(write(out, rows, args.title, provenance(argv=argv)))


if __name__ == "__main__":
    main()
