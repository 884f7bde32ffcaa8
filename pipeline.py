"""The whole Learngene pipeline in one command, for one dataset and one preset:

    split -> collective model -> learngene -> EWC strength tuned on the validation (open-world) tasks
          -> individual models and baselines on the target tasks -> results table

    python pipeline.py --preset quick                      # offline Tiny-ImageNet-100, ~12 min on 2 CPU cores
    python pipeline.py --preset smoke                      # every stage on a few images, ~1 min: does it run?
    python pipeline.py --preset paper --dataset cifar100 --data /data/cifar  # the paper's settings, for a GPU

Every stage is a script of this repo run as its own process (its command is printed, so any stage can be
rerun by hand) and every stage resumes: rerunning the same command continues where it stopped.
Outputs: data/<dataset>-<preset>-split/, checkpoints/<dataset>-<preset>/, and the table, curves and heat
map in results/<dataset>-<preset>*. The table ends with the wall-clock time of each stage.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.cli import COUNT, LEARNING_RATE, cli, require, require_distinct  # noqa: E402
from utils.files import FolderLock, write_bytes, write_text  # noqa: E402
from utils.methods import BASELINE, CONTROLS, DEFAULT_METHODS, FULL_INHERITANCE, LADDER_ROWS, METHODS  # noqa: E402
from utils import budget, contrasts, ladder, readback, released, seeds, shared_classes, source  # noqa: E402
from utils.splits import Split  # noqa: E402
from utils.stages import SourceStages, StageClock, stage, train_collective  # noqa: E402
from utils.tuning import preset_epochs, tune_epochs, tune_ewc, tune_lr  # noqa: E402
from utils.runstore import read_runs, records  # noqa: E402
from utils.repro import COMMIT_AT_START, REPO_ROOT, ROOT_VARIABLE, command_line, provenance  # noqa: E402

# paths are relative to the repository, where every stage runs
DEFAULT_DATA = {"tiny-imagenet-100": Path("..") / "shared" / "data" / "tiny-imagenet-100", "cifar100": Path("data"),
                "imagenet100": None, "folder": None}
# which scripts a dataset goes through: val_lifelong_<name>.py, inheritable_<name>_wEWC.py
SCRIPTS = {"cifar100": "cifar100", "tiny-imagenet-100": "imagenet", "imagenet100": "imagenet", "folder": "imagenet"}

PRESETS = {
    # Small enough for a 2-core CPU in under 15 minutes: Tiny-ImageNet at 32px (CIFAR-like), 6 short collective
    # tasks, 3 target tasks, the paper's individual-model schedule (30 epochs).
    "quick": {
        "split": ["--size", "32", "--num_tasks", "6", "--num_imgs_per_cat_train", "200", "--num_target_tasks", "3",
                  "--heldout_per_class", "50"],
        "collective": ["--epochs", "8"],
        "individual": ["--epochs", "30", "--eval_every", "5", "--seed", "0"],
        "tune_tasks": "2",  # of the 3 validation tasks, to stay well inside 15 minutes
        "studies": ["individual"],
        # the source-budget study: the collective model again at 2 and 18 epochs per task (a 9x span around the
        # preset's 8), and at 8 epochs with lr 3 and 10 times the preset's 0.001 (README, "Would more training...")
        "budget": {"epochs": [2, 18], "lrs": [0.003, 0.01]},
    },
    # The CPU's real answer, sized from bench/preset_costs.py (README, "Sizing the cpu preset"): Tiny-ImageNet at
    # 32px, the whole widening schedule (tasks 0-20, learngene after task 20) on 500 images of each of 5 base
    # classes per task, EWC tuned on 4 validation tasks, then as many target tasks as fit in 90 minutes on 2 cores.
    "cpu": {
        "split": ["--size", "32", "--num_tasks", "21", "--num_imgs_per_cat_train", "500", "--num_target_tasks", "20",
                  "--heldout_per_class", "50"],
        "collective": ["--epochs", "6"],
        "individual": ["--epochs", "30", "--eval_every", "10", "--seed", "0"],
        "tune_tasks": "4",
        "studies": ["individual"],
        "budget": {"epochs": [2, 18], "lrs": [0.003, 0.01]},
    },
    # Every stage on a handful of images, for checking that the pipeline runs (its numbers mean nothing).
    "smoke": {
        "split": ["--size", "32", "--num_tasks", "3", "--num_imgs_per_cat_train", "12", "--num_target_tasks", "2",
                  "--heldout_per_class", "4"],
        "collective": ["--epochs", "1", "--batch_size", "16"],
        "individual": ["--epochs", "2", "--eval_every", "1", "--seed", "0"],
        "tune_tasks": "1",
        "studies": ["individual", "source"],
        "budget": {"epochs": [2], "lrs": [0.01]},
        "released_scratch_epochs": 4,  # not the released 100: the smoke preset checks the plumbing, in seconds
    },
    # The paper: 50 tasks x 100 epochs, learngene after task 20, 30-epoch individual models, 3 seeds.
    "paper": {
        "split": [],
        "collective": ["--epochs", "100"],
        "individual": ["--epochs", "30", "--eval_every", "1", "--seed", "0", "1", "2"],
        "tune_tasks": None,
        "studies": ["individual"],
    },
}
CURVES_FILES = (("forest.png", "-forest.png"), ("curves.png", "-curves.png"))  # a study's rows and their curves
CONTRAST_FILES = (*CURVES_FILES, ("contrasts.png", "-contrasts.png"), ("contrasts.csv", "-contrasts.csv"))
LADDER_FILES = (*CONTRAST_FILES, ("ladder.png", "-ladder.png"), ("ladder.csv", "-ladder.csv"))


@dataclass(frozen=True)
class Study:
    """A study on the target tasks is a configuration, not code: which methods it trains (rows of its table),
    what it changes in the individual script's flags, and which earlier studies' runs it may reuse where a run
    reads the same inputs; the individual script trains, records, compares and reports every study the same way,
    into <work>/<name>/ and a section of the preset's results."""
    name: str
    about: str
    methods: tuple = ()  # empty: every method of utils/methods.py
    flags: tuple = ()    # individual-script flags beyond the preset's and the tuned EWC strength
    reuse: tuple = ()    # names of earlier studies of the preset whose matching runs are taken, not retrained
    sources: bool = False  # run once per source of the preset's `budget` entry (utils/budget.py), not once
    protocols: bool = False  # run once per released choice (utils/released.py) beside the individual study's runs
    tuned_lr: bool = False  # each method at the learning rate of LR_GRID its validation tasks prefer (tune_lr)
    contrasts: str = ""  # its rows compared with each other, paired per task (a set of utils/contrasts.py)
    second_seed: bool = False  # the collective model trained again with another seed, the rows from it (seed_study)
    files: tuple = (("forest.png", "-forest.png"),)  # (file of its folder, suffix): results/<dataset>-<preset>-<name><suffix>

    @property
    def needs_joint(self):
        return any(METHODS[m].needs_joint for m in self.methods)


