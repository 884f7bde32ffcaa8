"""The individual-model script (individual-model/inheritable_{cifar100,imagenet}_wEWC.py): its command line, and
one study run through the shared rooms. A study is a configuration (which methods, on which tasks, shots and
seeds, trained how: `Study`) plus its report; training (utils/fewshot.py), the record of runs
(utils/runstore.py), the statistics (utils/stats.py) and the tables (utils/report.py) are the same for every
study, and the methods are data (utils/methods.py)."""
import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from utils import learngene, report
from utils.cli import BATCH, COUNT, EWC_LAMBDA, INDEX, LEARNING_RATE, MOMENTUM, SEED, WEIGHT_DECAY, require, require_distinct
from utils.engine import PRECISIONS, resolve_precision
from utils.ewc import RELEASED_LAMBDA
from utils.fewshot import RELEASED_CHAIN, FewShotData, Protocol, TrainSettings, plan_groups, train_chain, train_grouped, train_run
from utils.files import FolderLock, ensure_writable
from utils.joint import load as load_joint
from utils.methods import DEFAULT_METHODS, METHODS, Inputs, check_sources, load_collective
from utils.repro import COMMIT_AT_START, device_name, pick_device, utc_now
from utils.runstore import RunKey, RunStore, record_file, run_identity
from utils.splits import Split


def parser(family):
    p = argparse.ArgumentParser(description=f"Train individual models from a learngene on the {family}-family "
                                            f"target tasks, with the baselines, and write the results table.",
                                epilog="methods: " + "; ".join(f"{m.name}: {m.about}" for m in METHODS.values()))
    p.add_argument("--path", required=True, metavar="SPLIT", help="split directory from utils/data_*_mk.py")
    p.add_argument("--learngene", required=True, metavar="LEARNGENE", help="learngene.pt from collective-model/val_lifelong_*.py")
    p.add_argument("--collective", default=None, metavar="CHECKPOINT", help="collective checkpoint for other-layers and "
                   "finetune-collective (default: the learngene's source, the model after the extraction task)")
    p.add_argument("--joint", default=None, metavar="CHECKPOINT", help="joint.pt from collective-model/joint_source.py, "
                   "for learngene-joint, finetune-joint and probe-joint")
    p.add_argument("--out", default=None, metavar="OUTDIR", help="results directory (default: results/<dataset>)")
    p.add_argument("--batch_size", type=BATCH, default=None, help=f"default {TrainSettings.batch_size}")
    p.add_argument("--epochs", type=COUNT, default=None, help=f"default {TrainSettings.epochs}")
    p.add_argument("--lr", type=LEARNING_RATE, default=TrainSettings.lr)
    p.add_argument("--lr_of", type=method_lr, nargs="+", default=[], metavar="TEXT",
                   help="METHOD=LR: that method's own SGD learning rate instead of --lr (e.g. finetune-collective=0.001, "
                        "as the pipeline chooses it on the validation tasks)")
    p.add_argument("--epochs_of", type=method_epochs, nargs="+", default=[], metavar="TEXT",
                   help="METHOD=N: that method's own number of epochs instead of --epochs (as the pipeline chooses it on "
                        "the validation tasks)")
    p.add_argument("--momentum", type=MOMENTUM, default=TrainSettings.momentum)
    p.add_argument("--weight_decay", type=WEIGHT_DECAY, default=TrainSettings.weight_decay)
    p.add_argument("--ewc_lambda", type=EWC_LAMBDA, default=RELEASED_LAMBDA,
                   help=f"EWC strength (default {RELEASED_LAMBDA}: the released 40 x 1000)")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast where the device computes bf16 natively, fp32 elsewhere")
    p.add_argument("--seed", dest="seeds", type=SEED, nargs="+", default=[0], help="one or more seeds")
    p.add_argument("--num_works_tt", dest="num_target_tasks", type=COUNT, default=None,
                   help="target tasks to use (default: all)")
    p.add_argument("--num_imgs_per_cat_train", dest="shots", type=COUNT, nargs="+", default=None,
                   help="shots per class (default: every shot count of the split)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS),
                   help=f"default: {' '.join(DEFAULT_METHODS)} (the others belong to the pipeline's studies)")
    p.add_argument("--section", choices=["target", "validation"], default="target",
                   help="validation = the open-world tasks, the only ones to tune hyper-parameters on")
    p.add_argument("--eval_every", type=COUNT, default=TrainSettings.eval_every,
                   help="test accuracy every N epochs (curves)")
    p.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=None,
                   help="train the runs of one shot count that share an architecture together as one grouped "
                        "network (same results up to float rounding; default: on with CUDA, off on CPU)")
    p.add_argument("--name", default=None, metavar="TEXT", help="what the figures' titles call this study (default: the dataset, "
                   "image size and section)")
    released = p.add_argument_group("the released script's protocol, one switch per choice (default: the clean one)")
    released.add_argument("--chain", type=COUNT, default=None, metavar="L",
                          help="chain the tasks: in --chain_order, consecutive chains of L tasks, each task starting "
                               "from the model the previous one ended with (released: model_vgg = model_v)")
    released.add_argument("--chain_order", type=INDEX, nargs="+", default=None, metavar="TASK",
                          help="the chains' task order, a permutation of the tasks used (default 0, 1, 2, ...)")
    released.add_argument("--optimizer_per_epoch", action="store_true",
                          help="a new SGD optimizer every epoch, its momentum restarting (released)")
    released.add_argument("--protocol", choices=["clean", "released"], default="clean",
                          help=f"released: for inheriting methods, chains of {RELEASED_CHAIN} tasks (the released "
                               f"command's --num_works_tt {RELEASED_CHAIN}; fewer: one chain of all), a new optimizer "
                               "every epoch and no EWC (the released penalty is always zero); for scratch "
                               "alone, the released baseline script's settings: a fresh model per task, 100 epochs, "
                               "batch 64")
    p.add_argument("--reuse", nargs="+", default=[], metavar="RUNS",
                   help="results folders (or runs.jsonl files) whose runs to take instead of retraining them, "
                        "where a run read exactly the inputs and settings this one would (e.g. scratch runs of "
                        "another learngene of the same shapes)")
    return p


