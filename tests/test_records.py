"""The committed run records: utils/keep_records.py keeps a work folder's records and tables (no checkpoint, no
local path, nothing it did not write replaced), every committed table is what its committed runs give, and every
paired difference the documents quote is in a committed result."""
import csv
import json
import os
import re

from conftest import REPO, printed_agrees, run_script

import pipeline
from utils import contrasts, ladder, released, report, seeds
from utils.runstore import read_runs

RECORDS = REPO / "results" / "reference" / "records"


def made_up_run(method, task, acc):
    return {"method": method, "shots": 10, "task": task, "seed": 0, "final_acc": acc, "best_acc": acc + 1,
            "best_epoch": 3, "curve": [[3, 0.5, 90.0, acc, 0.0]], "seconds": 1.5, "parameters": 1000,
            "inherited_layers": [2, 3, 4] if method == "learngene" else [], "diverged": False}


def made_up_work(root):
    work = root / "checkpoints" / "toy-quick"
    (work / "collective").mkdir(parents=True)
    (work / "stage_times.json").write_text(json.dumps({"split": 1.0}))
    (work / "collective" / "learngene.pt").write_bytes(b"not kept")
    (work / "collective" / "heatmap.png").write_bytes(b"\x89PNG not kept")
    (work / "collective" / "selection.txt").write_text(f"split {root}/data/toy-quick-split\n")
    lines = [json.dumps({"settings": {"lr": 0.005}, "result": {**made_up_run(m, t, 40.0 + t + 3 * (m == "learngene")),
                                                                "reused_from": str(root / "elsewhere")}})
             for t in range(2) for m in ("scratch", "learngene")]
    (work / "individual").mkdir()
    (work / "individual" / "runs.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:30])  # a line being written
    return work


def test_keep_records_keeps_text_records_with_relative_paths_and_replaces_nothing_unasked(tmp_path):
    work, out = made_up_work(tmp_path / "root"), tmp_path / "kept"
    done = run_script("utils/keep_records.py", work, "--out", out)
    assert done.returncode == 0, done.stderr
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == ["collective/selection.txt", "individual/runs.jsonl", "records.json", "stage_times.json"]
    runs = (out / "individual" / "runs.jsonl").read_text()
    assert runs.count("\n") == 4 and runs.endswith("\n")  # the line being written is left for the next keep
    assert str(tmp_path) not in runs + (out / "collective" / "selection.txt").read_text()
    assert "<root>/elsewhere" in runs and "<root>/data/toy-quick-split" in (out / "collective" / "selection.txt").read_text()
    assert len(read_runs(out / "individual" / "runs.jsonl")) == 4
    # the run grows: nothing kept changes without --overwrite; with it, the new line comes and nothing is removed
    (work / "individual" / "runs.jsonl").write_text(runs.replace("<root>", str(tmp_path / "root")) + json.dumps(
        {"settings": {"lr": 0.005}, "result": made_up_run("scratch", 2, 41.0)}) + "\n")
    (work / "collective" / "selection.txt").unlink()
    refused = run_script("utils/keep_records.py", work, "--out", out)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert (out / "individual" / "runs.jsonl").read_text() == runs
    assert run_script("utils/keep_records.py", work, "--out", out, "--overwrite").returncode == 0
    assert len(read_runs(out / "individual" / "runs.jsonl")) == 5 and (out / "collective" / "selection.txt").exists()
    manifest = json.loads((out / "records.json").read_text())
    assert manifest["kept_from"] == "<root>/checkpoints/toy-quick" and "collective/selection.txt" in manifest["files"]
    # a table written before its folder's newest runs: the runs wait for their table, the kept pair still agrees
    (work / "individual" / "results.csv").write_text("shots,method\n")
    os.utime(work / "individual" / "results.csv", (1, 1))
    assert run_script("utils/keep_records.py", work, "--out", out, "--overwrite").returncode == 0
    assert len(read_runs(out / "individual" / "runs.jsonl")) == 5 and (out / "individual" / "results.csv").exists()
    (work / "individual" / "runs.jsonl").write_text("")  # emptied after its table: not kept either
    assert run_script("utils/keep_records.py", work, "--out", out, "--overwrite").returncode == 0
    assert len(read_runs(out / "individual" / "runs.jsonl")) == 5


def test_keep_records_refuses_a_folder_it_did_not_make_and_damaged_records(tmp_path):
    work = made_up_work(tmp_path / "root")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    for out, says in ((foreign, "not a records folder"), (work / "kept", "inside WORK"), (tmp_path, "holds WORK")):
        done = run_script("utils/keep_records.py", work, "--out", out)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert (foreign / "notes.txt").read_text() == "a user's file" and not (work / "kept").exists()
    (work / "individual" / "runs.jsonl").write_text(json.dumps({"settings": {}, "result": {"method": "scratch"}}) + "\n")
    done = run_script("utils/keep_records.py", work, "--out", tmp_path / "new")
    assert done.returncode == 2 and "shots is missing" in done.stderr and not (tmp_path / "new" / "individual").exists()


def committed_tables():
    return [t for t in sorted(RECORDS.rglob("results.csv")) if (t.parent / "runs.jsonl").exists()]


def test_every_committed_table_is_what_its_committed_runs_give():
    """Each results.csv kept under results/reference/records/ recomputed from the runs.jsonl beside it: the same
    rows, every number within its printed digits. A committed number is never one that its runs do not give."""
    tables = committed_tables()
    assert tables, "no committed records: results/reference/records/ should hold the reference runs"
    for table in tables:
        with open(table, newline="") as f:
            printed = list(csv.reader(f))
        assert printed[0][:len(report.TABLE_HEADER)] == report.TABLE_HEADER, table
        recomputed = report.table_rows(read_runs(table.parent / "runs.jsonl"))
        assert len(printed) - 1 == len(recomputed), table
        for row, again in zip(printed[1:], recomputed):
            for name, cell, value in zip(report.TABLE_HEADER, row, again):
                same = printed_agrees(cell, float(value)) if isinstance(value, float) else cell == str(value)
                assert same, f"{table.relative_to(REPO)}: {name} {cell} vs {value} (shots {row[0]}, {row[1]})"


def test_keep_records_keeps_the_splits_tasks_with_its_hash(tmp_path):
    """The split's images stay out of the records; its tasks' classes come in, named by the sha256 of the manifest
    they were read from, which is what every run records as its split_hash."""
    import hashlib
    from utils import shared_classes
    work = made_up_work(tmp_path / "root")
    split = tmp_path / "root" / "data" / "toy-quick-split"
    split.mkdir(parents=True)
    tasks = {"10": [{"classes": ["b", "a"], "samples": {}}, {"classes": ["c", "a"], "samples": {}}]}
    (split / "manifest.json").write_text(json.dumps({"command": f"python make.py --out {split}", "target": tasks,
                                                      "validation": tasks}))
    (split / "images.npy").write_bytes(b"not kept")
    assert run_script("utils/keep_records.py", work, "--out", tmp_path / "kept").returncode == 0
    kept = json.loads((tmp_path / "kept" / shared_classes.TASKS_FILE).read_text())
    digest = hashlib.sha256((split / "manifest.json").read_bytes()).hexdigest()
    assert kept["split_hash"] == digest and kept["target"] == {"10": [["b", "a"], ["c", "a"]]}  # label order
    assert kept["command"] == "python make.py --out <root>/data/toy-quick-split"
    assert not list((tmp_path / "kept").rglob("*.npy"))
    assert shared_classes.target_tasks(tmp_path / "kept", digest) == {10: [["b", "a"], ["c", "a"]]}


def test_the_committed_shared_classes_table_is_what_the_committed_runs_give():
    """results/reference's shared-classes table recomputed from the records it names: every number within its digits."""
    from utils import shared_classes
    table = REPO / "results" / "reference" / "tiny-imagenet-100-cpu-amd-bf16-shared-classes" / "shared_classes.csv"
    records = RECORDS / "tiny-imagenet-100-cpu-amd-bf16"
    runs = read_runs(records / "individual" / "runs.jsonl")
    split_hash = json.loads((records / shared_classes.TASKS_FILE).read_text())["split_hash"]
    recomputed = shared_classes.table_rows(runs, shared_classes.target_tasks(records, split_hash))
    wrong = mismatches(table, shared_classes.HEADER, recomputed)
    assert not wrong, wrong


def mismatches(table, header, recomputed):
    """Where a committed CSV (its first len(header) columns) differs from the rows recomputed for it: a row too many or
    too few, or a cell that is not the recomputed value within its printed digits."""
    with open(table, newline="") as f:
        printed = list(csv.reader(f))
    if printed[0][:len(header)] != header or len(printed) - 1 != len(recomputed):
        return [f"{table}: {len(printed) - 1} rows under {printed[0][:len(header)]}, recomputed {len(recomputed)}"]
    wrong = []
    for row, again in zip(printed[1:], recomputed):
        for name, cell, value in zip(header, row, again):
            same = (cell == "nan" if value != value else printed_agrees(cell, float(value))) \
                if isinstance(value, float) else cell == str(value)
            if not same:
                wrong.append(f"{table}: {name} {cell} vs {value} ({', '.join(map(str, again[:3]))})")
    return wrong


def contrast_mismatches(table):
    """A kept contrasts.csv against the contrasts of the kept runs it was computed from: its markdown names those
    files (under <root>/checkpoints/<run>/, which the records mirror), its folder names the study, whose set of
    contrasts and schedule rule (each row at its own validation-chosen rate) the pipeline gave it. A table drawn
    from the committed records by utils/draw_results.py names them relative to the repository instead."""
    study = pipeline.STUDIES[table.parent.name]
    rows = contrasts.contrast_rows(contrasts.read_folders(contrast_inputs(table.parent)),
                                   contrasts.SETS[study.contrasts][0], study.tuned_lr)
    return mismatches(table, contrasts.HEADER, rows)


def contrast_inputs(folder):
    """The kept runs.jsonl files a study folder's contrasts (and ladder) were computed from, as its contrasts.md
    names them."""
    line = (folder / "contrasts.md").read_text().rstrip().splitlines()[-1]
    files = re.search(r", from (.+?)\.(?: |$)", line).group(1).split(", ")
    return [REPO / f if f.startswith("results/") else folder.parent / f.split("/", 3)[3] for f in files]


def ladder_mismatches(table):
    """A kept ladder.csv (the knowledge studies' figure's numbers) against the runs its contrasts were computed from."""
    runs = {key: result for key, (_, result) in contrasts.read_folders(contrast_inputs(table.parent)).items()}
    return mismatches(table, ladder.HEADER, ladder.table_rows(runs))


def seed_mismatches(table):
    """A kept seeds.csv against the knowledge study's runs (the first source) and the second source's runs."""
    records = table.parent.parent
    second = f"seed {pipeline.SECOND_SEED}"
    runs = {"seed 0": read_runs(records / "knowledge" / "runs.jsonl"),
            second: read_runs(records / "seed" / f"seed-{pipeline.SECOND_SEED}" / "target" / "runs.jsonl")}
    return mismatches(table, seeds.HEADER, seeds.table_rows(runs))


def released_mismatches(table):
    """A kept released.csv (and the overlap tables beside it) against the released study's kept runs, the clean
    protocol's being the individual study's; the chain's length is the one its chained runs were trained with."""
    folders = {name: read_runs(d / "runs.jsonl") for name, d in released.study_folders(table.parent).items()}
    with open(table.parent / "released" / "runs.jsonl") as f:
        chain = json.loads(f.readline())["settings"]["protocol"]["chain"]
    wrong = mismatches(table, released.HEADER, released.table(folders, chain))
    wrong += mismatches(table.with_name("overlap.csv"), released.OVERLAP_HEADER, released.overlap_rows(folders))
    if table.with_name("class_overlap.csv").exists():
        wrong += mismatches(table.with_name("class_overlap.csv"), released.CLASS_HEADER, released.class_rows(folders))
    return wrong


def test_every_committed_contrast_seed_and_released_table_is_what_its_committed_runs_give():
    """The studies' other tables kept under results/reference/records/ (each study's contrasts, the seed study's two
    sources, the released study's decomposition and class overlap) recomputed from the kept runs they were computed
    from: the same rows, every number within its digits."""
    wrong = [w for t in RECORDS.rglob("contrasts.csv") for w in contrast_mismatches(t)]
    wrong += [w for t in RECORDS.rglob("ladder.csv") for w in ladder_mismatches(t)]
    wrong += [w for t in RECORDS.rglob("seeds.csv") for w in seed_mismatches(t)]
    wrong += [w for t in RECORDS.rglob("released.csv") for w in released_mismatches(t)]
    assert not wrong, wrong


def test_a_kept_contrast_table_that_its_runs_do_not_give_is_found(tmp_path):
    """The check above on a made-up knowledge study, kept by keep_records.py: equal as written, and a number changed
    in the kept table (or its ladder), or a run of the kept records changed, is found."""
    from utils.repro import provenance
    work = made_up_work(tmp_path / "root")
    (work / "knowledge").mkdir()
    lines = [json.dumps({"settings": {"lr": 0.005}, "result": made_up_run(m, t, 40.0 + t * t + 5 * k)})
             for t in range(3) for k, m in enumerate(("scratch-collective", "first2-collective", "first4-collective"))]
    (work / "knowledge" / "runs.jsonl").write_text("\n".join(lines) + "\n")
    (work / "individual" / "runs.jsonl").write_text("\n".join(json.dumps({"settings": {"lr": 0.005}, "result": made_up_run(
        "scratch", t, 39.0 + t)}) for t in range(3)) + "\n")
    rows = contrasts.report(work / "knowledge", [work / "knowledge" / "runs.jsonl", work / "individual" / "runs.jsonl"],
                            "toy", provenance(None, []), "knowledge", own_schedule=True)
    assert [r[1:3] for r in rows] == [["scratch-collective", "scratch"], ["first2-collective", "scratch-collective"],
                                      ["first4-collective", "scratch-collective"]]
    assert run_script("utils/keep_records.py", work, "--out", tmp_path / "kept").returncode == 0
    table = tmp_path / "kept" / "knowledge" / "contrasts.csv"
    assert contrast_mismatches(table) == []
    ladder.report(work / "knowledge", [work / "knowledge" / "runs.jsonl", work / "individual" / "runs.jsonl"], "toy",
                  provenance(None, []))
    assert run_script("utils/keep_records.py", work, "--out", tmp_path / "kept", "--overwrite").returncode == 0
    kept_ladder = tmp_path / "kept" / "knowledge" / "ladder.csv"
    assert ladder_mismatches(kept_ladder) == [] and len(kept_ladder.read_text().splitlines()) == 1 + 2 + 3  # 2 rungs against the capacity control, 3 against scratch
    kept_ladder.write_text(kept_ladder.read_text().replace(",first4-collective,4,scratch,3,", ",first4-collective,4,scratch,2,"))
    assert any("tasks" in w for w in ladder_mismatches(kept_ladder))
    text = table.read_text()
    table.write_text(text.replace(",+10,", ",+10.5,") if ",+10," in text else text.replace(",10,", ",10.5,"))
    assert any("diff" in w for w in contrast_mismatches(table))
    table.write_text(text)
    runs = tmp_path / "kept" / "individual" / "runs.jsonl"
    runs.write_text(runs.read_text().replace('"final_acc": 39.0', '"final_acc": 38.0'))
    assert contrast_mismatches(table)


QUOTED_PAIR = re.compile(r"([+-]\d+\.\d) (?:points )?\(?±(\d+\.\d)\)?")  # "+6.4 (±2.4)", "-1.7 points ±1.2"


def committed_pairs():
    """Every (difference, 95% half-width) a committed result file holds, as the documents print them (one decimal):
    each CSV's *ci95 column with the column it is the interval of (its name without _ci95, else the one before
    it), and the pairs the committed markdown tables and lines state."""
    pairs = set()
    for path in (REPO / "results" / "reference").rglob("*.csv"):
        with open(path, newline="") as f:
            header, *rows = list(csv.reader(f))
        for row in rows:
            for j, column in enumerate(header):
                base = column.replace("_ci95", "")
                k = header.index(base) if base in header and base != column else j - 1
                if "ci95" in column and j < len(row):
                    try:
                        pairs.add((f"{float(row[k]):+.1f}", f"{float(row[j]):.1f}"))
                    except ValueError:
                        pass
    for path in (REPO / "results" / "reference").rglob("*.md"):
        text = path.read_text()
        pairs |= set(QUOTED_PAIR.findall(text)) | set(re.findall(r"\| ([+-]\d+\.\d) \| ±(\d+\.\d) \|", text))
    return pairs


def test_every_paired_difference_the_documents_quote_is_in_a_committed_result():
    """The README and docs/results.md quote paired differences with their intervals ("+6.4 (±2.4)"): each is a
    number a committed table holds, so a mistyped or stale number in the text fails here."""
    pairs = committed_pairs()
    for doc in ("README.md", "docs/results.md"):
        quoted = QUOTED_PAIR.findall((REPO / doc).read_text())
        assert len(quoted) >= 15, doc
        stray = [f"{d} ±{c}" for d, c in quoted if (d, c) not in pairs]
        assert not stray, f"{doc} quotes differences no committed result holds: {stray}"