STUDIES = {s.name: s for s in (
    Study("individual", "the learngene against scratch and the baselines, on the target tasks",
          methods=DEFAULT_METHODS),
    Study("source", "method or source? the learngene against its controls: its layers held fixed, its filters' "
          "inputs shuffled (structure), and the same layers, fine-tune and probe of a source trained jointly on "
          "the same images (utils/joint.py)", methods=("scratch", "learngene", *CONTROLS), reuse=("individual",),
          contrasts="source", files=(*CONTRAST_FILES, ("features.png", "-features.png"))),
    Study("budget", "would more training change the answer? the learngene and the baselines at other source budgets "
          "(utils/budget.py)", methods=budget.METHODS, reuse=("individual", "source"), sources=True,
          files=(("budget.png", ".png"), ("budget.csv", ".csv"))),
    Study("tuned", "every method at its best: scratch, the learngene and the whole-model fine-tune each at the SGD "
          "learning rate its validation tasks prefer, the EWC strength as tuned", methods=("scratch", "learngene",
          "finetune-collective"), reuse=("individual", "source"), tuned_lr=True, files=CURVES_FILES),
    Study("released", "why did the paper see a gain? the released script's protocol beside the clean one, one choice "
          "at a time, with chained scratch (utils/released.py)", methods=("learngene", "scratch"), protocols=True,
          files=(("chain.png", "-chain.png"), ("released.csv", ".csv"), ("overlap.png", "-overlap.png"),
                 ("overlap.csv", "-overlap.csv"))),
    Study("knowledge", "where does the knowledge sit? the collective model's own architecture trained from its first K "
          "conv blocks (the rest fresh), from the learngene's window alone, or from no source weight at all (the "
          "capacity control), each row at the learning rate its validation tasks prefer (utils/ladder.py)",
          methods=("scratch", "learngene", "finetune-collective", "scratch-collective",
                   *(m for m in LADDER_ROWS if m.endswith("-collective") and m != "scratch-collective")),
          reuse=("individual", "source", "tuned"), tuned_lr=True, contrasts="knowledge", files=LADDER_FILES),
    Study("knowledge-joint", "the same ladder cut from the joint source", methods=(
          "scratch", "scratch-collective", "finetune-joint", *(m for m in LADDER_ROWS if m.endswith("-joint"))),
          reuse=("individual", "source", "tuned", "knowledge"), tuned_lr=True, contrasts="knowledge",
          files=LADDER_FILES),
    Study("seed", "how much do the headline rows move with the source's own training run? the collective model "
          "trained again with another seed, and from it the learngene and the whole fine-tune at the settings the "
          "knowledge study chose (utils/seeds.py)", methods=("scratch", "learngene", "finetune-collective",
          "scratch-collective"), reuse=("individual", "knowledge"), second_seed=True, files=(("seeds.csv", ".csv"),)),
    Study("inherit", "a lightweight model that inherits every layer: the learngene's architecture with every conv "
          "block from the source's layer of its shape, head new, against the learngene, scratch, the capacity "
          "control and the whole fine-tune, each at the learning rate its validation tasks prefer",
          methods=("scratch", "learngene", "finetune-collective", "scratch-collective", *FULL_INHERITANCE),
          reuse=("individual", "source", "tuned", "knowledge", "knowledge-joint"), tuned_lr=True, contrasts="inherit",
          files=CONTRAST_FILES),
)}


