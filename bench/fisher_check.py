"""The EWC Fisher of a learngene in a fresh individual model, three ways, per inherited conv layer: as training
normalises (the reference: BatchNorm on batch statistics, one backward pass per sample), as this project
computes it (eval mode after re-estimating BatchNorm statistics on the task's images), and in eval mode on the
new layers' initial statistics (the error the project avoids). SGD with momentum 0.9 diverges on a coordinate
once lr x lambda x F exceeds 2 x 1.9 = 3.8; the last columns show how close each Fisher comes.

    python bench/fisher_check.py --path data/tiny-imagenet-100-quick-split \\
        --learngene checkpoints/tiny-imagenet-100-quick/collective/learngene.pt
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_split_and_learngene  # noqa: E402
from utils import fewshot, learngene, methods  # noqa: E402
from utils.cli import COUNT, EWC_LAMBDA, INDEX, LEARNING_RATE, cli, require  # noqa: E402
from utils.repro import command_line  # noqa: E402
from utils.ewc import RELEASED_LAMBDA, fisher_diagonal, fisher_with_batch_statistics  # noqa: E402
from utils.splits import Split  # noqa: E402


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_and_learngene(p)
    p.add_argument("--section", choices=["validation", "target"], default="validation")
    p.add_argument("--shots", type=COUNT, default=20)
    p.add_argument("--task", type=INDEX, default=0)
    p.add_argument("--lr", type=LEARNING_RATE, default=0.005)
    p.add_argument("--ewc_lambda", type=EWC_LAMBDA, default=RELEASED_LAMBDA)
    args = p.parse_args(argv)
    split = Split(args.path)
    art = learngene.load(args.learngene, split.dataset, split.image_size)
    require(0 <= args.task < split.num_few_shot(args.section, args.shots), f"no {args.section} task {args.task}")
    train = fewshot.FewShotData(split, args.section, torch.device("cpu"))(args.shots, args.task)[0]
    torch.manual_seed(0)
    model, _ = methods.build_model("learngene", methods.Inputs(art, args.learngene), split.image_size)
    names = [n for n, _ in model.named_parameters() if n.startswith("inherited.") and n.endswith("conv.weight")]
    fishers = {"batch statistics (reference)": fisher_with_batch_statistics(model, train, names),
               "re-estimated statistics (ours)": fisher_diagonal(model, train, names),
               "initial statistics (stale)": fisher_diagonal(model, train, names, estimate_batchnorm=False)}
    print(f"{split.dataset} {args.section} task {args.task}, {args.shots} shots ({len(train)} images); learngene "
          f"conv {art['layers']}; lr {args.lr}, lambda {args.ewc_lambda:g}\ncommand: {command_line(argv)}\n")
    print(f"{'layer':26s} {'Fisher':32s} {'median':>9s} {'< 1e-9':>7s} {'max lr*lambda*F':>16s}")
    for n in names:
        for label, fisher in fishers.items():
            f = fisher[n]
            print(f"{n:26s} {label:32s} {f.median().item():9.2e} {100 * (f < 1e-9).float().mean().item():6.1f}% "
                  f"{args.lr * args.ewc_lambda * f.max().item():16.2f}")


if __name__ == "__main__":
    main()
