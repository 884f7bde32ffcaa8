"""Settings chosen on the validation (open-world) tasks, never on a target task: the EWC strength, each method's
SGD learning rate and its number of epochs, each from a grid that grows past an end a method prefers, so a choice
lies inside the grid where it can. Each is a series of individual-script stages (utils/stages.py) whose tables
utils/report.py reads."""
import os

from utils import report
from utils.fewshot import TrainSettings
from utils.stages import stage

EWC_GRID = ["40000", "400", "4"]  # the released 40 x 1000, then hundredfold steps down
EWC_GRID_TOP = 4e8  # the grid grows upward in hundredfold steps while its largest strength is the best, up to this
LR_GRID = ["0.001", "0.005", "0.02"]  # the tuned study's SGD learning rates: the released 0.005, a fifth and 4 times it
LR_GRID_RANGE = (1e-5, 0.5)  # the grid grows past an end some method prefers (a fifth below, 4 times above), within
EPOCHS_TOP = 4  # a tuned study's schedule doubles, while the validation tasks prefer the longer, up to 4x the preset's


def tune_ewc(clock, individual_script, common, tune_tasks, work):
    """Tune the EWC strength on the validation tasks over EWC_GRID, extended upward a hundredfold at a time while
    its largest strength is the best (up to EWC_GRID_TOP), so the choice lies inside the grid where it can."""
    grid = list(EWC_GRID)
    while True:
        for lam in grid:
            out = work / "tune-ewc" / f"lambda-{lam}"
            # tuning reads only the final accuracy: --eval_every beyond the last epoch skips the test curve
            stage(clock, f"tune-ewc lambda={lam}", individual_script, [*common, "--section", "validation", "--methods",
                  "learngene", "--ewc_lambda", lam, *tune_tasks, "--eval_every", "1000", "--out", out],
                  out / "results.csv")
        lam, by_lambda = report.best_lambda(work / "tune-ewc", grid)
        top = max(grid, key=float)
        if lam != top or float(top) * 100 > EWC_GRID_TOP:
            return lam, by_lambda + ("" if lam != top else " (the largest strength tried is the best)")
        grid.append(str(int(float(top) * 100)))


def lr_folder(study):
    """Where a tuned study's learning-rate runs go: the tuned study's in tune-lr/ (as before the others existed)."""
    return "tune-lr" if study.name == "tuned" else f"tune-lr-{study.name}"


def tune_lr(clock, individual_script, common, tune_tasks, work, study):
    """Each of the study's methods' SGD learning rate, chosen on the validation tasks (never a target task) from
    LR_GRID, extended a fifth below its lowest rate or 4 times above its highest while some method prefers that end
    (within LR_GRID_RANGE), so each choice lies inside the grid where it can; the EWC strength is the tuned one (in
    `common`). Returns ({method: its rate}, the line that gives every rate's accuracy). Each
    study tunes into a folder of its own (the tuned study's is tune-lr/), reusing every validation run an earlier
    tuning holds (the learngene's at the default rate are the EWC tuning's)."""
    methods, name = study.methods, lr_folder(study)
    earlier = [work / "tune-ewc" / d for d in sorted(os.listdir(work / "tune-ewc"))]
    earlier += sorted(f.parent for f in work.glob("tune-lr*/lr-*/runs.jsonl") if f.parent.parent.name != name)
    grid, new = [], list(LR_GRID)
    while new:
        for lr in new:
            out = work / name / f"lr-{lr}"
            flags = ["--section", "validation", "--methods", *methods, "--lr", lr, *tune_tasks, "--eval_every", "1000"]
            stage(clock, f"{name} lr={lr}", individual_script, [*common, *flags, "--reuse", *earlier, "--out", out],
                  out / "results.csv")
            earlier.append(out)
        grid = sorted(grid + new, key=float)
        best, line = report.best_learning_rates(work / name, grid, methods)
        low, high = float(grid[0]) / 5, float(grid[-1]) * 4
        new = ([f"{low:g}"] if grid[0] in best.values() and low >= LR_GRID_RANGE[0] else []) + \
              ([f"{high:g}"] if grid[-1] in best.values() and high <= LR_GRID_RANGE[1] else [])
    edge = [m for m, lr in best.items() if lr in (grid[0], grid[-1])]
    return best, line + (f" ({', '.join(edge)}: the best rate tried is an end of the range the grid may grow to, "
                         f"{LR_GRID_RANGE[0]:g} to {LR_GRID_RANGE[1]:g})" if edge else "")


def preset_epochs(preset):
    flags = preset["individual"]
    return int(flags[flags.index("--epochs") + 1]) if "--epochs" in flags else TrainSettings.epochs


def tune_epochs(clock, individual_script, common, tune_tasks, work, study, best_lr, epochs):
    """Each of the study's methods' number of epochs at the learning rate it chose (`best_lr`), on the validation
    tasks: the preset's `epochs`, doubled while the longer schedule gives a method a better
    mean final accuracy, up to EPOCHS_TOP times the preset's; only the methods still improving train the next
    doubling. A tie goes to the shorter schedule. Returns ({method: epochs}, a line giving every accuracy)."""
    scores = {m: {epochs: report.validation_accuracy(work / lr_folder(study) / f"lr-{best_lr[m]}" / "results.csv")[m]}
              for m in study.methods}
    earlier = sorted(f.parent for f in work.glob("tune-*/*/runs.jsonl"))
    growing, n = list(study.methods), epochs
    while growing and n * 2 <= epochs * EPOCHS_TOP:
        n *= 2
        out = work / f"tune-epochs-{study.name}" / f"epochs-{n}"
        stage(clock, f"tune-epochs-{study.name} epochs={n}", individual_script,
              [*common, "--section", "validation", "--methods", *growing, "--lr_of", *(f"{m}={best_lr[m]}" for m in growing),
               "--epochs_of", *(f"{m}={n}" for m in growing),
               *tune_tasks, "--eval_every", "1000", "--reuse", *earlier, "--out", out], out / "results.csv")
        earlier.append(out)
        accuracy = report.validation_accuracy(out / "results.csv")
        for m in growing:
            scores[m][n] = accuracy[m]
        growing = [m for m in growing if scores[m][n] > scores[m][n // 2]]
    best = {m: max(sorted(s), key=lambda e: s[e]) for m, s in scores.items()}
    return best, "; ".join(f"{m}: " + ", ".join(f"{e} {a:.1f}%" for e, a in sorted(s.items())) + f" -> {best[m]}"
                           for m, s in scores.items())
