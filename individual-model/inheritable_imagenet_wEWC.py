"""Build individual models from a learngene and train them with EWC on the imagenet-family target tasks
(10 or 20 images per class), with the baselines, and write the results table (utils/individual.py; the README
maps the library).

    python individual-model/inheritable_imagenet_wEWC.py --path data/<split> --learngene checkpoints/<run>/learngene.pt
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import individual  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    individual.run("imagenet", argv)


if __name__ == "__main__":
    main()
