"""Bad input, generated from the parsers: every numeric flag of every script is tried at and past the edges of the
domain its parser states (utils/cli.Number), and every path flag with the inputs a user gets wrong (missing, a
folder for a file and the reverse, empty, a truncated copy of the real thing, a file of another kind), each by the
kind of thing its metavar says it names. A new flag is covered without editing this file; a flag whose kind is
not declared fails test_every_flag_states_its_domain. Each case must end as the README promises: a non-zero exit,
exactly one `error:` line, no traceback, nothing written, its inputs untouched."""
import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, TINY, assert_clean_error, needs_tiny, write_cifar
from PIL import Image

from utils import learngene, recommend, your_task
from utils.splits import Split
from utils.cli import Number
from utils.files import torch_save
from utils.models import IndividualNet

MAKER, CIFAR_MAKER = "utils/data_imagenet_mk.py", "utils/data_cifar_mk.py"
COLLECTIVE, INDIVIDUAL = "collective-model/val_lifelong_imagenet.py", "individual-model/inheritable_imagenet_wEWC.py"

# Each script with arguments that run it successfully; the cases change one flag of these.
GOOD = {
    MAKER: lambda g, o: ["--dataset", "tiny-imagenet-100", "--path", g.raw_tiny, "--out", o, "--size", "32",
                         "--num_tasks", "2", "--num_imgs_per_cat_train", "4", "--num_target_tasks", "1", "--shots", "2"],
    CIFAR_MAKER: lambda g, o: ["--path", g.raw_cifar, "--out", o, "--num_tasks", "2", "--num_imgs_per_cat_train", "4",
                               "--num_target_tasks", "1", "--shots", "2", "--no-verify"],
    COLLECTIVE: lambda g, o: ["--path", g.split, "--out", o, "--epochs", "1", "--num_works", "1", "--no-cuda"],
    INDIVIDUAL: lambda g, o: ["--path", g.split, "--learngene", g.learngene, "--out", o, "--epochs", "1", "--no-cuda"],
    "pipeline.py": lambda g, o: ["--preset", "smoke", "--root", o],
    "bench/throughput.py": lambda g, o: ["--path", g.split, "--out", o / "t.csv", "--no-cuda", "--steps", "1"],
    "bench/preset_costs.py": lambda g, o: ["--path", g.split, "--out", o / "c.csv", "--no-cuda"],
    "bench/fisher_check.py": lambda g, o: ["--path", g.split, "--learngene", g.learngene, "--section", "target",
                                           "--shots", "2"],
    "bench/individual_phase.py": lambda g, o: ["--path", g.split, "--learngene", g.learngene, "--shots", "2",
                                               "--num_target_tasks", "1", "--no-cuda", "--out", o / "p.csv"],
    "bench/paired_runs.py": lambda g, o: [g.runs, g.runs],
    "utils/draw_results.py": lambda g, o: [g.table, "--out", o / "f.png"],
    "utils/shared_classes.py": lambda g, o: [g.split_runs, "--split", g.split, "--out", o],
    "collective-model/joint_source.py": lambda g, o: ["--path", g.split, "--learngene", g.learngene, "--out", o,
                                                      "--epochs", "1", "--no-cuda"],
    "collective-model/measure_source.py": lambda g, o: ["--path", g.split, "--run", g.learngene.parent, "--no-cuda"],
    "individual-model/your_task.py": lambda g, o: ["--learngene", g.learngene, "--path", g.photos, "--out", o,
                                                   "--epochs", "1", "--no-cuda", "--recommendation", g.recommendation],
    "utils/recommend.py": lambda g, o: [g.split_runs, "--out", o / "recommendation.json"],
    "individual-model/label_images.py": lambda g, o: ["--model", g.task_model, "--path", g.photos, "--out",
                                                      o / "labels.csv", "--no-cuda"],
}
# What a path flag names (its metavar) and the bad values of that kind: (case name, how to make it from the good
# inputs and a scratch folder). Inputs that must exist: a file or a folder of a given kind; outputs.
INPUT_FILES = {"LEARNGENE": "learngene", "CHECKPOINT": "checkpoint", "TABLE": "table", "CLASSES": "classes",
               "MODEL": "task_model", "RECOMMENDATION": "recommendation"}
INPUT_DIRS = {"SPLIT": "split", "RAW": "raw_tiny", "RUNS": "runs"}
WRONG_KIND = {"LEARNGENE": "checkpoint", "CHECKPOINT": "learngene", "TABLE": "png", "CLASSES": "table", "MODEL": "learngene",
              "RECOMMENDATION": "table", "SPLIT": "raw_tiny",
              "RAW": "split", "RUNS": "split"}
OUTPUTS = {"OUTDIR", "OUTFILE"}
FREE_TEXT = {"TEXT"}


class Parsed(Exception):
    pass


def load(script):
    spec = importlib.util.spec_from_file_location(f"sweep_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_of(script, argv, monkeypatch):
    """The script's argparse parser, caught as its main() hands it the command line."""
    def catch(self, args=None, namespace=None):
        raise Parsed(self)
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Parsed) as caught:
            load(script).main([str(a) for a in argv])
    return caught.value.args[0]


