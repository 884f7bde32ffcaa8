"""Build the ImageNet100 (or offline Tiny-ImageNet-100, or any image folder) continual, target and validation splits.

    python utils/data_imagenet_mk.py --path /data/imagenet/train --out data/imagenet100-split
    python utils/data_imagenet_mk.py --dataset tiny-imagenet-100 --path ../shared/data/tiny-imagenet-100
    python utils/data_imagenet_mk.py --dataset folder --path /data/CUB_200_2011 --size 32 --out data/cub-split
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import split_maker  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    p = split_maker.maker_parser(__doc__.splitlines()[0], ["imagenet100", "tiny-imagenet-100", "folder"])
    split_maker.run_maker(p, argv)


if __name__ == "__main__":
    main()
