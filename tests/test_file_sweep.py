"""Every file the scripts read back, damaged mechanically: for each kind (a split's manifest, a runs.jsonl, the
pipeline's stage times, a results table, a learngene artifact, a collective checkpoint, a joint source, a your-task
model), a valid file made by the scripts, then one variant per field and damage (the field removed, its value replaced by NaN, infinity, a wrong
type, a list, a negative or out-of-range number; a line duplicated; the file cut short). Each variant is either
refused in one line (a UserError naming the file) or read into something the code then uses without failing: never
a traceback, never a file written. The science's own fields (accuracies, a task's classes) are refused outright
(tests/test_reliability.py, test_runstore.py)."""
import copy
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from utils import joint, learngene, methods, runstore, stages, your_task
from utils.cli import UserError
from utils.models import IndividualNet
from utils.splits import Split

DAMAGES = {"removed": ..., "nan": math.nan, "infinity": math.inf, "text": "x", "list": [1], "negative": -1,
           "huge": 10 ** 9, "none": None}


def paths(obj, prefix=(), depth=4):
    """Paths to the values of nested dicts (and the first element of lists), `depth` levels down at most."""
    if depth == 0:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:1]) if isinstance(obj, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key), depth - 1)


def damaged(obj, path, damage):
    out = copy.deepcopy(obj)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if damage == "removed":
        if isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
    else:
        parent[path[-1]] = DAMAGES[damage]
    return out


def variants(obj, depth=4):
    return [(f"{'/'.join(map(str, p))} {d}", damaged(obj, p, d)) for p in paths(obj, depth=depth) for d in DAMAGES]


def sweep(kind, cases, read, use, where):
    """Each case read and, if accepted, used; returns how many were refused. Fails, listing them, on the cases that
    raised anything but a one-line UserError naming `where`."""
    refused, broken = 0, []
    for name, case in cases:
        try:
            value = read(case)
        except UserError as e:
            if str(where) in str(e) and "\n" not in str(e).strip():
                refused += 1
            else:
                broken.append(f"{name}: refused without naming the file, or in several lines: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - the point: no other exception may escape
            broken.append(f"{name}: read raised {type(e).__name__}: {e}")
            continue
        try:
            use(value)
        except Exception as e:  # noqa: BLE001
            broken.append(f"{name}: accepted, then {type(e).__name__}: {e}")
    print(f"{kind}: {len(cases)} damaged files, {refused} refused in one line, {len(cases) - refused - len(broken)} "
          f"read and used")
    assert not broken, f"{len(broken)} of {len(cases)} damaged {kind} files:\n" + "\n".join(broken[:40])
    return refused


@pytest.fixture
def split_copy(tiny_split, tmp_path):
    out = tmp_path / "split"
    shutil.copytree(tiny_split, out)
    return out


def read_every_task(split):
    for t in range(len(split.manifest["continual"])):
        split.continual(t)
    for section in ("target", "validation"):
        for k in split.manifest["shots"]:
            for t in range(split.num_few_shot(section, k)):
                split.few_shot(section, int(k), t)
    if "heldout" in split.manifest:
        for t in range(len(split.manifest["continual"])):
            split.heldout(t)


def test_a_damaged_manifest_is_refused_or_read_whole(split_copy):
    manifest = json.loads((split_copy / "manifest.json").read_text())
    cases = variants(manifest, depth=5)

    def read(case):
        (split_copy / "manifest.json").write_text(json.dumps(case))
        return Split(split_copy)
    refused = sweep("split manifest", cases, read, read_every_task, split_copy)  # the manifest, or images.npy
    assert len(cases) > 300 and refused > len(cases) // 2
    (split_copy / "manifest.json").write_text(json.dumps(manifest)[:-40])  # cut short
    with pytest.raises(UserError, match="not valid JSON"):
        Split(split_copy)


def test_a_damaged_runs_record_is_refused_or_read(tmp_path):
    row = {"settings": {"epochs": 30, "lr": 0.005, "split_hash": "s", "section": "target"},
           "result": {"method": "learngene", "shots": 10, "task": 0, "seed": 0, "final_acc": 50.0, "best_acc": 52.0,
                      "curve": [[30, 0.5, 90.0, 50.0, 0.1]]}}
    path = tmp_path / "runs.jsonl"
    cases = [(name, [case]) for name, case in variants(row)] + [("a duplicated line", [row, row])]
    def read(lines):
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        return list(runstore.records(path))
    refused = sweep("runs.jsonl", cases, read, lambda rows: runstore.RunStore(path, rows[0][0]) if rows else None, path)
    assert refused >= 20


@pytest.fixture
def learngene_copy(collective_run):
    return torch.load(collective_run / "learngene.pt", weights_only=True)


def test_a_damaged_learngene_is_refused_or_inherited(learngene_copy, tmp_path):
    path = tmp_path / "learngene.pt"

    def read(case):
        torch.save(case, path)
        return learngene.load(path)

    def use(art):
        learngene.inherit(IndividualNet(art["blocks"], art["image_size"]), art)
    cases = variants({k: v for k, v in learngene_copy.items()}, depth=2)
    refused = sweep("learngene artifact", cases, read, use, path)
    assert refused > len(cases) // 3


def checkpoint_sweep(kind, source, load, tiny_split, art, tmp_path):
    """A checkpoint of the collective model's kind, damaged, read by `load` and built into its network."""
    ck, path, split = torch.load(source, weights_only=True), tmp_path / source.name, Split(tiny_split)

    def read(case):
        torch.save(case, path)
        return load(path, art, split)
    return sweep(kind, variants(ck, depth=2), read, methods.collective_net, path)


def test_a_damaged_collective_checkpoint_is_refused_or_built(collective_run, tiny_split, learngene_copy, tmp_path):
    source = Path(learngene_copy["collective_checkpoint"])
    assert checkpoint_sweep("collective checkpoint", source, methods.load_collective, tiny_split, learngene_copy,
                            tmp_path) > 10


def test_a_damaged_joint_source_is_refused_or_built(joint_run, tiny_split, learngene_copy, tmp_path):
    assert checkpoint_sweep("joint source", joint_run / "joint.pt", joint.load, tiny_split, learngene_copy,
                            tmp_path) > 10


def test_a_damaged_task_model_is_refused_or_labels_images(learngene_copy, tmp_path):
    """A model of individual-model/your_task.py as label_images.py reads it: rebuilt, then labelling an image."""
    art = learngene_copy
    model = IndividualNet(art["blocks"], art["image_size"], 3)
    record = your_task.model_record(model, "learngene", ["cat", "dog", "owl"], art, 61.5, {"commit": "x"})
    path, image = tmp_path / "model.pt", tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)

    def read(case):
        torch.save(case, path)
        return your_task.load_model(path)

    def use(loaded):
        (name, p), = your_task.predict(*loaded, [image], torch.device("cpu"))
        assert name in loaded[1]["classes"] and 0 <= p <= 1
    refused = sweep("task model", variants(record, depth=2), read, use, path)
    assert refused > 10