@dataclass
class Study:
    """A study, resolved: which runs (methods x shots x tasks x seeds of one section of a split), from what
    inputs, trained how, on which device; `identity` is what every stored run must match to be kept."""
    name: str
    split: Split
    section: str
    inputs: Inputs
    settings: TrainSettings
    methods: list
    shots: list
    num_tasks: int
    seeds: list
    device: torch.device
    identity: dict
    protocol: Protocol = Protocol()

    @property
    def lr_of(self):
        """{method: its own learning rate} (--lr_of), as the runs' identity records it."""
        return self.identity.get("lr_of", {})

    @property
    def epochs_of(self):
        """{method: its own number of epochs} (--epochs_of), as the runs' identity records it."""
        return self.identity.get("epochs_of", {})

    def settings_of(self, method):
        return dataclasses.replace(self.settings, lr=self.lr_of.get(method, self.settings.lr),
                                   epochs=self.epochs_of.get(method, self.settings.epochs))

    def runs(self):
        return [RunKey(m, k, t, s) for k in self.shots for t in range(self.num_tasks) for s in self.seeds
                for m in self.methods]


def method_value(name, kind):
    """An argparse type for METHOD=VALUE of an SGD-trained method, VALUE checked by `kind` as its own flag's."""
    def parse(text):
        method, _, value = text.partition("=")
        if method not in METHODS or METHODS[method].probe:
            raise argparse.ArgumentTypeError(f"expected METHOD={name} with METHOD one of the SGD-trained methods "
                                             f"({', '.join(m for m in METHODS if not METHODS[m].probe)}), got {text!r}")
        return method, kind(value)
    return parse


