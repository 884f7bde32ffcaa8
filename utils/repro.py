"""Provenance and seeding: what every result records about how it was made, and the seeds derived from it."""
import datetime
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_COLUMNS = ("device", "torch", "commit", "time_utc", "command")  # what write_csv adds to each row


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


# The commit of the code this process runs, read when it is loaded: a long run's checkout may move on before the run
# writes its results, and the commit checked out then would name code the run never ran.
COMMIT_AT_START = git_commit()


def command_line(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv])


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_name(device):
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


ROOT_VARIABLE = "LEARNGENE_ROOT"  # the pipeline's --root, for its stages: shown as <root> in what a reader gets


def for_display(text):
    """`text` with this machine's folders as a reader would type them: the pipeline's --root as <root>, the shared
    folder beside the repository as ../shared, and the repository itself as relative paths. Applied to what is
    written for readers (markdown, CSV, figures), never to files the scripts read back."""
    root = os.environ.get(ROOT_VARIABLE)
    if root:
        text = text.replace(str(Path(root).resolve()), "<root>")
    return text.replace(str(REPO_ROOT.parent / "shared"), "../shared").replace(f"{REPO_ROOT}/", "")


def cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it (the processor's architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line():
    """One line for a log, so a result or a failure on one machine can be read against another's."""
    import torch
    from utils.engine import cpu_supports_bf16, resolve_precision
    native = "yes" if cpu_supports_bf16() else "no (emulated, slower than fp32)"
    return (f"CPU {cpu_model()}, native bf16: {native}, --precision auto -> "
            f"{resolve_precision('auto', torch.device('cpu'))} on the CPU, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def provenance(device=None, argv=None, seed=None):
    import torch
    info = {
        "commit": COMMIT_AT_START,
        "command": command_line(argv),
        "time_utc": utc_now(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
    }
    if device is not None:
        info["device"] = device_name(device)
    if seed is not None:
        info["seed"] = seed
    return info


def provenance_lines(prov):
    """The closing lines of a study's markdown report: what made it, where and when, and the command."""
    return [f"Provenance: commit {prov['commit']}, device {prov['device']}, {prov['time_utc']}.",
            f"Command: `{prov['command']}`", ""]


def pick_device(no_cuda=False):
    import torch
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def derived_seed(*parts):
    """A 63-bit seed that depends on every part (seed, task, epoch, ...), stable across runs and machines."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