def test_damaged_stage_times_are_refused_or_tabled(tmp_path):
    times = {"split": 9.4, "collective": 1500.0, "tune-ewc lambda=400": 120.5}
    path = tmp_path / "stage_times.json"
    cases = variants(times, depth=1) + [("not a mapping", [1.0]), ("cut short", ...)]

    def read(case):
        path.write_text(json.dumps(times)[:20] if case is ... else json.dumps(case))
        return stages.StageClock(path)
    refused = sweep("stage times", cases, read, lambda clock: clock.add("individual", 1.0) or clock.table(), path)
    assert refused >= 3 * len(times)


def test_a_damaged_results_table_is_refused_or_drawn(tmp_path, capsys):
    """A results CSV as utils/draw_results.py reads it: each cell of two rows replaced by text, nothing, NaN,
    infinity or a huge number, each column removed, a row duplicated, the file cut short; refused in one line
    (exit 2) or drawn."""
    from utils import draw_results
    text = (REPO / "results" / "reference" / "tiny-imagenet-100-quick.csv").read_text()
    table, out = tmp_path / "table.csv", tmp_path / "forest.png"
    cases = csv_variants(text, bad_cells=("x", "", "nan", "inf", "-inf", "1e308"))
    refused, broken = 0, []
    for name, case in cases:
        table.write_text(case)
        out.unlink(missing_ok=True)
        try:
            draw_results.main([str(table), "--out", str(out)])
            code = 0
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001 - the point: no other exception may escape
            broken.append(f"{name}: {type(e).__name__}: {e}")
            continue
        err = capsys.readouterr().err.strip()
        if code == 2 and str(table) in err and "\n" not in err and not out.exists():
            refused += 1
        elif code not in (0, None) or not out.exists():
            broken.append(f"{name}: exit {code}, {err[:200]}")
    print(f"results table: {len(cases)} damaged files, {refused} refused in one line, {len(cases) - refused - len(broken)} drawn")
    assert not broken, "\n".join(broken[:40])
    assert refused >= len(cases) // 4


