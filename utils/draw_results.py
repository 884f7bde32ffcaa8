"""Draw the forest plot of a results table (a results.csv of the individual script or a preset's
results/<dataset>-<preset>.csv) from the table alone, with no retraining: the paired differences against
scratch and their 95% intervals, as the table gives them.

    python utils/draw_results.py results/reference/tiny-imagenet-100-cpu.csv --ewc_lambda 40000 \
        --title "tiny-imagenet-100, cpu preset"
"""
import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import plots, report  # noqa: E402
from utils.cli import UserError, cli, nonneg_float, require  # noqa: E402
from utils.repro import provenance  # noqa: E402


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", help="a results CSV with the columns of utils/report.py's TABLE_HEADER")
    p.add_argument("--out", default=None, help="PNG to write (default: the table's name with -forest.png)")
    p.add_argument("--title", default=None, help="what the figure shows (default: the table's file name)")
    p.add_argument("--ewc_lambda", type=nonneg_float, default=None, help="the EWC strength of the table's EWC rows, "
                   "for their labels (the table does not hold it; the results markdown says it)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    table = Path(args.table)
    require(table.is_file(), f"{table}: no such file")
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{table} is not a CSV file ({e})")
    missing = [c for c in report.TABLE_HEADER if rows and c not in rows[0]]
    require(rows and not missing, f"{table} is not a results table (missing columns: {', '.join(missing) or 'all rows'})")
    try:
        lines = report.forest_rows(rows, args.ewc_lambda)
    except ValueError as e:
        raise UserError(f"{table} has a cell that is not a number ({e})")
    require(lines, f"{table} has no row with a paired difference against scratch")
    out = Path(args.out or table.with_name(table.stem + "-forest.png"))
    require(args.overwrite or not out.exists(), f"{out} exists: pass --overwrite to replace it")
    title = f"{args.title or table.stem}: test accuracy minus scratch's, paired per task, after the last epoch"
    plots.forest(out, lines, title, provenance(argv=argv), [f"Drawn from {table} (the table's own numbers)."])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
