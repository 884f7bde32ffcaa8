"""The command line's contract: bad input is one line and a non-zero exit, never a traceback; argparse types
with one-line messages."""
import argparse
import functools
import math
import signal
import sys


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class StageFailed(Exception):
    """A stage of the pipeline failed after printing its own one-line error: the pipeline says where it stopped
    without a second `error:` line, and exits with the stage's status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


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
        except StageFailed as e:
            print(f"stopped: {e}", file=sys.stderr)
            sys.exit(e.status)
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


def require_distinct(values, flag):
    """Refuse a repeated value of a multi-valued flag (--seed 0 0 would train every run twice)."""
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    require(not repeated, f"{flag} repeats {', '.join(map(str, repeated))}: give each value once")


class Number:
    """An argparse type that states its domain: an int or a finite float in [lo, hi] (`open_lo`/`open_hi`
    exclude an end). A value outside it, NaN, infinity or text is one line naming the domain, before anything
    is read or written; tests/test_bad_input_sweep.py reads lo and hi to try every flag at and past its edges."""

    def __init__(self, kind, lo, hi, *, open_lo=False, open_hi=False):
        self.kind, self.lo, self.hi, self.open_lo, self.open_hi = kind, lo, hi, open_lo, open_hi
        self.__name__ = kind.__name__  # argparse names the type in some messages

    def __contains__(self, v):
        return (math.isfinite(v) and (v > self.lo if self.open_lo else v >= self.lo)
                and (v < self.hi if self.open_hi else v <= self.hi))

    def holds(self, value):
        """Whether a value read back from a file (a number already, not text) is of the domain: of its kind (an int
        for an integer domain; a bool is no number) and inside it."""
        kinds = (int,) if self.kind is int else (int, float)
        return isinstance(value, kinds) and not isinstance(value, bool) and value in self

    def describe(self):
        what = "an integer" if self.kind is int else "a number"
        return f"{what} in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"

    def __call__(self, text):
        try:
            value = self.kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        if value not in self:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}")
        return value


# The domains of the scripts' numeric flags. The upper ends are far beyond any sensible run, but finite: a
# typo of a few extra digits is refused instead of starting a run that would never end.
COUNT = Number(int, 1, 100_000)            # tasks, shots, images per class, epochs, steps
BATCH = Number(int, 1, 65_536)
SEED = Number(int, 0, 2 ** 32 - 1)         # numpy's generators take non-negative seeds
INDEX = Number(int, 0, 100_000)            # a 0-based task, or a count that may be 0
CONV_LAYER = Number(int, 1, 12)            # a 0-based conv layer of the 13 that can be inherited (not 0, which reads RGB)
IMAGE_SIZE = Number(int, 32, 1024)         # five 2x2 poolings need at least 32 pixels
LEARNING_RATE = Number(float, 0, 1000, open_lo=True)
MOMENTUM = Number(float, 0, 1, open_hi=True)
WEIGHT_DECAY = Number(float, 0, 1)
EWC_LAMBDA = Number(float, 0, 1e12)
FRACTION = Number(float, 0, 1, open_lo=True, open_hi=True)  # a share of a set that leaves some on both sides
PERCENT = Number(float, 0, 100)            # an accuracy, as the runs record it
