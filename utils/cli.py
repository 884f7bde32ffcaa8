"""The command line's contract: bad input is one line and a non-zero exit, never a traceback; argparse types
with one-line messages."""
import argparse
import functools
import signal
import sys


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


def require_distinct(values, flag):
    """Refuse a repeated value of a multi-valued flag (--seed 0 0 would train every run twice)."""
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    require(not repeated, f"{flag} repeats {', '.join(map(str, repeated))}: give each value once")


def positive_int(text):
    """argparse type: an integer >= 1, with a one-line message otherwise."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_float(text):
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def positive_float(text):
    return _number(text, float, lambda v: v > 0, "a number > 0")  # not NaN either


def _number(text, convert, acceptable, what):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not acceptable(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value
