"""Collective-model training throughput: the released data path against this project's, same model, same
device, one run. Also the cost of --judgement, FLOPs per image and the achieved fraction of peak (MFU).

    python bench/throughput.py --path data/tiny-imagenet-100-quick-split            # CPU here
    python bench/throughput.py --path data/tiny-imagenet-100-paper-split --steps 200 --compile default reduce-overhead
                                                                                      # on a GPU

(a) "released": one PNG file per image in class folders, torchvision ImageFolder (PIL decode), per-sample
    transforms (resize, random crop to the same size, flip, to-tensor, normalise), a DataLoader with 0
    workers, fp32, as the released scripts.
(b) "this project": the task's uint8 images resident on the device, batches sliced from it, batched flips
    and normalisation (utils/engine.py); in fp32 and, where the device computes bf16 natively, in bf16
    autocast, each with contiguous (NCHW) and channels_last (NHWC) tensors; and with --judgement in the
    precision --precision resolves to (auto: bf16 where the device computes it natively).
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import add_device_and_output, device_and_output  # noqa: E402
from utils.criterion import GradientCriterion  # noqa: E402
from utils.cli import BATCH, COUNT, INDEX, cli, require  # noqa: E402
from utils.files import write_csv  # noqa: E402
from utils.repro import command_line, device_name, provenance  # noqa: E402
from utils.engine import (MEAN, STD, DeviceData, resolve_precision, seeded_generator, synchronize,  # noqa: E402
                          train_epoch, uses_channels_last)
from utils.models import BASE_WIDTHS, WIDENING, CollectiveNet, widths_at  # noqa: E402
from utils.splits import Split  # noqa: E402

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


def time_ours(model, data, device, batch_size, steps, precision, with_criterion=False, compile_mode=None, cache=None,
              channels_last=None):
    """This project's training step as the scripts run it (engine.train_epoch): one warm-up epoch, then
    whole epochs covering at least `steps` batches. Returns (images/s, seconds of the warm-up epoch)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    criterion = GradientCriterion() if with_criterion else None
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
        if criterion:
            criterion.start_epoch()
        train_epoch(model, opt, data, batch_size, gen, after_backward=criterion, precision=precision,
                    channels_last=channels_last)  # syncs
        if criterion:
            criterion.end_epoch()
    return epochs * len(data) / (time.perf_counter() - t0), warmup


@dataclass
class Row:
    path: str          # "released data path", "(a) released", "(b) this project", ...
    widths: str        # "base", "final" or "-" (no model)
    precision: str     # fp32 or bf16 (autocast)
    layout: str        # memory format of the model and batches: contiguous or channels_last
    images_per_s: float
    flops: float = 0.0  # training FLOPs per image (0: no model)

    @property
    def label(self):
        return f"{self.path}, {self.precision} {self.layout}, {self.widths} widths" if self.flops else self.path


def measure(model, loader, data, device, args, label, flops, folder):
    """Every row of one model: the released path, this project's in fp32 and bf16 in both memory formats where
    the device has bf16, the criterion's cost and torch.compile in the default precision."""
    rows = [Row("(a) released path", label, "fp32", "contiguous",
                time_released(model, loader, device, args.steps, args.warmup), flops)]
    for precision in precisions(device):
        for memory in ("contiguous", "channels_last"):
            model = in_layout(model, memory)
            ips, _ = time_ours(model, data, device, args.batch_size, args.steps, precision,
                               channels_last=memory == "channels_last")
            rows.append(Row("(b) this project", label, precision, memory, ips, flops))
    default = layout(device, args.precision)  # the rest as the scripts train
    model = in_layout(model, default)
    ips, _ = time_ours(model, data, device, args.batch_size, args.steps, args.precision, with_criterion=True)
    rows.append(Row("(b) + --judgement", label, args.precision, default, ips, flops))
    compile_seconds = {}
    for mode in args.compile:
        ips, warmup = time_ours(model, data, device, args.batch_size, args.steps, args.precision, compile_mode=mode,
                                cache=str(Path(folder) / f"inductor-{mode}-{label}"))
        compile_seconds[mode] = warmup - len(data) / ips
        rows.append(Row(f"(b) + torch.compile({mode})", label, args.precision, default, ips, flops))
    return rows, compile_seconds


def precisions(device):
    """fp32, and bf16 where the device computes it natively (elsewhere bf16 is emulated: not worth timing)."""
    return ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]


