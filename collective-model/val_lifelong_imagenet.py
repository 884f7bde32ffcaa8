"""Train the expandable collective model over the continual tasks of a imagenet-family split, record the
gradient criterion and extract the learngene (see utils/collective.py for the outputs).

    python collective-model/val_lifelong_imagenet.py --path data/<split> --out checkpoints/collective-<name>
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import collective  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    collective.run("imagenet", argv)


if __name__ == "__main__":
    main()
