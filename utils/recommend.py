"""Which lightweight model a user should train on a new task, read from a study's stored target runs: of the models
individual-model/your_task.py can train from a learngene and the collective model it was cut from (CANDIDATES, all
the individual architecture), the one whose paired difference from scratch, averaged over the shot counts, is
largest, with every candidate's difference and interval and the learning rate and number of epochs each row
(scratch included) was chosen on its validation tasks. your_task.py reads the file it writes (its default --method
and settings); nothing is chosen on a user's task.

    python utils/recommend.py results/reference/records/<run>/inherit/runs.jsonl \
        --out results/reference/recommendation.json
"""
import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import COUNT, LEARNING_RATE, UserError, cli, require  # noqa: E402
from utils.contrasts import read_folders  # noqa: E402
from utils.files import require_apart, require_replaceable, write_json  # noqa: E402
from utils.repro import for_display, provenance  # noqa: E402
from utils.runstore import record_file, records  # noqa: E402
from utils.stats import mean_ci95, per_task  # noqa: E402

FORMAT = "learngene-recommendation-v1"
# what your_task.py trains from a learngene and its collective model: the paper's design, and the same lightweight
# model inheriting every conv block (with and without EWC); the joint source's rows need a source users lack
CANDIDATES = ("learngene", "learngene-full", "learngene-full-noewc")
BASELINE = "scratch"
DEFAULT = Path(__file__).resolve().parents[1] / "results" / "reference" / "recommendation.json"


def evidence(files):
    """[(method, shots, tasks, mean paired difference from scratch, 95% half-width)] of every candidate at every
    shot count of the target runs of `files`, and {method: {"lr", "epochs"}} of each row that has runs."""
    runs = {key: (training, result) for key, (training, result) in read_folders(files).items()
            if training.get("section", "target") == "target"}
    results = {key: result for key, (_, result) in runs.items()}
    rows = []
    for method in CANDIDATES:
        for shots in sorted({key.shots for key in runs}):
            diffs = per_task(results, method, shots, BASELINE)
            if len(diffs) >= 2:
                rows.append((method, shots, len(diffs), *mean_ci95(list(diffs.values()))))
    schedule = {}
    for key, (training, _) in runs.items():
        if key.method in (*CANDIDATES, BASELINE):
            these = {"lr": training.get("lr"), "epochs": training.get("epochs")}
            require(LEARNING_RATE.holds(these["lr"]) and COUNT.holds(these["epochs"]), f"the {key.method} runs of "
                    f"{', '.join(map(str, files))} do not record their learning rate and number of epochs")
            require(schedule.setdefault(key.method, these) == these, f"the {key.method} runs of "
                    f"{', '.join(map(str, files))} were trained at more than one learning rate or number of epochs: "
                    f"no single setting to recommend")
    return rows, schedule


def choose(rows):
    """The candidate with the largest mean difference from scratch over the shot counts (among those measured at
    every shot count), and a line saying how it did against scratch."""
    shots = sorted({k for _, k, *_ in rows})
    complete = [m for m in CANDIDATES if sorted(k for mm, k, *_ in rows if mm == m) == shots]
    require(complete, "no candidate (" + ", ".join(CANDIDATES) + f") has paired target runs against {BASELINE} at "
            "every shot count: nothing to recommend")
    mean = {m: sum(d for mm, _, _, d, _ in rows if mm == m) / len(shots) for m in complete}
    best = max(complete, key=lambda m: (mean[m], -CANDIDATES.index(m)))
    own = [(k, d, ci) for m, k, _, d, ci in rows if m == best]
    if all(d - ci > 0 for _, d, ci in own):
        verdict = f"beats {BASELINE} at every shot count"
    elif all(d + ci < 0 for _, d, ci in own):
        verdict = f"is worse than {BASELINE} at every shot count: train {BASELINE}"
    else:
        verdict = f"is not shown to beat {BASELINE} (an interval includes 0)"
    return best, f"{best} {verdict} (" + "; ".join(f"{k} shots: {d:+.1f} ±{ci:.1f} points" for k, d, ci in own) + ")"


def load(path=DEFAULT):
    """A recommendation written by this script, checked; None where `path` (the default one) does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable recommendation ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    require(isinstance(rec, dict) and rec.get("format") == FORMAT, f"{path} is not a recommendation written by "
            f"utils/recommend.py ({FORMAT})")
    method, schedule = rec.get("method"), rec.get("settings")
    require(method in CANDIDATES, f"{path}: its method {method!r:.40} is not one of {', '.join(CANDIDATES)}")
    require(isinstance(rec.get("why"), str), f"{path}: its reason ('why') is missing")
    require(isinstance(schedule, dict) and all(
        isinstance(s, dict) and LEARNING_RATE.holds(s.get("lr")) and COUNT.holds(s.get("epochs"))
        for s in schedule.values()) and {method, BASELINE} <= schedule.keys(), f"{path}: its settings do not give a "
            f"learning rate and a number of epochs for {method} and {BASELINE}")
    return rec


def written_here(path):
    try:
        return load(path) is not None
    except UserError:
        return False


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUNS", help="runs.jsonl files (or the folders that hold them) of a "
                   "study with the candidates and scratch on the same target tasks (the inherit study's)")
    p.add_argument("--out", default=str(DEFAULT), metavar="OUTFILE", help="the recommendation to write (default: "
                   "results/reference/recommendation.json, which your_task.py reads)")
    p.add_argument("--overwrite", action="store_true", help="replace a recommendation this script wrote")
    args = p.parse_args(argv)
    files = [record_file(f) for f in args.runs]
    for given, f in zip(args.runs, files):
        require(f.is_file(), f"{given}: no runs.jsonl there")
    out = Path(args.out)
    require_apart(out, [("RUNS", f) for f in files])
    require_replaceable(out, args.overwrite, written_here)
    rows, schedule = evidence(files)
    method, why = choose(rows)
    settings = next(s for s, _ in records(files[0]))
    rec = {"format": FORMAT, "method": method, "why": why,
           "measured_on": f"{settings.get('dataset')} at {settings.get('learngene_shapes', [None])[-1]}px, up to "
                          f"{max(n for _, _, n, _, _ in rows)} target tasks per shot count",
           "evidence": [{"method": m, "shots": k, "tasks": n, "diff": d, "ci95": None if math.isnan(ci) else ci}
                        for m, k, n, d, ci in rows],
           "settings": schedule, "runs": [for_display(str(f)) for f in files], "provenance": provenance(None, argv)}
    write_json(out, rec)
    print(f"{why}; settings chosen on the validation tasks: "
          + ", ".join(f"{m} lr {s['lr']:g}, {s['epochs']} epochs" for m, s in sorted(schedule.items())))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
