"""Individual models on the target tasks: inherit the learngene, train on 10/20 shots with EWC, and the
baselines on exactly the same tasks, shots, seeds and schedule. Shared by
individual-model/inheritable_cifar100_wEWC.py and inheritable_imagenet_wEWC.py.

The methods are data (METHODS): what each starts from, whether EWC holds its inherited blocks, whether it
is a linear probe. Every run starts from a fresh model and optimizer, seeded by (seed, shots, task) alone,
so no task sees another's weights and the order of runs does not matter. Accuracy (in %, everywhere) is
read on the task's test images after the last epoch; the per-epoch curve is kept for the plots and for the
released "best epoch" figure, which selects on the test set and is labelled so.
"""
import argparse
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils import grouped, learngene, plots
from utils.common import (FolderLock, derived_seed, ensure_writable, file_digest, nonneg_float, pick_device,
                          positive_float, positive_int, provenance, require, require_distinct, torch_load, write_csv,
                          write_json, write_text)
from utils.engine import (PRECISIONS, DeviceData, evaluate, normalize, resolve_precision, seeded_generator, sgd,
                          train_epoch, uses_channels_last)
from utils.ewc import EWC, RELEASED_LAMBDA, fisher_diagonal
from utils.models import HIDDEN, CollectiveNet, IndividualNet, count_parameters
from utils.splits import Split


@dataclass(frozen=True)
class Method:
    name: str
    start: str        # what the model starts from: "random" (the individual architecture, every layer new),
                      # "learngene" or "other-layers" (that architecture with inherited blocks), "collective"
                      # (the learngene's source collective model) or "random-collective" (that shape, untrained)
    ewc: bool = False  # an EWC penalty keeps the inherited blocks near their inherited values
    probe: bool = False  # a linear classifier on the start's frozen conv features instead of training it all
    about: str = ""

    @property
    def needs_collective(self):
        return self.start in ("other-layers", "collective", "random-collective")

    @property
    def groupable(self):
        """Trained with the others of its shot count as one grouped network (utils/grouped.py): the methods
        of the individual architecture."""
        return self.start in ("random", "learngene", "other-layers")


METHODS = {m.name: m for m in (
    Method("learngene", "learngene", ewc=True, about="learngene blocks + new random front and head, EWC on the "
           "inherited blocks"),
    Method("learngene-noewc", "learngene", about="the same without EWC"),
    Method("scratch", "random", about="the same architecture, every layer random, no EWC (the released baseline)"),
    Method("other-layers", "other-layers", ewc=True, about="the same architecture and EWC, inheriting another "
           "window of conv layers of the same shapes from the same collective checkpoint (the one sharing fewest "
           "layers with the learngene, then the one the criterion ranks worst)"),
    Method("finetune-collective", "collective", about="the whole collective model the learngene came from, a new "
           "5-way output layer, no EWC"),
    Method("probe-collective", "collective", probe=True, about="a linear classifier on the frozen conv features of "
           "that collective model (the few-shot 'Baseline' of Chen et al., ICLR 2019): did the collective model "
           "learn anything transferable?"),
    Method("probe-random", "random-collective", probe=True, about="the same on a randomly initialised collective "
           "network of the same shape: the floor"),
)}
BASELINE = "scratch"  # the paired differences are taken against it


class RunKey(NamedTuple):
    """One run: a method on one task of one shot count, with one seed."""
    method: str
    shots: int
    task: int
    seed: int


@dataclass(frozen=True)
class TrainSettings:
    """How an individual model trains (the defaults: the released script's, the paper's schedule)."""
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ewc_lambda: float = RELEASED_LAMBDA  # the released 40 x 1000; the pipeline picks it on validation tasks
    eval_every: int = 1  # test accuracy every N epochs, for the curves (the last epoch always)
    precision: str = "fp32"  # resolved: "fp32" or "bf16" autocast


@dataclass
class Inputs:
    """What the runs start from: the learngene artifact (and its file), and the collective checkpoint the
    baselines use (None when no requested method needs it; its file is collective["path"])."""
    learngene: dict
    learngene_path: str
    collective: dict = None


