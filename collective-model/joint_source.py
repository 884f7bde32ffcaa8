"""Train the joint-source control (utils/joint.py): the network the learngene was cut from, trained on all its
base classes at once with the same images and budget, for the learngene-joint, finetune-joint and probe-joint rows.

    python collective-model/joint_source.py --path data/<split> --learngene <collective run>/learngene.pt --out <dir>
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import joint  # noqa: E402
from utils.cli import cli  # noqa: E402


@cli
def main(argv=None):
    joint.run(argv)


if __name__ == "__main__":
    main()