RESULT_SUFFIXES = (".md", ".csv", "-forest.png", "-curves.png", "-heatmap.png", "-heldout.png")


def outputs(root, dataset, preset, studies=()):
    """Where a preset writes: its split, its work folder and its result files (and the forest plot of every study
    after the first). None of these is tracked by git (tests/test_pipeline.py checks it): the README's reference
    results live in results/reference/, where no preset writes, so a fresh clone's first run never meets them."""
    name = f"{dataset}-{preset}"
    root = Path(root)
    return {"split": root / "data" / f"{name}-split", "work": root / "checkpoints" / name,
            "results": [root / "results" / f"{name}{suffix}" for suffix in RESULT_SUFFIXES]
            + [root / "results" / f"{name}-{s.name}{suffix}" for s in studies[1:] for _, suffix in s.files]}


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=PRESETS, default="quick")
    p.add_argument("--dataset", choices=SCRIPTS, default="tiny-imagenet-100")
    p.add_argument("--data", default=None, metavar="RAW", help="raw dataset folder (default: ../shared/data/tiny-imagenet-100 "
                   "for tiny-imagenet-100, data/ for cifar100; folder: any image folder, README \"Your own data\")")
    p.add_argument("--class_split", default=None, metavar="CLASSES", help="the split maker's --class_split: a JSON "
                   "file of base, open_world and novel class names (default: the dataset's own; drawn for a folder)")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="passed to every training stage (auto: bf16 where the device computes it natively)")
    p.add_argument("--studies", nargs="+", choices=STUDIES, default=None, metavar="STUDY",
                   help="the studies on the target tasks, in order (default: the preset's; "
                        + "; ".join(f"{s.name}: {s.about}" for s in STUDIES.values()) + ")")
    p.add_argument("--overwrite", action="store_true", help="replace existing results/<dataset>-<preset>* files")
    p.add_argument("--root", default=None, metavar="OUTDIR", help="folder for data/, checkpoints/ and results/ (default: the repository)")
    args = p.parse_args(argv)
    data = Path(args.data).resolve() if args.data else DEFAULT_DATA[args.dataset]
    require(data is not None, f"--data is required for {args.dataset}")
    root = Path(args.root).resolve() if args.root else Path(".")
    if args.root:  # every stage's readers' files name it <root> (repro.for_display)
        os.environ[ROOT_VARIABLE] = str(root)
    os.chdir(REPO_ROOT)  # every relative path below is relative to the repository
    require(data.is_dir(), f"--data {data}: no such folder (the raw {args.dataset} images)")
    preset, name = PRESETS[args.preset], f"{args.dataset}-{args.preset}"
    require_distinct(args.studies or [], "--studies")
    studies = [STUDIES[s] for s in args.studies or preset["studies"]]
    require(not (studies[0].sources or studies[0].protocols or studies[0].second_seed), f"--studies {studies[0].name} cannot come first: the "
            f"results' table is the first study's, on the preset's own learngene (e.g. --studies individual "
            f"{studies[0].name})")
    require(not any(s.protocols for s in studies) or "individual" in [s.name for s in studies],
            "the released study compares with the individual study's runs: --studies individual released")
    require(not any(s.sources for s in studies) or "budget" in preset,
            f"the {args.preset} preset has no source budgets for the budget study")
    paths = outputs(root, args.dataset, args.preset, studies)
    finals = paths["results"]
    require(args.overwrite or not any(f.exists() for f in finals),
            f"{finals[0]} exists: pass --overwrite to replace the results of this preset")
    scripts = SCRIPTS[args.dataset]
    split, work = paths["split"], paths["work"]
    cuda = (["--no-cuda"] if args.no_cuda else []) + ["--precision", args.precision]
    maker = "utils/data_cifar_mk.py" if scripts == "cifar100" else "utils/data_imagenet_mk.py"
    if not (split / "manifest.json").exists():
        from utils.split_maker import open_raw
        from utils.splits import read_class_split
        open_raw(args.dataset, data)  # a missing, truncated or foreign raw file is one line before anything is written
        if args.class_split:
            read_class_split(args.class_split)
    class_split = ["--class_split", Path(args.class_split).resolve()] if args.class_split else []
    with FolderLock(work):  # one pipeline per preset at a time; its stages lock their own folders
        t_start = time.time()
        clock = StageClock(work / "stage_times.json")
        stage(clock, "split", maker, ["--path", data, "--out", split, *preset["split"],
                                      *([] if scripts == "cifar100" else ["--dataset", args.dataset]), *class_split],
              split / "manifest.json")
        collective = work / "collective"
        collective_script = f"collective-model/val_lifelong_{scripts}.py"
        train_collective(clock, "collective", collective_script, [split, collective, *preset["collective"], *cuda])
        individual_script = f"individual-model/inheritable_{scripts}_wEWC.py"

        def individual_args(learngene):
            return ["--path", split, "--learngene", learngene, *preset["individual"], *cuda]
        common = individual_args(collective / "learngene.pt")
        tune_tasks = ["--num_works_tt", preset["tune_tasks"]] if preset["tune_tasks"] else []
        lam, by_lambda = tune_ewc(clock, individual_script, common, tune_tasks, work)
        print(f"[tune-ewc] validation accuracy by EWC lambda: {by_lambda} -> lambda {lam}")
        joint = work / "joint"
        lr_note = ""
        for study in studies:
            if study.needs_joint:  # trained when the first study that reads it comes, so the others come first
                stage(clock, "joint-source", "collective-model/joint_source.py", ["--path", split, "--learngene",
                      collective / "learngene.pt", "--out", joint, *cuda], joint / "joint.pt")
            earlier = [work / name for name in study.reuse if (work / name / "runs.jsonl").exists()]
            if study.sources:
                sources = SourceStages(clock, collective_script, split, preset["collective"], cuda)
                budget_study(study, preset["budget"], work, sources, individual_script, individual_args, lam,
                             earlier, argv, f"{args.dataset}, {args.preset} preset")
                continue
            if study.second_seed:
                seed_study(study, work, SourceStages(clock, collective_script, split, preset["collective"], cuda),
                           individual_script, individual_args, lam, earlier, argv, f"{args.dataset}, {args.preset} preset")
                continue
            if study.protocols:
                released_study(clock, study, work, split, individual_script, [*common, "--ewc_lambda", lam], argv,
                               f"{args.dataset}, {args.preset} preset",
                               preset.get("released_scratch_epochs", released.RELEASED_SCRATCH_EPOCHS))
                continue
            reuse = ["--reuse", *earlier] if earlier else []
            lr_flags = []
            inputs = ["--joint", joint / "joint.pt"] if study.needs_joint else []
            if study.tuned_lr:
                tuning = [*common, "--ewc_lambda", lam, *inputs]
                best_lr, lr_line = tune_lr(clock, individual_script, tuning, tune_tasks, work, study)
                print(f"[tune-lr] validation accuracy by learning rate: {lr_line}")
                lr_flags = ["--lr_of", *(f"{m}={lr}" for m, lr in best_lr.items())]
                best_epochs, epochs_line = tune_epochs(clock, individual_script, tuning, tune_tasks, work, study,
                                                       best_lr, preset_epochs(preset))
                print(f"[tune-epochs] validation accuracy by number of epochs: {epochs_line}")
                lr_flags += ["--epochs_of", *(f"{m}={n}" for m, n in best_epochs.items())]
                lr_note += (f"Learning rates of the {study.name} study chosen on the validation (open-world) tasks, "
                            f"mean final accuracy: {lr_line}. Then each method's number of epochs at its rate: "
                            f"{epochs_line}.\n\n")
            methods = ["--methods", *study.methods] if study.methods else []
            stage(clock, study.name, individual_script, [*common, "--ewc_lambda", lam, *methods, *inputs, *study.flags,
                                                         *lr_flags, *reuse,
                                                         "--name", f"{args.dataset}, {args.preset} preset, "
                                                         f"{study.name}", "--out", work / study.name], None)
            title = f"{args.dataset}, {args.preset} preset, {study.name}"
            baselines = [against for against in (BASELINE, ladder.CAPACITY) if against in study.methods]
            shared = baselines and shared_classes.rows_of(work / study.name / "runs.jsonl", split, baselines)
            if shared:  # how much dependence each row's interval tolerates, from the tasks' shared classes
                shared_classes.write(work / study.name, shared, title, provenance(None, argv))
            if any(f == "features.png" for f, _ in study.files):
                source.draw_source_features(work, study.name, provenance(None, argv), f"{args.dataset}, {args.preset} preset")
            if study.contrasts:
                files = [work / study.name / "runs.jsonl", *(e / "runs.jsonl" for e in earlier)]
                contrasts.report(work / study.name, files, title, provenance(None, argv), study.contrasts, study.tuned_lr)
                if study.contrasts == "knowledge":
                    ladder.report(work / study.name, files, title, provenance(None, argv))
        header = (f"## {name}: Learngene pipeline results\n\n"
                  f"Dataset: {args.dataset} (raw data {data}); preset {args.preset}; pipeline command "
                  f"`{command_line(argv)}`; commit {COMMIT_AT_START}; pipeline wall-clock "
                  f"{(time.time() - t_start) / 60:.1f} min this invocation.\n\n"
                  f"EWC lambda chosen on the validation (open-world) tasks, learngene rows, mean final accuracy: "
                  f"{by_lambda} -> **{lam}**.\n\n" + lr_note + source.source_lines(work))
        write_report(finals, name, header, work, clock, studies)