method_lr, method_epochs = method_value("LR", LEARNING_RATE), method_value("N", COUNT)


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
    protocol = resolve_protocol(args, num_tasks)
    joint, needs_joint = None, any(METHODS[m].needs_joint for m in args.methods)
    require(args.joint or not needs_joint, f"--methods {' '.join(m for m in args.methods if METHODS[m].needs_joint)} "
            f"need --joint (joint.pt from collective-model/joint_source.py)")
    if args.joint:  # checked whenever given; kept (and part of the runs' identity) only where a method reads it
        joint = load_joint(args.joint, art, split)
        joint = joint if needs_joint else None
    inputs = Inputs(art, str(args.learngene), load_collective(args.collective, art, split)
                    if any(METHODS[m].needs_collective for m in args.methods) else None, joint)
    check_sources(args.methods, inputs)
    out = Path(args.out or Path("results") / split.dataset)
    device = pick_device(args.no_cuda)
    settings = TrainSettings(args.epochs or TrainSettings.epochs, args.batch_size or TrainSettings.batch_size, args.lr,
                             args.momentum, args.weight_decay, args.ewc_lambda, args.eval_every,
                             resolve_precision(args.precision, device))
    # results files are replaced only beside the runs.jsonl they summarise (same settings, checked below)
    written = [n for n in report.OUTPUTS if (out / n).exists()]
    require(not written or (out / "runs.jsonl").exists(), f"{out} holds {', '.join(written)} but no runs.jsonl: not results "
            f"of this script's runs, so they are not replaced; choose another --out")
    reuse = [record_file(r) for r in args.reuse]
    for r in reuse:
        require(r.is_file(), f"--reuse {r}: no runs.jsonl there")
    for flag, given in (("--lr_of", args.lr_of), ("--epochs_of", args.epochs_of)):
        require_distinct([m for m, _ in given], flag)
        stray = [m for m, _ in given if m not in args.methods]
        require(not stray, f"{flag} {' '.join(stray)}: not among --methods ({' '.join(args.methods)})")
    # a method's own rate or length only where it differs from --lr, --epochs: the same computation keeps the same
    # identity
    lr_of = {m: lr for m, lr in args.lr_of if lr != args.lr}
    epochs = args.epochs or TrainSettings.epochs
    epochs_of = {m: n for m, n in args.epochs_of if n != epochs}
    name = args.name or f"{split.dataset} ({split.image_size}px), {args.section} tasks"
    study = Study(name, split, args.section, inputs, settings, args.methods, shots, num_tasks, args.seeds, device,
                  {**run_identity(settings, args.section, split, inputs), **protocol.identity(),
                   **({"lr_of": lr_of} if lr_of else {}), **({"epochs_of": epochs_of} if epochs_of else {})}, protocol)
    with FolderLock(out):
        store = RunStore(out / "runs.jsonl", study.identity)
        ensure_writable(out)  # a read-only or full disk fails now, not after the first run has trained
        requested = study.runs()
        if reuse:
            print(f"reused {store.reuse(reuse, set(requested))} runs from {', '.join(map(str, reuse))}")
        train_missing(store, study, requested, args.grouped)
        # the table covers what this command asked for, even if runs.jsonl holds more
        return report.summarize(out, {key: store.runs[key] for key in requested}, study, argv)


