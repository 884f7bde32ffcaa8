"""Bad input, by table, for every script and flag; locks, signals and interrupted runs."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, Hostile, assert_clean_error, hostile_code_ran, run_script
from utils.files import FolderLock

MAKER = "utils/data_imagenet_mk.py"
COLLECTIVE = "collective-model/val_lifelong_imagenet.py"
INDIVIDUAL = "individual-model/inheritable_imagenet_wEWC.py"


def first(per_class):
    return next(iter(per_class.values()))


def add_class(task, other):
    """A 6th class in a few-shot task, with images of another task's class: the hand edit a 5-way model cannot take."""
    c = other["classes"][0]
    task["classes"].append(c)
    task["train"][c] = other["samples"][c][:2]
    task["test"][c] = other["samples"][c][2:4]


@pytest.fixture(scope="module")
def inputs(tiny_split, collective_run, tmp_path_factory):
    """Damaged copies of the good inputs, made once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    a_file = root / "a-file"
    a_file.write_text("not a folder")
    manifests = {}
    for name, edit in {
        "unknown_id": lambda m: m["continual"][0]["samples"][m["continual"][0]["classes"][0]].append("train:9999999"),
        "missing_key": lambda m: m.pop("continual"),
        "wrong_size": lambda m: m.update(image_size=64),
        "wrong_type": lambda m: m.update(target=[1, 2]),
        "sixth_class": lambda m: add_class(m["target"]["2"][0], m["continual"][0]),
        "test_leak": lambda m: first(m["target"]["2"][0]["test"]).append(first(m["target"]["2"][0]["train"])[0]),
        "shots_short": lambda m: first(m["target"]["4"][0]["train"]).pop(),
    }.items():
        split = root / f"split-{name}"
        shutil.copytree(tiny_split, split)
        manifest = json.loads((split / "manifest.json").read_text())
        edit(manifest)
        (split / "manifest.json").write_text(json.dumps(manifest))
        manifests[name] = split
    evil = root / "evil.pt"
    torch.save({"format": "learngene-v1", "x": Hostile()}, evil)
    return SimpleNamespace(split=tiny_split, learngene=collective_run / "learngene.pt", file=a_file, root=root,
                           manifests=manifests, evil=evil, tiny=TINY)


def split_args(i, out):
    return ["--dataset", "tiny-imagenet-100", "--path", i.tiny, "--out", out, "--size", "32", "--num_tasks", "2",
            "--num_imgs_per_cat_train", "4", "--num_target_tasks", "1", "--shots", "2"]


def collective_args(i, out, path=None):
    return ["--path", path or i.split, "--out", out, "--epochs", "1", "--num_works", "1", "--no-cuda"]


def individual_args(i, out, path=None):
    return ["--path", path or i.split, "--learngene", i.learngene, "--out", out, "--epochs", "1", "--no-cuda"]


GOOD_ARGS = {MAKER: split_args, COLLECTIVE: collective_args, INDIVIDUAL: individual_args}
# (script, its arguments: flags added to GOOD_ARGS, or all of them from the inputs and a fresh output path; a
# fragment of the one-line error)
CASES = {
    "maker: raw data missing": (MAKER, lambda i, o: [*split_args(i, o), "--path", i.root / "nowhere"], "nowhere"),
    "maker: --size 0": (MAKER, ["--size", "0"], "an integer in [32, 1024]"),
    "maker: --num_tasks text": (MAKER, ["--num_tasks", "many"], "an integer in [1, 100000]"),
    "maker: --shots repeated": (MAKER, ["--shots", "2", "2"], "repeats"),
    "maker: too many images": (MAKER, ["--num_imgs_per_cat_train", "100000"], "more than"),
    "maker: --continual_pool unknown": (MAKER, ["--continual_pool", "all"], "invalid choice"),
    "maker: --dataset unknown": (MAKER, ["--dataset", "mnist"], "invalid choice"),
    "maker: --out is a file": (MAKER, lambda i, o: [*split_args(i, i.file)], "not a directory"),
    "maker: --out under a file": (MAKER, lambda i, o: [*split_args(i, i.file / "split")], "a-file"),
    "collective: --path not a split": (COLLECTIVE, lambda i, o: collective_args(i, o, i.root), "not a split directory"),
    "collective: manifest with an unknown sample": (
        COLLECTIVE, lambda i, o: collective_args(i, o, i.manifests["unknown_id"]), "train:9999999"),
    "collective: manifest without a key": (
        COLLECTIVE, lambda i, o: collective_args(i, o, i.manifests["missing_key"]),
        "missing or wrong-typed entry 'continual'"),
    "collective: manifest with another image size": (
        COLLECTIVE, lambda i, o: collective_args(i, o, i.manifests["wrong_size"]), "images shape"),
    "collective: manifest with a wrong-typed section": (
        COLLECTIVE, lambda i, o: collective_args(i, o, i.manifests["wrong_type"]), "malformed"),
    "collective: --epochs 0": (COLLECTIVE, ["--epochs", "0"], "an integer in [1, 100000]"),
    "collective: --lr negative": (COLLECTIVE, ["--lr", "-1"], "a number in (0, 1000]"),
    "collective: --momentum text": (COLLECTIVE, ["--momentum", "x"], "a number"),
    "collective: --batch_size 0": (COLLECTIVE, ["--batch_size", "0"], "an integer in [1, 65536]"),
    "collective: --precision fp16": (COLLECTIVE, ["--precision", "fp16"], "invalid choice"),
    "collective: --num_works too many": (COLLECTIVE, ["--num_works", "9"], "more than the 3 tasks"),
    "collective: --learngene_layers with conv 0": (
        COLLECTIVE, ["--learngene_layers", "0", "1", "2"], "an integer in [1, 12]"),
    "collective: --learngene_layers with a gap": (COLLECTIVE, ["--learngene_layers", "5", "7", "8"], "consecutive"),
    "collective: --learngene_layers repeated": (COLLECTIVE, ["--learngene_layers", "5", "5", "6"], "distinct"),
    "collective: --num_learngene_layers 13": (COLLECTIVE, ["--num_learngene_layers", "13"], "an integer in [1, 12]"),
    "collective: --extract_after_task -1": (COLLECTIVE, ["--extract_after_task", "-1"], "an integer in [0, 100000]"),
    "collective: --no-judgement alone": (COLLECTIVE, ["--no-judgement"], "--learngene_layers"),
    "collective: --out is a file": (COLLECTIVE, lambda i, o: collective_args(i, i.file), "is not a folder"),
    "collective: --out under a file": (COLLECTIVE, lambda i, o: collective_args(i, i.file / "run"), "a-file"),
    "collective: --resume with nothing to resume": (COLLECTIVE, ["--resume"], "resume checkpoint not found"),
    "individual: --seed repeated": (INDIVIDUAL, ["--seed", "0", "0"], "--seed repeats 0"),
    "individual: --methods repeated": (INDIVIDUAL, ["--methods", "scratch", "scratch"], "--methods repeats scratch"),
    "individual: --methods unknown": (INDIVIDUAL, ["--methods", "maml"], "invalid choice"),
    "individual: shots repeated": (INDIVIDUAL, ["--num_imgs_per_cat_train", "2", "2"], "repeats 2"),
    "individual: shots the split lacks": (INDIVIDUAL, ["--num_imgs_per_cat_train", "10"], "no 10-shot"),
    "individual: --num_works_tt too many": (INDIVIDUAL, ["--num_works_tt", "9"], "more than"),
    "individual: --eval_every 0": (INDIVIDUAL, ["--eval_every", "0"], "an integer in [1, 100000]"),
    "individual: --ewc_lambda negative": (INDIVIDUAL, ["--ewc_lambda", "-4"], "a number in [0, 1e+12]"),
    "individual: --section unknown": (INDIVIDUAL, ["--section", "test"], "invalid choice"),
    "individual: --learngene missing": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--learngene", i.root / "none.pt"], "not found"),
    "individual: --learngene a folder": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--learngene", i.root], "not found"),
    "individual: --learngene not a torch file": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--learngene", i.file], "corrupted"),
    "individual: --learngene with a Python object": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--learngene", i.evil], "refers to the Python object"),
    "individual: --collective not a torch file": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--collective", i.file], "corrupted"),
    "individual: manifest with an unknown sample": (
        INDIVIDUAL, lambda i, o: individual_args(i, o, i.manifests["unknown_id"]), "is not among the split's images"),
    "individual: manifest with a sixth class in a task": (
        INDIVIDUAL, lambda i, o: individual_args(i, o, i.manifests["sixth_class"]), "6 classes, not 5 distinct ones"),
    "individual: manifest whose test images include a training image": (
        INDIVIDUAL, lambda i, o: individual_args(i, o, i.manifests["test_leak"]), "both a training and a test image"),
    "individual: manifest with a class short of its shots": (
        INDIVIDUAL, lambda i, o: individual_args(i, o, i.manifests["shots_short"]), "without exactly 4 training images"),
    "individual: --out is a file": (INDIVIDUAL, lambda i, o: individual_args(i, i.file), "is not a folder"),
    "individual: --out under a file": (INDIVIDUAL, lambda i, o: individual_args(i, i.file / "results"), "a-file"),
    "individual: --reuse a folder without runs": (INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--reuse", i.root],
                                                  "no runs.jsonl there"),
    "individual: --reuse a file that is not a record": (
        INDIVIDUAL, lambda i, o: [*individual_args(i, o), "--reuse", i.file], "not a record of this script's runs"),
    "draw results: table missing": ("utils/draw_results.py", lambda i, o: [i.root / "none.csv"], "no such file"),
    "draw results: not a results table": ("utils/draw_results.py", lambda i, o: [i.file, "--out", o / "f.png"],
                                          "not a results table"),
    "draw results: --released where no released study ran": (
        "utils/draw_results.py", lambda i, o: ["--released", i.root, "--out", o], "no released study's runs there"),
    "draw results: --features where no source study ran": (
        "utils/draw_results.py", lambda i, o: ["--features", i.root, "--out", o / "f.png"], "no collective/ and joint/"),
    "individual: --lr_of a method not trained": (
        INDIVIDUAL, ["--methods", "scratch", "--lr_of", "learngene=0.01"], "--lr_of learngene: not among --methods"),
    "individual: --epochs_of a method not trained": (
        INDIVIDUAL, ["--methods", "scratch", "--epochs_of", "learngene=60"], "--epochs_of learngene: not among"),
    "individual: --epochs_of repeated": (
        INDIVIDUAL, ["--methods", "scratch", "--epochs_of", "scratch=60", "scratch=30"], "--epochs_of repeats scratch"),
    "individual: --epochs_of 0": (INDIVIDUAL, ["--methods", "scratch", "--epochs_of", "scratch=0"], "an integer in"),
    "pipeline: --studies repeated": (
        "pipeline.py", lambda i, o: ["--preset", "smoke", "--root", o, "--studies", "individual", "individual"],
        "--studies repeats individual"),
    "pipeline: --preset unknown": ("pipeline.py", lambda i, o: ["--preset", "huge"], "invalid choice"),
    "pipeline: --dataset unknown": ("pipeline.py", lambda i, o: ["--dataset", "mnist"], "invalid choice"),
    "pipeline: --precision unknown": ("pipeline.py", lambda i, o: ["--precision", "fp8"], "invalid choice"),
    "pipeline: --data missing": (
        "pipeline.py", lambda i, o: ["--preset", "smoke", "--root", o, "--data", i.root / "nowhere"], "nowhere"),
    "pipeline: --root a file": ("pipeline.py", lambda i, o: ["--preset", "smoke", "--root", i.file], "a-file"),
    "throughput: --path not a split": (
        "bench/throughput.py", lambda i, o: ["--path", i.root, "--out", o / "t.csv"], "not a split directory"),
    "throughput: --steps 0": (
        "bench/throughput.py", lambda i, o: ["--path", i.split, "--steps", "0"], "an integer in [1, 100000]"),
    "preset costs: --preset unknown": ("bench/preset_costs.py", lambda i, o: ["--preset", "huge"], "invalid choice"),
    "preset costs: --path not a split": (
        "bench/preset_costs.py", lambda i, o: ["--path", i.root, "--out", o / "c.csv"], "not a split directory"),
    "fisher check: --learngene missing": (
        "bench/fisher_check.py", lambda i, o: ["--path", i.split, "--learngene", i.root / "none.pt"], "not found"),
    "individual phase: --shots 0": ("bench/individual_phase.py", lambda i, o: ["--shots", "0"], "an integer in [1, 100000]"),
}


OS_ERRORS = {"maker: --out under a file", "collective: --out under a file", "individual: --out under a file",
             "pipeline: --root a file"}


def run_in_process(script, argv, capsys):
    """main(argv) of a script in this process (a subprocess per case would spend most of its time importing
    torch); returns what a subprocess would: exit status, stdout, stderr."""
    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as stopped:
        module.main([str(a) for a in argv])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=stopped.value.code, stdout=out.out, stderr=out.err)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_before_any_work(case, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    script, args, fragment = CASES[case]
    out = tmp_path / "out"
    before = sorted(p.name for p in inputs.root.iterdir())
    argv = args(inputs, out) if callable(args) else [*GOOD_ARGS[script](inputs, out), *args]
    proc = run_in_process(script, argv, capsys)
    # a path that cannot be a folder is the operating system's refusal: exit status 1, as the README says
    assert_clean_error(proc, fragment, status=1 if case in OS_ERRORS else 2)
    assert not hostile_code_ran()
    assert not out.exists() or not any(out.iterdir()), "a refused command left outputs"
    assert sorted(p.name for p in inputs.root.iterdir()) == before, "a refused command touched its inputs"


def test_a_collective_run_whose_loss_goes_non_finite_stops_without_a_learngene(tiny_split, tmp_path, capsys):
    out = tmp_path / "run"
    proc = run_in_process(COLLECTIVE, ["--path", tiny_split, "--out", out, "--epochs", "3", "--num_works", "1",
                                       "--batch_size", "16", "--lr", "100", "--no-cuda"], capsys)
    assert_clean_error(proc, "training diverged")
    assert not (out / "learngene.pt").exists() and not (out / "checkpoints").exists()


def test_wrong_typed_resume_and_run_files_are_one_line(inputs, tmp_path, capsys):
    run = tmp_path / "collective"
    run.mkdir()
    (run / "config.json").write_text("{}")
    torch.save([1, 2, 3], run / "last.pt")  # a valid torch file of the wrong type
    assert_clean_error(run_in_process(COLLECTIVE, [*collective_args(inputs, run), "--resume"], capsys),
                       "is not a resume state")
    results = tmp_path / "individual"
    results.mkdir()
    (results / "runs.jsonl").write_text("[1, 2]\n")
    assert_clean_error(run_in_process(INDIVIDUAL, individual_args(inputs, results), capsys),
                       "is not a record of this script's runs")
    assert (results / "runs.jsonl").read_text() == "[1, 2]\n"


# ---------------------------------------------------------------- locks, signals, interrupted makers
def test_a_folder_in_use_is_refused(tiny_split, collective_run, tmp_path, capsys):
    out = tmp_path / "run"
    with FolderLock(out):
        proc = run_in_process(COLLECTIVE, ["--path", tiny_split, "--out", out, "--epochs", "1", "--no-cuda"], capsys)
        assert_clean_error(proc, "in use by another process")
        proc = run_in_process(INDIVIDUAL, ["--path", tiny_split, "--learngene", collective_run / "learngene.pt",
                                           "--out", out, "--epochs", "1", "--no-cuda"], capsys)
        assert_clean_error(proc, "in use by another process")
    assert not out.exists()  # made by the lock, empty, so removed with it
    work = tmp_path / "root" / "checkpoints" / "tiny-imagenet-100-smoke"
    with FolderLock(work):  # the pipeline's own lock, on the preset's work folder
        proc = run_in_process("pipeline.py", ["--preset", "smoke", "--root", tmp_path / "root"], capsys)
        assert_clean_error(proc, "in use by another process")
    assert not (tmp_path / "root" / "data").exists()  # refused before the split stage


@pytest.mark.parametrize("signum, status, message", [(signal.SIGTERM, 143, "stopped by SIGTERM"),
                                                     (signal.SIGINT, 130, "interrupted")])  # Ctrl-C
@pytest.mark.slow
def test_a_signal_stops_the_collective_script_with_a_message_and_it_resumes(tiny_split, tmp_path, signum, status,
                                                                            message):
    out = tmp_path / "run"
    args = [sys.executable, str(REPO / COLLECTIVE), "--path", str(tiny_split), "--out", str(out), "--epochs", "40",
            "--num_works", "1", "--batch_size", "16", "--no-cuda"]
    # a background job (nohup, CI) starts with SIGINT ignored, and Python then leaves it ignored: restore the
    # default in the child so it gets a Ctrl-C as a terminal would deliver it
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == status and message in err and "Traceback" not in err, err
    assert not list(out.glob(".*.tmp")), "a half-written file was left"
    resumed = run_script(COLLECTIVE, *args[2:], "--resume", "--epochs", "40")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(out / "last.pt", weights_only=True)["next_task"] == 1


def _children(pid):
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_killed_pipeline_takes_its_stage_with_it(tmp_path):
    """SIGKILL to the pipeline process alone: its running stage stops too, instead of training on as an orphan
    beside the next run, and the stage's folder lock is free again."""
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    pipeline = subprocess.Popen([sys.executable, str(REPO / "pipeline.py"), "--preset", "smoke", "--root",
                                 str(tmp_path), "--no-cuda"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    collective = tmp_path / "checkpoints" / "tiny-imagenet-100-smoke" / "collective"
    deadline = time.time() + 180
    while not (collective / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    stages = _children(pipeline.pid)
    assert stages, "the collective stage did not start"
    pipeline.kill()
    pipeline.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in stages) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in stages), "the stage lives on"
    with FolderLock(collective):
        pass


def _state(pid):
    try:
        return next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("State:"))
    except (OSError, StopIteration):
        return "Z"


