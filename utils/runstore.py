"""The record of finished runs: runs.jsonl in a results folder, one JSON line per run with the identity it was
trained under (settings and inputs, by content). A rerun trains only what the record lacks; a record made under
another identity is refused; and runs of other folders whose method reads the same inputs (methods.reads) can
be reused instead of retrained, so presets and studies share what they have in common."""
import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

from utils.cli import PERCENT, require
from utils.files import file_digest
from utils.methods import reads


class RunKey(NamedTuple):
    """One run: a method on one task of one shot count, with one seed."""
    method: str
    shots: int
    task: int
    seed: int


def key_of(result):
    return RunKey(result["method"], result["shots"], result["task"], result["seed"])


def record_file(path):
    """The runs.jsonl a user names: the file itself, or the one in the results folder given."""
    path = Path(path)
    return path / "runs.jsonl" if path.is_dir() else path


def run_identity(settings, section, split, inputs):
    """The settings and the inputs' identities (by content: another learngene or collective checkpoint is another
    experiment) that a stored run must match to be reused; the shapes let a run that reads only the learngene's
    or the collective model's architecture be reused across learngenes of the same shapes."""
    art, collective = inputs.learngene, inputs.collective
    return {**dataclasses.asdict(settings), "section": section, "split_hash": split.hash,
            "learngene_layers": art["layers"], "dataset": split.dataset,
            "learngene_sha256": file_digest(inputs.learngene_path),
            "learngene_shapes": [list(b) for b in art["blocks"]] + [art["image_size"]],
            "collective_sha256": file_digest(collective["path"]) if collective else None,
            "collective_shapes": list(collective["widths"]) + [collective["config"]["image_size"]] if collective else None,
            "accuracy_unit": "percent",
            # only where a joint source is given, so the runs recorded before it existed keep their identity
            **({"joint_sha256": file_digest(inputs.joint["path"])} if inputs.joint else {})}


class RunStore:
    """The runs of one results folder, {RunKey: result}, backed by its runs.jsonl."""

    def __init__(self, path, identity):
        # as runs.jsonl will hold it (a tuple reads back as a list), so a rerun's identity equals its stored runs'
        self.path, self.identity = Path(path), json.loads(json.dumps(identity))
        self.runs = _load(self.path, self.identity)

    def add(self, key, result):
        self.runs[key] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            # a line cut short by an interruption is ended first, so this run does not join it and get lost
            if f.tell() and (f.seek(-1, 2), f.read(1))[1] != b"\n":
                f.write(b"\n")
            f.write((json.dumps({"settings": self.identity, "result": result}) + "\n").encode())
            f.flush()

    def reuse(self, others, wanted):
        """Take the runs in `wanted` that this store lacks from the runs.jsonl files `others`, where the stored run
        read exactly the inputs this folder's run would read (methods.reads); each is recorded here with the file
        it came from (`reused_from`). Returns how many were taken."""
        taken = 0
        for other in others:
            for identity, result in records(Path(other)):
                key = key_of(result)
                if key in wanted and key not in self.runs and reads(key.method, identity) == reads(key.method, self.identity):
                    self.add(key, {**result, "reused_from": str(other)})
                    taken += 1
        return taken


def read_runs(path):
    """Every run of a runs.jsonl as {RunKey: result}, whatever its settings (for redrawing figures)."""
    return {key_of(r): r for _, r in records(Path(path))}


def records(path):
    """(settings, result) of every line of a runs.jsonl; a line cut short by an interruption is skipped."""
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption: that run is simply redone
    require(rows or not any(line.strip() for line in lines), f"{path} is not a record of this script's runs (no line "
            f"of it is JSON)")
    for number, row in enumerate(rows, 1):
        require(isinstance(row, dict) and isinstance(row.get("result"), dict) and isinstance(row.get("settings"), dict),
                f"{path} is not a record of this script's runs (a line without settings and result)")
        result = row["result"]
        for field, kind in (("method", str), ("shots", int), ("task", int), ("seed", int)):
            require(isinstance(result.get(field), kind) and not isinstance(result.get(field), bool),
                    f"{path}, run {number}: its {field} is missing or not a{'n integer' if kind is int else ' name'}")
        for field in ("final_acc", "best_acc"):
            value = result.get(field)
            require(field == "best_acc" and value is None or PERCENT.holds(value),
                    f"{path}, run {number} ({result['method']}): {field} {value!r} is not an accuracy in [0, 100]")
        by_class = result.get("class_acc")  # runs recorded before it was kept have none
        require(by_class is None or isinstance(by_class, list) and any(a is not None for a in by_class)
                and all(a is None or PERCENT.holds(a) for a in by_class),
                f"{path}, run {number} ({result['method']}): class_acc {by_class!r} is not a list of accuracies in "
                f"[0, 100] (None for a class without test images)")
        yield row["settings"], result



def _load(path, identity):
    runs = {}
    if not path.exists():
        return runs
    for stored, r in records(path):
        differs = [k for k in dict.fromkeys([*identity, *stored]) if stored.get(k) != identity.get(k)]
        require(stored == identity, f"{path} holds runs made with other settings; use another --out or remove it "
                f"(differs in: {', '.join(differs)})")
        runs[key_of(r)] = r
    return runs