def budget_study(study, plan, work, sources, individual_script, individual_args, lam, reuse, argv, title):
    """The source-budget study (utils/budget.py): the collective model at the preset's other budgets, the learning
    rate kept on held-out images of the source's classes (never a target task), then the study's methods on the
    target tasks from every point's learngene, each point reusing the runs that read nothing it changed."""
    config = readback.read_json(work / "collective" / "config.json", {"epochs": COUNT, "lr": LEARNING_RATE},
                                "collective run's configuration")
    require(source.read_summary(work / "collective") is not None, f"the {study.name} study measures every source on "
            f"held-out images: make the split with --heldout_per_class")
    points = budget.plan(config["epochs"], config["lr"], plan)
    folder = work / study.name
    run_dir = {p: work / "collective" if p.role == "preset" else folder / p.tag for p in points}
    for p in points[1:]:
        sources.train(f"collective {p.tag}", run_dir[p], epochs=p.epochs, lr=p.lr)
    kept, lr_note = budget.choose_lr({p: (source.read_summary(run_dir[p]),
                                          budget.last_epoch_drops(run_dir[p] / "metrics.csv"))
                                      for p in points if p.role != "epochs"})
    print(f"[{study.name}] {lr_note}")
    chosen = [p for p in points if p.role != "lr" or p == kept]
    targets, earlier = {}, list(reuse)
    for p in chosen:
        out = targets[p.tag] = folder / p.tag / "target"
        stage(sources.clock, f"{study.name} {p.tag}", individual_script,
              [*individual_args(run_dir[p] / "learngene.pt"), "--ewc_lambda", lam, "--methods", *study.methods,
               *(["--reuse", *earlier] if earlier else []), "--name", f"{title}, source {p.tag}", "--out", out], None)
        earlier.append(out)
    manifest = Split(sources.split).manifest
    records = [budget.point_record(p, run_dir[p], manifest) for p in chosen]
    device = readback.recorded_device(targets[chosen[0].tag])
    budget.report(folder, records, targets, lr_note, f"{title}, source budget", {**provenance(None, argv),
                                                                                "device": device})


