"""The whole pipeline on the real offline images, run the way the README says (`./run.sh smoke` in a fresh
clone with ../shared beside it): every stage, the table, the stage times, resuming, refusing to overwrite
results, and no preset writing over a file that git tracks."""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SCRIPT_PRECISION, SHARED, TINY, assert_clean_error, printed_agrees, run_script, with_precision

import pipeline
from utils import released, stages, tuning
from utils.cli import UserError

# the smoke preset's stages: the EWC grid may grow upward (hundredfold) by what the validation tasks say, so the
# tuning stages after the first three depend on the data; the studies always come last, the joint source just before
# the first study that reads it
FIRST_STAGES = ["split", "collective", "tune-ewc lambda=40000", "tune-ewc lambda=400", "tune-ewc lambda=4"]
LAST_STAGES = ["individual", "joint-source", "source"]
STUDY_STAGES = ("individual", "source")  # rerun every time (they resume from their runs.jsonl), the others skip


def check_stage_names(names):
    assert names[:len(FIRST_STAGES)] == FIRST_STAGES and names[-len(LAST_STAGES):] == LAST_STAGES, names
    grown = names[len(FIRST_STAGES):-len(LAST_STAGES)]
    assert grown == [f"tune-ewc lambda={40000 * 100 ** (i + 1)}" for i in range(len(grown))], names


def git(*args, cwd=REPO):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def fresh_clone(dest):
    """What a fresh clone of this working tree holds (its tracked and not-ignored files, committed), with
    ../shared beside it. Copied rather than `git clone`d so that uncommitted work is what gets tested."""
    files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "clone", cwd=dest)
    (dest.parent / "shared").symlink_to(SHARED)
    return dest


def installed_venv():
    """The environment running the tests, if run.sh set it up (its stamp): a clone can reuse it as its .venv,
    so `./run.sh smoke` there installs nothing."""
    prefix = Path(sys.prefix)
    return prefix if sys.prefix != sys.base_prefix and list(prefix.glob(".installed-*")) else None


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    repo = fresh_clone(tmp_path_factory.mktemp("clone") / "learngene")
    venv = installed_venv()
    if venv is not None:
        (repo / ".venv").symlink_to(venv)
        cmd = ["./run.sh", "smoke", "--no-cuda", "--precision", SCRIPT_PRECISION]
    else:  # what run.sh would exec, without installing anything into this environment
        cmd = [sys.executable, "pipeline.py", "--preset", "smoke", "--no-cuda", "--precision", SCRIPT_PRECISION]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


def rerun(repo, *args):
    return subprocess.run([sys.executable, "pipeline.py", "--preset", "smoke", "--no-cuda", *with_precision("pipeline.py", args)], cwd=repo,
                          capture_output=True, text=True, timeout=900)


def test_no_preset_writes_where_git_tracks_files():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for preset in pipeline.PRESETS:
        for dataset in pipeline.SCRIPTS:
            paths = pipeline.outputs(".", dataset, preset)
            names = [str(paths["split"]), str(paths["work"]), *map(str, paths["results"])]
            tracked = git("ls-files", "--", *names)
            assert tracked == "", f"preset {preset} on {dataset} writes over tracked files:\n{tracked}"


def test_cpu_preset_covers_the_whole_widening_schedule():
    """The cpu preset answers the paper's question only if the learngene comes after the last widening (task 20,
    the collective script's default --extract_after_task) and every method runs: its plumbing is the smoke
    preset's, which the tests below run; what differs is scale, checked here."""
    from utils.models import WIDENING
    cpu = pipeline.PRESETS["cpu"]
    assert int(cpu["split"][cpu["split"].index("--num_tasks") + 1]) == max(WIDENING) + 1
    assert "--extract_after_task" not in cpu["collective"] and "--methods" not in cpu["individual"]
    assert int(cpu["split"][cpu["split"].index("--num_target_tasks") + 1]) >= 20


