"""A learngene applied to a user's own labelled folder (individual-model/your_task.py) and new images labelled with
the model it saved (individual-model/label_images.py): end to end on real photos, the saved model reloaded giving
the accuracy it recorded, the EWC strength read from the learngene's pipeline run, bad folders refused."""
import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import TINY, assert_clean_error, needs_tiny, printed_agrees, printed_numbers, run_script
from PIL import Image

from utils import recommend, sources, your_task
from utils.cli import UserError

TRAIN, LABEL = "individual-model/your_task.py", "individual-model/label_images.py"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """4 classes x 12 real Tiny-ImageNet-100 photos as <class>/<n>.jpg: a user's small labelled folder."""
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    root = tmp_path_factory.mktemp("photos") / "mine"
    tiny = sources.tiny_imagenet100(TINY, verify=False)
    for c in tiny.classes[90:94]:
        (root / c).mkdir(parents=True)
        for i in tiny.indices_of("train", c)[:12]:
            Image.fromarray(tiny.loader("train", np.array([i]))[0]).save(root / c / f"{i}.jpg", quality=95)
    return root


@needs_tiny
def test_your_task_trains_saves_and_labels(photos, collective_run, tmp_path):
    learngene = collective_run / "learngene.pt"
    proc = run_script(TRAIN, "--learngene", learngene, "--path", photos, "--out", tmp_path / "task", "--epochs", "15",
                      "--test_fraction", "0.25", "--precision", "fp32", "--no-cuda", "--recommendation", "none")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "task" / "results.json").read_text())
    assert results["classes"] == sorted(p.name for p in photos.iterdir())
    assert (results["train_images"], results["test_images"]) == (36, 12)
    assert results["learngene_minus_scratch"] == pytest.approx(
        results["learngene"]["test_accuracy"] - results["scratch"]["test_accuracy"])
    assert results["method"] == {"trained": "learngene", "chosen_by": "the paper's design (no recommendation)",
                                 "measured_on": None}
    assert {k: results[k]["lr"] for k in ("learngene", "scratch")} == {"learngene": 0.005, "scratch": 0.005}
    # no pipeline run beside this learngene: the released strength, said so
    assert results["provenance"]["ewc_lambda"] == 40000 and "released" in results["provenance"]["ewc_lambda_from"]
    record = torch.load(tmp_path / "task" / "learngene.pt", weights_only=True)
    assert record["classes"] == results["classes"] and record["image_size"] == 32
    # the learngene model inherited the learngene's blocks and trained them (EWC holds, not freezes, them)
    art = torch.load(learngene, weights_only=True)
    assert not torch.equal(record["state"]["inherited.0.conv.weight"], art["state"]["0.conv.weight"])
    # reloaded, the model labels the held-out images with the accuracy it recorded (one image of slack for
    # float rounding between the two code paths)
    test_files = sources.image_folder(photos, 0, 0.25).files["test"]
    proc = run_script(LABEL, "--model", tmp_path / "task" / "learngene.pt", "--path", photos, "--out",
                      tmp_path / "labels.csv", "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "labels.csv") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert len(rows) == 48 and all(0 < float(r["probability"]) <= 1 for r in rows.values())
    correct = [rows[f]["class"] == f.split("/")[0] for f in test_files]
    assert abs(100 * np.mean(correct) - results["learngene"]["test_accuracy"]) <= 100 / len(test_files) + 1e-9
    # each class's accuracy, named by the class: 3 held-out images of each, so their mean is the accuracy
    by_class = results["learngene"]["class_accuracy"]
    assert list(by_class) == results["classes"] and all(v * 3 / 100 == pytest.approx(round(v * 3 / 100))
                                                        for v in by_class.values()), by_class
    assert np.mean(list(by_class.values())) == pytest.approx(results["learngene"]["test_accuracy"])
    # a labelled folder: its true classes and the accuracy; a class the model does not know is refused
    proc = run_script(LABEL, "--model", tmp_path / "task" / "learngene.pt", "--path", photos, "--labelled", "--out",
                      tmp_path / "labelled.csv", "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "labelled.csv") as f:
        labelled = list(csv.DictReader(f))
    assert all(r["true_class"] == r["file"].split("/")[0] for r in labelled)
    accuracy = 100 * np.mean([r["class"] == r["true_class"] for r in labelled])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("accuracy on these labelled images: "))
    assert printed_agrees(printed_numbers(line)[0], accuracy), line
    other = tmp_path / "other"
    (other / "a-new-class").mkdir(parents=True)
    (other / "a-new-class" / "x.jpg").write_bytes(next((photos / results["classes"][0]).iterdir()).read_bytes())
    proc = run_script(LABEL, "--model", tmp_path / "task" / "learngene.pt", "--path", other, "--labelled", "--out",
                      tmp_path / "other.csv", "--no-cuda")
    assert_clean_error(proc, "that the model does not know")
    assert not (tmp_path / "other.csv").exists()
    # the same model file labels the same images the same way, and a rerun does not overwrite silently
    proc = run_script(LABEL, "--model", tmp_path / "task" / "learngene.pt", "--path", photos, "--out",
                      tmp_path / "labels.csv", "--no-cuda")
    assert_clean_error(proc, "pass --overwrite")
    proc = run_script(TRAIN, "--learngene", learngene, "--path", photos, "--out", tmp_path / "task", "--epochs", "1")
    assert_clean_error(proc, "pass --overwrite")
    # the lightweight model that inherits every block: trained, saved, reloaded and labelling, said so
    proc = run_script(TRAIN, "--learngene", learngene, "--path", photos, "--out", tmp_path / "full", "--epochs", "1",
                      "--method", "learngene-full", "--no_scratch", "--test_fraction", "0.25", "--no-cuda",
                      "--recommendation", "none")
    assert proc.returncode == 0, proc.stderr
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert full["method"] == {"trained": "learngene-full", "chosen_by": "--method", "measured_on": None}
    assert "scratch" not in full and "learngene" not in full
    record = torch.load(tmp_path / "full" / "learngene-full.pt", weights_only=True)
    assert record["method"] == "learngene-full" and record["classes"] == results["classes"]
    proc = run_script(LABEL, "--model", tmp_path / "full" / "learngene-full.pt", "--path", photos, "--out",
                      tmp_path / "full.csv", "--no-cuda")
    assert proc.returncode == 0 and "learngene-full model" in proc.stdout, proc.stderr
    # an output never lands on an input, --overwrite or not: the model, one of the images, the images' folder
    model = tmp_path / "task" / "learngene.pt"
    image = next(p for p in sorted(photos.rglob("*.jpg")))
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in (model, image)}
    for out, fragment in ((model, "is --model"), (image, "inside --path"), (photos / "labels.csv", "inside --path")):
        proc = run_script(LABEL, "--model", model, "--path", photos, "--out", out, "--overwrite", "--no-cuda")
        assert_clean_error(proc, fragment)
    assert_clean_error(run_script(TRAIN, "--learngene", learngene, "--path", photos, "--out", photos / "task",
                                  "--epochs", "1"), "inside --path")
    # a file of another kind at --out is not replaced, even with --overwrite
    (tmp_path / "notes.csv").write_text("my,own,table\n")
    proc = run_script(LABEL, "--model", model, "--path", photos, "--out", tmp_path / "notes.csv", "--overwrite",
                      "--no-cuda")
    assert_clean_error(proc, "not a file this script writes")
    assert (tmp_path / "notes.csv").read_text() == "my,own,table\n"
    assert before == {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in (model, image)}
    assert not (photos / "labels.csv").exists() and not (photos / "task").exists()