def parser(family):
    p = argparse.ArgumentParser(description=f"Train individual models from a learngene on the {family}-family "
                                            f"target tasks, with the baselines, and write the results table.",
                                epilog="methods: " + "; ".join(f"{m.name}: {m.about}" for m in METHODS.values()))
    p.add_argument("--path", required=True, help="split directory from utils/data_*_mk.py")
    p.add_argument("--learngene", required=True, help="learngene.pt from collective-model/val_lifelong_*.py")
    p.add_argument("--collective", default=None, help="collective checkpoint for other-layers and "
                   "finetune-collective (default: the learngene's source, the model after the extraction task)")
    p.add_argument("--out", default=None, help="results directory (default: results/<dataset>)")
    p.add_argument("--batch_size", type=positive_int, default=TrainSettings.batch_size)
    p.add_argument("--epochs", type=positive_int, default=TrainSettings.epochs)
    p.add_argument("--lr", type=positive_float, default=TrainSettings.lr)
    p.add_argument("--momentum", type=nonneg_float, default=TrainSettings.momentum)
    p.add_argument("--weight_decay", type=nonneg_float, default=TrainSettings.weight_decay)
    p.add_argument("--ewc_lambda", type=nonneg_float, default=RELEASED_LAMBDA,
                   help=f"EWC strength (default {RELEASED_LAMBDA}: the released 40 x 1000)")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast where the device computes bf16 natively, fp32 elsewhere")
    p.add_argument("--seed", dest="seeds", type=int, nargs="+", default=[0], help="one or more seeds")
    p.add_argument("--num_works_tt", dest="num_target_tasks", type=positive_int, default=None,
                   help="target tasks to use (default: all)")
    p.add_argument("--num_imgs_per_cat_train", dest="shots", type=positive_int, nargs="+", default=None,
                   help="shots per class (default: every shot count of the split)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--section", choices=["target", "validation"], default="target",
                   help="validation = the open-world tasks, the only ones to tune hyper-parameters on")
    p.add_argument("--eval_every", type=positive_int, default=TrainSettings.eval_every,
                   help="test accuracy every N epochs (curves)")
    p.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=None,
                   help="train the runs of one shot count that share an architecture together as one grouped "
                        "network (same results up to float rounding; default: on with CUDA, off on CPU)")
    return p


def run(family, argv=None):
    """The script: parse, check every input before any training, then train what runs.jsonl lacks."""
    args = parser(family).parse_args(argv)
    for flag, values in (("--seed", args.seeds), ("--methods", args.methods),
                         ("--num_imgs_per_cat_train", args.shots or [])):
        require_distinct(values, flag)
    split = Split(args.path, family)
    art = learngene.load(args.learngene, split.dataset, split.image_size)
    shots = args.shots or [int(k) for k in split.manifest["shots"]]
    for k in shots:
        require(split.num_few_shot(args.section, k) > 0, f"split {split.path} has no {k}-shot {args.section} tasks "
                f"(it has shots {split.manifest['shots']})")
    num_tasks = args.num_target_tasks or split.num_few_shot(args.section, shots[0])
    require(all(num_tasks <= split.num_few_shot(args.section, k) for k in shots),
            f"--num_works_tt {num_tasks} is more than the split's {split.num_few_shot(args.section, shots[0])} tasks")
    inputs = Inputs(art, str(args.learngene), load_collective(args.collective, art, split)
                    if any(METHODS[m].needs_collective for m in args.methods) else None)
    out = Path(args.out or Path("results") / split.dataset)
    device = pick_device(args.no_cuda)
    settings = TrainSettings(args.epochs, args.batch_size, args.lr, args.momentum, args.weight_decay,
                             args.ewc_lambda, args.eval_every, resolve_precision(args.precision, device))
    # results files are replaced only beside the runs.jsonl they summarise (same settings, checked below)
    written = [n for n in ("results.md", "results.csv", "curves.png", "provenance.json") if (out / n).exists()]
    require(not written or (out / "runs.jsonl").exists(), f"{out} holds {', '.join(written)} but no runs.jsonl: not results "
            f"of this script's runs, so they are not replaced; choose another --out")
    requested = [RunKey(m, k, t, s) for k in shots for t in range(num_tasks) for s in args.seeds for m in args.methods]
    study = Study(split, args.section, inputs, settings, args.seeds, device,
                  run_identity(settings, args.section, split, inputs))
    with FolderLock(out):
        runs = train_missing(out, study, requested, args.grouped)
        # the table covers what this command asked for, even if runs.jsonl holds more
        return summarize(out, {key: runs[key] for key in requested}, study, argv)