@pytest.mark.slow
def test_fresh_clone_runs_the_pipeline_to_its_table(clone):
    md = (clone / "results" / "tiny-imagenet-100-smoke.md").read_text()
    with open(clone / "results" / "tiny-imagenet-100-smoke.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {"learngene", "learngene-noewc", "scratch", "other-layers", "finetune-collective", "probe-collective",
               "probe-random"}
    assert {(r["shots"], r["method"]) for r in rows} == {(k, m) for k in ("10", "20") for m in methods}
    assert all(int(r["runs"]) == 2 for r in rows)
    for suffix in ("-forest.png", "-curves.png", "-heatmap.png", "-heldout.png", "-source-forest.png",
                   "-source-contrasts.png", "-source-features.png"):
        assert (clone / "results" / f"tiny-imagenet-100-smoke{suffix}").read_bytes()[:4] == b"\x89PNG"
    times = json.loads((clone / "checkpoints" / "tiny-imagenet-100-smoke" / "stage_times.json").read_text())
    check_stage_names(list(times))
    assert all(s > 0 for s in times.values())
    table = md[md.index("| stage | seconds | minutes |"):].split("\n\n")[0].splitlines()[2:]
    seconds = {cells[1].strip(): cells[2].strip() for cells in (line.split("|") for line in table)}
    for name in times:  # the table prints each stage's seconds rounded
        assert printed_agrees(seconds[name], times[name]), (name, seconds[name], times[name])
    assert "EWC lambda chosen on the validation" in md and "Provenance" in md
    assert "Source on held-out images of its classes" in md and "### Study source" in md
    assert "joint source minus collective model" in md and "(tiny-imagenet-100-smoke-source-features.png)" in md
    with open(clone / "results" / "tiny-imagenet-100-smoke-source-contrasts.csv") as f:  # every control, both shots
        assert {(r["shots"], r["method"]) for r in csv.DictReader(f)} == {
            (k, m) for k in ("10", "20") for m in ("learngene-joint", "finetune-joint", "probe-joint", "probe-collective",
                                                  "learngene-permuted", "learngene-frozen", "learngene-noewc",
                                                  "other-layers")}
    assert "| learngene-joint minus learngene |" in md and "(tiny-imagenet-100-smoke-source-contrasts.png)" in md
    features = clone.parent / "redrawn-features.png"  # the sources' features again from their held-out summaries alone
    proc = run_script("utils/draw_results.py", "--features", clone / "checkpoints" / "tiny-imagenet-100-smoke",
                      "--out", features)
    assert proc.returncode == 0 and features.read_bytes()[:4] == b"\x89PNG", proc.stderr[-2000:]
    assert git("status", "--porcelain", cwd=clone) == ""  # every output is ignored; nothing tracked changed


