"""How the pipeline runs a stage: each stage a script of this repository run as its own process (its command
printed, so it can be rerun by hand), skipped where its last output exists, timed by the stage clock, and stopped
with the pipeline; and the collective stage, resumed where it stopped."""
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.cli import Number, StageFailed, require
from utils.files import write_json
from utils.repro import REPO_ROOT
from utils.splits import Split

SECONDS = Number(float, 0, math.inf)  # a stage's wall-clock time, as stage_times.json records it
CLOCK_TICK = 60  # seconds between the stage clock's writes while a stage runs: a machine lost loses at most this


class StageClock:
    """Wall-clock seconds per stage, kept in <work>/stage_times.json and summed over the invocations that ran
    the stage, so a resumed pipeline still reports where all its time went (written every CLOCK_TICK seconds while a
    stage runs, so a process killed outright, or a machine lost, loses at most that much)."""

    def __init__(self, path):
        self.path = Path(path)
        self.seconds = {}
        if self.path.exists():
            try:
                self.seconds = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.seconds = None
            require(isinstance(self.seconds, dict) and all(SECONDS.holds(v) for v in self.seconds.values()), f"{self.path} is not a record of stage times ({{stage: seconds}}): "
                f"move it away to start the count again (the stages' outputs are not affected)")

    def add(self, name, seconds):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        write_json(self.path, self.seconds)

    def table(self):
        rows = "".join(f"| {name} | {s:.0f} | {s / 60:.1f} |\n" for name, s in self.seconds.items())
        total = sum(self.seconds.values())
        return ("| stage | seconds | minutes |\n|---|---:|---:|\n" + rows
                + f"| **all stages** | **{total:.0f}** | **{total / 60:.1f}** |\n")


def stage(clock, name, script, args, done):
    """Run one stage unless `done` exists; stop the pipeline with its message if it fails."""
    if done is not None and Path(done).exists():
        print(f"[{name}] done already ({done})")
        return
    cmd = [sys.executable, str(REPO_ROOT / script), *map(str, args)]
    print(f"[{name}] python {shlex.join([script, *map(str, args)])}", flush=True)
    t0 = counted = time.time()
    child = subprocess.Popen(cmd, cwd=REPO_ROOT, preexec_fn=_dies_with(os.getpid()))
    try:
        while True:
            try:
                failed = child.wait(timeout=CLOCK_TICK) != 0
                break
            except subprocess.TimeoutExpired:  # a long stage: its time so far on disk, in case the machine goes
                now = time.time()
                clock.add(name, now - counted)
                counted = now
    except BaseException:  # Ctrl-C or SIGTERM here: stop the stage the same way, so it too ends cleanly
        child.terminate()
        child.wait()
        raise
    finally:
        clock.add(name, time.time() - counted)
    if failed:
        raise StageFailed(f"stage {name} failed (its message is above); fix it and rerun the same command to resume",
                          child.returncode if child.returncode > 0 else 1)
    print(f"[{name}] finished in {time.time() - t0:.0f} s", flush=True)


def _dies_with(parent):
    """For the stage's process, before it starts: ask Linux to send it SIGTERM when the pipeline process dies, even
    by SIGKILL, so no stage trains on as an orphan beside a rerun (elsewhere: nothing, the folder locks still
    refuse the rerun)."""
    def set_parent_death_signal():
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the pipeline died before the request was made
            os._exit(143)
    return set_parent_death_signal


def train_collective(clock, name, script, args):
    """The collective stage into args' run folder (split, out, flags...), resumed where it stopped. It is done when
    its last output is written: the held-out measurement where the split has held-out images (it follows the
    learngene, and a run stopped between the two resumes to measure)."""
    split, out, *flags = args
    resume = ["--resume"] if (Path(out) / "last.pt").exists() else []
    heldout = "heldout" in Split(split).manifest
    stage(clock, name, script, ["--path", split, "--out", out, *flags, *resume],
          Path(out) / ("heldout_summary.json" if heldout else "learngene.pt"))


@dataclass
class SourceStages:
    """How the pipeline trains a collective model: its script, split, the preset's flags and the device's."""
    clock: StageClock
    script: str
    split: Path
    flags: list
    cuda: list

    def train(self, name, out, **changed):
        """The preset's collective stage into `out`, with flags `changed` ({"epochs": 2}) set instead of its own."""
        flags = list(self.flags)
        for flag, value in changed.items():
            flag = f"--{flag}"
            if flag in flags:
                flags[flags.index(flag) + 1] = str(value)
            else:
                flags += [flag, str(value)]
        train_collective(self.clock, name, self.script, [self.split, out, *flags, *self.cuda])