SECOND_SEED = 1


def seed_study(study, work, sources, individual_script, individual_args, lam, reuse, argv, title):
    """The seed study (utils/seeds.py): the collective model again with seed SECOND_SEED (same split and schedule),
    then the study's rows from its learngene at the learning rates and epochs the knowledge study chose for them on
    the validation tasks (scratch and the capacity control read no source weight: their runs are reused)."""
    knowledge = work / "knowledge" / "runs.jsonl"
    require(knowledge.exists(), f"the {study.name} study takes each row's settings from the knowledge study's: "
            f"--studies individual knowledge {study.name}")
    settings = next(settings for settings, _ in records(knowledge))
    flags = ["--lr_of", *(f"{m}={(settings.get('lr_of') or {}).get(m, settings['lr'])}" for m in study.methods),
             "--epochs_of", *(f"{m}={(settings.get('epochs_of') or {}).get(m, settings['epochs'])}" for m in study.methods)]
    run_dir = work / study.name / f"seed-{SECOND_SEED}"
    sources.train(f"collective seed {SECOND_SEED}", run_dir, seed=SECOND_SEED)
    out = run_dir / "target"
    stage(sources.clock, f"{study.name} seed-{SECOND_SEED}", individual_script,
          [*individual_args(run_dir / "learngene.pt"), "--ewc_lambda", lam, "--methods", *study.methods, *flags,
           "--reuse", *reuse, "--name", f"{title}, source seed {SECOND_SEED}", "--out", out], None)
    seeds.report(work / study.name, {"seed 0": read_runs(knowledge), f"seed {SECOND_SEED}": read_runs(out / "runs.jsonl")},
                 f"{title}, {study.name}", {**provenance(None, argv), "device": "none (computed from the stored runs)"})


