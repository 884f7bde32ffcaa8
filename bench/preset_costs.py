"""What each stage of a preset costs per unit of work on this device, measured, and the preset's projected
wall-clock time: how the cpu preset was sized (README, "Sizing the cpu preset").

    python bench/preset_costs.py --path data/tiny-imagenet-100-quick-split --preset cpu

Units: the collective model's training images per second at base and at final widths (with the criterion, as
the collective script trains) and its images per second read in eval mode (the source's held-out measurements),
and seconds per individual-model run of each method at each shot count, with a learngene of the shape the preset
extracts (conv 10-12 of the collective model after its extraction task: three 512-channel blocks for the cpu and
paper presets, narrower for the quick one; the weights do not change the cost). The projection assumes the
collective cost grows linearly with the widening schedule between the two measured widths, as its FLOPs do.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pipeline  # noqa: E402
from bench.common import add_device_and_output, device_and_output  # noqa: E402
from utils.criterion import GradientCriterion  # noqa: E402
from utils import budget, fewshot, learngene, methods, released, runstore, source, tuning  # noqa: E402
from utils.cli import COUNT, cli  # noqa: E402
from utils.files import write_csv  # noqa: E402
from utils.repro import command_line, device_name, provenance  # noqa: E402
from utils.engine import DeviceData, seeded_generator, sgd, synchronize, train_epoch, uses_channels_last  # noqa: E402
from utils.models import BASE_WIDTHS, CollectiveNet, WIDENING, widths_at  # noqa: E402
from utils.learngene import Selection  # noqa: E402
from utils.splits import Split  # noqa: E402


def option(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


def collective_rate(widths, data, device, precision, epochs=2):
    """Training images/s of the collective model at these widths, criterion on, after one warm-up epoch."""
    model = CollectiveNet(widths, data.images.shape[-1], 100).to(device)
    if uses_channels_last(device, precision):
        model = model.to(memory_format=torch.channels_last)
    opt, criterion = sgd(model, 0.001, 0.9, 5e-4), GradientCriterion()
    for epoch in range(epochs + 1):
        if epoch == 1:
            synchronize(device)
            t0 = time.perf_counter()
        criterion.start_epoch()
        train_epoch(model, opt, data, 64, seeded_generator(epoch, device), after_backward=criterion, precision=precision)
        criterion.end_epoch()
    return epochs * len(data) / (time.perf_counter() - t0)


def eval_rate(widths, data, device, precision):
    """Images/s of the collective model read in eval mode, as the source measurements read it, after a warm-up."""
    model = CollectiveNet(widths, data.images.shape[-1], 100).to(device)
    outputs = torch.arange(5, device=device)
    source.choice_accuracy(model, data, outputs, precision)
    synchronize(device)
    t0 = time.perf_counter()
    source.choice_accuracy(model, data, outputs, precision)
    synchronize(device)
    return len(data) / (time.perf_counter() - t0)


def seconds_per_image(rates, task, widened):
    """Seconds per image of the model after collective task `task`, linear from base (task 0) to final widths (the
    last widening), as the widening schedule's FLOPs grow."""
    return 1 / rates["base"] + (1 / rates["final"] - 1 / rates["base"]) * min(task, widened) / max(WIDENING)


def measurement_projection(tasks, extraction, widened, images, heldout, eval_rates):
    """Seconds of the source measurements (utils/source.py): every task's checkpoint on every task's held-out
    images (the accuracy matrix), then the nearest-class-mean features of the model after the extraction task and
    of a random network of its widths on the tasks up to it (each task's training and held-out images); and the
    joint source's, read once through its head and once through its features on the same tasks."""
    matrix = tasks * 5 * heldout * sum(seconds_per_image(eval_rates, t, widened) for t in range(tasks))
    at_extraction = (extraction + 1) * seconds_per_image(eval_rates, extraction, widened)  # one image of each task read
    features = (images + 5 * heldout) * at_extraction
    return matrix + 2 * features, 5 * heldout * at_extraction + features


