"""The source study's answer as paired contrasts: each control against the row it stands in for, not only against
scratch. Whether a source trained jointly carries more than the collective model is learngene-joint minus learngene
(and the same for the fine-tune and the probe), not the gap between two differences from scratch: the runs of one
target task share its classes, images, seeds, new layers' initialisation and batch order, so the difference is
taken per task and its interval over tasks, as the tables' columns against scratch are (utils/stats.py)."""
from pathlib import Path

from utils import plots
from utils.cli import require
from utils.files import write_csv, write_text
from utils.methods import LADDER as RUNGS, reads
from utils.report import runs_trained, runs_trained_line
from utils.runstore import key_of, records
from utils.stats import mean_ci95, per_task

CONTRASTS = (  # (method, the row it stands in for, what their difference measures)
    ("learngene-joint", "learngene", "the joint source's layers inherited instead of the collective model's"),
    ("finetune-joint", "finetune-collective", "the whole joint source fine-tuned instead of the collective model"),
    ("probe-joint", "probe-collective", "a probe on the joint source's features instead of the collective model's"),
    ("probe-collective", "probe-random", "the collective model's features instead of a random network's"),
    ("learngene-permuted", "learngene", "the inherited filters' structure destroyed (each filter's inputs shuffled)"),
    ("learngene-frozen", "learngene", "the inherited layers held fixed instead of kept near by EWC"),
    ("learngene-noewc", "learngene", "the inherited layers trained freely instead of kept near by EWC"),
    ("other-layers", "learngene", "another window of the collective model's layers instead of the criterion's"),
)
# where the knowledge sits (the knowledge studies): every whole-network row against the capacity control, the same
# architecture with no source weight at all, so a difference is the kept weights', not a bigger network's
LADDER = (
    ("scratch-collective", "scratch", "the collective architecture (random) instead of the individual one: capacity"),
    *((f"{row}-{source}", "scratch-collective", f"the {source} source's {what} kept, the rest fresh")
      for source in ("collective", "joint")
      for row, what in (*((f"first{k}", f"first {k} conv blocks") for k in RUNGS),
                        ("window", "learngene window of conv blocks"))),
    ("finetune-collective", "scratch-collective", "the whole collective model (head's hidden layers too) kept"),
    ("finetune-joint", "scratch-collective", "the whole joint source (head's hidden layers too) kept"),
    ("finetune-collective", "first13-collective", "the collective model's head (hidden layers) kept too"),
    ("window-collective", "learngene", "the learngene's window at the source's widths behind fresh source-shaped "
     "blocks, instead of in the individual model"),
)
# a lightweight model that inherits every layer (the inherit study): against the learngene, the capacity control and
# the whole fine-tune, and its own ablations
FULL = (
    ("learngene-full", "learngene", "every conv block inherited instead of the learngene's three"),
    ("learngene-full", "scratch-collective", "the lightweight model inheriting every block instead of the collective "
     "architecture from random"),
    ("learngene-full", "finetune-collective", "the lightweight model instead of the whole collective model (38% more "
     "parameters)"),
    ("learngene-full-noewc", "learngene-full", "its inherited blocks trained freely instead of kept near by EWC"),
    ("learngene-full-joint", "learngene-full", "the joint source's blocks instead of the collective model's"),
)
SETS = {  # a study's contrasts: (the rows, the table's heading, what it compares)
    "source": (CONTRASTS, "Each control against the row it stands in for", "the sources and the controls with each other"),
    "knowledge": (LADDER, "Each whole-network row against the capacity control", "the rows of the source's "
                  "architecture with the same architecture trained from random"),
    "inherit": (FULL, "The lightweight model that inherits every block, against the alternatives", "it with the "
                "learngene, the capacity control and the whole fine-tune"),
}
HEADER = ["shots", "method", "against", "measures", "tasks", "diff", "diff_ci95"]
# what two runs must share to be compared: the training, the split and section of the task; each run's own
# learning rate and, where it uses EWC, strength come from methods.reads
TRAINING = ("epochs", "batch_size", "momentum", "weight_decay", "precision", "section", "split_hash", "lr", "ewc_lambda")


