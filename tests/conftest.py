import os
import pickle
import re
import shutil
import tempfile
import subprocess
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TINY = SHARED / "data" / "tiny-imagenet-100"
CIFAR_META = SHARED / "data" / "cifar-100-meta" / "meta"


# A pickle whose loading runs a shell command that leaves a file: output of the command itself would bypass
# pytest's capture (os.system writes to the process's own stdout), a file does not.
HOSTILE_MARKER = Path(tempfile.gettempdir()) / f"learngene-hostile-pickle-ran-{os.getuid()}"


class Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {HOSTILE_MARKER}",))


def hostile_code_ran():
    ran = HOSTILE_MARKER.exists()
    HOSTILE_MARKER.unlink(missing_ok=True)
    return ran


# The precision the suite runs the training scripts at (their --precision): `auto` by default, as a user's run
# (bf16 where the CPU computes it natively, fp32 elsewhere); LEARNGENE_TEST_PRECISION=bf16 forces the bf16 path on
# any x86 CPU (CPU autocast emulates it where it is not native), fp32 the other. A test whose assertion depends on
# the arithmetic passes its own --precision, which this never overrides.
SCRIPT_PRECISION = os.environ.get("LEARNGENE_TEST_PRECISION", "auto")
# the scripts that take --precision (relative to the repository)
PRECISION_SCRIPTS = {"pipeline.py", "collective-model/val_lifelong_imagenet.py", "collective-model/val_lifelong_cifar100.py",
                     "collective-model/joint_source.py", "collective-model/measure_source.py",
                     "individual-model/inheritable_imagenet_wEWC.py", "individual-model/inheritable_cifar100_wEWC.py",
                     "individual-model/your_task.py", "bench/individual_phase.py", "bench/preset_costs.py",
                     "bench/throughput.py", "bench/fisher_check.py"}


def with_precision(script, args):
    """`args` with the suite's --precision appended where `script` takes one and the test did not choose it."""
    args = [str(a) for a in args]
    if str(script) in PRECISION_SCRIPTS and "--precision" not in args:
        args += ["--precision", SCRIPT_PRECISION]
    return args


def run_script(script, *args, cwd=REPO):
    """Run one of the repo's scripts as a user would (a training script at the suite's precision unless the test
    passes its own); returns the CompletedProcess."""
    return subprocess.run([sys.executable, str(REPO / script), *with_precision(script, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def printed_agrees(printed, value, slack=0.0):
    """Whether a number as a script printed it ('0.4921', '31.2', '1e-05', '33.3333') agrees with `value` to within
    one unit in its last printed place, plus `slack` (e.g. the rounding of the files `value` was recomputed
    from). A printed number is the exact one rounded once; `value` recomputed elsewhere may lie on the other side
    of a rounding boundary, so comparing the two strings is not a test of the arithmetic, this is."""
    try:
        number = Decimal(printed.strip().rstrip("%"))
    except InvalidOperation:
        raise AssertionError(f"{printed!r} is not a printed number")
    unit = Decimal(1).scaleb(number.as_tuple().exponent)
    return abs(float(number) - value) <= float(unit) + slack


NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def printed_numbers(line):
    """The numbers of a printed line, as printed (strings, for printed_agrees)."""
    return re.findall(NUMBER, line)


def assert_clean_error(proc, fragment=None, status=2):
    """A bad input: the README's exit status (2 bad input, 1 an operating-system error such as a read-only disk;
    `status` may be a tuple of those allowed), a one-line message, no traceback."""
    allowed = status if isinstance(status, tuple) else (status,)
    assert proc.returncode in allowed, (proc.returncode, proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:") or ": error:" in l]
    assert len(errors) == 1, proc.stderr
    if fragment:
        assert fragment in errors[0], errors[0]


def class_names():
    with open(CIFAR_META, "rb") as f:
        return [n for n in pickle.load(f, encoding="latin1")["fine_label_names"]]


def write_cifar(root, train_per_class=8, test_per_class=3, seed=0, meta=None):
    """Small pickles in the real CIFAR-100 python format (the real meta file, random images)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), n)
        rng.shuffle(labels)
        d = {"filenames": [f"img_{i}.png" for i in range(len(labels))], "batch_label": f"{split} batch",
             "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
             "data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)}
        with open(folder / split, "wb") as f:
            pickle.dump(d, f, protocol=2)
    if meta is None:
        shutil.copyfile(CIFAR_META, folder / "meta")
    else:
        with open(folder / "meta", "wb") as f:
            pickle.dump(meta, f, protocol=2)
    return Path(root)


@pytest.fixture
def cifar_root(tmp_path):
    return write_cifar(tmp_path / "raw")


needs_tiny = pytest.mark.skipif(not (TINY / "train.npz").exists(), reason="../shared/data/tiny-imagenet-100 absent")


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory):
    """A small split of the real offline images at 32px: 3 continual tasks of 5 x 12 images, 3 held-out images of
    each continual class, 2 target tasks."""
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    out = tmp_path_factory.mktemp("splits") / "tiny32"
    proc = run_script("utils/data_imagenet_mk.py", "--dataset", "tiny-imagenet-100", "--path", TINY, "--out", out,
                      "--size", "32", "--num_tasks", "3", "--num_imgs_per_cat_train", "12",
                      "--num_target_tasks", "2", "--shots", "2", "4", "--heldout_per_class", "3")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def collective_run(tiny_split, tmp_path_factory):
    """A 1-epoch collective run on tiny_split, for its learngene."""
    out = tmp_path_factory.mktemp("collective") / "run"
    proc = run_script("collective-model/val_lifelong_imagenet.py", "--path", tiny_split, "--out", out, "--epochs",
                      "1", "--num_works", "3", "--batch_size", "16", "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def joint_run(collective_run, tiny_split, tmp_path_factory):
    """The joint-source control of collective_run (1 epoch, as the collective run)."""
    out = tmp_path_factory.mktemp("joint") / "run"
    proc = run_script("collective-model/joint_source.py", "--path", tiny_split, "--learngene",
                      collective_run / "learngene.pt", "--out", out, "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs a script or the whole pipeline end to end in a subprocess (each "
                            "start imports torch and trains for real); `./run.sh test` leaves these out, `./run.sh "
                            "test-slow` runs them, CI runs both")


def pytest_sessionstart(session):
    """CI always has ../shared beside the clone (.ci/run sets LEARNGENE_REQUIRE_DATA): there, missing data is a
    broken setup, and the suite fails at once instead of passing on its unit tests alone."""
    if SCRIPT_PRECISION not in ("auto", "fp32", "bf16"):
        raise pytest.UsageError(f"LEARNGENE_TEST_PRECISION={SCRIPT_PRECISION!r}: expected auto, fp32 or bf16")
    if os.environ.get("LEARNGENE_REQUIRE_DATA") and not (TINY / "train.npz").exists():
        raise pytest.UsageError(f"LEARNGENE_REQUIRE_DATA is set but {TINY} is absent: the tests on the real images "
                                f"would be skipped")


def pytest_report_header(config):
    """The machine a failure happened on, so it can be read against another's."""
    from utils.repro import machine_line
    return f"learngene: {machine_line()}; the scripts at --precision {SCRIPT_PRECISION} (LEARNGENE_TEST_PRECISION)"


def pytest_terminal_summary(terminalreporter):
    """Without the data, say plainly how many tests did not run and why."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "tiny-imagenet-100 absent" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests SKIPPED because {TINY} is absent: they need the real "
                                    f"offline images (CI fails instead of skipping them)", yellow=True, bold=True)