def layout(device, precision):
    """The memory format the training scripts use for this precision on this device."""
    return "channels_last" if uses_channels_last(device, precision) else "contiguous"


def in_layout(model, memory):
    return model.to(memory_format=torch.channels_last if memory == "channels_last" else torch.contiguous_format)


def find(rows, path, widths, precision=None, layout=None):
    return next(r.images_per_s for r in rows if r.path == path and r.widths == widths
                and precision in (None, r.precision) and layout in (None, r.layout))


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="data/tiny-imagenet-100-quick-split", metavar="SPLIT", help="a split directory (real images)")
    p.add_argument("--batch_size", type=BATCH, default=64)
    p.add_argument("--steps", type=COUNT, default=20,
                   help="timed steps per measurement (this project's path: whole epochs covering them)")
    p.add_argument("--warmup", type=INDEX, default=3, help="untimed steps of the released path")
    p.add_argument("--compile", nargs="+", default=[], metavar="MODE", choices=["default", "reduce-overhead"],
                   help="also time (b) under torch.compile with each of these modes (reduce-overhead: CUDA graphs)")
    add_device_and_output(p, "throughput")
    args = p.parse_args(argv)
    device, out = device_and_output(args, "throughput")
    split = Split(args.path)
    images, labels = split.continual(0)
    require(len(labels) >= args.batch_size * 2, f"task 0 of {split.path} has only {len(labels)} images")
    size = split.image_size
    data = DeviceData.from_numpy(images, labels, device)
    compile_seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        loader = released_loader(images, labels, folder, args.batch_size, size)
        rows = [Row("released data path alone (no model)", "-", "-", "-",
                    time_released(None, loader, device, args.steps, args.warmup, train=False))]
        for label, widths in (("base", BASE_WIDTHS), ("final", widths_at(max(WIDENING)))):
            torch.manual_seed(0)
            model = CollectiveNet(widths, size, 100).to(device)
            measured, compile_seconds[label] = measure(model, loader, data, device, args, label,
                                                       training_flops_per_image(model, size), folder)
            rows += measured
    report(rows, compile_seconds, device, args, argv, split, out)


def report(rows, compile_seconds, device, args, argv, split, out):
    peak = peak_flops(device)
    print(f"device: {device_name(device)}; torch {torch.__version__}; default precision {args.precision}; "
          f"{split.dataset} {split.image_size}px, batch {args.batch_size}, {args.steps} timed steps\n"
          f"command: {command_line(argv)}\n")
    print(f"{'path':56s} {'images/s':>9s} {'GFLOP/img':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
    csv_rows = []
    for r in rows:
        tflops = r.images_per_s * r.flops / 1e12 if r.flops else None
        mfu = f"{100 * r.images_per_s * r.flops / peak:.1f}%" if (r.flops and peak) else "n/a"
        print(f"{r.label:56s} {r.images_per_s:9.1f} {r.flops / 1e9 if r.flops else float('nan'):10.3f} "
              f"{tflops or float('nan'):8.3f} {mfu:>6s}")
        csv_rows.append([r.label, r.images_per_s, r.flops or "", tflops or "", mfu, r.precision, r.layout])
    for label in ("base", "final"):
        as_scripts = {p: find(rows, "(b) this project", label, p, layout(device, p)) for p in precisions(device)}
        ours = as_scripts[args.precision]
        line = (f"{label} widths: this project ({args.precision}, {layout(device, args.precision)}) / released = "
                f"{ours / find(rows, '(a) released path', label):.2f}x")
        if "bf16" in as_scripts:  # each precision as the scripts train in it
            line += f"; bf16 / fp32 = {as_scripts['bf16'] / as_scripts['fp32']:.2f}x"
        judged = find(rows, "(b) + --judgement", label)
        print(f"{line}; --judgement costs {100 * (ours / judged - 1):.1f}% time")
        for mode, seconds in compile_seconds[label].items():
            print(f"{label} widths: torch.compile({mode}) / eager = "
                  f"{find(rows, f'(b) + torch.compile({mode})', label) / ours:.2f}x, after {seconds:.0f} s of compiling")
    write_csv(out, ["path", "images_per_s", "train_flops_per_image", "tflops", "mfu", "precision", "memory_format",
                    "dataset", "image_size"], [[*row, split.dataset, split.image_size] for row in csv_rows],
              provenance(device, argv))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