def resolve_protocol(args, num_tasks):
    """The protocol the flags ask for; --protocol released sets the released choices (and, for scratch alone, the
    released baseline's settings into args), refusing flags that would contradict it."""
    if args.protocol == "released":
        given = [f for f, v in (("--chain", args.chain), ("--epochs", args.epochs), ("--batch_size", args.batch_size))
                 if v is not None] + (["--optimizer_per_epoch"] if args.optimizer_per_epoch else [])
        require(not given, f"--protocol released sets {', '.join(given)} itself; give one or the other")
        if args.methods == ["scratch"]:  # baseline_random_trainnum200_woEWC.py: fresh model and optimizer per task
            args.epochs, args.batch_size = 100, 64
            return Protocol()
        require("scratch" not in args.methods, "--protocol released: the released learngene and scratch scripts differ; "
                "run --methods scratch alone (the released baseline) and the other methods in another invocation")
        args.chain, args.optimizer_per_epoch, args.ewc_lambda = min(RELEASED_CHAIN, num_tasks), True, 0.0
    if args.chain_order is not None:
        require(args.chain, "--chain_order needs --chain")
        require(sorted(args.chain_order) == list(range(num_tasks)), f"--chain_order must list each of the tasks used, "
                f"0 to {num_tasks - 1}, once")
    if args.chain:
        require(args.chain <= num_tasks, f"--chain {args.chain} is longer than the {num_tasks} tasks used")
        probes = [m for m in args.methods if METHODS[m].probe]
        require(not probes, f"--chain: a probe ({', '.join(probes)}) has no model to carry from task to task")
    return Protocol(args.chain or 0, tuple(args.chain_order or ()), args.optimizer_per_epoch)


def train_missing(store, study, requested, use_grouped):
    """Train the requested runs that the store lacks, recording each as it finishes (a chain's runs when the chain
    has finished: a chain stopped midway is trained again from its start)."""
    todo = [key for key in requested if key not in store.runs]
    print(f"{len(store.runs)} runs already in {store.path}, {len(todo)} to go on {study.device} in "
          f"{study.settings.precision}")
    data = FewShotData(study.split, study.section, study.device)
    protocol = study.protocol
    if protocol.chain:
        chains = [[key._replace(task=t) for t in tasks] for key in dict.fromkeys(k._replace(task=-1) for k in todo)
                  for tasks in protocol.chains(study.num_tasks)]
        for chain in tqdm([c for c in chains if any(k not in store.runs for k in c)], desc="chains", unit="chain"):
            for key, result in zip(chain, train_chain(chain, study.inputs, data, study.settings_of(chain[0].method),
                                                      study.device, protocol)):
                if key not in store.runs:  # one taken from another folder stays as it was
                    record(store, study, key, result)
        return
    if use_grouped is None:
        use_grouped = study.device.type == "cuda"
    use_grouped = use_grouped and not protocol.optimizer_per_epoch  # grouped training keeps one optimizer
    # a group trains with one learning rate and schedule: methods with their own are grouped apart
    by_schedule = {}
    for key in todo:
        settings = study.settings_of(key.method)
        by_schedule.setdefault((settings.lr, settings.epochs), []).append(key)
    groups = [g for keys in by_schedule.values() for g in plan_groups(keys, use_grouped)]
    # each shot count whole before the next (a group holds one): a run stopped midway leaves complete tables for the
    # shot counts it finished, whatever the schedules; every run is seeded by its own key, so order changes no result
    groups.sort(key=lambda g: g[0].shots)
    for group in tqdm(groups, desc="individual models", unit="group"):
        settings = study.settings_of(group[0].method)
        if len(group) == 1:
            results = [train_run(group[0], study.inputs, *data(group[0].shots, group[0].task), settings,
                                 study.device, protocol)]
        else:
            results = train_grouped(group, study.inputs, data, settings, study.device)
        for key, result in zip(group, results):
            record(store, study, key, result)


def record(store, study, key, result):
    result["classes"] = study.split.manifest[study.section][str(key.shots)][key.task]["classes"]
    # each run keeps what it was trained with: a table is rewritten whenever its command runs again, by then perhaps
    # at another commit or on another machine, and must still say where its runs came from
    result["trained"] = {"commit": COMMIT_AT_START, "device": device_name(study.device), "time_utc": utc_now()}
    store.add(key, result)
