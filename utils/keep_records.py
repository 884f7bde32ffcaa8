"""Keep a pipeline run's records where they can be committed: every runs.jsonl and every table, summary and
provenance file of a work folder (<root>/checkpoints/<dataset>-<preset>), no checkpoint and no figure, with this
machine's folders written as a reader types them (<root>, ../shared). Every number of a committed table can then be
recomputed from the runs beside it (tests/test_records.py), and every figure drawn again (utils/draw_results.py),
without retraining. Run it again as a long run grows: it adds and updates, and never removes a file.

    python utils/keep_records.py <root>/checkpoints/tiny-imagenet-100-cpu \
        --out results/reference/records/tiny-imagenet-100-cpu-bf16 --overwrite
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import UserError, cli, require  # noqa: E402
from utils.files import FolderLock, file_digest, require_apart, write_json, write_text  # noqa: E402
from utils.repro import for_display, provenance  # noqa: E402
from utils import shared_classes  # noqa: E402
from utils.runstore import records  # noqa: E402

KEPT = (".jsonl", ".csv", ".md", ".json", ".txt")  # records and tables; checkpoints and figures are not kept
MANIFEST = "records.json"  # what this script wrote into --out, and from where


def kept_files(work):
    """The files of `work` this script keeps, relative to it (hidden and temporary files left out), but a runs.jsonl
    that has grown since the table beside it was written: a table and its runs are kept as a pair that agrees
    (tests/test_records.py), so those runs wait for their table."""
    files = [p for p in sorted(work.rglob("*")) if p.is_file() and p.suffix in KEPT
             and not any(part.startswith(".") for part in p.relative_to(work).parts)]
    return [p.relative_to(work) for p in files if not (p.name == "runs.jsonl" and (p.parent / "results.csv").exists()
                                                      and (p.parent / "results.csv").stat().st_mtime < p.stat().st_mtime)]


def kept_text(path, root):
    """The text to keep for `path`: a runs.jsonl up to its last complete line (a run being appended now is kept
    next time) and checked line by line; every file with `root` written <root>."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not text (not UTF-8): not a file the pipeline writes")
    if path.suffix == ".jsonl":
        text = text[:text.rfind("\n") + 1]
        list(records(path))  # a damaged record is refused in one line, not copied
    return shown(text, root)


def shown(text, root):
    """`text` with `root` written <root> and this machine's other folders as a reader types them."""
    return for_display(text.replace(str(root), "<root>"))


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", metavar="WORK", help="a pipeline's work folder, <root>/checkpoints/<dataset>-<preset>")
    p.add_argument("--out", required=True, metavar="FOLDER", help="where to keep the records (a folder this script "
                   "made, or a new one)")
    p.add_argument("--overwrite", action="store_true", help="update files kept earlier that have changed since")
    args = p.parse_args(argv)
    work, out = Path(args.work).resolve(), Path(args.out)
    require(work.is_dir() and (work / "stage_times.json").is_file(), f"{args.work} is not a pipeline's work folder "
            f"(no stage_times.json there)")
    require_apart(out, [("WORK", work)])
    require(not work.is_relative_to(out.resolve()), f"--out {out} holds WORK {args.work}: choose a folder apart")
    require(not out.exists() or out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST).is_file()),
            f"--out {out} exists and is not a records folder this script made (no {MANIFEST}): choose another")
    root = work.parents[1]  # <root>/checkpoints/<name>
    with FolderLock(out):
        texts = {rel: kept_text(work / rel, root) for rel in kept_files(work)}
        split = root / "data" / f"{work.name}-split" / "manifest.json"
        if split.is_file():  # the tasks' classes, which utils/shared_classes.py reads beside the runs
            texts[Path(shared_classes.TASKS_FILE)] = shown(shared_classes.tasks_text(split), root)
        changed = [rel for rel, text in texts.items() if (out / rel).exists() and (out / rel).read_text() != text]
        require(args.overwrite or not changed, f"{out / changed[0] if changed else out} has changed in WORK since it "
                f"was kept ({len(changed)} file(s)): pass --overwrite to update them")
        for rel, text in texts.items():
            if not (out / rel).exists() or rel in changed:
                write_text(out / rel, text)
        manifest = out / MANIFEST
        try:
            earlier = json.loads(manifest.read_text())["files"] if manifest.exists() else {}
            require(isinstance(earlier, dict), "its files are not a mapping")
        except (ValueError, KeyError, TypeError, UserError) as e:
            raise UserError(f"{manifest} is damaged ({e}): not updated; keep the records in a new --out")
        prov = provenance(argv=argv)
        write_json(manifest, {"kept_from": shown(str(work), root),
                              "commit": prov["commit"], "time_utc": prov["time_utc"],
                              "files": {**earlier, **{str(rel): file_digest(out / rel) for rel in texts}}})
    runs = sum(1 for rel in texts if rel.name == "runs.jsonl" for _ in records(out / rel))
    print(f"kept {len(texts)} files of {args.work} in {out} ({len(changed)} updated; {runs} runs in all)")


if __name__ == "__main__":
    main()