@dataclass
class Study:
    """One invocation, resolved: which tasks (split and section), from what, how, on which device; `identity`
    is what every stored run must match to be reused."""
    split: Split
    section: str
    inputs: Inputs
    settings: TrainSettings
    seeds: list
    device: torch.device
    identity: dict


def run_identity(settings, section, split, inputs):
    """The settings and the inputs' identities (by content: another learngene or collective checkpoint is another
    experiment) that a stored run must match to be reused."""
    return {**dataclasses.asdict(settings), "section": section, "split_hash": split.hash,
            "learngene_layers": inputs.learngene["layers"], "dataset": split.dataset,
            "learngene_sha256": file_digest(inputs.learngene_path),
            "collective_sha256": file_digest(inputs.collective["path"]) if inputs.collective else None,
            "accuracy_unit": "percent"}


def train_missing(out, study, requested, use_grouped):
    """Train the requested runs that runs.jsonl lacks, appending each as it finishes; returns every stored run."""
    runs = _load_runs(out / "runs.jsonl", study.identity)
    ensure_writable(out)  # a read-only or full disk fails now, not after the first run has trained
    todo = [key for key in requested if key not in runs]
    print(f"{len(runs)} runs already in {out / 'runs.jsonl'}, {len(todo)} to go on {study.device} in "
          f"{study.settings.precision}")
    if use_grouped is None:
        use_grouped = study.device.type == "cuda"
    data = FewShotData(study.split, study.section, study.device)
    for group in tqdm(plan_groups(todo, use_grouped), desc="individual models", unit="group"):
        if len(group) == 1:
            results = [train_run(group[0], study.inputs, *data(group[0].shots, group[0].task), study.settings,
                                 study.device)]
        else:
            results = train_grouped(group, study.inputs, data, study.settings, study.device)
        for key, result in zip(group, results):
            result["classes"] = study.split.manifest[study.section][str(key.shots)][key.task]["classes"]
            runs[key] = result
            _append_run(out / "runs.jsonl", study.identity, result)
    return runs


class FewShotData:
    """Device copies of the few-shot tasks, made once each."""

    def __init__(self, split, section, device):
        self.split, self.section, self.device, self.cache = split, section, device, {}

    def __call__(self, shots, task):
        if (shots, task) not in self.cache:
            xtr, ytr, xte, yte = self.split.few_shot(self.section, shots, task)
            self.cache[(shots, task)] = (DeviceData.from_numpy(xtr, ytr, self.device),
                                         DeviceData.from_numpy(xte, yte, self.device))
        return self.cache[(shots, task)]


def plan_groups(todo, use_grouped, group_size=64):
    """Runs to train together: with grouping, those of one shot count whose method is groupable, at most
    group_size at a time (a bound on the grouped network's memory); otherwise one by one."""
    if not use_grouped:
        return [[key] for key in todo]
    groups = []
    for k in dict.fromkeys(key.shots for key in todo):
        same = [key for key in todo if key.shots == k and METHODS[key.method].groupable]
        groups += [same[i:i + group_size] for i in range(0, len(same), group_size)]
        groups += [[key] for key in todo if key.shots == k and not METHODS[key.method].groupable]
    return groups


# ---------------------------------------------------------------- building and training one model
def collective_net(collective, trained=True):
    """The collective model of a checkpoint, with its trained weights or freshly initialised."""
    config = collective["config"]
    model = CollectiveNet(collective["widths"], config["image_size"], config["num_outputs"])
    if trained:
        model.load_state_dict(collective["model"])
    return model


