"""Build the CIFAR-100 continual (source), target and validation splits (README, "Splits").

    python utils/data_cifar_mk.py --path data/ --out data/cifar100-split
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import split_maker  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    p = split_maker.maker_parser(__doc__.splitlines()[0], ["cifar100"])
    p.add_argument("--download", action="store_true", help="fetch CIFAR-100 into --path with torchvision (online)")
    split_maker.run_maker(p, argv)


if __name__ == "__main__":
    main()
