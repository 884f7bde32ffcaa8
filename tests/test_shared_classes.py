"""The target tasks' shared classes (utils/shared_classes.py): the design effect of a task-class layout worked by
hand, the permutation test on made-up differences with and without class effects, and the script on the committed
records of the AMD bf16 cpu run, refusing a split that is not the runs' own."""
import json
import math
import shutil

import numpy as np
import pytest

from conftest import REPO
from utils import shared_classes as sc
from utils.runstore import RunKey

RECORDS = REPO / "results" / "reference" / "records" / "tiny-imagenet-100-cpu-amd-bf16"


def test_the_design_effect_of_a_layout_worked_by_hand():
    # disjoint tasks share nothing: independent, whatever the classes' effects
    assert sc.design_effect([{"a", "b"}, {"c", "d"}, {"e", "f"}], 1.0) == pytest.approx(1.0)
    assert sc.design_effect([{"a", "b"}, {"c", "d"}, {"e", "f"}], math.inf) == pytest.approx(1.0)
    # three 2-way tasks in a ring, classes only: ZZ' = 1/2 on the diagonal, 1/4 off it; the mean's variance is
    # sum(ZZ') / 9 = 1/3, while s^2 / n expects (trace - sum / 3) / 2 / 3 = 1/12: a design effect of 4
    ring = [{"a", "b"}, {"b", "c"}, {"c", "a"}]
    assert sc.design_effect(ring, math.inf) == pytest.approx(4.0)
    # class SD = noise SD: V = ZZ' + I, sum 6, trace 4.5: (6 / 9) / ((4.5 - 2) / 2 / 3)
    assert sc.design_effect(ring, 1.0) == pytest.approx((6 / 9) / (2.5 / 6))


def layout(seed=0, classes=20, tasks=20, ways=5):
    rng = np.random.default_rng(seed)
    return [set(rng.choice(classes, ways, replace=False).tolist()) for _ in range(tasks)]


def test_the_permutation_test_finds_class_effects_where_they_are_and_not_in_constant_differences():
    """Differences made of class effects alone (the layout and effects seeded) are found; constant ones are not."""
    tasks = layout()
    effects = np.random.default_rng(2).normal(0, 10, 20)
    y = [float(np.mean([effects[c] for c in task])) for task in tasks]  # the classes are the whole story
    assert sc.class_effect_p(y, tasks, draws=500) < 0.01
    assert sc.class_effect_p([2.0] * len(tasks), tasks, draws=200) == 1.0  # nothing to explain


def test_rows_say_how_much_dependence_each_conclusion_tolerates():
    tasks = layout(tasks=6)
    diffs = {"far": [10.0, 11.0, 9.0, 10.5, 9.5, 10.0], "near": [1.0, -1.0, 2.0, -2.0, 0.5, -0.5]}
    runs = {RunKey("scratch", 10, t, 0): {"final_acc": 50.0} for t in range(6)}
    runs.update({RunKey(m, 10, t, 0): {"final_acc": 50.0 + d[t]} for m, d in diffs.items() for t in range(6)})
    rows = {r[1]: r for r in sc.table_rows(runs, {10: tasks}, draws=200)}
    _, _, _, n, diff, ci, p, tolerated, equal_sd, largest, *fitted = rows["far"]
    assert all(math.isnan(v) for v in fitted)  # no class_acc in these runs: nothing to fit
    assert n == 6 and diff == pytest.approx(10.0) and tolerated == pytest.approx((diff / ci) ** 2)
    assert equal_sd == pytest.approx(ci * math.sqrt(sc.design_effect(tasks, 1.0)))
    assert largest == pytest.approx(sc.design_effect(tasks, math.inf)) and 0 < p <= 1
    assert math.isnan(rows["near"][7])  # its interval holds 0: nothing to tolerate


