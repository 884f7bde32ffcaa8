"""Files the pipeline writes and reads back (a stage's table, a run's measurements, its provenance), read as strictly
as a flag: every field the code uses is checked for its kind and range, and a damaged file is one line naming the
file and the field, never a traceback deep inside the code that uses it. A schema is a dict of field -> kind, where
a kind is a cli.Number, str, a nested schema, [kind] (a non-empty list of it) or Optional(kind) (a field that may be
absent, and is of its kind where present: the code asks whether it is there)."""
import csv
import json
from pathlib import Path

from utils.cli import INDEX, PERCENT, Number, UserError, require

DIFFERENCE = Number(float, -100, 100)  # a difference of two accuracies, in points


class Optional:
    def __init__(self, kind):
        self.kind = kind  # checked where the field is present


def problem(value, kind, where="it"):
    """Why `value` is not of `kind` (a phrase naming the field), or None."""
    if isinstance(kind, Optional):
        return problem(value, kind.kind, where)
    if isinstance(kind, Number):
        return None if kind.holds(value) else f"{where} {value!r:.40} is not {kind.describe()}"
    if kind is str:
        return None if isinstance(value, str) and value else f"{where} {value!r:.40} is not a name"
    if isinstance(kind, list):
        if not isinstance(value, list) or not value:
            return f"{where} is not a non-empty list"
        return next((p for i, v in enumerate(value) if (p := problem(v, kind[0], f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{where} is not a mapping"
    for field, sub in kind.items():
        if field not in value and not isinstance(sub, Optional):
            return f"{where}: its {field} is missing"
        if field in value and (p := problem(value[field], sub, field if where == "it" else f"{where}.{field}")):
            return p
    return None


def read_json(path, schema, what):
    """The JSON object at `path`, checked against `schema`; one line naming the file where it is unreadable or a
    field is missing or out of its range."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    p = problem(value, schema)
    require(p is None, f"{path} is a damaged {what} ({p})")
    return value


def read_table(path, columns, what):
    """The rows of the CSV at `path` as dicts of the `columns` it must have ({name: Number, str or float}), each cell
    converted and checked (float: any number, NaN included, as a training loss that diverged); one line naming the
    file, the row and the column where one is not."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}: {e})")
    out = []
    for number, row in enumerate(rows, 1):
        converted = {}
        for name, kind in columns.items():
            cell = row.get(name)
            require(cell is not None, f"{path} is a damaged {what} (row {number} has no {name})")
            try:
                value = cell if kind is str else float(cell) if kind is float else kind.kind(cell)
            except ValueError:
                raise UserError(f"{path} is a damaged {what} (row {number}: {name} {cell!r:.40} is not "
                                f"{'a number' if kind is float else 'a name' if kind is str else kind.describe()})")
            p = None if kind is float else problem(value, kind, f"row {number}: {name}")
            require(p is None, f"{path} is a damaged {what} ({p})")
            converted[name] = value
        out.append(converted)
    require(out, f"{path} is a damaged {what} (no rows)")
    return out


def recorded_device(folder):
    """The device a stage's provenance.json says it trained on (for a table computed from its runs)."""
    return read_json(Path(folder) / "provenance.json", {"device": str}, "provenance record")["device"]


# a tuning stage's results.csv as the pipeline reads it back (utils/report.py)
TUNING_COLUMNS = {"method": str, "final_acc": PERCENT, "runs": Number(int, 1, 10 ** 6), "diverged": INDEX}
# a collective run's held-out measurements (utils/source.py), and the joint source's (utils/joint.py)
AT_TASK = {"after_task": INDEX, "average_accuracy": PERCENT, "backward_transfer": DIFFERENCE,
           "just_learned_accuracy": PERCENT, "tasks": Number(int, 1, 100_000)}
COLLECTIVE_SUMMARY = {
    "extraction": AT_TASK, "last": AT_TASK, "heldout_images_per_class": Number(int, 1, 100_000),
    "features": Optional({"after_task": INDEX, "nearest_mean_accuracy": PERCENT,
                          "random_network_nearest_mean_accuracy": PERCENT, "per_task": [PERCENT],
                          "random_network_per_task": [PERCENT]})}
JOINT_SUMMARY = {"task_local_accuracy": PERCENT, "all_classes_accuracy": PERCENT, "classes": Number(int, 2, 100_000),
                 "after_task": INDEX, "per_task_local_accuracy": [PERCENT],
                 "nearest_mean_accuracy": Optional(PERCENT), "nearest_mean_per_task": Optional([PERCENT])}
