"""Files: atomic writes (readers never see half a file), checkpoints that cannot run code, locks on run folders,
and what a script may replace."""
import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from utils.cli import UserError, require
from utils.repro import PROVENANCE_COLUMNS, for_display


def _atomic(path, write):
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path, data):
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path, text):
    """Atomically; markdown and CSV, written for readers, name this machine's folders as a reader would type them."""
    if Path(path).suffix in (".md", ".csv"):
        text = for_display(text)
    write_bytes(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=1) + "\n")


def write_csv(path, header, rows, provenance=None):
    """With `provenance` (a dict from provenance()), every row also gets its PROVENANCE_COLUMNS."""
    if provenance is not None:
        header = [*header, *PROVENANCE_COLUMNS]
        rows = [[*row, *(provenance[k] for k in PROVENANCE_COLUMNS)] for row in rows]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([f"{v:.6g}" if isinstance(v, float) else v for v in row] for row in rows)
    write_text(path, text.getvalue())


def torch_save(path, obj):
    import torch
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path, what="checkpoint"):
    """Load a file written by torch_save, refusing anything that is not plain tensors and containers."""
    import pickle
    import zipfile
    import torch
    path = Path(path)
    require(path.is_file(), f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise UserError(f"{what} {path} is corrupted or not a file of this project ({_load_failure(e)})")


def _load_failure(e):
    """Why torch.load refused a file, in one short clause: not PyTorch's advice to file an issue with it or to
    allow-list the object (which would defeat the point of refusing it)."""
    text = str(e)
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)  # the wording varies by version
    if found:
        return f"it refers to the Python object {found.group(1)}, which no file of this project holds; not loaded"
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    line = next((l for l in lines if "Unpickler error" in l), lines[0] if lines else type(e).__name__)
    return re.split(r"(?<=[.:])\s+(?=Please|Check|You can|If you|In PyTorch)", line)[0][:200]


def foreign_files(folder, ours):
    """Files under `folder` (relative paths) that match none of the patterns `ours` (fnmatch, relative to the
    folder) and are not a temporary file of _atomic: what a script must not delete or replace there."""
    folder = Path(folder)
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if any(fnmatch.fnmatch(rel, pattern) for pattern in ours):
            continue
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            continue
        found.append(rel)
    return found


def require_apart(out, inputs):
    """Refuse an output path that is one of the inputs, or lies inside an input folder: a user's model, images or
    table is never what a script writes over. inputs: (flag, path) pairs."""
    target = Path(out).resolve()
    for flag, path in inputs:
        source = Path(path).resolve()
        require(target != source and source not in target.parents, f"--out {out} is "
                f"{'' if target == source else 'inside '}{flag} {path}: an output never replaces an input")


def require_replaceable(path, overwrite, written_by):
    """An existing output is replaced only with --overwrite and only if it is a file of the kind the script writes
    (`written_by(path)` says so), never something else of the user's that happens to have its name."""
    path = Path(path)
    if not path.exists():
        return
    require(overwrite, f"{path} exists: pass --overwrite to replace it")
    require(path.is_file() and written_by(path), f"{path} exists and is not a file this script writes: it is not "
            f"replaced, even with --overwrite; choose another --out")


def starts_with(prefix):
    """written_by for require_replaceable: the file begins with these bytes (a PNG's signature, a CSV's header)."""
    def check(path):
        with open(path, "rb") as f:
            return f.read(len(prefix)) == prefix
    return check


class FolderLock:
    """An exclusive lock on a run folder while a script uses it (flock on the folder itself: no lock file to
    clean up, released by the kernel when the process dies, however it dies). A second process that wants the
    same folder stops with a one-line error instead of training the same runs beside the first. The folder is
    made if missing, and removed again on release if it was made here and is still empty."""

    def __init__(self, folder):
        self.folder, self.fd = Path(folder), None

    def __enter__(self):
        require(not self.folder.exists() or self.folder.is_dir(), f"{self.folder} exists and is not a folder")
        self.made = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return self
        self.fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise UserError(f"{self.folder} is in use by another process (it holds the folder's lock); wait for it "
                            f"to finish or stop it, then rerun")
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
        if self.made and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        return False


def ensure_writable(folder):
    """Fail now, as one line, if `folder` takes no new file (read-only, full, not a folder), instead of after the
    work whose result would be written there."""
    try:
        with tempfile.NamedTemporaryFile(prefix=".write-test.", suffix=".tmp", dir=folder) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"cannot write in {folder}: {e.strerror or e}")


def replace_dir(tmp_dir, out_dir):
    """Move a finished temporary folder into place; an old one at out_dir is removed only after."""
    tmp_dir, out_dir = Path(tmp_dir), Path(out_dir)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old is not None:
        shutil.rmtree(old)


# ---------------------------------------------------------------- hashing and provenance
def file_digest(path, algorithm="sha256", chunk=1 << 22):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


