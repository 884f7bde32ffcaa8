"""Plumbing shared by every script: clean errors, atomic writes, provenance, seeding."""
import csv
import datetime
import fnmatch
import functools
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class Stopped(BaseException):
    """SIGTERM (a time limit, `kill`, the pipeline stopping its stage): unwinds like Ctrl-C, so every `finally`
    runs and no half-written file stays behind."""


def _raise_stopped(signum, frame):
    raise Stopped()


def cli(main):
    """Wrap a script's main(): a UserError, an operating-system error (a read-only or full disk, a path that is
    a file), Ctrl-C or SIGTERM becomes one line on stderr and a non-zero exit, never a traceback."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            previous = signal.signal(signal.SIGTERM, _raise_stopped)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            print(f"error: {os_error(e)}", file=sys.stderr)
            sys.exit(1)
        except (KeyboardInterrupt, Stopped) as e:
            how = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped by SIGTERM"
            print(f"error: {how}: finished outputs are intact; rerun the same command (with --resume where the "
                  f"script has it) to continue", file=sys.stderr)
            sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def os_error(e):
    """An OSError as 'what went wrong: where', e.g. 'Read-only file system: results/x.csv'."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e)
    return f"{what}: {where}" if where else what


def require(cond, message):
    if not cond:
        raise UserError(message)


# ---------------------------------------------------------------- atomic writes
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
    write_bytes(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=1) + "\n")


PROVENANCE_COLUMNS = ("device", "torch", "commit", "time_utc", "command")


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


def require_distinct(values, flag):
    """Refuse a repeated value of a multi-valued flag (--seed 0 0 would train every run twice)."""
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    require(not repeated, f"{flag} repeats {', '.join(map(str, repeated))}: give each value once")


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


def git_commit():
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        # outputs (results/, bench/results/) and documentation (*.md) do not change what the code computes,
        # so they do not count
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!results", ":!bench/results", ":(exclude,glob)**/*.md"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv])


def device_name(device):
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device=None, argv=None, seed=None):
    import torch
    info = {
        "commit": git_commit(),
        "command": command_line(argv),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
    }
    if device is not None:
        info["device"] = device_name(device)
    if seed is not None:
        info["seed"] = seed
    return info


def pick_device(no_cuda=False):
    import torch
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def derived_seed(*parts):
    """A 63-bit seed that depends on every part (seed, task, epoch, ...), stable across runs and machines."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def positive_int(text):
    """argparse type: an integer >= 1, with a one-line message otherwise."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_float(text):
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def positive_float(text):
    return _number(text, float, lambda v: v > 0, "a number > 0")  # not NaN either


def _number(text, convert, acceptable, what):
    import argparse
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not acceptable(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value
