"""Train the expandable collective model task after task, record the learngene criterion, extract the learngene.

Shared by collective-model/val_lifelong_cifar100.py and val_lifelong_imagenet.py, which differ only in
the dataset family they accept. Outputs, in --out:
  metrics.csv            task, epoch, loss (cross-entropy), accuracy, seconds, images/s, widths, EWC penalty
  criterion.csv          task, epoch, layer, value (layer 0-based)
  criterion_variants.csv the same for every statistic and threshold of utils.criterion.VARIANTS
  filters.csv            per conv layer of the final model: width and distinct (not near-copied) filters
  criterion_heatmap.png  task x conv layer, the appendix's figure
  checkpoints/task_NNN.pt  the whole collective model after each task
  last.pt                everything --resume needs (written after every epoch)
  learngene.pt           the selected layers only, with provenance; selection.txt the rule's reasoning
  heldout_accuracy.csv, heldout_summary.json, heldout_matrix.png  with a split made with --heldout_per_class:
                         every task's checkpoint on every task's held-out images (utils/source.py)
"""
import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from utils import heatmaps, learngene, source
from utils.criterion import DEFAULT_THRESHOLD, GradientCriterion, describe, task_layer_matrix
from utils.cli import (BATCH, CONV_LAYER, COUNT, EWC_LAMBDA, INDEX, LEARNING_RATE, MOMENTUM, SEED, WEIGHT_DECAY,
                       require)
from utils.files import FolderLock, foreign_files, torch_load, torch_save, write_csv, write_json
from utils.repro import derived_seed, pick_device, provenance
from utils.engine import (PRECISIONS, DeviceData, resolve_precision, seeded_generator, sgd, train_epoch,
                          uses_channels_last)
from utils.ewc import EWC, fisher_diagonal
from utils.models import BASE_WIDTHS, WIDENING, CollectiveNet, distinct_filters, widen, widen_state
from utils.learngene import Selection
from utils.splits import DATASETS, Split

NUM_OUTPUTS = {"cifar": 64, "imagenet": 100}  # the shared head's size by dataset family, as the released scripts
RUN_OUTPUTS = ("config.json", "last.pt", "metrics.csv", "criterion.csv", "criterion_variants.csv",
               "criterion_heatmap.png", "filters.csv", "selection.txt", "learngene.pt", "checkpoints/task_*.pt",
               *source.OUTPUTS)


@dataclass(frozen=True)
class CollectiveSettings:
    """How the collective model trains (the defaults: the released script's)."""
    epochs: int = 100  # per task (the paper: 100)
    batch_size: int = 64
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ewc_lambda: float = 0.0  # EWC across collective tasks; 0 = off, as released
    seed: int = 0
    precision: str = "fp32"  # resolved: "fp32" or "bf16" autocast
    criterion: bool = True  # record the gradient criterion (--judgement): needed to select the learngene
    criterion_abs: bool = False  # count |g| > threshold instead of the released signed g > threshold

    def config(self, split):
        """What a checkpoint records and a resume must match. The keys keep their first names (judgement,
        judgement_abs) so runs made before the settings had these names still resume."""
        return {"precision": self.precision, "dataset": split.dataset, "split_hash": split.hash,
                "image_size": split.image_size, "num_outputs": NUM_OUTPUTS[DATASETS[split.dataset]["family"]],
                "base_widths": list(BASE_WIDTHS), "seed": self.seed, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "ewc_lambda": self.ewc_lambda, "threshold": DEFAULT_THRESHOLD,
                "judgement_abs": self.criterion_abs, "judgement": self.criterion}


