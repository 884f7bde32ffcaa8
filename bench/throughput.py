"""Collective-model training throughput: the released data path against this project's, same model, same
device, one run. Also the cost of --judgement, FLOPs per image and the achieved fraction of peak (MFU).

    python bench/throughput.py --path data/tiny-imagenet-100-quick-split            # CPU here
    python bench/throughput.py --path data/tiny-imagenet-100-paper-split --steps 200 --compile default reduce-overhead
                                                                                      # on a GPU

(a) "released": one PNG file per image in class folders, torchvision ImageFolder (PIL decode), per-sample
    transforms (resize, random crop to the same size, flip, to-tensor, normalise), a DataLoader with 0
    workers, fp32, as the released scripts.
(b) "this project": the task's uint8 images resident on the device, batches sliced from it, batched flips
    and normalisation (utils/engine.py); in fp32 and in bf16 autocast (channels_last), and with --judgement in
    the precision --precision resolves to (auto: bf16 where the device computes it natively).
--compile MODE...: also (b) with the model under torch.compile(mode=MODE) ("reduce-overhead" adds CUDA graphs),
    to see whether compiling pays; its compile time is printed apart (the first epoch minus a timed one). The
    collective model changes shape at every widening, so a run would pay that compile time 21 times.
Prints a table and writes a CSV (default bench/results/throughput-<device>.csv).
"""
import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import add_device_and_output, device_and_output  # noqa: E402
from utils import criterion as crit  # noqa: E402
from utils.common import cli, command_line, device_name, positive_int, provenance, require, write_csv  # noqa: E402
from utils.engine import DeviceData, seeded_generator, synchronize, train_epoch, uses_channels_last  # noqa: E402
from utils.models import BASE_WIDTHS, CollectiveNet, widths_at  # noqa: E402
from utils.splits import MEAN, STD, Split  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s