def flags(parser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def run_main(script, argv, capsys):
    module = load(script)
    try:
        module.main([str(a) for a in argv])
        code = 0
    except SystemExit as stopped:
        code = stopped.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def with_value(parser, good, action, value):
    """The good arguments with one flag (or positional) set to `value`."""
    if action.option_strings:
        return [*good, action.option_strings[0], value]
    index = [a for a in flags(parser) if not a.option_strings].index(action)
    return [*good[:index], value, *good[index + 1:]]


def out_of_domain(number):
    """Values just past each end, huge, and not numbers at all."""
    step = 1 if number.kind is int else max(1.0, abs(number.hi), abs(number.lo)) * 1e-6
    lo = number.lo if number.open_lo else number.lo - step
    hi = number.hi if number.open_hi else number.hi + step
    values = [repr(number.kind(lo)), repr(number.kind(hi)), "1" + "0" * 30, "many", ""]
    values += ["nan", "inf", "-inf", "1e400"] if number.kind is float else ["1.5"]
    return values


def at_edges(number):
    return [v for v in (number.lo, number.hi) if v in number]


@pytest.fixture(scope="module")
def good(tiny_split, collective_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-good")
    runs = root / "runs"
    (runs / "individual").mkdir(parents=True)
    (runs / "individual" / "runs.jsonl").write_text(
        '{"settings": {"accuracy_unit": "percent"}, "result": {"method": "scratch", "shots": 2, "task": 0, '
        '"seed": 0, "final_acc": 40.0}}\n')
    split_runs = root / "split-runs"  # target runs recorded on the tiny split, as utils/shared_classes.py reads them
    split_runs.mkdir()
    settings = json.dumps({"split_hash": Split(tiny_split).hash, "section": "target", "lr": 0.005, "epochs": 30})
    (split_runs / "runs.jsonl").write_text("".join(
        f'{{"settings": {settings}, "result": {{"method": "{m}", "shots": 2, "task": {t}, "seed": 0, '
        f'"final_acc": {40.0 + 5 * t + 2 * (m == "learngene")}}}}}\n' for m in ("scratch", "learngene") for t in (0, 1)))
    (root / "a.png").write_bytes((REPO / "results" / "reference" / "tiny-imagenet-100-quick-curves.png").read_bytes())
    photos = root / "photos"  # a user's labelled folder: 3 classes x 5 small photos
    for c in range(3):
        (photos / f"class{c}").mkdir(parents=True)
        for j in range(5):
            Image.fromarray(np.random.default_rng(10 * c + j).integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
                photos / f"class{c}" / f"{j}.png")
    art = learngene.load(collective_run / "learngene.pt")
    recommendation = root / "recommendation.json"
    recommendation.write_text(json.dumps({"format": recommend.FORMAT, "method": "learngene", "why": "made up",
                                          "measured_on": "nothing", "settings": {
                                              m: {"lr": 0.005, "epochs": 1} for m in ("learngene", "scratch")}}))
    torch_save(root / "task.pt", your_task.model_record(IndividualNet(art["blocks"], art["image_size"], 3), "scratch",
                                                        ["class0", "class1", "class2"], art, 50.0, {}))
    return SimpleNamespace(split=tiny_split, learngene=collective_run / "learngene.pt", raw_tiny=TINY,
                           raw_cifar=write_cifar(root / "cifar"), checkpoint=sorted(
                               (collective_run / "checkpoints").glob("task_*.pt"))[-1],
                           table=REPO / "results" / "reference" / "tiny-imagenet-100-quick.csv", runs=runs,
                           split_runs=split_runs,
                           png=root / "a.png", root=root, classes=REPO / "utils" / "splits" / "tiny_imagenet100_split.json",
                           photos=photos, task_model=root / "task.pt", recommendation=recommendation)


def truncated_copy(path, into):
    """A copy of a file cut to half its size, or of a folder whose largest file is cut to at most 1 MB (an
    interrupted copy or download)."""
    path = Path(path)
    if path.is_file():
        (into / path.name).write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        return into / path.name
    copy = into / path.name
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    for p in files:
        (copy / p.relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
        data = p.read_bytes()
        (copy / p.relative_to(path)).write_bytes(data[:min(len(data) // 2, 1 << 20)] if p == files[-1] else data)
    return copy


def path_cases(metavar, good_value, g, scratch):
    """{case: bad value} for a path flag of this kind; good_value is what the script's good arguments give it."""
    a_file = scratch / "a-file.txt"
    a_file.write_text("not what was asked for\n")
    if metavar in OUTPUTS:
        return {"an existing file": a_file, "under a file": a_file / "x"} if metavar == "OUTDIR" else \
            {"an existing folder": scratch, "under a file": a_file / "x.csv"}
    cases = {"missing": scratch / "nowhere", "an empty folder": scratch / "empty"}
    (scratch / "empty").mkdir()
    if metavar in INPUT_FILES:
        (scratch / "empty-file").write_bytes(b"")
        cases.update({"a folder": scratch, "an empty file": scratch / "empty-file", "a text file": a_file,
                      "a truncated copy": truncated_copy(good_value, scratch),
                      "a file of another kind": getattr(g, WRONG_KIND[metavar])})
        if os.geteuid() != 0:  # root reads a file whatever its mode, so the case exists for other users only
            unreadable = scratch / "unreadable"
            unreadable.write_bytes(Path(good_value).read_bytes())
            unreadable.chmod(0)
            cases["an unreadable file"] = unreadable
        return cases
    cases.update({"a file": a_file, "another kind of folder": getattr(g, WRONG_KIND[metavar])})
    if metavar != "RUNS":  # a runs record cut short is normal (an interrupted run) and is read as such
        cases["a truncated copy"] = truncated_copy(good_value, scratch)
    return cases


def snapshot(*paths):
    """Every file's size and modification time under the paths: what a refused command must leave alone."""
    seen = {}
    for p in map(Path, paths):
        for f in [p] if p.is_file() else (p.rglob("*") if p.is_dir() else []):
            if f.is_file():
                st = f.stat()
                seen[str(f)] = (st.st_size, st.st_mtime_ns)
    return seen


def assert_refused(proc, out, before, inputs, status=2):
    assert_clean_error(proc, status=status)
    assert not out.exists() or not any(out.iterdir()), f"a refused command wrote {sorted(out.rglob('*'))[:3]}"
    assert snapshot(*inputs) == before, "a refused command changed its inputs"


def test_every_flag_states_its_domain(good, tmp_path, monkeypatch):
    """A numeric flag has a Number type, a path flag a metavar naming its kind: nothing escapes the sweep."""
    for script, make in GOOD.items():
        for action in flags(parser_of(script, make(good, tmp_path / "o"), monkeypatch)):
            if isinstance(action.type, Number) or action.choices or action.nargs == 0:
                continue
            assert action.metavar in {*INPUT_FILES, *INPUT_DIRS, *OUTPUTS, *FREE_TEXT}, \
                f"{script} {action.option_strings or action.dest}: no domain (a Number type, choices or a metavar)"


@needs_tiny
def test_generated_sweep(good, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    counts = {"numeric refused": 0, "numeric edges accepted": 0, "path refused": 0}
    failures = []
    for script, make in GOOD.items():
        out = tmp_path / "out"
        parser = parser_of(script, make(good, out), monkeypatch)
        for action in flags(parser):
            name = action.option_strings[0] if action.option_strings else action.dest
            cases = {}
            if isinstance(action.type, Number):
                for value in at_edges(action.type):  # the edges are in the domain: the parser takes them
                    parser.parse_args([str(a) for a in with_value(parser, make(good, out), action, str(value))])
                    counts["numeric edges accepted"] += 1
                cases = {f"{name} {v!r}": v for v in out_of_domain(action.type)}
            elif action.metavar in {*INPUT_FILES, *INPUT_DIRS, *OUTPUTS}:
                good_args = make(good, out)
                current = parser.parse_args([str(a) for a in good_args])
                good_value = getattr(current, action.dest)
                good_value = (good_value or [None])[0] if isinstance(good_value, list) else good_value
                if good_value is None and action.metavar not in OUTPUTS:  # an optional input: the kind's good value
                    good_value = getattr(good, INPUT_FILES.get(action.metavar) or INPUT_DIRS.get(action.metavar))
                scratch = tmp_path / f"scratch-{len(failures)}-{script.replace('/', '_')}-{action.dest}"
                scratch.mkdir()
                cases = {f"{name}: {case}": value
                         for case, value in path_cases(action.metavar, good_value, good, scratch).items()}
            for case, value in cases.items():
                if out.exists():
                    shutil.rmtree(out)
                # a numeric case's value is no path ("" would read as the repository, .venv and all)
                inputs = [good.split, good.learngene, good.runs, good.table, good.photos, good.task_model, good.recommendation, good.split_runs,
                          *([value] if isinstance(value, Path) else [])]
                before = snapshot(*inputs)
                t0 = time.perf_counter()
                proc = run_main(script, with_value(parser, make(good, out), action, value), capsys)
                if time.perf_counter() - t0 > 3:
                    print(f"slow case ({time.perf_counter() - t0:.0f} s): {script} {case}", file=sys.__stderr__)
                try:
                    # a path the system cannot use as asked (a file for a folder) may be its refusal: status 1
                    assert_refused(proc, out, before, inputs, (1, 2) if isinstance(value, Path) else 2)
                except AssertionError as e:
                    failures.append(f"{script} {case}: {str(e).splitlines()[0][:300]}")
                    print("not refused cleanly:", failures[-1], file=sys.__stderr__)
                counts["path refused" if isinstance(value, Path) else "numeric refused"] += 1
    print(f"generated bad-input sweep: {sum(counts.values())} cases ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    assert not failures, f"{len(failures)} cases not refused cleanly:\n" + "\n".join(failures)