@pytest.mark.slow
def test_pipeline_resumes_and_keeps_results(clone):
    md = clone / "results" / "tiny-imagenet-100-smoke.md"
    before = md.read_bytes()
    assert_clean_error(rerun(clone), "--overwrite")
    assert md.read_bytes() == before

    times_file = clone / "checkpoints" / "tiny-imagenet-100-smoke" / "stage_times.json"
    times = json.loads(times_file.read_text())
    proc = rerun(clone, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [name for name in times if name not in STUDY_STAGES]
    for name in done:
        assert f"[{name}] done already" in proc.stdout
    assert proc.stdout.count("28 runs already") == 2 and "0 to go" in proc.stdout  # both studies resumed
    again = json.loads(times_file.read_text())
    assert {k: again[k] for k in done} == {k: times[k] for k in done}
    assert again["individual"] > times["individual"]  # the time spent rechecking is added, not lost
    assert md.read_bytes() != before  # rewritten (this invocation's wall-clock time and the stage times)


def test_pipeline_bad_data_is_a_clean_error(tmp_path):
    proc = run_script("pipeline.py", "--preset", "smoke", "--root", tmp_path, "--data", tmp_path / "nowhere")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_budget_study_trains_the_sources_and_reuses_what_reads_none(clone):
    """The source-budget study on the smoke preset: the collective model again at the preset's other budgets, every
    point's target runs, and what reads no source (scratch) trained once: every point takes the individual study's
    scratch runs, and the preset's own point takes all of its runs from the earlier studies."""
    proc = rerun(clone, "--studies", "individual", "source", "budget", "--overwrite")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = clone / "checkpoints" / "tiny-imagenet-100-smoke"
    times = json.loads((work / "stage_times.json").read_text())
    assert {"collective epochs-2-lr-0.001", "collective epochs-1-lr-0.01", "budget epochs-1-lr-0.001",
            "budget epochs-2-lr-0.001"} <= set(times)
    with open(clone / "results" / "tiny-imagenet-100-smoke-budget.csv") as f:
        rows = list(csv.DictReader(f))
    seen = {r["point"]: int(r["images_seen"]) for r in rows}
    assert seen["epochs-2-lr-0.001"] == 2 * seen["epochs-1-lr-0.001"] and set(seen) <= {
        "epochs-1-lr-0.001", "epochs-2-lr-0.001", "epochs-1-lr-0.01"}
    for point in seen:
        runs = [json.loads(line)["result"] for line in (work / "budget" / point / "target" / "runs.jsonl").open()]
        scratch = [r for r in runs if r["method"] == "scratch"]
        assert len(scratch) == 4 and all(r["reused_from"].endswith("individual/runs.jsonl") for r in scratch)
        if point == "epochs-1-lr-0.001":  # the preset's own source: nothing to train
            assert all("reused_from" in r for r in runs)
        else:  # another source: its learngene is trained here
            assert not any("reused_from" in r for r in runs if r["method"] == "learngene")
    assert (clone / "results" / "tiny-imagenet-100-smoke-budget.png").read_bytes()[:4] == b"\x89PNG"
    md = (clone / "results" / "tiny-imagenet-100-smoke.md").read_text()
    assert "### Study budget" in md and "learning rate at 1 epochs per task" in md


def test_budget_study_cannot_come_first(tmp_path):
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    assert_clean_error(run_script("pipeline.py", "--preset", "smoke", "--root", tmp_path, "--studies", "budget"),
                       "cannot come first")
    assert_clean_error(run_script("pipeline.py", "--preset", "paper", "--root", tmp_path, "--studies", "individual",
                                  "budget"), "no source budgets")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_released_study_runs_each_released_choice_beside_the_clean_runs(clone):
    """The released-protocol study on the smoke preset: one individual-script stage per released choice, the clean
    protocol's row read from the individual study's own runs, the released learngene chained (the smoke preset's 2
    target tasks make one chain) with a new optimizer every epoch and no EWC."""
    proc = rerun(clone, "--studies", "individual", "released", "--overwrite")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = clone / "checkpoints" / "tiny-imagenet-100-smoke"
    times = json.loads((work / "stage_times.json").read_text())
    assert {f"released {r.folder}" for r in released.runs(2)} <= set(times)
    with open(clone / "results" / "tiny-imagenet-100-smoke-released.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(released.ROWS) * 2 * 2  # rows x shot counts x (final, best epoch)
    assert all(r["commit"] and "--studies individual released" in r["command"] for r in rows)  # provenance per row
    with open(clone / "results" / "tiny-imagenet-100-smoke.csv") as f:
        individual = {(r["shots"], r["method"]): float(r["final_acc"]) for r in csv.DictReader(f)}
    for r in rows:
        if r["row"] == "clean protocol" and r["metric"] == "final_acc":
            # both CSVs print 6 significant digits of the same means: within a unit of each other's last digit
            assert printed_agrees(r["learngene"], individual[(r["shots"], "learngene")], slack=1e-3)
            assert printed_agrees(r["scratch"], individual[(r["shots"], "scratch")], slack=1e-3)
    lines = [json.loads(line) for line in (work / "released" / "released" / "runs.jsonl").open()]
    assert {(r["settings"]["protocol"]["chain"], r["settings"]["protocol"]["optimizer_per_epoch"],
             r["settings"]["ewc_lambda"]) for r in lines} == {(2, True, 0.0)}
    assert (clone / "results" / "tiny-imagenet-100-smoke-released-chain.png").read_bytes()[:4] == b"\x89PNG"
    redrawn = clone.parent / "redrawn-released"  # the figures again from the stored runs alone
    redrawn.mkdir()
    proc = run_script("utils/draw_results.py", "--released", work / "released", "--out", redrawn)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((redrawn / f).read_bytes()[:4] == b"\x89PNG" for f in ("chain.png", "overlap.png"))
    assert "### Study released" in (clone / "results" / "tiny-imagenet-100-smoke.md").read_text()


@pytest.mark.slow
def test_tuned_study_gives_each_method_the_learning_rate_its_validation_tasks_prefer(clone):
    """The tuned study on the smoke preset: every rate of the grid tried on the validation tasks only, and each
    method's target runs trained at the rate its validation runs preferred."""
    from utils import report
    from utils.methods import reads
    proc = rerun(clone, "--studies", "individual", "tuned", "--overwrite")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = clone / "checkpoints" / "tiny-imagenet-100-smoke"
    tried = sorted((p.name.removeprefix("lr-") for p in (work / "tune-lr").iterdir()), key=float)
    assert set(tuning.LR_GRID) <= set(tried)  # and the rates the grid grew to, if some method preferred an end
    assert {f"tune-lr lr={lr}" for lr in tried} <= set(json.loads((work / "stage_times.json").read_text()))
    for lr in tried:
        lines = [json.loads(line) for line in (work / "tune-lr" / f"lr-{lr}" / "runs.jsonl").open()]
        assert {(r["settings"]["section"], reads(r["result"]["method"], r["settings"])["lr"]) for r in lines} == {
            ("validation", float(lr))}
    methods = pipeline.STUDIES["tuned"].methods
    best, _ = report.best_learning_rates(work / "tune-lr", tried, methods)
    lines = [json.loads(line) for line in (work / "tuned" / "runs.jsonl").open()]
    assert {r["result"]["method"] for r in lines} == set(methods)
    for r in lines:
        assert r["settings"]["section"] == "target"
        assert reads(r["result"]["method"], r["settings"])["lr"] == float(best[r["result"]["method"]])
    md = (clone / "results" / "tiny-imagenet-100-smoke.md").read_text()
    assert "### Study tuned" in md and "Learning rates of the tuned study chosen on the validation" in md


def test_a_corrupt_record_of_stage_times_is_one_line(tmp_path):
    for text in ("{not json", "[1, 2]", '{"collective": "long"}', '{"collective": -3}'):
        (tmp_path / "stage_times.json").write_text(text)
        with pytest.raises(UserError, match="is not a record of stage times"):
            stages.StageClock(tmp_path / "stage_times.json")
    (tmp_path / "stage_times.json").write_text('{"collective": 12.5}')
    assert stages.StageClock(tmp_path / "stage_times.json").seconds == {"collective": 12.5}


def test_a_running_stage_keeps_its_time_on_disk(tmp_path, monkeypatch):
    """A stage's seconds reach stage_times.json while it runs (every CLOCK_TICK), not only when it ends: a machine
    lost in a long stage loses at most a tick of its count. Its last count is the whole stage, counted once."""
    monkeypatch.setattr(stages, "CLOCK_TICK", 0.2)
    times = tmp_path / "stage_times.json"
    seen = tmp_path / "seen.json"
    (tmp_path / "stage.py").write_text(
        "import shutil, sys, time\ntime.sleep(1.2)\nshutil.copyfile(sys.argv[1], sys.argv[2])\n")
    clock = stages.StageClock(times)
    t0 = time.time()
    stages.stage(clock, "long", str(tmp_path / "stage.py"), [times, seen], None)
    elapsed = time.time() - t0
    assert json.loads(seen.read_text())["long"] >= 0.6  # written by the pipeline while the stage still ran
    assert abs(json.loads(times.read_text())["long"] - elapsed) < 0.5


@pytest.mark.slow
def test_the_queued_studies_run_in_order_each_tuned_on_validation_and_reusing_what_reads_the_same(clone):
    """The studies the cpu run queues after the individual one, in the README command's order, on the smoke preset:
    the knowledge ladder and the lightweight model that inherits every block each choose their settings on the
    validation tasks and write their contrasts; the seed study trains a second collective model and takes from it
    only the rows that read it (scratch and the capacity control are the knowledge study's runs); and the inherit
    study's runs are what utils/recommend.py reads."""
    from utils import contrasts, seeds
    from utils.methods import reads
    proc = rerun(clone, "--studies", "individual", "knowledge", "inherit", "seed", "--overwrite")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = clone / "checkpoints" / "tiny-imagenet-100-smoke"
    times = list(json.loads((work / "stage_times.json").read_text()))
    order = [times.index(name) for name in ("individual", "tune-lr-knowledge lr=0.001", "knowledge",
                                            "tune-lr-inherit lr=0.001", "inherit", "collective seed 1", "seed seed-1")]
    assert order == sorted(order), times
    for study, pairs in (("knowledge", contrasts.LADDER), ("inherit", contrasts.FULL)):
        for folder in [*(work / f"tune-lr-{study}").iterdir(), *(work / f"tune-epochs-{study}").iterdir()]:
            lines = [json.loads(line) for line in (folder / "runs.jsonl").open()]
            assert {r["settings"]["section"] for r in lines} == {"validation"}, folder
        lines = [json.loads(line) for line in (work / study / "runs.jsonl").open()]
        assert {r["settings"]["section"] for r in lines} == {"target"}
        trained = {r["result"]["method"] for r in lines}
        with open(clone / "results" / f"tiny-imagenet-100-smoke-{study}-contrasts.csv") as f:
            written = {(r["shots"], r["method"], r["against"]) for r in csv.DictReader(f)}
        own = {(k, m, a): {m, a} <= trained for k in ("10", "20") for m, a, _ in pairs}
        # every pair of its own rows, and only the study's pairs (a row of a study it reuses may complete one)
        assert {p for p, both in own.items() if both} <= written <= set(own)
    assert (clone / "results" / "tiny-imagenet-100-smoke-knowledge-ladder.png").read_bytes()[:4] == b"\x89PNG"

    knowledge = [json.loads(line) for line in (work / "knowledge" / "runs.jsonl").open()]
    second = [json.loads(line) for line in (work / "seed" / "seed-1" / "target" / "runs.jsonl").open()]
    first_gene = {r["settings"]["learngene_sha256"] for r in knowledge}
    for r in second:
        settings = reads(r["result"]["method"], r["settings"])
        chosen = next(reads(k["result"]["method"], k["settings"]) for k in knowledge
                      if k["result"]["method"] == r["result"]["method"])
        assert (settings["lr"], settings["epochs"]) == (chosen["lr"], chosen["epochs"])  # the knowledge study's
        reads_source = r["result"]["method"] in seeds.ROWS
        assert ("reused_from" in r["result"]) != reads_source, r["result"]["method"]
        if reads_source:  # from the second collective model's learngene, not the first's
            assert r["settings"]["learngene_sha256"] not in first_gene
    with open(work / "seed" / "seeds.csv") as f:
        sources = {(r["shots"], r["method"], r["against"], r["source"]) for r in csv.DictReader(f)}
    assert sources == {(k, m, a, s) for k in ("10", "20") for m in seeds.ROWS for a in seeds.AGAINST
                       for s in ("seed 0", "seed 1", "mean of sources")}

    rec = clone / "recommendation.json"
    proc = run_script("utils/recommend.py", work / "inherit", "--out", rec)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from utils import recommend
    assert recommend.load(rec)["method"] in recommend.CANDIDATES