def csv_variants(text, rows_damaged=(0, 1), bad_cells=("x", "", "nan", "inf", "-1", "1e308")):
    """A CSV damaged: each cell of the given rows replaced by each of `bad_cells` (text, nothing, NaN, infinity, a
    negative or a huge number); each column removed; a row twice; the file cut short; no rows."""
    header, *rows = list(csv.reader(io.StringIO(text)))

    def as_csv(header, rows):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
        return buffer.getvalue()
    cases = [(f"row {i} {name} {bad!r}", as_csv(header, [[bad if c == j else v for c, v in enumerate(r)]
                                                      if k == i else r for k, r in enumerate(rows)]))
             for i in rows_damaged for j, name in enumerate(header) for bad in bad_cells]
    cases += [(f"{name} removed", as_csv([h for h in header if h != name],
                                         [[v for h, v in zip(header, r) if h != name] for r in rows]))
              for name in header]
    return cases + [("a row twice", as_csv(header, [rows[0], *rows])), ("cut short", text[:len(text) // 2]),
                    ("no rows", as_csv(header, []))]


@pytest.fixture
def measured_run(tmp_path):
    """A collective run's held-out measurements as utils/source.py writes them: 3 tasks, features measured."""
    from utils import source
    matrix = np.array([[80.0, 20.0, 21.0], [60.0, 78.0, 22.0], [50.0, 55.0, 76.0]])
    features = {"after_task": 2, "nearest_mean_accuracy": 50.0, "random_network_nearest_mean_accuracy": 40.0,
                "per_task": [48.0, 50.0, 52.0], "random_network_per_task": [39.0, 40.0, 41.0]}
    source.write(tmp_path, matrix, features, 50, "made up", {"commit": "x", "command": "c", "time_utc": "t"})
    return tmp_path


def test_a_damaged_heldout_summary_is_refused_or_described(measured_run):
    """A collective run's heldout_summary.json and the joint source's, as the pipeline's results header, the source
    study's figure and the budget study read them."""
    from utils import source
    path = measured_run / "heldout_summary.json"
    held = json.loads(path.read_text())
    joint_summary = {"task_local_accuracy": 61.0, "all_classes_accuracy": 30.0, "classes": 15, "after_task": 2,
                     "per_task_local_accuracy": [60.0, 61.0, 62.0], "nearest_mean_accuracy": 58.0,
                     "nearest_mean_per_task": [57.0, 58.0, 59.0]}

    def read(case):
        path.write_text(json.dumps(case))
        return source.read_summary(measured_run)

    def use(s):
        if "task_local_accuracy" in s:
            text = f"{s['task_local_accuracy']:.1f} {s['all_classes_accuracy']:.1f} {s['classes']}"
            return text + (source.describe_gaps(source.feature_series(held, s)) if "nearest_mean_per_task" in s else "")
        text = source.describe(s["extraction"]) + source.describe(s["last"])
        if "features" in s:
            text += source.describe_features(s["features"]) + source.describe_gaps(source.feature_series(s))
        return text
    for kind, valid in (("collective held-out summary", held), ("joint held-out summary", joint_summary)):
        cases = variants(valid, depth=3)
        refused = sweep(kind, cases, read, use, path)
        assert refused > len(cases) // 2
        path.write_text(json.dumps(valid)[:-10])
        with pytest.raises(UserError, match="not a readable held-out summary"):
            source.read_summary(measured_run)


def csv_sweep(kind, text, path, read, use, at_least):
    cases = csv_variants(text)

    def write_and_read(case):
        path.write_text(case)
        return read(path)
    refused = sweep(kind, cases, write_and_read, use, path)
    assert refused >= at_least, refused


def test_a_damaged_heldout_matrix_is_refused_or_drawn(measured_run):
    from utils import source
    path = measured_run / "heldout_accuracy.csv"
    text = path.read_text()
    csv_sweep("held-out matrix", text, path, lambda p: source.read_matrix(p.parent), lambda m: float(m.sum()), 20)
    lines = text.splitlines(keepends=True)
    for case in (lines[:1] + lines[2:], lines[:2] + lines[1:]):  # a cell missing; a cell twice
        path.write_text("".join(case))
        with pytest.raises(UserError, match="not every cell"):
            source.read_matrix(path.parent)


def test_a_damaged_tuning_table_is_refused_or_chooses(tmp_path):
    """A tuning stage's results.csv as the pipeline reads it to choose EWC's strength, a learning rate, epochs."""
    from utils import report
    (tmp_path / "lambda-400").mkdir()
    text = ("shots,method,runs,tasks,final_acc,ci95,diverged\n10,learngene,4,4,52.6,14.8,0\n"
            "20,learngene,4,4,56.3,9.1,0\n")
    csv_sweep("tuning table", text, tmp_path / "lambda-400" / "results.csv",
              lambda p: (report.validation_accuracy(p), report.best_lambda(tmp_path, ["400"])), lambda r: r, 15)


def test_a_damaged_collective_metrics_table_is_refused_or_read(tmp_path):
    """A collective run's metrics.csv as the source-budget study reads it (the last epoch's drop in loss)."""
    from utils import budget
    text = "task,epoch,loss,accuracy\n0,0,2.8,0.19\n0,1,1.2,0.47\n1,0,2.5,0.2\n1,1,1.3,0.5\n"
    csv_sweep("collective metrics", text, tmp_path / "metrics.csv", budget.last_epoch_drops,
              budget.converged_tasks, 8)
