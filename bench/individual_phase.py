"""The individual-model phase: the same runs trained one by one and batched (utils/batched.py), timed in one
process on one device, with the largest difference in final test accuracy between the two.

    python bench/individual_phase.py --path data/tiny-imagenet-100-quick-split \
        --learngene checkpoints/tiny-imagenet-100-quick/collective/learngene.pt --tasks 2 --epochs 5
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_device_and_output, device_and_output  # noqa: E402
from utils import individual, learngene  # noqa: E402
from utils.common import cli, command_line, device_name, positive_int, provenance, require, write_csv  # noqa: E402
from utils.engine import synchronize  # noqa: E402
from utils.splits import Split  # noqa: E402

METHODS = ("learngene", "learngene-noewc", "scratch", "other-layers")


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="data/tiny-imagenet-100-quick-split")
    p.add_argument("--learngene", default="checkpoints/tiny-imagenet-100-quick/collective/learngene.pt")
    p.add_argument("--shots", type=positive_int, default=10)
    p.add_argument("--tasks", type=positive_int, default=2)
    p.add_argument("--seeds", type=positive_int, default=1)
    p.add_argument("--epochs", type=positive_int, default=5)
    add_device_and_output(p, "individual-phase")
    args = p.parse_args(argv)
    device, out = device_and_output(args, "individual-phase")
    split = Split(args.path)
    art = learngene.load(args.learngene, split.dataset, split.image_size)
    require(args.tasks <= split.num_few_shot("target", args.shots), f"the split has fewer than {args.tasks} tasks")
    collective = individual.load_collective(None, art, split)
    hp = type("Args", (), dict(epochs=args.epochs, batch_size=32, lr=0.005, momentum=0.9, weight_decay=5e-4,
                               ewc_lambda=4000.0, eval_every=args.epochs, precision=args.precision))
    data = individual.FewShotData(split, "target", device)
    group = [(args.shots, t, s, m) for t in range(args.tasks) for s in range(args.seeds) for m in METHODS]
    for k, t, _, _ in group:
        data(k, t)
    synchronize(device)
    t0 = time.perf_counter()
    one = [individual.train_one(m, art, collective, *data(k, t), hp, seed=s, shots=k, task=t, device=device)
           for k, t, s, m in group]
    synchronize(device)
    t1 = time.perf_counter()
    grouped = individual.train_grouped(group, art, collective, data, hp, device)
    synchronize(device)
    t2 = time.perf_counter()
    diff = max(abs(a["final_acc"] - b["final_acc"]) for a, b in zip(one, grouped))
    seq, bat = t1 - t0, t2 - t1
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.precision}; {split.dataset} "
          f"{split.image_size}px\n"
          f"command: {command_line(argv)}\n{len(group)} runs ({args.tasks} tasks x {args.seeds} seeds x "
          f"{len(METHODS)} methods), {args.shots} shots, {args.epochs} epochs each\n"
          f"sequential {seq:.1f} s ({seq / len(group):.2f} s/run), batched {bat:.1f} s ({bat / len(group):.2f} s/run): "
          f"{seq / bat:.2f}x; largest final-accuracy difference {100 * diff:.1f} points")
    write_csv(out, ["runs", "shots", "epochs", "sequential_s", "batched_s", "speedup", "max_acc_diff", "dataset",
                    "image_size", "precision"],
              [[len(group), args.shots, args.epochs, seq, bat, seq / bat, diff, split.dataset, split.image_size,
                args.precision]],
              provenance(device, argv))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
