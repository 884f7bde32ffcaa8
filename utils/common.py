"""Plumbing shared by every script: clean errors, atomic writes, provenance, seeding."""
import datetime
import fnmatch
import functools
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


def cli(main):
    """Wrap a script's main(): a UserError or Ctrl-C becomes one line on stderr and a non-zero exit."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: finished outputs are intact; rerun with --resume where the script has it",
                  file=sys.stderr)
            sys.exit(130)
    return wrapper


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
    lines = [",".join(header)] + [",".join(_csv_cell(v) for v in row) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def _csv_cell(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return f'"{s}"' if ("," in s or '"' in s) else s


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
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        why = next((l for l in lines if "Unpickler error" in l), lines[0] if lines else type(e).__name__)
        raise UserError(f"{what} {path} is corrupted or not a file of this project ({why[:200]})")


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
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_float(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text):
    import argparse
    value = nonneg_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value
