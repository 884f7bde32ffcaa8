"""Measure a finished collective run (and its joint source) on the split's held-out images again, with no
training: what the collective and joint-source scripts write at their end (utils/source.py), for a run made
before a measurement was added, or to redo it.

    python collective-model/measure_source.py --path data/<split> --run checkpoints/<preset>/collective \
        [--joint checkpoints/<preset>/joint]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import joint, learngene, methods, source  # noqa: E402
from utils.cli import cli, require  # noqa: E402
from utils.engine import PRECISIONS, resolve_precision  # noqa: E402
from utils.files import FolderLock  # noqa: E402
from utils.repro import pick_device, provenance  # noqa: E402
from utils.splits import Split  # noqa: E402


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", required=True, metavar="SPLIT", help="the split the run was trained on, made with "
                   "--heldout_per_class")
    p.add_argument("--run", required=True, metavar="RUNS", help="the collective run folder (with learngene.pt)")
    p.add_argument("--joint", default=None, metavar="RUNS", help="its joint-source folder (with joint.pt)")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = p.parse_args(argv)
    split = Split(args.path)
    require("heldout" in split.manifest, f"split {split.path} has no held-out images (made without --heldout_per_class)")
    run = Path(args.run)
    art = learngene.load(run / "learngene.pt", split.dataset, split.image_size)
    config = art["provenance"]["collective_config"]
    require(config.get("split_hash") == split.hash, f"{run} was trained on another split than {split.path}")
    num_tasks = len(list((run / "checkpoints").glob("task_*.pt")))
    device = pick_device(args.no_cuda)
    precision = resolve_precision(args.precision, device)
    ck = None
    if args.joint:  # checked before anything is measured and written
        folder = Path(args.joint)
        ck = joint.load(folder / "joint.pt", art, split)
    with FolderLock(run):
        source.measure(run, split, num_tasks, art["source_task"], device, precision, config["seed"],
                       f"{split.dataset}: collective model's accuracy (%) on held-out images",
                       provenance(device, argv, config["seed"]))
    if ck is not None:
        with FolderLock(folder):
            joint.measure(folder, methods.collective_net(ck).to(device), split, ck["task"],
                          {c: i for i, c in enumerate(ck["classes"])}, device, precision)


if __name__ == "__main__":
    main()
