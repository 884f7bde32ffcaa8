"""Draw a results table's figures again, with no retraining: the forest plot of its paired differences against
scratch (from the table alone: a results.csv of the individual script or a preset's
results/<dataset>-<preset>.csv; a contrasts table, utils/contrasts.py's, gives its own forest) and, given the
runs.jsonl the table summarises, the learning curves; or a collective run's held-out accuracy matrix from its
heldout_accuracy.csv; or a study's contrasts from its runs; or the released study's chain and class-overlap
figures from its runs; or the sources' features on held-out images from their summaries.

    python utils/draw_results.py results/reference/tiny-imagenet-100-cpu-intel-bf16.csv --ewc_lambda 40000 \
        --title "tiny-imagenet-100, cpu preset"
    python utils/draw_results.py results/reference/tiny-imagenet-100-cpu-source-contrasts.csv --overwrite
    python utils/draw_results.py --heldout checkpoints/tiny-imagenet-100-quick/collective --out matrix.png
    python utils/draw_results.py --contrasts checkpoints/tiny-imagenet-100-cpu/{source,individual} --out /tmp
    python utils/draw_results.py --released results/reference/records/<run>/released --out /tmp
    python utils/draw_results.py --features results/reference/records/<run> --out features.png
"""
import argparse
import csv
import io
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import contrasts, ladder, plots, readback, released, report, source  # noqa: E402
from utils.cli import COUNT, EWC_LAMBDA, LEARNING_RATE, Number, UserError, cli, require  # noqa: E402
from utils.individual import method_lr  # noqa: E402
from utils.files import require_apart, require_replaceable, starts_with  # noqa: E402
from utils.repro import for_display, provenance  # noqa: E402
from utils.runstore import read_runs, record_file  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"  # the signature of the files this script writes
DIFFERENCE = readback.DIFFERENCE  # a paired difference of two accuracies (%), in points
HALF_WIDTH = Number(float, 0, 10_000)  # its 95% half-width: Student t over as few as 2 tasks can be wide, not endless


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", metavar="TABLE", nargs="?", help="a results CSV with the columns of utils/report.py's "
                   "TABLE_HEADER")
    p.add_argument("--heldout", default=None, metavar="RUNS", help="instead of a table: a collective run folder, "
                   "whose held-out accuracy matrix to draw (to --out, default heldout_matrix.png in the folder)")
    p.add_argument("--contrasts", nargs="+", default=None, metavar="RUNS", help="instead of a table: the runs.jsonl "
                   "files (or their folders) of a source study and of the studies it reused, first the source study's: "
                   "each control against the row it stands in for, as contrasts.{csv,md,png} in --out (a folder; "
                   "default: the first's)")
    p.add_argument("--released", default=None, metavar="RUNS", help="instead of a table: a released study's folder "
                   "(the individual study's, whose runs are the clean protocol's, beside it): its chain.png and "
                   "overlap.png in --out (a folder; default: the study's)")
    p.add_argument("--features", default=None, metavar="RUNS", help="instead of a table: a work folder (or its kept "
                   "records) holding collective/ and joint/ held-out summaries: the sources' features figure, to --out "
                   "(default features.png there)")
    p.add_argument("--contrast_set", choices=list(contrasts.SETS), default="source", help="with --contrasts: which "
                   "study's contrasts (source: each control against the row it stands in for; knowledge: each whole-"
                   "network row against the capacity control, and the ladder figure; inherit: the lightweight model "
                   "against its alternatives); knowledge and inherit pair rows at their own validation-chosen "
                   "learning rates and epochs")
    p.add_argument("--out", default=None, metavar="OUTFILE", help="PNG to write (default: the table's name with -forest.png)")
    p.add_argument("--title", default=None, metavar="TEXT", help="what the figure shows (default: the table's file name)")
    p.add_argument("--ewc_lambda", type=EWC_LAMBDA, default=None, help="the EWC strength of the table's EWC rows, "
                   "for their labels (the table does not hold it; the results markdown says it)")
    p.add_argument("--lr", type=LEARNING_RATE, default=None, help="the SGD learning rate the table's rows trained "
                   "with, for the figure's caption (the table does not hold it; its results markdown says it)")
    p.add_argument("--lr_of", type=method_lr, nargs="+", default=[], metavar="TEXT", help="each method's own rate "
                   "as METHOD=LR, where they differ (a tuned table): said in every row's label; --lr for the others")
    p.add_argument("--epochs", type=COUNT, default=None, help="the number of epochs the table's rows trained for")
    p.add_argument("--runs", default=None, metavar="RUNS", help="the runs.jsonl (or its folder) behind the table: "
                   "also draw the learning curves")
    p.add_argument("--curves_out", default=None, metavar="OUTFILE",
                   help="PNG for the curves (default: the table's name with -curves.png)")
    p.add_argument("--overwrite", action="store_true", help="replace --out and --curves_out if they exist")
    args = p.parse_args(argv)
    require(sum(x is not None for x in (args.table, args.heldout, args.contrasts, args.released, args.features)) == 1,
            "give a results TABLE, --heldout RUN, --contrasts RUNS, --released RUNS or --features RUNS, one of them")
    if args.heldout:
        return draw_heldout(Path(args.heldout), args.out, args.title, args.overwrite, argv)
    if args.released:
        return draw_released(Path(args.released), args.out, args.title, args.overwrite, argv)
    if args.features:
        return draw_features(Path(args.features), args.out, args.title, args.overwrite, argv)
    if args.contrasts:
        return draw_contrasts([record_file(r) for r in args.contrasts], args.out, args.title, args.overwrite, argv,
                              args.contrast_set)
    table = Path(args.table)
    require(table.is_file(), f"{table}: no such file")
    try:
        text = table.read_text()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{table} is not a CSV file ({e})")
    if rows and "against" in rows[0]:
        return draw_contrast_table(table, args.out, args.title, args.overwrite, argv)
    missing = [c for c in report.TABLE_HEADER if rows and c not in rows[0]]
    require(rows and not missing, f"{table} is not a results table (missing columns: {', '.join(missing) or 'all rows'})")
    # every table this project writes ends its last line: one that does not was cut short (an interrupted copy)
    require(text.endswith("\n"), f"{table} ends in the middle of a line (a truncated copy?)")
    short = next((i for i, r in enumerate(rows, 2) if None in r.values() or None in r), None)
    require(short is None, f"{table} line {short} does not have the table's {len(rows[0])} cells (a truncated copy?)")
    require(args.runs or not args.curves_out, "--curves_out draws the curves of --runs: give --runs too")
    lrs = None
    if args.lr_of:
        lr_of = dict(args.lr_of)
        unnamed = sorted({r["method"] for r in rows} - set(lr_of))
        require(args.lr is not None or not unnamed, f"--lr_of names no rate for {', '.join(unnamed)}: give --lr too")
        lrs = {r["method"]: lr_of.get(r["method"], args.lr) for r in rows}
    try:
        lines = report.forest_rows(rows, args.ewc_lambda, lrs)
        settings = about(rows, args.lr, args.epochs, lrs)
    except ValueError as e:
        raise UserError(f"{table} has a cell that is not a number ({e})")
    require(lines, f"{table} has no row with a paired difference against scratch")
    bad = next((ln for ln in lines if not (DIFFERENCE.holds(ln["diff"]) and (math.isnan(ln["ci"])
                                                                            or HALF_WIDTH.holds(ln["ci"])))), None)
    if bad is not None:
        raise UserError(f"{table}: {bad['label']} at {bad['shots']} shots has a difference {bad['diff']} +- "
                        f"{bad['ci']}, not points of accuracy ({DIFFERENCE.describe()}, the interval "
                        f"{HALF_WIDTH.describe()} or empty)")
    out = Path(args.out or table.with_name(table.stem + "-forest.png"))
    curves_out = Path(args.curves_out or table.with_name(table.stem + "-curves.png")) if args.runs else None
    runs = None
    if args.runs:
        runs_file = record_file(args.runs)
        require(runs_file.is_file(), f"--runs {runs_file}: no such file")
        runs = read_runs(runs_file)
        require(runs and all(isinstance(r.get("curve"), list) and r["curve"] for r in runs.values()),
                f"{runs_file} holds no runs with learning curves")
    for path in (out, curves_out):
        if path is not None:
            require_apart(path, [("TABLE", table), *([("--runs", runs_file)] if args.runs else [])])
            require_replaceable(path, args.overwrite, starts_with(PNG))
    name = args.title or table.stem
    prov = provenance(argv=argv)
    caption = [f"Drawn from {for_display(str(table))} (the table's own numbers).", settings,
               *report.baseline_line(lrs, None)]
    report.draw_forest(out, lines, name, prov, caption)
    print(f"wrote {out}")
    if runs:
        report.draw_curves(curves_out, runs, name, prov, [f"Drawn from the {len(runs)} runs of {runs_file}."])
        print(f"wrote {curves_out}")