def training_flops_per_image(model, size):
    """2 FLOPs per multiply-add, forward + backward (about 3x the forward)."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            macs.append(output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return 3 * 2 * sum(macs)


def peak_flops(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def released_loader(images, labels, folder, batch_size, size):
    """Write one PNG per image in class folders and read them back the way the released scripts did."""
    from PIL import Image
    from torchvision import datasets, transforms
    for i, (x, y) in enumerate(zip(images, labels)):
        d = Path(folder) / f"class{y}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(d / f"{i:06d}.png")
    tf = transforms.Compose([transforms.Resize(size), transforms.RandomCrop(size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return torch.utils.data.DataLoader(datasets.ImageFolder(str(folder), tf), batch_size=batch_size, shuffle=True,
                                       num_workers=0)


def time_released(model, loader, device, steps, warmup, train=True):
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        model.train()
    done, seen, t0 = 0, 0, None
    while done < steps + warmup:
        for x, y in loader:
            if done == warmup:
                synchronize(device)
                t0, seen = time.perf_counter(), 0
            if train:
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            seen += len(y)
            done += 1
            if done == steps + warmup:
                break
    synchronize(device)
    return seen / (time.perf_counter() - t0)


def time_ours(model, data, device, batch_size, steps, precision, judgement=False, compile_mode=None, cache=None):
    """This project's training step as the scripts run it (engine.train_epoch): one warm-up epoch, then
    whole epochs covering at least `steps` batches. Returns (images/s, seconds of the warm-up epoch)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    gradients = crit.GradientCriterion() if judgement else None
    if compile_mode:
        torch._dynamo.reset()  # a fresh cache per model shape, as a widened model would need
        # and empty on-disk caches (`cache`, a new folder), so the compile time is that of a shape seen for the
        # first time
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ["TRITON_CACHE_DIR"] = cache
        model = torch.compile(model, mode=compile_mode)
    gen = seeded_generator(0, device)
    epochs = math.ceil(steps * batch_size / len(data))
    synchronize(device)
    t_start = time.perf_counter()
    for epoch in range(epochs + 1):
        if epoch == 1:
            synchronize(device)
            t0 = time.perf_counter()
            warmup = t0 - t_start
        if gradients:
            gradients.start_epoch()
        train_epoch(model, opt, data, batch_size, gen, after_backward=gradients, precision=precision)  # syncs
        if gradients:
            gradients.end_epoch()
    return epochs * len(data) / (time.perf_counter() - t0), warmup


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="data/tiny-imagenet-100-quick-split", help="a split directory (real images)")
    p.add_argument("--task", type=int, default=0, help="continual task whose images are used")
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--steps", type=positive_int, default=20,
                   help="timed steps per measurement (this project's path: whole epochs covering them)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of the released path")
    p.add_argument("--compile", nargs="+", default=[], metavar="MODE",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="also time (b) under torch.compile with each of these modes")
    add_device_and_output(p, "throughput")
    args = p.parse_args(argv)
    device, out = device_and_output(args, "throughput")
    split = Split(args.path)
    images, labels = split.continual(args.task)
    require(len(labels) >= args.batch_size * 2, f"task {args.task} has only {len(labels)} images")
    size = split.image_size
    data = DeviceData.from_numpy(images, labels, device)
    rows, compile_seconds = [], {}
    with tempfile.TemporaryDirectory() as folder:
        loader = released_loader(images, labels, folder, args.batch_size, size)
        rows.append(["released data path alone (no model)", "-", time_released(None, loader, device, args.steps,
                                                                              args.warmup, train=False), None])
        for label, widths in (("base", BASE_WIDTHS), ("final", widths_at(20))):
            torch.manual_seed(0)
            model = CollectiveNet(widths, size, 100).to(device)
            flops = training_flops_per_image(model, size)
            rel = time_released(model, loader, device, args.steps, args.warmup)
            rows.append([f"(a) released path, {label} widths", label, rel, flops])
            for precision in ("fp32", "bf16"):  # bf16 runs channels_last, as the scripts do
                model = model.to(memory_format=torch.channels_last if uses_channels_last(device, precision)
                                 else torch.contiguous_format)
                ours, _ = time_ours(model, data, device, args.batch_size, args.steps, precision)
                rows.append([f"(b) this project {precision}, {label} widths", label, ours, flops])
            model = model.to(memory_format=torch.channels_last if uses_channels_last(device, args.precision)
                             else torch.contiguous_format)
            judged, _ = time_ours(model, data, device, args.batch_size, args.steps, args.precision, judgement=True)
            rows.append([f"(b) {args.precision} + --judgement, {label} widths", label, judged, flops])
            for mode in args.compile:
                compiled, warmup = time_ours(model, data, device, args.batch_size, args.steps, args.precision,
                                             compile_mode=mode, cache=str(Path(folder) / f"inductor-{mode}-{label}"))
                compile_seconds[(mode, label)] = warmup - len(data) / compiled
                rows.append([f"(b) + torch.compile({mode}), {label} widths", label, compiled, flops])
    peak = peak_flops(device)
    dev = device_name(device)
    print(f"device: {dev}; torch {torch.__version__}; default precision {args.precision}; {split.dataset} {size}px, "
          f"batch {args.batch_size}, "
          f"{args.steps} timed steps\ncommand: {command_line(argv)}\n")
    print(f"{'path':42s} {'images/s':>10s} {'GFLOP/img':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
    out_rows = []
    for name, widths, ips, flops in rows:
        tflops = ips * flops / 1e12 if flops else None
        mfu = f"{100 * ips * flops / peak:.1f}%" if (flops and peak) else "n/a"
        print(f"{name:42s} {ips:10.1f} {flops / 1e9 if flops else float('nan'):10.3f} "
              f"{tflops if tflops else float('nan'):8.3f} {mfu:>6s}")
        out_rows.append([name, ips, flops or "", tflops or "", mfu])
    by = {r[0]: r[2] for r in rows}
    for label in ("base", "final"):
        fp32, bf16 = by[f"(b) this project fp32, {label} widths"], by[f"(b) this project bf16, {label} widths"]
        ours, rel = by[f"(b) this project {args.precision}, {label} widths"], by[f"(a) released path, {label} widths"]
        judged = by[f"(b) {args.precision} + --judgement, {label} widths"]
        print(f"{label} widths: bf16 / fp32 = {bf16 / fp32:.2f}x; this project ({args.precision}) / released = "
              f"{ours / rel:.2f}x; --judgement costs {100 * (ours / judged - 1):.1f}% time")
        for mode in args.compile:
            compiled = by[f"(b) + torch.compile({mode}), {label} widths"]
            print(f"{label} widths: torch.compile({mode}) / eager = {compiled / ours:.2f}x, after "
                  f"{compile_seconds[(mode, label)]:.0f} s of compiling")
    write_csv(out, ["path", "images_per_s", "train_flops_per_image", "tflops", "mfu", "dataset", "image_size"],
              [[*row, split.dataset, size] for row in out_rows], provenance(device, argv))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