def build_model(method, inputs, image_size):
    """A method's fresh model and the collective model's conv layers it inherits (None: none, or all of them)."""
    art, start = inputs.learngene, METHODS[method].start
    if start == "collective":
        model = collective_net(inputs.collective)
        model.head[-1] = nn.Linear(HIDDEN, 5)
        return model, None
    model = IndividualNet(art["blocks"], image_size)
    if start == "learngene":
        learngene.inherit(model, art)
        return model, art["layers"]
    if start == "other-layers":
        collective = inputs.collective
        other = other_layers(art, collective)
        learngene.inherit(model, learngene.make_artifact(collective["model"], collective["widths"], other,
                                                         dataset=art["dataset"], image_size=image_size,
                                                         source_task=collective["task"]))
        return model, other
    return model, None  # random


def other_layers(art, collective):
    """Another window of conv layers with the learngene's shapes, from the same collective checkpoint: the one
    sharing the fewest layers with the learngene, and among those the one the criterion ranks worst (or,
    without a criterion record, the shallowest). The individual model's architecture, pooling included, is the
    learngene's: only which weights are inherited differs."""
    widths, k = collective["widths"], len(art["layers"])
    cins = [3] + list(widths[:-1])
    shapes = [(a, b) for a, b, _ in art["blocks"]]
    candidates = [s for s in range(1, len(widths) - k + 1)
                  if s != art["layers"][0] and [(cins[i], widths[i]) for i in range(s, s + k)] == shapes]
    require(candidates, f"the collective model has no other window of {k} conv layers shaped like the learngene "
            f"{shapes}; leave out the other-layers method")
    scores = {int(s): v for s, v in art["criterion"]["windows"].items()}
    shared = {s: len(set(range(s, s + k)) & set(art["layers"])) for s in candidates}
    chosen = min(candidates, key=lambda s: (shared[s], -scores.get(s, 0.0), s))
    return list(range(chosen, chosen + k))


def prepare(key, inputs, train, settings, device):
    """A run's fresh model (seeded by seed, shots and task only), its inherited layers and its EWC term, or None."""
    torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task))  # same new layers for every method
    model, inherited_layers = build_model(key.method, inputs, inputs.learngene["image_size"])
    model.to(device)
    ewc = None
    if METHODS[key.method].ewc and settings.ewc_lambda > 0:
        names = [n for n, _ in model.named_parameters() if n.startswith("inherited.")]
        params = dict(model.named_parameters())
        ewc = EWC({n: params[n] for n in names}, fisher_diagonal(model, train, names), settings.ewc_lambda)
    return model, inherited_layers, ewc


def batch_generator(key, epoch, device):
    return seeded_generator(derived_seed(key.seed, "individual-batches", key.shots, key.task, epoch), device)


def result_row(key, curve, seconds, parameters, inherited_layers, diverged):
    """A finished run. curve: [epoch, training loss, training accuracy (%), test accuracy (%), EWC penalty] per
    evaluated epoch; diverged: a training loss or penalty was non-finite at some epoch (its accuracy is then
    meaningless, typically chance, and the tables count such runs)."""
    best = max(curve, key=lambda r: r[3])
    return {**key._asdict(), "final_acc": curve[-1][3], "best_acc": best[3], "best_epoch": best[0], "curve": curve,
            "seconds": seconds, "parameters": parameters, "inherited_layers": inherited_layers, "diverged": diverged}