def run_seconds(split, device, settings, shots, task):
    """Seconds per individual run of each method, with a learngene and collective model of the widths after
    collective task `task` (the extraction task: the individual model's inherited blocks are that wide)."""
    widths = widths_at(task)
    collective = {"widths": widths, "task": task, "path": "random", "model": CollectiveNet(
        widths, split.image_size, 100).state_dict(), "config": {"image_size": split.image_size, "num_outputs": 100}}
    art = learngene.make_artifact(collective["model"], widths, [10, 11, 12], dataset=split.dataset,
                                  image_size=split.image_size, source_task=task)
    inputs = methods.Inputs(art, "", collective)
    data = fewshot.FewShotData(split, "target", device)
    seconds = {}
    for method in INDIVIDUAL_METHODS:
        synchronize(device)
        t0 = time.perf_counter()
        fewshot.train_run(runstore.RunKey(method, shots, 0, 0), inputs, *data(shots, 0), settings, device)
        synchronize(device)
        seconds[method] = time.perf_counter() - t0
    return seconds


# the `individual` study's methods; the source study's controls need the joint source, which this bench does not make
INDIVIDUAL_METHODS = list(methods.DEFAULT_METHODS)


# what each control costs: the method it trains as (the frozen learngene at most a learngene run; the joint source's
# learngene, fine-tune and probe the collective model's), measured as that method
MIRRORS = {"learngene-frozen": "learngene", "learngene-permuted": "learngene", "learngene-joint": "learngene",
           "finetune-joint": "finetune-collective", "probe-joint": "probe-collective",
           # every row of the source's architecture trains as the whole fine-tune does; the lightweight model that
           # inherits every block as the learngene (its EWC term over a few more parameters)
           **{m: "finetune-collective" for m in methods.LADDER_ROWS},
           **{m: "learngene" for m in methods.FULL_INHERITANCE}}


def run_cost(per_run, method):
    """Seconds of one run of `method`, a control costing as the method it mirrors (MIRRORS)."""
    return per_run[MIRRORS.get(method, method)]


def budget_projection(plan, epochs, collective_epoch_s, targets, per_run):
    """Seconds of the source-budget study beside the preset (utils/budget.py): a collective model per point (all of
    the preset's tasks), then the study's source-reading methods on the target tasks from each epoch point's
    learngene (scratch is the individual study's, reused); a third set of target runs only where a learning rate
    other than the preset's is kept, which this projection leaves out."""
    collective = collective_epoch_s * (sum(plan["epochs"]) + epochs * len(plan["lrs"]))
    readers = [m for m in budget.METHODS if m != "scratch"]
    target = len(plan["epochs"]) * targets * sum(run_cost(per_run[k], m) for k in per_run for m in readers)
    return collective, target


def source_projection(presentations, final_rate, targets, per_run):
    """Seconds of the source study beside the preset (utils/joint.py, utils/methods.py CONTROLS): the joint source
    (the collective model's image presentations up to the extraction task, all at the extraction task's widths,
    costed at the final widths' measured rate), then the controls on the target tasks; `learngene` and `scratch`
    are the individual study's, reused. Each control costs what the method it mirrors does (run_cost)."""
    target = targets * sum(run_cost(per_run[k], m) for k in per_run for m in methods.CONTROLS)
    return presentations / final_rate, target


def tuned_projection(rates, tune, targets, per_run, study_methods):
    """Seconds of a tuned study beside the preset (tuned, knowledge, knowledge-joint, inherit): (validation runs at
    every learning rate of the grid, then the schedule's doublings at the chosen rates, at least one: 2x, at most
    2x + 4x; the learngene's runs at the default rate are the EWC tuning's, reused), (target runs, at least at the
    preset's epochs, at most at 4x). A method whose choices are the defaults reuses its earlier runs, and a study
    reuses an earlier study's validation runs, so the upper bounds are upper bounds."""
    per_task = sum(run_cost(per_run[k], m) for k in per_run for m in study_methods)
    reused = sum(per_run[k]["learngene"] for k in per_run) if "learngene" in study_methods else 0
    rates_s = tune * (rates * per_task - reused)
    top = tuning.EPOCHS_TOP
    return (rates_s + tune * 2 * per_task, rates_s + tune * (2 + top) * per_task), \
        (targets * per_task, targets * top * per_task)


