"""The strong-source control: the collective network at the learngene's source widths, trained jointly on every
base class of the continual tasks up to the extraction task (one output per class, shuffled mixed batches: the
standard few-shot pre-training, the "Baseline" of Chen et al., ICLR 2019) instead of task after task.

It sees the same images as the collective model up to the extraction task (the continual tasks' images, each as
often as the tasks hold it) for the same number of image presentations (the collective run's epochs over all of
them), with the collective run's batch size, learning rate, momentum, weight decay, seed and augmentation; only
the order (mixed instead of task by task) and the labels (global instead of task-local) differ. Its checkpoint
has the collective checkpoint's format, so the individual script cuts the learngene's layers from it
(learngene-joint) and fine-tunes or probes it (finetune-joint, probe-joint) exactly as it does the collective model.

Outputs, in --out: joint.pt (the model, its classes, provenance), metrics.csv (per epoch), last.pt (resume, after
every epoch: a rerun of the same command continues), heldout_summary.json (with a split made with
--heldout_per_class: its accuracy on the held-out images of the same tasks).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from utils import learngene, source
from utils.cli import COUNT, require
from utils.engine import PRECISIONS, DeviceData, resolve_precision, seeded_generator, sgd, train_epoch, uses_channels_last
from utils.files import FolderLock, foreign_files, torch_load, torch_save, write_csv, write_json
from utils.methods import load_collective
from utils.models import CollectiveNet
from utils.repro import derived_seed, pick_device, provenance
from utils.splits import Split

RUN_OUTPUTS = ("joint.pt", "last.pt", "metrics.csv", "heldout_summary.json", source.PROGRESS)


def parser():
    p = argparse.ArgumentParser(description="Train the joint-source control: the learngene's source network trained "
                                            "on all its base classes at once, with the same images and budget.")
    p.add_argument("--path", required=True, metavar="SPLIT", help="the split the collective model was trained on")
    p.add_argument("--learngene", required=True, metavar="LEARNGENE",
                   help="learngene.pt of that collective run: gives the extraction task, the widths and the settings")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="run directory; rerunning the command resumes it")
    p.add_argument("--epochs", type=COUNT, default=None,
                   help="passes over the images (default: the collective run's epochs per task, the same budget)")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--overwrite", action="store_true", help="discard a run of other settings in --out and start again")
    return p


def load(path, art, split):
    """A joint-source checkpoint made on this split (the collective checkpoint's checks, then its own)."""
    ck = load_collective(path, art, split)
    require(ck.get("classes") and ck["config"].get("split_hash") == split.hash,
            f"{path} is not a joint source made on split {split.path}")
    return ck


def base_classes(split, last_task):
    """The distinct classes of continual tasks 0..last_task, in order of first appearance."""
    return list(dict.fromkeys(c for t in range(last_task + 1) for c in split.manifest["continual"][t]["classes"]))


def joint_data(split, last_task, class_index):
    """Every image of continual tasks 0..last_task (as often as the tasks hold it), with its class's global label."""
    images, labels = [], []
    for t in range(last_task + 1):
        x, y = split.continual(t)
        to_global = np.array([class_index[c] for c in split.manifest["continual"][t]["classes"]])
        images.append(x)
        labels.append(to_global[y])
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def run(argv=None):
    args = parser().parse_args(argv)
    split = Split(args.path)
    art = learngene.load(args.learngene, split.dataset, split.image_size)
    collective = load_collective(None, art, split)
    cfg = art["provenance"]["collective_config"]
    require(cfg.get("split_hash") == split.hash, f"{args.learngene} was made on another split than {split.path}")
    last_task = art["source_task"]
    classes = base_classes(split, last_task)
    class_index = {c: i for i, c in enumerate(classes)}
    device = pick_device(args.no_cuda)
    precision = resolve_precision(args.precision, device)
    epochs = args.epochs or cfg["epochs"]
    config = {"dataset": split.dataset, "image_size": split.image_size, "num_outputs": len(classes),
              "split_hash": split.hash, "source_task": last_task, "widths": list(collective["widths"]),
              "classes": classes, "epochs": epochs, "precision": precision,
              **{k: cfg[k] for k in ("batch_size", "lr", "momentum", "weight_decay", "seed")}}
    out = Path(args.out)
    with FolderLock(out):
        state = _start_or_resume(out, config, args.overwrite)
        if state.get("done"):
            print(f"joint source in {out} is trained already")
            return torch_load(out / "joint.pt", "joint checkpoint")
        x, y = joint_data(split, last_task, class_index)
        data = DeviceData.from_numpy(x, y, device)
        print(f"joint source on {split.dataset}: {len(classes)} base classes of tasks 0-{last_task}, {len(data)} "
              f"images x {epochs} epochs = {len(data) * epochs} presentations, widths {config['widths']}, on {device} "
              f"in {precision}")
        model = _train(config, out, data, state, device)
        joint = {"config": config, "widths": config["widths"], "model": {k: v.detach().cpu() for k, v in
                 model.state_dict().items()}, "task": last_task, "classes": classes,
                 "provenance": provenance(device, argv, cfg["seed"])}
        measure(out, model, split, last_task, class_index, device, precision)
        torch_save(out / "joint.pt", joint)  # last: its presence means the run is complete
        return joint


def measure(out, model, split, last_task, class_index, device, precision):
    """heldout_summary.json: the joint source on the held-out images of tasks 0..last_task, through its head and
    through its features (utils/source.py); nothing for a split without held-out images."""
    progress = source.Progress(out)
    heldout = source.joint_heldout(model, split, range(last_task + 1), class_index, device, precision, progress)
    if heldout is None:
        return None
    features = source.feature_accuracy(model, source.feature_data(split, range(last_task + 1), device), progress)
    heldout.update(after_task=last_task, nearest_mean_accuracy=float(np.mean(features)), nearest_mean_per_task=features)
    write_json(out / "heldout_summary.json", heldout)
    progress.close()
    print(f"held-out accuracy of the joint source: {heldout['task_local_accuracy']:.1f}% task-local (5-way, as the "
          f"collective model is read), {heldout['all_classes_accuracy']:.1f}% over all {len(class_index)} classes; "
          f"its conv features, nearest class mean: {heldout['nearest_mean_accuracy']:.1f}%")
    return heldout


def _train(config, out, data, state, device):
    torch.manual_seed(derived_seed(config["seed"], "joint-init"))
    model = CollectiveNet(config["widths"], config["image_size"], config["num_outputs"])
    if "model" in state:
        model.load_state_dict(state["model"])
    model.to(device)
    if uses_channels_last(device, config["precision"]):
        model = model.to(memory_format=torch.channels_last)
    optimizer = sgd(model, config["lr"], config["momentum"], config["weight_decay"])  # one for the whole run
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    metrics = state.get("metrics", [])
    bar = tqdm(range(state.get("next_epoch", 0), config["epochs"]), desc="joint source", unit="epoch")
    for epoch in bar:
        generator = seeded_generator(derived_seed(config["seed"], "joint-batches", epoch), data.images.device)
        torch.manual_seed(derived_seed(config["seed"], "joint-dropout", epoch))
        t0 = time.perf_counter()
        stats = train_epoch(model, optimizer, data, config["batch_size"], generator, precision=config["precision"])
        require(stats.finite, f"joint source epoch {epoch}: training diverged (loss {stats.loss})")
        metrics.append([epoch, stats.loss, stats.accuracy, time.perf_counter() - t0])
        bar.set_postfix(loss=f"{stats.loss:.3f}", acc=f"{stats.accuracy:.3f}")
        torch_save(out / "last.pt", {"config": config, "next_epoch": epoch + 1, "metrics": metrics,
                                     "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                     "optimizer": optimizer.state_dict()})
        write_csv(out / "metrics.csv", ["epoch", "loss", "accuracy", "seconds"], metrics)
    return model


def _start_or_resume(out, config, overwrite):
    """The saved state of a run of the same config (done, or where to continue), or a fresh start."""
    if (out / "last.pt").exists():
        state = torch_load(out / "last.pt", "joint-source resume state")
        require(isinstance(state, dict) and isinstance(state.get("config"), dict),
                f"{out / 'last.pt'} is not a resume state of the joint-source script")
        if state["config"] == config:
            return {**state, "done": (out / "joint.pt").exists()}
        diffs = [k for k in config if state["config"].get(k) != config[k]]
        require(overwrite, f"{out} holds a joint-source run of other settings or inputs ({', '.join(diffs[:3])}); "
                f"choose another --out or pass --overwrite")
    if out.exists() and any(out.iterdir()):
        foreign = foreign_files(out, RUN_OUTPUTS)
        require(not foreign, f"{out} holds files this script did not write ({', '.join(foreign[:3])}); choose "
                f"another --out")
        for name in RUN_OUTPUTS:
            if (out / name).exists():
                (out / name).unlink()
    return {}