def evaluate_now(epoch, settings):
    return (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs


def train_run(key, inputs, train, test, settings, device):
    """One run, as its method says: SGD on the whole model, or a linear probe."""
    return (train_probe if METHODS[key.method].probe else train_one)(key, inputs, train, test, settings, device)


def train_one(key, inputs, train, test, settings, device):
    t0 = time.perf_counter()
    model, inherited_layers, ewc = prepare(key, inputs, train, settings, device)
    if uses_channels_last(device, settings.precision):
        model = model.to(memory_format=torch.channels_last)
    optimizer = sgd(model, settings.lr, settings.momentum, settings.weight_decay)
    curve, diverged = [], False
    for epoch in range(settings.epochs):
        torch.manual_seed(derived_seed(key.seed, "individual-dropout", key.shots, key.task, epoch))
        stats = train_epoch(model, optimizer, train, settings.batch_size, batch_generator(key, epoch, device),
                            extra_loss=ewc, precision=settings.precision)
        diverged = diverged or not stats.finite
        if evaluate_now(epoch, settings):
            curve.append([epoch + 1, stats.loss, 100 * stats.accuracy,
                          100 * evaluate(model, test, settings.precision), stats.penalty])
    return result_row(key, curve, time.perf_counter() - t0, count_parameters(model), inherited_layers, diverged)


PROBE_STEPS = 300  # full-batch Adam steps of the linear probe, lr 0.01: its loss has long flattened by then


@torch.no_grad()
def conv_features(model, images, batch_size=256):
    """A CollectiveNet's conv trunk output (after the last pooling), flattened, in eval mode and fp32."""
    model.eval()
    return torch.cat([model.trunk(normalize(images[start:start + batch_size])).flatten(1)
                      for start in range(0, len(images), batch_size)])


def train_probe(key, inputs, train, test, settings, device):
    """A linear classifier on frozen conv features (the collective model's, or a random one's) of the K shots and
    their mirror images, standardised with the shots' statistics, trained full-batch with cross-entropy."""
    t0 = time.perf_counter()
    torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task))
    trunk = collective_net(inputs.collective, trained=METHODS[key.method].start == "collective").to(device)
    f_train = conv_features(trunk, torch.cat([train.images, train.images.flip(3)]))
    y_train = train.labels.repeat(2)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mean) / std, (conv_features(trunk, test.images) - mean) / std
    linear = nn.Linear(f_train.shape[1], 5).to(device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.01, weight_decay=settings.weight_decay)
    for _ in range(PROBE_STEPS):
        loss = nn.functional.cross_entropy(linear(f_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = linear(f_train)
        loss = nn.functional.cross_entropy(logits, y_train).item()
        train_acc = 100 * (logits.argmax(1) == y_train).double().mean().item()
        test_acc = 100 * (linear(f_test).argmax(1) == test.labels).double().mean().item()
    curve = [[settings.epochs, loss, train_acc, test_acc, 0.0]]
    return result_row(key, curve, time.perf_counter() - t0, count_parameters(linear), None, not math.isfinite(loss))


def train_grouped(group, inputs, data, settings, device):
    """Train the runs of `group` (one shot count, the individual architecture) together; see utils/grouped.py."""
    t0 = time.perf_counter()
    models, layers, anchors, fishers = [], [], [], []
    for key in group:
        model, inherited_layers, ewc = prepare(key, inputs, data(key.shots, key.task)[0], settings, device)
        models.append(model)
        layers.append(inherited_layers)
        params = {n: p.detach() for n, p in model.named_parameters()}
        anchors.append(params)
        fishers.append({n: (ewc.fisher[n] if ewc is not None and n in ewc.fisher else torch.zeros_like(p))
                        for n, p in params.items() if n.startswith("inherited.")})
    names = grouped.grouped_names(models[0])
    network = grouped.GroupedIndividual(models).to(device)
    penalties = None
    if any(f.any() for fisher in fishers for f in fisher.values()):
        # each model's own penalty; a model without EWC has zero importance
        ewc = EWC(grouped.group_tensors(anchors, names), grouped.group_tensors(fishers, names), settings.ewc_lambda)
        penalties = functools.partial(ewc.penalty, groups=len(group))
    train = [data(key.shots, key.task)[0] for key in group]
    test = [data(key.shots, key.task)[1] for key in group]
    x_train, y_train = torch.stack([d.images for d in train]), torch.stack([d.labels for d in train])
    x_test, y_test = torch.stack([d.images for d in test]), torch.stack([d.labels for d in test])
    optimizer = sgd(network, settings.lr, settings.momentum, settings.weight_decay)
    curves, diverged = [[] for _ in group], [False] * len(group)
    for epoch in range(settings.epochs):
        generators = [batch_generator(key, epoch, device) for key in group]
        stats = grouped.train_epoch_grouped(network, optimizer, x_train, y_train, settings.batch_size, generators,
                                            extra_loss=penalties, precision=settings.precision)
        diverged = [d or not st.finite for d, st in zip(diverged, stats)]
        if evaluate_now(epoch, settings):
            test_accs = grouped.evaluate_grouped(network, x_test, y_test, settings.precision)
            for i, st in enumerate(stats):
                curves[i].append([epoch + 1, st.loss, 100 * st.accuracy, 100 * test_accs[i], st.penalty])
    seconds = (time.perf_counter() - t0) / len(group)
    return [result_row(key, curves[i], seconds, count_parameters(models[i]), layers[i], diverged[i])
            for i, key in enumerate(group)]


def load_collective(path, art, split):
    """The collective checkpoint the baselines start from: by default the learngene's own source (the model after
    the extraction task), so other-layers and finetune-collective differ from the learngene in one thing only."""
    if path is None:
        path = Path(art["collective_checkpoint"])
        require(path.is_file(), f"the learngene's source checkpoint {path} is not there; give --collective")
    ck = torch_load(path, "collective checkpoint")
    require(isinstance(ck, dict) and {"config", "widths", "model", "task"} <= set(ck),
            f"{path} is not a collective checkpoint of this project")
    require(ck["config"].get("dataset") == split.dataset and ck["config"].get("image_size") == split.image_size,
            f"{path} is a collective model of {ck['config'].get('dataset')} at {ck['config'].get('image_size')}px; "
            f"the split is {split.dataset} at {split.image_size}px")
    ck["path"] = str(path)
    return ck


# ---------------------------------------------------------------- resumable record of runs
def _load_runs(path, identity):
    runs = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption: that run is simply redone
        require(isinstance(row, dict) and isinstance(row.get("result"), dict) and isinstance(row.get("settings"), dict),
                f"{path} is not a record of this script's runs (a line without settings and result)")
        stored = row["settings"]
        require(stored == identity, f"{path} holds runs made with other settings; use another --out or remove it "
                f"(differs in: {', '.join(k for k in identity if stored.get(k) != identity[k])})")
        r = row["result"]
        runs[RunKey(r["method"], r["shots"], r["task"], r["seed"])] = r
    return runs


def _append_run(path, identity, result):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"settings": identity, "result": result}) + "\n")
        f.flush()