def test_ewc_strength_is_read_from_the_learngenes_pipeline_run(tmp_path):
    work = tmp_path / "checkpoints" / "preset"
    (work / "collective").mkdir(parents=True)
    for lam, acc in (("4", 50.0), ("400", 61.5), ("40000", 58.0)):
        (work / "tune-ewc" / f"lambda-{lam}").mkdir(parents=True)
        (work / "tune-ewc" / f"lambda-{lam}" / "results.csv").write_text(
            f"shots,method,runs,final_acc,diverged\n10,learngene,2,{acc},0\n20,learngene,2,{acc},0\n")
    lam, note = your_task.tuned_lambda(work / "collective" / "learngene.pt")
    assert lam == 400.0 and "validation" in note
    assert your_task.tuned_lambda(tmp_path / "elsewhere" / "learngene.pt")[0] is None


@needs_tiny
@pytest.mark.parametrize("case,fragment", [
    ("empty class", "holds no images"),
    ("one image", "too few to hold out"),
    ("not an image", "cannot decode image"),
    ("not a learngene", "not a learngene artifact"),
])
def test_bad_task_folders_are_refused_and_nothing_is_written(photos, collective_run, tmp_path, case, fragment):
    raw = tmp_path / "raw"
    for c in ("a", "b", "c"):
        (raw / c).mkdir(parents=True)
        for f in sorted((photos / sorted(p.name for p in photos.iterdir())[0]).iterdir())[:5]:
            (raw / c / f.name).write_bytes(f.read_bytes() + c.encode())  # distinct bytes per class
    learngene = collective_run / "learngene.pt"
    if case == "empty class":
        (raw / "d").mkdir()
    elif case == "one image":
        (raw / "d").mkdir()
        (raw / "d" / "x.jpg").write_bytes((raw / "a" / sorted(p.name for p in (raw / "a").iterdir())[0]).read_bytes() + b"d")
    elif case == "not an image":
        (raw / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    elif case == "not a learngene":
        learngene = sorted((collective_run / "checkpoints").glob("task_*.pt"))[-1]
    proc = run_script(TRAIN, "--learngene", learngene, "--path", raw, "--out", tmp_path / "task", "--epochs", "1",
                      "--no-cuda")
    assert_clean_error(proc, fragment)
    assert not (tmp_path / "task").exists() and not list(tmp_path.glob(".task*"))


def write_candidate_runs(path, gains, lr_of, epochs_of):
    """Made-up target runs: scratch at 50% on every task, each candidate at 50% + its gain on task t (gains:
    {method: {shots: [gain per task]}}), each method at its own rate and number of epochs."""
    lines = []
    for method, by_shots in {"scratch": {k: [0.0] * len(v) for k, v in next(iter(gains.values())).items()},
                             **gains}.items():
        for shots, per_task in by_shots.items():
            for task, gain in enumerate(per_task):
                settings = {"epochs": 30, "epochs_of": epochs_of, "batch_size": 32, "momentum": 0.9,
                            "weight_decay": 5e-4, "precision": "fp32", "section": "target", "split_hash": "s",
                            "lr": 0.005, "lr_of": lr_of, "ewc_lambda": 400.0, "dataset": "tiny-imagenet-100",
                            "learngene_shapes": [[512, 512, False], 32]}
                lines.append(json.dumps({"settings": settings, "result": {
                    "method": method, "shots": shots, "task": task, "seed": 0, "final_acc": 50.0 + gain}}))
    path.write_text("\n".join(lines) + "\n")


def test_the_recommendation_is_the_candidate_with_the_largest_paired_gain_and_carries_each_rows_settings(tmp_path):
    runs = tmp_path / "runs.jsonl"
    lr_of = {"scratch": 0.001, "learngene": 0.001, "learngene-full": 0.005, "learngene-full-noewc": 0.02}
    epochs_of = {"scratch": 60, "learngene": 60, "learngene-full": 30, "learngene-full-noewc": 30}
    # by hand: learngene-full gains 2, 4, 6 (mean 4) at 10 shots and 1, 1, 1 at 20: mean over shots 2.5, its
    # 10-shot interval t(2) * sd 2 / sqrt 3 = 4.303 * 2 / 1.732 = 4.97 (includes 0); noewc 3 and 1: 2.0;
    # learngene -1 and -1: -1.0
    write_candidate_runs(runs, {"learngene": {10: [-1, -1, -1], 20: [-1, -1, -1]},
                                "learngene-full": {10: [2, 4, 6], 20: [1, 1, 1]},
                                "learngene-full-noewc": {10: [3, 3, 3], 20: [1, 1, 1]}}, lr_of, epochs_of)
    rows, schedule = recommend.evidence([runs])
    by = {(m, k): (n, d, ci) for m, k, n, d, ci in rows}
    assert by[("learngene-full", 10)][:2] == (3, pytest.approx(4.0))
    assert by[("learngene-full", 10)][2] == pytest.approx(4.303 * 2 / 3 ** 0.5, abs=1e-3)
    assert by[("learngene", 20)][1] == pytest.approx(-1.0) and by[("learngene", 20)][2] == pytest.approx(0.0)
    assert schedule == {m: {"lr": lr_of[m], "epochs": epochs_of[m]} for m in lr_of}
    method, why = recommend.choose(rows)
    assert method == "learngene-full" and "is not shown to beat scratch" in why and "10 shots: +4.0 ±5.0" in why
    # an interval clear of 0 at every shot count is said so; below 0 at every one, scratch is the advice
    assert "beats scratch at every shot count" in recommend.choose([r for r in rows if r[0] == "learngene-full-noewc"])[1]
    assert "train scratch" in recommend.choose([r for r in rows if r[0] == "learngene"])[1]
    # the command writes it, and your_task.py's reader takes it back; a second write needs --overwrite
    out = tmp_path / "recommendation.json"
    recommend.main([str(runs), "--out", str(out)])
    rec = recommend.load(out)
    assert rec["method"] == "learngene-full" and rec["settings"]["scratch"] == {"lr": 0.001, "epochs": 60}
    assert rec["measured_on"] == "tiny-imagenet-100 at 32px, up to 3 target tasks per shot count"
    with pytest.raises(SystemExit):
        recommend.main([str(runs), "--out", str(out)])
    (tmp_path / "mine.json").write_text("{}")
    with pytest.raises(SystemExit):
        recommend.main([str(runs), "--out", str(tmp_path / "mine.json"), "--overwrite"])
    assert (tmp_path / "mine.json").read_text() == "{}"


@pytest.mark.parametrize("edit, fragment", [
    (lambda r: r.update(format="other"), "not a recommendation written by"),
    (lambda r: r.update(method="finetune-collective"), "its method 'finetune-collective' is not one of"),
    (lambda r: r["settings"].pop("scratch"), "do not give a learning rate and a number of epochs"),
    (lambda r: r["settings"]["learngene"].update(lr=-1), "do not give a learning rate and a number of epochs"),
    (lambda r: r["settings"]["learngene"].update(epochs=2.5), "do not give a learning rate and a number of epochs"),
    (lambda r: r.pop("why"), "its reason"),
])
def test_a_damaged_recommendation_is_refused_in_one_line(tmp_path, edit, fragment):
    rec = {"format": recommend.FORMAT, "method": "learngene", "why": "w", "measured_on": "m",
           "settings": {"learngene": {"lr": 0.001, "epochs": 30}, "scratch": {"lr": 0.001, "epochs": 30}}}
    path = tmp_path / "recommendation.json"
    path.write_text(json.dumps(rec))
    assert recommend.load(path)["method"] == "learngene"
    edit(rec)
    path.write_text(json.dumps(rec))
    with pytest.raises(UserError, match=fragment):
        recommend.load(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not a readable recommendation"):
        recommend.load(path)


@needs_tiny
def test_your_task_trains_what_the_recommendation_says_at_each_models_settings(photos, collective_run, tmp_path):
    rec = {"format": recommend.FORMAT, "method": "learngene-full-noewc", "why": "made up for this test",
           "measured_on": "nothing", "settings": {"learngene-full-noewc": {"lr": 0.02, "epochs": 2},
                                                  "learngene": {"lr": 0.001, "epochs": 1},
                                                  "scratch": {"lr": 0.004, "epochs": 1}}}
    (tmp_path / "rec.json").write_text(json.dumps(rec))
    proc = run_script(TRAIN, "--learngene", collective_run / "learngene.pt", "--path", photos, "--out",
                      tmp_path / "task", "--recommendation", tmp_path / "rec.json", "--test_fraction", "0.25",
                      "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "task" / "results.json").read_text())
    assert results["method"] == {"trained": "learngene-full-noewc", "chosen_by": "made up for this test",
                                 "measured_on": "nothing"}
    assert {m: (results[m]["lr"], results[m]["epochs"]) for m in rec["settings"]} == \
        {m: (s["lr"], s["epochs"]) for m, s in rec["settings"].items()}
    assert results["learngene-full-noewc_minus_scratch"] == pytest.approx(
        results["learngene-full-noewc"]["test_accuracy"] - results["scratch"]["test_accuracy"])
    saved = torch.load(tmp_path / "task" / "learngene-full-noewc.pt", weights_only=True)
    assert saved["method"] == "learngene-full-noewc" and saved["provenance"]["lr"] == 0.02
    proc = run_script(LABEL, "--model", tmp_path / "task" / "learngene-full-noewc.pt", "--path", photos, "--out",
                      tmp_path / "labels.csv", "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    assert_clean_error(run_script(TRAIN, "--learngene", collective_run / "learngene.pt", "--path", photos, "--out",
                                  tmp_path / "other", "--recommendation", tmp_path / "absent.json"), "does not exist")