def parser(family):
    p = argparse.ArgumentParser(description=f"Train the collective model on a {family}-family continual split "
                                            f"and extract the learngene.")
    p.add_argument("--path", required=True, metavar="SPLIT", help="split directory from utils/data_*_mk.py")
    p.add_argument("--out", default=None, metavar="OUTDIR", help="run directory (default: checkpoints/collective-<dataset>)")
    p.add_argument("--batch_size", type=BATCH, default=CollectiveSettings.batch_size)
    p.add_argument("--epochs", type=COUNT, default=CollectiveSettings.epochs, help="epochs per task")
    p.add_argument("--lr", type=LEARNING_RATE, default=CollectiveSettings.lr)
    p.add_argument("--momentum", type=MOMENTUM, default=CollectiveSettings.momentum)
    p.add_argument("--weight_decay", type=WEIGHT_DECAY, default=CollectiveSettings.weight_decay)
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true", help="train on the CPU even if CUDA is there")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast where the device computes bf16 natively (CUDA, or a CPU with AVX-512 BF16 "
                        "or AMX), fp32 elsewhere; fp32 is bit-reproducible on one machine and thread count")
    p.add_argument("--seed", type=SEED, default=CollectiveSettings.seed)
    p.add_argument("--num_works", dest="num_tasks", type=COUNT, default=None,
                   help="continual tasks to train (default: all of the split's)")
    p.add_argument("--judgement", dest="criterion", action=argparse.BooleanOptionalAction, default=True,
                   help="record the gradient criterion (default on; needed to select the learngene)")
    p.add_argument("--judgement_abs", dest="criterion_abs", action="store_true",
                   help="count |gradient| > threshold instead of the released signed gradient > threshold")
    p.add_argument("--ewc_lambda", type=EWC_LAMBDA, default=CollectiveSettings.ewc_lambda,
                   help="EWC across collective tasks (0 = off, as released)")
    p.add_argument("--num_learngene_layers", type=CONV_LAYER, default=Selection.num_layers)
    p.add_argument("--learngene_layers", type=CONV_LAYER, nargs="+", default=(),
                   help="skip the selection rule and take these conv layers (0-based; released: 10 11 12)")
    p.add_argument("--extract_after_task", type=INDEX, default=Selection.after_task,
                   help="take the learngene weights after this task (0-based; the paper: 20, the last widening); "
                        "capped at the last task trained")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out and start again")
    return p


def run(family, argv=None):
    """The script: parse, check every input before any training, train (or resume), extract the learngene."""
    args = parser(family).parse_args(argv)
    split = Split(args.path, family)
    num_tasks = args.num_tasks or split.num_tasks
    require(num_tasks <= split.num_tasks, f"--num_works {num_tasks} is more than the {split.num_tasks} tasks of split {split.path}")
    require(args.learngene_layers or args.criterion,
            "--no-judgement leaves nothing to select the learngene with: also give --learngene_layers")
    selection = Selection(args.num_learngene_layers, tuple(args.learngene_layers), args.extract_after_task)
    selection.check(len(BASE_WIDTHS))  # before training, not after it
    out = Path(args.out or Path("checkpoints") / f"collective-{split.dataset}")
    device = pick_device(args.no_cuda)
    settings = CollectiveSettings(args.epochs, args.batch_size, args.lr, args.momentum, args.weight_decay,
                                  args.ewc_lambda, args.seed, resolve_precision(args.precision, device),
                                  args.criterion, args.criterion_abs)
    config = settings.config(split)
    with FolderLock(out):
        state = _start_or_resume(out, config, num_tasks, args.resume, args.overwrite)
        write_json(out / "config.json", {**config, "args": vars(args), "provenance": provenance(device, argv, args.seed)})
        print(f"collective model on {split.dataset} ({split.image_size}px), {num_tasks} tasks x {settings.epochs} "
              f"epochs on {device} in {settings.precision}" + (", resuming at task {next_task} epoch {next_epoch}"
                                                               .format(**state) if state["next_task"] or state["next_epoch"] else ""))
        model = train_tasks(settings, out, config, split, state, num_tasks, device)
        report_filters(out, model)
        artifact = learngene.extract(out, split, selection, config, state["record"], state["variant_record"],
                                     num_tasks, device, argv)
        if state["record"]:
            heatmaps.criterion_heatmap(*task_layer_matrix(state["record"]), out / "criterion_heatmap.png",
                                    f"{split.dataset}: fraction of conv weight-gradient entries with "
                                    f"{describe(settings.criterion_abs, DEFAULT_THRESHOLD)}", artifact["layers"],
                                    artifact["provenance"])
        source.measure(out, split, num_tasks, artifact["source_task"], device, settings.precision, settings.seed,
                       f"{split.dataset}: collective model's accuracy (%) on held-out images", artifact["provenance"])
    return artifact