def test_an_interrupted_split_makers_folder_is_removed_by_the_next(tmp_path):
    out = tmp_path / "split"
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".split.partial-{dead}"
    stale.mkdir()
    np.save(stale / "images.npy", np.zeros((4, 4), dtype=np.uint8))
    kept = tmp_path / f".split.partial-{dead + 1}"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    proc = run_script(MAKER, *split_args(SimpleNamespace(tiny=TINY), out))
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and "interrupted split maker" in proc.stdout
    assert (kept / "notes.txt").read_text() == "mine"
    assert (out / "manifest.json").exists() and not list(tmp_path.glob(f".split.partial-{os.getpid()}*"))


def test_draw_results_never_writes_over_its_table_or_a_file_of_another_kind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    table = tmp_path / "table.csv"
    shutil.copyfile(REPO / "results" / "reference" / "tiny-imagenet-100-quick.csv", table)
    (tmp_path / "mine.png").write_text("my notes, not a figure")
    before = {f: f.read_bytes() for f in (table, tmp_path / "mine.png")}
    for out, fragment in ((table, "is TABLE"), (tmp_path / "mine.png", "not a file this script writes")):
        proc = run_in_process("utils/draw_results.py", [table, "--out", out, "--overwrite"], capsys)
        assert_clean_error(proc, fragment)
    assert before == {f: f.read_bytes() for f in before}
    from utils import draw_results
    draw_results.main([str(table), "--out", str(tmp_path / "f.png")])
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    draw_results.main([str(table), "--out", str(tmp_path / "f.png"), "--overwrite"])  # its own figure: replaced