def released_study(clock, study, work, split, individual_script, common, argv, title, scratch_epochs):
    """The released-protocol study (utils/released.py): each released choice as its own invocation of the
    individual script, the clean protocol's runs being the individual study's."""
    chain = released.chain_length(Split(split).manifest)
    folder = work / study.name
    dirs = released.study_folders(folder)
    for run in released.runs(chain, scratch_epochs):
        stage(clock, f"{study.name} {run.folder}", individual_script,
              [*common, "--methods", *run.methods, *run.flags, "--name", f"{title}, {run.folder}", "--out",
               dirs[run.folder]], None)
    device = readback.recorded_device(dirs["released"])
    released.report(folder, dirs, chain, scratch_epochs, f"{title}, released protocol", {**provenance(None, argv), "device": device})


def write_report(finals, name, header, work, clock, studies):
    """The preset's results: the first study's table, curves and CSV, every further study's table as a section
    (its files stay in its folder), the collective stage's selection and heat map, and the time of each stage, as
    results/<dataset>-<preset>*."""
    md, csv_out, forest, curves, heatmap, heldout, *study_files = finals
    collective, target = work / "collective", work / studies[0].name
    copies = [(target / "results.csv", csv_out), (target / "forest.png", forest), (target / "curves.png", curves),
              (collective / "criterion_heatmap.png", heatmap), (collective / "heldout_matrix.png", heldout)]
    further = [(s, f, study_files.pop(0)) for s in studies[1:] for f, _ in s.files]  # in outputs()' order
    copies += [(work / s.name / f, final) for s, f, final in further]
    for path, final in copies:
        if path.exists():  # no held-out matrix without held-out images, no forest plot without scratch rows
            write_bytes(final, path.read_bytes())  # atomic, like every output
    figures = {s.name: [final for t, f, final in further if t is s and f.endswith(".png") and final.exists()]
               for s in studies[1:]}
    table = (target / "results.md").read_text() + "".join(
        f"\n### Study {s.name}: {s.about}\n\n" + (work / s.name / "results.md").read_text()
        + ("\n" + (work / s.name / "contrasts.md").read_text() if (work / s.name / "contrasts.md").exists() else "")
        + "".join(f"\n![{s.name}]({f.name})\n" for f in figures[s.name]) for s in studies[1:])
    selection = (collective / "selection.txt").read_text()
    write_text(md, header + table + f"\nLearngene selection (collective-model criterion):\n\n```\n{selection}```\n\n"
               f"Wall-clock time of each stage (summed over the invocations that ran it; device: see "
               f"Provenance above):\n\n{clock.table()}\n"
               f"![paired differences]({name}-forest.png)\n![curves]({name}-curves.png)\n"
               f"![criterion]({name}-heatmap.png)\n" + (f"![held-out]({heldout.name})\n" if heldout.exists() else ""))
    print(f"wall-clock time of each stage:\n{clock.table()}results: {md}")


if __name__ == "__main__":
    main()