def train_tasks(settings, out, config, split, state, num_tasks, device):
    """Train from the state's (next_task, next_epoch) to the last task; returns the final model. The lists in
    `state` (metrics, criterion records) grow in place. After every epoch last.pt holds all of it, so a run
    stopped at any moment resumes from its last finished epoch and ends with the same weights."""
    torch.manual_seed(derived_seed(settings.seed, "init"))
    model = CollectiveNet(state.get("widths", BASE_WIDTHS), split.image_size, config["num_outputs"])
    if "model" in state:
        model.load_state_dict(state["model"])
    model.to(device)
    ewc = _ewc_from_state(state, device)
    criterion = GradientCriterion(DEFAULT_THRESHOLD, settings.criterion_abs) if settings.criterion else None
    task, epoch = state["next_task"], state["next_epoch"]
    while task < num_tasks:
        if epoch == 0:  # a task starts: widen (the schedule)
            model, ewc = _widen_for(task, model, ewc, settings.seed)
        optimizer = sgd(model, settings.lr, settings.momentum, settings.weight_decay)  # a new one per task
        if epoch > 0:  # resuming inside a task: the optimizer as it was saved
            optimizer.load_state_dict(state["optimizer"])
        if uses_channels_last(device, settings.precision):
            model = model.to(memory_format=torch.channels_last)
        data = DeviceData.from_numpy(*split.continual(task), device)
        bar = tqdm(range(epoch, settings.epochs), desc=f"task {task}/{num_tasks - 1} widths ..{model.widths[-1]}",
                   unit="epoch", leave=False)
        for epoch in bar:
            stats = _train_epoch(settings, out, model, optimizer, ewc, criterion, data, state, task, epoch)
            bar.set_postfix(loss=f"{stats.loss:.3f}", acc=f"{stats.accuracy:.3f}")
            done = epoch + 1 == settings.epochs
            if done:
                torch_save(out / "checkpoints" / f"task_{task:03d}.pt",
                           {"config": config, "widths": model.widths, "task": task, "model": _cpu(model.state_dict())})
                if settings.ewc_lambda > 0:
                    ewc = _update_ewc(ewc, model, data, settings.ewc_lambda)
            _save_state(out, config, model, optimizer, ewc, state, (task + 1, 0) if done else (task, epoch + 1))
        last = state["metrics"][-1]
        tqdm.write(f"task {task:2d}: loss {last[2]:.3f} acc {last[3]:.3f} widths {last[6]} ({last[5]:.0f} img/s)")
        task, epoch = task + 1, 0
    return model


def _widen_for(task, model, ewc, seed):
    """Widen the model before `task` if the schedule says so; an EWC anchor is widened as the weights were
    and an importance is copied to the new channels."""
    if task not in WIDENING:
        return model, ewc
    layer, added = WIDENING[task]
    model, (mapping, shares) = widen(model, layer, added, torch.Generator().manual_seed(derived_seed(seed, "widen", task)))
    if ewc is not None:
        last = len(model.widths) - 1
        ewc.anchor = widen_state(ewc.anchor, layer, mapping, last, shares)
        ewc.fisher = widen_state(ewc.fisher, layer, mapping, last)
    return model, ewc


def _train_epoch(settings, out, model, optimizer, ewc, criterion, data, state, task, epoch):
    """One epoch of one task, its seeds derived from (seed, task, epoch); its metrics and criterion rows are
    appended to `state`. A non-finite loss stops the run (last.pt still holds the epoch before)."""
    generator = seeded_generator(derived_seed(settings.seed, "batches", task, epoch), data.images.device)
    torch.manual_seed(derived_seed(settings.seed, "dropout", task, epoch))
    if criterion:
        criterion.start_epoch()
    t0 = time.perf_counter()
    stats = train_epoch(model, optimizer, data, settings.batch_size, generator, extra_loss=ewc,
                        after_backward=criterion, precision=settings.precision)
    seconds = time.perf_counter() - t0
    require(stats.finite, f"task {task} epoch {epoch}: training diverged (loss {stats.loss}, EWC penalty "
            f"{stats.penalty}); {out / 'last.pt'} holds the state before this epoch. Lower --lr or --ewc_lambda")
    state["metrics"].append([task, epoch, stats.loss, stats.accuracy, seconds, len(data) / seconds,
                             "-".join(map(str, model.widths)), stats.penalty])
    if criterion:
        values = criterion.end_epoch()
        state["record"] += [[task, epoch, layer, v] for layer, v in enumerate(values[0])]
        state["variant_record"] += [[task, epoch, absolute, threshold, layer, v]
                                    for (absolute, threshold), row in zip(criterion.variants, values)
                                    for layer, v in enumerate(row)]
    return stats