def about(rows, lr, epochs, lrs):
    """The caption's line on the table's tasks and seeds per shot count (from its own `tasks` and `runs` columns)
    and the settings given on the command line."""
    tasks = sorted({int(r["tasks"]) for r in rows})
    seeds = sorted({int(r["runs"]) // int(r["tasks"]) for r in rows if int(r["tasks"])})
    return report.about_line(span(tasks), span(seeds), lr, epochs, lrs)


def span(values):
    """'20' for one value, '3-20' for several, '?' for none."""
    return "?" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def draw_contrasts(files, out, title, overwrite, argv, contrast_set="source"):
    """contrasts.{csv,md,png} into the folder `out` (default: the first file's) from the runs of `files`, and for the
    knowledge studies' set the ladder figure and its numbers (ladder.png, ladder.csv)."""
    for f in files:
        require(f.is_file(), f"--contrasts {f}: no such file")
    out = Path(out or files[0].parent)
    require(out.is_dir(), f"--out {out}: no such folder (--contrasts writes contrasts.{{csv,md,png}} into a folder)")
    written = [out / f"contrasts.{e}" for e in ("csv", "md", "png")]
    written += [out / f"ladder.{e}" for e in ("png", "csv") if contrast_set == "knowledge"]
    there = next((w for w in written if w.exists()), None)
    require(overwrite or there is None, f"{there} exists: pass --overwrite to replace it")
    try:
        rows = contrasts.report(out, files, title or f"contrasts of {files[0]}", provenance(argv=argv), contrast_set,
                                own_schedule=contrast_set != "source")
    except (KeyError, TypeError) as e:
        raise UserError(f"--contrasts: a run there lacks what a run of the individual script records ({e})")
    require(rows, "--contrasts: no contrast of the set has both of its rows' runs there")
    if contrast_set == "knowledge":
        ladder.report(out, files, title or str(files[0]), provenance(argv=argv))
    print(f"wrote {', '.join(map(str, written))}")


def draw_contrast_table(table, out, title, overwrite, argv):
    """The forest of a contrasts CSV (utils/contrasts.py's: each row against the row it stands in for), from the
    table alone, to `out` (default: the table's name with .png)."""
    rows = readback.read_table(table, {"shots": COUNT, "method": str, "against": str, "tasks": COUNT,
                                       "diff": DIFFERENCE, "diff_ci95": float}, "contrasts table")
    bad = next((r for r in rows if not (math.isnan(r["diff_ci95"]) or HALF_WIDTH.holds(r["diff_ci95"]))), None)
    require(bad is None, f"{table}: {bad and bad['method']} minus {bad and bad['against']} has the half-width "
            f"{bad and bad['diff_ci95']}, not {HALF_WIDTH.describe()} or empty")
    out = Path(out or table.with_suffix(".png"))
    require_apart(out, [("TABLE", table)])
    require_replaceable(out, overwrite, starts_with(PNG))
    tasks = span(sorted({r["tasks"] for r in rows}))
    plots.forest(out, [{"shots": r["shots"], "label": f"{r['method']} minus {r['against']}", "diff": r["diff"],
                        "ci": r["diff_ci95"]} for r in rows],
                 f"{title or table.stem}: each row minus the row it stands in for, paired per task ({tasks} tasks), "
                 f"after the last epoch", {**provenance(argv=argv), "device": "none (drawn from the table)"},
                 [f"Drawn from {for_display(str(table))} (the table's own numbers)."],
                 xlabel="difference (points of accuracy)")
    print(f"wrote {out}")


def draw_heldout(run_dir, out, title, overwrite, argv):
    """The held-out accuracy matrix of a collective run, as `out` (default: <run>/heldout_matrix.png)."""
    require(run_dir.is_dir(), f"--heldout {run_dir}: no such folder")
    matrix, at = source.read_matrix(run_dir), source.read_summary(run_dir)  # a damaged one is refused in one line
    require(matrix is not None and at is not None, f"--heldout {run_dir}: no heldout_accuracy.csv and "
            f"heldout_summary.json there (a collective run on a split made with --heldout_per_class writes them)")
    out = Path(out or run_dir / "heldout_matrix.png")
    require_replaceable(out, overwrite, starts_with(PNG))
    source.draw(out, matrix, at, title or f"{run_dir}: collective model's accuracy (%) on held-out images",
                provenance(argv=argv))
    print(f"wrote {out}")


def draw_released(folder, out, title, overwrite, argv):
    """The released study's chain and class-overlap figures from its runs (the clean protocol's runs are the
    individual study's, beside it), as chain.png and overlap.png in the folder `out` (default: the study's)."""
    dirs = released.study_folders(folder)
    missing = [str(d / "runs.jsonl") for d in dirs.values() if not (d / "runs.jsonl").is_file()]
    require(not missing, f"--released {folder}: no released study's runs there (missing {', '.join(missing)})")
    out = Path(out or folder)
    require(out.is_dir(), f"--out {out}: no such folder (--released writes chain.png and overlap.png into a folder)")
    written = [out / "chain.png", out / "overlap.png"]
    for path in written:
        require_replaceable(path, overwrite, starts_with(PNG))
    folders = {name: read_runs(d / "runs.jsonl") for name, d in dirs.items()}
    name, prov = title or str(folder), {**provenance(argv=argv), "device": "none (drawn from the stored runs)"}
    try:
        released.draw(written[0], folders, name, prov)
        released.draw_overlap(written[1], released.overlap_rows(folders), name, prov)
    except (KeyError, TypeError) as e:
        raise UserError(f"--released {folder}: a run there lacks what a run of the individual script records ({e})")
    print(f"wrote {', '.join(map(str, written))}")


def draw_features(root, out, title, overwrite, argv):
    """The sources' features on held-out images of their base classes (the collective model's and the joint
    source's, from their held-out summaries under `root`), as `out` (default: <root>/features.png)."""
    held, joint = source.read_summary(root / "collective"), source.read_summary(root / "joint")
    require(held is not None and "features" in held and joint is not None and "nearest_mean_per_task" in joint,
            f"--features {root}: no collective/ and joint/ held-out summaries with features there (a split made "
            f"with --heldout_per_class and the source study write them)")
    out = Path(out or root / "features.png")
    require_replaceable(out, overwrite, starts_with(PNG))
    source.draw_features(out, held, joint, title or f"{root}: the sources' features on held-out images of their "
                         f"base classes", {**provenance(argv=argv), "device": "none (drawn from the summaries)"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