def released_projection(chain, scratch_epochs, epochs, targets, per_run):
    """Seconds of the released-protocol study's runs (utils/released.py), each as costly as a clean run of its
    method but for the released scratch baseline's epochs; chained runs train the same tasks, one after another."""
    total = 0.0
    for run in released.runs(chain, scratch_epochs):
        scale = scratch_epochs / epochs if run.folder == "released-scratch" else 1
        total += scale * targets * sum(per_run[k][m] for k in per_run for m in run.methods)
    return total


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="data/tiny-imagenet-100-quick-split", metavar="SPLIT", help="a split at the preset's image size")
    p.add_argument("--preset", choices=pipeline.PRESETS, default="cpu")
    p.add_argument("--epochs", type=COUNT, default=30, help="individual-model epochs per run")
    add_device_and_output(p, "preset-costs")
    args = p.parse_args(argv)
    device, out = device_and_output(args, "preset-costs")
    split = Split(args.path)
    preset = pipeline.PRESETS[args.preset]
    data = DeviceData.from_numpy(*split.continual(0), device)
    widths = (("base", BASE_WIDTHS), ("final", widths_at(max(WIDENING))))
    rates = {label: collective_rate(w, data, device, args.precision) for label, w in widths}
    eval_rates = {label: eval_rate(w, data, device, args.precision) for label, w in widths}
    eval_every = option(preset["individual"], "--eval_every", 1)
    # the training scripts' settings (EWC on at the released strength: its cost does not depend on lambda)
    settings = fewshot.TrainSettings(epochs=args.epochs, eval_every=eval_every, precision=args.precision)
    tasks = option(preset["split"], "--num_tasks", 50)
    widened = min(tasks - 1, max(WIDENING))
    extraction = min(tasks - 1, option(preset["collective"], "--extract_after_task", Selection.after_task))
    shots = [int(k) for k in split.manifest["shots"]]
    per_run = {k: run_seconds(split, device, settings, k, extraction) for k in shots}

    # the projection for the preset
    images = 5 * option(preset["split"], "--num_imgs_per_cat_train", 500)
    epochs = option(preset["collective"], "--epochs", 100)
    collective_s = images * epochs * sum(seconds_per_image(rates, t, widened) for t in range(tasks))
    heldout = option(preset["split"], "--heldout_per_class", 0)
    measure_s, joint_measure_s = measurement_projection(tasks, extraction, widened, images, heldout, eval_rates)
    targets = option(preset["split"], "--num_target_tasks", 10)
    tune = int(preset["tune_tasks"] or targets)
    tune_s = len(tuning.EWC_GRID) * tune * sum(per_run[k]["learngene"] for k in shots)
    individual_s = targets * sum(sum(per_run[k].values()) for k in shots)
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.precision}; {split.dataset} "
          f"{split.image_size}px\ncommand: {command_line(argv)}\n")
    print(f"collective training, criterion on: {rates['base']:.0f} images/s at base widths, {rates['final']:.0f} "
          f"at final widths; read in eval mode: {eval_rates['base']:.0f} and {eval_rates['final']:.0f} images/s")
    for k in shots:
        print(f"{k}-shot individual run, {args.epochs} epochs, eval every {eval_every}: "
              + ", ".join(f"{m} {s:.1f} s" for m, s in per_run[k].items()))
    print(f"\npreset {args.preset}: collective {tasks} tasks x {epochs} epochs x {images} images = "
          f"{collective_s / 60:.1f} min; source measurements ({heldout} held-out images per class) "
          f"{measure_s / 60:.1f} min; EWC tuning {len(tuning.EWC_GRID)} lambdas x {tune} tasks = "
          f"{tune_s / 60:.1f} min; "
          f"individual {targets} tasks x {len(INDIVIDUAL_METHODS)} methods x {len(shots)} shot counts = "
          f"{individual_s / 60:.1f} min; total {(collective_s + measure_s + tune_s + individual_s) / 60:.1f} min")
    stages = [("collective", collective_s), ("measurements", measure_s), ("tune", tune_s),
              ("individual", individual_s)]
    if "budget" in preset:
        plan = preset["budget"]
        budget_collective_s, budget_target_s = budget_projection(plan, epochs, collective_s / epochs, targets, per_run)
        print(f"study budget: collective {sum(plan['epochs'])} + {epochs} x {len(plan['lrs'])} epochs per task "
              f"(epochs {plan['epochs']}, lrs {plan['lrs']}) = {budget_collective_s / 60:.1f} min; target runs "
              f"{len(plan['epochs'])} points x {targets} tasks = {budget_target_s / 60:.1f} min; total "
              f"{(budget_collective_s + budget_target_s) / 60:.1f} min")
        stages += [("budget_collective", budget_collective_s), ("budget_target", budget_target_s)]
    presentations = images * epochs * (extraction + 1)
    source_joint_s, source_target_s = source_projection(presentations, rates["final"], targets, per_run)
    source_joint_s += joint_measure_s
    print(f"study source: joint source {presentations} presentations at the widths after task {extraction}, and its "
          f"measurements ({joint_measure_s / 60:.1f} min) = {source_joint_s / 60:.1f} min; controls "
          f"{len(methods.CONTROLS)} methods x {targets} tasks = {source_target_s / 60:.1f} min; total "
          f"{(source_joint_s + source_target_s) / 60:.1f} min")
    stages += [("source_joint", source_joint_s), ("source_target", source_target_s)]
    for name in ("tuned", "knowledge", "knowledge-joint", "inherit"):
        study = pipeline.STUDIES[name].methods
        (val_lo, val_hi), (target_lo, target_hi) = tuned_projection(len(tuning.LR_GRID), tune, targets, per_run,
                                                                    study)
        print(f"study {name}: {len(study)} methods x {len(tuning.LR_GRID)} learning rates x {tune} validation tasks, "
              f"then the epochs' doublings = {val_lo / 60:.1f} to {val_hi / 60:.1f} min (a third of the rates' part "
              f"more for each rate the grid grows by); target runs {targets} tasks x {len(study)} methods = "
              f"{target_lo / 60:.1f} to {target_hi / 60:.1f} min; total {(val_lo + target_lo) / 60:.1f} to "
              f"{(val_hi + target_hi) / 60:.1f} min (runs an earlier study holds are reused)")
        stages += [(f"{name}_validation_at_least", val_lo), (f"{name}_validation_at_most", val_hi),
                   (f"{name}_target_at_least", target_lo), (f"{name}_target_at_most", target_hi)]
    seed = [m for m in pipeline.STUDIES["seed"].methods if m in ("learngene", "finetune-collective")]
    seed_target = targets * sum(run_cost(per_run[k], m) for k in per_run for m in seed)
    print(f"study seed: the collective model again {(collective_s + measure_s) / 60:.1f} min; {', '.join(seed)} from "
          f"it on {targets} tasks = {seed_target / 60:.1f} to {tuning.EPOCHS_TOP * seed_target / 60:.1f} min "
          f"(at the knowledge study's epochs)")
    stages += [("seed_collective", collective_s + measure_s), ("seed_target_at_least", seed_target),
               ("seed_target_at_most", tuning.EPOCHS_TOP * seed_target)]
    chain = min(released.RELEASED_CHAIN, targets)  # released.chain_length on the preset's split
    scratch_epochs = preset.get("released_scratch_epochs", released.RELEASED_SCRATCH_EPOCHS)
    released_s = released_projection(chain, scratch_epochs, args.epochs, targets, per_run)
    print(f"study released: {len(released.runs(chain))} invocations x {targets} tasks, chains of {chain}, released "
          f"scratch {scratch_epochs} epochs = {released_s / 60:.1f} min")
    stages.append(("released", released_s))
    rows = [[f"collective_images_per_s_{label}", rates[label]] for label, _ in widths]
    rows += [[f"eval_images_per_s_{label}", eval_rates[label]] for label, _ in widths]
    rows += [[f"seconds_per_run_{m}_{k}shot", s] for k in shots for m, s in per_run[k].items()]
    rows += [[f"projected_minutes_{args.preset}_{stage}", v / 60] for stage, v in stages]
    write_csv(out, ["quantity", "value", "dataset", "image_size", "precision"],
              [[*r, split.dataset, split.image_size, args.precision] for r in rows], provenance(device, argv))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