def report_filters(out, model):
    """Per conv layer of the final model: its width and how many filters are not near-copies of another, so a
    reader sees whether the widened layers really grew (filters.csv, and printed)."""
    rows = [[i, w.shape[0], distinct_filters(w)] for i, w in enumerate(model.conv_weights())]
    write_csv(out / "filters.csv", ["layer", "width", "distinct_filters"], rows)
    print("distinct filters per conv layer (width): " + ", ".join(f"conv {i}: {d} ({w})" for i, w, d in rows))


def _start_or_resume(out, config, num_tasks, resume, overwrite):
    fresh = {"next_task": 0, "next_epoch": 0, "metrics": [], "record": [], "variant_record": []}
    if (out / "config.json").exists() and not (out / "last.pt").exists():
        # stopped before its first epoch ended (config.json is written first, last.pt after each epoch): nothing
        # to resume and nothing to lose, so start again, with or without --resume; files are replaced as written
        print(f"{out} holds a run stopped before its first epoch ended: starting it from the beginning")
        return fresh
    if resume:
        state = torch_load(out / "last.pt", "resume checkpoint")
        require(isinstance(state, dict) and RESUME_KEYS <= set(state) and isinstance(state["config"], dict),
                f"{out / 'last.pt'} is not a resume state of this script (another type, or entries missing)")
        saved = state["config"]
        diffs = [k for k in config if saved.get(k) != config[k]]
        require(not diffs, f"--resume: the run in {out} was made with other settings or another split "
                f"({', '.join(f'{k}: {saved.get(k)!r} there, {config[k]!r} now' for k in diffs[:3])})")
        # fewer tasks than already trained would cut a learngene from an earlier model than the criterion covers
        require(state["next_task"] <= num_tasks, f"--resume: the run in {out} has trained {state['next_task']} "
                f"tasks already, more than --num_works {num_tasks}")
        return state
    if out.exists() and any(out.iterdir()):
        require(overwrite, f"{out} already holds a run; pass --resume to continue it or --overwrite to start again")
        require((out / "config.json").exists() or (out / "last.pt").exists(),
                f"{out} is not a collective run folder; refusing to delete it")
        foreign = foreign_files(out, RUN_OUTPUTS)
        require(not foreign, f"{out} holds files this script did not write ({', '.join(foreign[:3])}); --overwrite "
                f"replaces a run and nothing else: move them or choose another --out")
        for pattern in RUN_OUTPUTS:  # only what a run writes; the folders stay
            for path in out.glob(pattern):
                path.unlink()
    return fresh


RESUME_KEYS = {"config", "widths", "model", "optimizer", "next_task", "next_epoch", "metrics", "record",
               "variant_record"}  # what _save_state writes (and "ewc" with EWC across tasks)


def _cpu(state_dict):
    return {k: v.detach().cpu() for k, v in state_dict.items()}


def _save_state(out, config, model, optimizer, ewc, state, next_pos):
    metrics, record, variant_record = state["metrics"], state["record"], state["variant_record"]
    saved = {"config": config, "widths": model.widths, "model": _cpu(model.state_dict()),
             "optimizer": optimizer.state_dict(), "next_task": next_pos[0], "next_epoch": next_pos[1],
             "metrics": metrics, "record": record, "variant_record": variant_record}
    if ewc is not None:
        saved["ewc"] = {"anchor": _cpu(ewc.anchor), "fisher": _cpu(ewc.fisher)}
    torch_save(out / "last.pt", saved)
    write_csv(out / "metrics.csv", ["task", "epoch", "loss", "accuracy", "seconds", "images_per_s", "widths",
                                    "penalty"], metrics)
    if record:
        write_csv(out / "criterion.csv", ["task", "epoch", "layer", "value"], record)
        write_csv(out / "criterion_variants.csv", ["task", "epoch", "absolute", "threshold", "layer", "value"],
                  variant_record)


def _ewc_from_state(state, device):
    if "ewc" not in state:
        return None
    e = state["ewc"]
    return EWC({k: v.to(device) for k, v in e["anchor"].items()}, {k: v.to(device) for k, v in e["fisher"].items()},
               state["config"]["ewc_lambda"])


def _update_ewc(ewc, model, data, lam):
    """After a task: anchor at the current weights; importances accumulate over tasks."""
    names = [k for k, _ in model.named_parameters()]
    fisher = fisher_diagonal(model, data, names)
    if ewc is not None:
        fisher = {k: fisher[k] + ewc.fisher[k] for k in fisher}
    return EWC(dict(model.named_parameters()), fisher, lam)