# ---------------------------------------------------------------- the table
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def mean_ci95(values):
    """Mean and half-width of the 95% confidence interval (Student t); the half-width is nan for one value."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    df = len(v) - 1
    t = T975[max(d for d in T975 if d <= df)]
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def per_task(runs, method, shots, baseline=None):
    """{task: mean over its seeds} of final accuracy (%), or with `baseline` of the paired difference (points)
    accuracy - baseline's accuracy over the (task, seed) runs both have. The seeds of one task share its images,
    so they are averaged first and the tasks are the independent samples an interval is taken over."""
    by_task = {}
    for key, r in runs.items():
        if key.method != method or key.shots != shots:
            continue
        if baseline is None:
            by_task.setdefault(key.task, []).append(r["final_acc"])
        elif key._replace(method=baseline) in runs:
            by_task.setdefault(key.task, []).append(r["final_acc"] - runs[key._replace(method=baseline)]["final_acc"])
    return {t: float(np.mean(v)) for t, v in sorted(by_task.items())}


TABLE_HEADER = ["shots", "method", "runs", "tasks", "final_acc", "ci95", "diff_vs_scratch", "diff_ci95", "diverged",
                "best_epoch_acc_test_selected", "parameters", "inherited_conv_layers", "train_seconds"]


def table_rows(runs):
    """One row per (shots, method) as TABLE_HEADER; accuracies in %, differences in points, CIs over tasks."""
    rows = []
    for k in sorted({key.shots for key in runs}):
        for m in [m for m in METHODS if any(key.method == m and key.shots == k for key in runs)]:
            rs = [r for key, r in runs.items() if key.method == m and key.shots == k]
            tasks = per_task(runs, m, k)
            final, ci = mean_ci95(list(tasks.values()))
            diffs = per_task(runs, m, k, BASELINE) if m != BASELINE else {}
            diff, diff_ci = mean_ci95(list(diffs.values())) if diffs else ("", "")
            best = float(np.mean([r["best_acc"] for r in rs]))
            layers = rs[0]["inherited_layers"]
            rows.append([k, m, len(rs), len(tasks), final, ci, diff, diff_ci, sum(bool(r.get("diverged")) for r in rs),
                         best, rs[0]["parameters"], "-".join(map(str, layers)) if layers else "",
                         sum(r["seconds"] for r in rs)])
    return rows


def summarize(out, runs, study, argv):
    """results.csv, results.md, curves.png and provenance.json for `runs`; returns the table's rows."""
    rows = table_rows(runs)
    write_csv(out / "results.csv", TABLE_HEADER, rows)
    inputs = study.inputs
    collective = inputs.collective
    prov = {**provenance(study.device, argv, study.seeds), "dataset": study.split.dataset,
            "split": str(study.split.path), "split_hash": study.split.hash, "learngene": inputs.learngene_path,
            "learngene_layers": inputs.learngene["layers"], "collective": collective["path"] if collective else None,
            "section": study.section}
    write_json(out / "provenance.json", prov)
    plots.learning_curves(out / "curves.png", runs, f"{study.split.dataset} {study.section} tasks: test accuracy per "
                          f"epoch", prov)
    table = results_markdown(rows, study, prov)
    write_text(out / "results.md", table)
    print(table)
    return rows