def refused(argv, capsys):
    """The script's one-line refusal of `argv` (status 2, no traceback)."""
    with pytest.raises(SystemExit) as stopped:
        sc.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_the_script_reads_committed_records_and_refuses_another_split(tmp_path, capsys):
    out, tasks = tmp_path / "out", RECORDS / sc.TASKS_FILE
    sc.main([str(RECORDS / "individual"), "--split", str(tasks), "--out", str(out)])
    lines = (out / "shared_classes.csv").read_text().splitlines()
    assert lines[0].startswith(",".join(sc.HEADER)) and len(lines) == 1 + 12  # 6 rows x 2 shot counts
    assert "/work/" not in (out / "shared_classes.md").read_text()
    assert "exists: pass --overwrite" in refused([RECORDS / "individual", "--split", tasks, "--out", out], capsys)
    other = json.loads(tasks.read_text())
    other["split_hash"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert "is not the split these runs were trained on" in refused(
        [RECORDS / "individual", "--split", tmp_path / "other.json", "--out", tmp_path / "o2"], capsys)
    assert "this reads target tasks' runs" in refused(
        [RECORDS / "tune-ewc" / "lambda-400", "--split", tasks, "--out", tmp_path / "o3"], capsys)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_per_class_differences_pair_each_classs_accuracy_over_the_seeds():
    tasks = [["x", "y"], ["y", "z"]]
    runs = {RunKey("scratch", 10, 0, s): {"final_acc": 50.0, "class_acc": [40.0, 60.0]} for s in (0, 1)}
    runs.update({RunKey("scratch", 10, 1, 0): {"final_acc": 50.0, "class_acc": [50.0, 50.0]}})
    runs.update({RunKey("learngene", 10, 0, 0): {"final_acc": 55.0, "class_acc": [50.0, 60.0]},
                 RunKey("learngene", 10, 0, 1): {"final_acc": 55.0, "class_acc": [40.0, 80.0]},
                 RunKey("learngene", 10, 1, 0): {"final_acc": 50.0, "class_acc": [30.0, 70.0]}})
    assert sc.class_diffs(runs, "learngene", 10, "scratch", tasks) == [(0, "x", 5.0), (0, "y", 10.0),
                                                                        (1, "y", -20.0), (1, "z", 20.0)]
    runs[RunKey("learngene", 10, 1, 0)] = {"final_acc": 50.0}  # a run recorded before class_acc was
    assert sc.class_diffs(runs, "learngene", 10, "scratch", tasks) is None


def test_the_crossed_fit_finds_class_effects_where_they_are_and_not_where_they_are_not():
    """Per-class differences made up with known SDs (seeded) on 20 tasks of 5 of 20 classes, as the target tasks
    are: the fitted class SD comes back near the SD of the class effects drawn, the variance of the tables' mean
    near the model's for those effects; with no class effect, neither grows."""
    tasks = [sorted(t) for t in layout(seed=3)]
    n = len(tasks)
    shared = sum(len(set(a) & set(b)) for a in tasks for b in tasks)
    for class_sd in (0.0, 8.0):
        rng = np.random.default_rng(7)
        effects = rng.normal(0, class_sd, 20)
        task_effects = rng.normal(0, 1.0, n)
        cells = [(t, c, effects[c] + task_effects[t] + rng.normal(0, 4.0)) for t, task in enumerate(tasks)
                 for c in task]
        fitted_class, _, noise, variance = sc.crossed_model(cells)
        drawn = float(np.std(effects, ddof=1)) if class_sd else 0.0
        model_variance = drawn ** 2 * shared / 25 / n ** 2 + (1.0 + 16.0 / 5) / n
        assert abs(noise - 4.0) < 1.0 and abs(fitted_class - drawn) < 0.35 * max(drawn, 3.0)
        assert 0.5 * model_variance < variance < 2 * model_variance


def test_a_split_directory_gives_its_target_tasks_in_label_order_and_a_damaged_one_is_refused(tiny_split, tmp_path):
    from utils.cli import UserError
    from utils.splits import Split
    split = Split(tiny_split)
    tasks = sc.target_tasks(tiny_split, split.hash)
    assert tasks == {int(k): [t["classes"] for t in v] for k, v in split.manifest["target"].items()}
    with pytest.raises(UserError, match="is not the split these runs were trained on"):
        sc.target_tasks(tiny_split, "0" * 64)
    shutil.copytree(tiny_split, tmp_path / "copy")
    images = tmp_path / "copy" / split.manifest["images"]["file"]
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the same shape, another content
    images.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the sha256"):
        sc.target_tasks(tmp_path / "copy", split.hash)
