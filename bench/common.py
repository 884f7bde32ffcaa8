"""What the benchmark scripts share: the device and output options, and where the CSV goes."""
from pathlib import Path

from utils.cli import require
from utils.repro import pick_device
from utils.engine import PRECISIONS, resolve_precision

RESULTS = Path(__file__).resolve().parent / "results"


def add_device_and_output(parser, name):
    parser.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    parser.add_argument("--out", default=None, metavar="OUTFILE", help=f"CSV to write (default: bench/results/{name}-<device type>.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="as the training scripts' flag")


def device_and_output(args, name):
    """The device to measure on and the CSV to write, which a rerun does not replace without --overwrite; resolves
    args.precision for that device."""
    device = pick_device(args.no_cuda)
    args.precision = resolve_precision(args.precision, device)
    out = Path(args.out or RESULTS / f"{name}-{device.type}.csv")
    require(args.overwrite or not out.exists(), f"{out} exists: pass --overwrite to replace it")
    require(not out.is_dir(), f"--out {out} is a folder; give the CSV file to write")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    require(blocking is None, f"--out {out}: {blocking} is a file, not a folder")  # now, not after the measurement
    return device, out


def add_split_and_learngene(parser):
    """The split and learngene a bench reads: by default the quick preset's."""
    parser.add_argument("--path", default="data/tiny-imagenet-100-quick-split", metavar="SPLIT", help="a split directory")
    parser.add_argument("--learngene", metavar="LEARNGENE", default="checkpoints/tiny-imagenet-100-quick/collective/learngene.pt")