def read_folders(files):
    """{RunKey: (training, result)} of the runs.jsonl files, the first file's run kept where several hold one
    (a study records the runs it reused with their originals' results)."""
    runs = {}
    for path in files:
        for settings, result in records(Path(path)):
            reads_of = reads(result["method"], settings)
            runs.setdefault(key_of(result), ({k: reads_of[k] for k in TRAINING if k in reads_of}, result))
    return runs


OWN_SCHEDULE = ("lr", "epochs")  # what a tuned study chooses per method on its validation tasks


def contrast_rows(runs, contrasts=CONTRASTS, own_schedule=False):
    """HEADER rows for every contrast of `contrasts` both of whose methods have runs at a shot count, paired per (task,
    seed); refused where a pair's runs were trained under other settings (their difference would not be the
    method's), the learning rate and number of epochs excepted with `own_schedule` (each method at what its
    validation tasks chose)."""
    results = {key: result for key, (_, result) in runs.items()}
    rows = []
    for shots in sorted({key.shots for key in runs}):
        for method, against, measures in contrasts:
            pairs = [(runs[key], runs[key._replace(method=against)]) for key in runs
                     if key.method == method and key.shots == shots and key._replace(method=against) in runs]
            if not pairs:
                continue
            for (a, _), (b, _) in pairs:
                other = sorted(k for k in a.keys() & b.keys() if a[k] != b[k] and not (own_schedule and k in OWN_SCHEDULE))
                require(not other, f"{method} and {against} runs at {shots} shots were trained with other settings "
                        f"({', '.join(other)}): their difference would not be the methods'")
            diffs = per_task(results, method, shots, against)
            diff, ci = mean_ci95(list(diffs.values()))
            rows.append([shots, method, against, measures, len(diffs), diff, ci])
    return rows


def report(out, files, title, prov, contrast_set="source", own_schedule=False):
    """contrasts.csv, contrasts.md and contrasts.png in `out` from the runs of `files` (the contrasts of SETS[
    contrast_set]), and their rows; nothing (and no rows) where no contrast has both of its methods (a study without
    the controls). Where the runs were trained is theirs to say (the table's last line); the contrasts themselves
    are arithmetic on them, done on no device."""
    chosen, heading, compares = SETS[contrast_set]
    prov = {**prov, "device": "none (computed from the stored runs)"}
    runs = read_folders(files)
    rows = contrast_rows(runs, chosen, own_schedule)
    if not rows:
        return rows
    compared = {m for _, method, against, *_ in rows for m in (method, against)}
    write_csv(out / "contrasts.csv", HEADER, rows, prov)
    lines = [f"#### {heading}", "",
             "The paired difference per target task (same classes, images, seeds, initialisation of the new layers "
             f"and batch order), its mean and 95% interval over tasks: the table above compares every row with "
             f"scratch, this one compares {compares}"
             + (", each at the learning rate and number of epochs its validation tasks chose." if own_schedule
                else "."), "",
             "| shots | contrast | what it measures | tasks | difference (points) | 95% CI |",
             "|---:|---|---|---:|---:|---:|"]
    lines += [f"| {k} | {m} minus {b} | {what} | {n} | {d:+.1f} | " + ("n/a (1 task)" if n < 2 else f"±{ci:.1f}") + " |"
              for k, m, b, what, n, d, ci in rows]
    trained = runs_trained({key: result for key, (_, result) in runs.items() if key.method in compared})
    lines += ["", f"Written at commit {prov['commit']}, {prov['time_utc']}, from {', '.join(map(str, files))}. "
              + runs_trained_line(trained)]
    write_text(out / "contrasts.md", "\n".join(lines) + "\n")
    plots.forest(out / "contrasts.png", [{"shots": k, "label": f"{m} minus {b}", "diff": d, "ci": ci}
                                         for k, m, b, _, _, d, ci in rows],
                 f"{title}: {heading[0].lower() + heading[1:]}, paired per task, after the last epoch", prov,
                 xlabel="difference (points of accuracy)")
    return rows