def _count(parameters):
    return f"{parameters / 1e6:.2f}M" if parameters >= 1e5 else f"{parameters / 1e3:.1f}k"


def _interval(ci):
    return "n/a (1 task)" if ci == "" or math.isnan(ci) else f"±{ci:.1f}"


def results_markdown(rows, study, prov):
    split, settings, art, collective = study.split, study.settings, study.inputs.learngene, study.inputs.collective
    lines = [f"### Individual models on {split.dataset} ({split.image_size}px), {study.section} tasks", "",
             f"Test accuracy (%) after the last of {settings.epochs} epochs, 5-way; {len(study.seeds)} seed(s) per "
             f"task, averaged within each task first, so the 95% CIs are over tasks. 'vs scratch' is the paired "
             f"difference in points, per task (same classes, images, seeds, initialisation of the new layers and "
             f"batch order), then its mean and 95% CI over tasks: an interval that excludes 0 is a measured "
             f"difference. 'diverged' counts runs whose loss or EWC penalty became non-finite (their accuracy is "
             f"meaningless). The 'best epoch' column picks the epoch on the test set, as the released scripts did: "
             f"test-selected and optimistic, for comparison only.", "",
             "| shots | method | runs | accuracy (%) | 95% CI | vs scratch (points) | 95% CI | diverged "
             "| best epoch, test-selected (%) | parameters | inherited conv layers |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k, m, n, _, acc, ci, diff, diff_ci, diverged, best, params, layers, _ in rows:
        vs = "-" if diff == "" else f"{diff:+.1f}"
        vs_ci = "-" if diff == "" else _interval(diff_ci)
        lines.append(f"| {k} | {m} | {n} | {acc:.1f} | {_interval(ci)} | {vs} | {vs_ci} | {diverged} | {best:.1f} "
                     f"| {_count(params)} | {layers or '-'} |")
    other = next((r[11] for r in rows if r[1] == "other-layers"), "")
    shared = sorted(set(map(int, other.split("-"))) & set(art["layers"])) if other else []
    lines += ["", f"Learngene: conv layers {art['layers']} of the collective model after task {art['source_task']}"
              + (f"; baselines from {collective['path']} ({count_parameters_state(collective['model']) / 1e6:.2f}M "
                 f"parameters)" if collective else "") + "."]
    if shared:
        lines.append(f"other-layers inherits conv {other}, sharing conv {shared} with the learngene: no window of the "
                     f"same shapes avoids it in this collective model.")
    lines += [f"Provenance: commit {prov['commit']}, device {prov['device']}, precision {settings.precision}, seeds "
              f"{study.seeds}, {prov['time_utc']}, split {prov['split']} (manifest sha256 {split.hash[:12]}).",
              f"Command: `{prov['command']}`", ""]
    return "\n".join(lines)


def count_parameters_state(state):
    return sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
