"""The individual-model phase: the same runs trained one by one and grouped (utils/grouped.py), timed in one
process on one device, with the largest difference in final test accuracy between the two.

    python bench/individual_phase.py --path data/tiny-imagenet-100-quick-split \
        --learngene checkpoints/tiny-imagenet-100-quick/collective/learngene.pt --num_target_tasks 2 --epochs 5
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_device_and_output, add_split_and_learngene, device_and_output  # noqa: E402
from utils import fewshot, learngene, methods, runstore  # noqa: E402
from utils.cli import COUNT, cli, require  # noqa: E402
from utils.files import write_csv  # noqa: E402
from utils.repro import command_line, device_name, provenance  # noqa: E402
from utils.engine import synchronize  # noqa: E402
from utils.splits import Split  # noqa: E402


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_and_learngene(p)
    p.add_argument("--shots", type=COUNT, default=10)
    p.add_argument("--num_target_tasks", type=COUNT, default=2)
    p.add_argument("--seeds", type=COUNT, default=1)
    p.add_argument("--epochs", type=COUNT, default=5)
    add_device_and_output(p, "individual-phase")
    args = p.parse_args(argv)
    device, out = device_and_output(args, "individual-phase")
    split = Split(args.path)
    art = learngene.load(args.learngene, split.dataset, split.image_size)
    require(args.num_target_tasks <= split.num_few_shot("target", args.shots),
            f"the split has fewer than {args.num_target_tasks} target tasks")
    inputs = methods.Inputs(art, args.learngene, methods.load_collective(None, art, split))
    # the training scripts' settings, but for the schedule: test accuracy after the last epoch only
    settings = fewshot.TrainSettings(epochs=args.epochs, eval_every=args.epochs, precision=args.precision)
    # the individual study's methods (the source study's controls need inputs this bench does not make)
    groupable = [m.name for m in methods.METHODS.values() if m.groupable and m.name in methods.DEFAULT_METHODS]
    data = fewshot.FewShotData(split, "target", device)
    group = [runstore.RunKey(m, args.shots, t, s) for t in range(args.num_target_tasks) for s in range(args.seeds)
             for m in groupable]
    for key in group:
        data(key.shots, key.task)
    synchronize(device)
    t0 = time.perf_counter()
    one = [fewshot.train_one(key, inputs, *data(key.shots, key.task), settings, device) for key in group]
    synchronize(device)
    t1 = time.perf_counter()
    together = fewshot.train_grouped(group, inputs, data, settings, device)
    synchronize(device)
    t2 = time.perf_counter()
    diff = max(abs(a["final_acc"] - b["final_acc"]) for a, b in zip(one, together))
    seq, grp = t1 - t0, t2 - t1
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.precision}; {split.dataset} "
          f"{split.image_size}px\ncommand: {command_line(argv)}\n{len(group)} runs ({args.num_target_tasks} tasks x "
          f"{args.seeds} seeds x {len(groupable)} methods), {args.shots} shots, {args.epochs} epochs each; "
          f"{dataclasses.asdict(settings)}\n"
          f"sequential {seq:.1f} s ({seq / len(group):.2f} s/run), grouped {grp:.1f} s ({grp / len(group):.2f} s/run): "
          f"{seq / grp:.2f}x; largest final-accuracy difference {diff:.1f} points")
    write_csv(out, ["runs", "shots", "epochs", "sequential_s", "grouped_s", "speedup", "max_acc_diff_points",
                    "dataset", "image_size", "precision", "ewc_lambda"],
              [[len(group), args.shots, args.epochs, seq, grp, seq / grp, diff, split.dataset, split.image_size,
                args.precision, settings.ewc_lambda]],
              provenance(device, argv))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
