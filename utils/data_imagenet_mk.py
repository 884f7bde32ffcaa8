"""Build the ImageNet100 (or offline Tiny-ImageNet-100) continual, target and validation splits.

    python utils/data_imagenet_mk.py --path /data/imagenet/train --out data/imagenet100-split
    python utils/data_imagenet_mk.py --dataset tiny-imagenet-100 --path ../shared/data/tiny-imagenet-100
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import sources, splits  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    p = splits.maker_parser(__doc__.splitlines()[0], ["imagenet100", "tiny-imagenet-100"])
    splits.run_maker(p, argv, open_source)


def open_source(args):
    if args.dataset == "tiny-imagenet-100":
        return sources.tiny_imagenet100(args.path, verify=args.verify)
    wnids = [w for pool in splits.class_split("imagenet100").values() for w in pool]
    return sources.imagenet100(args.path, wnids)


if __name__ == "__main__":
    main()
