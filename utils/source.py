"""The source measured: the collective model's accuracy on held-out images of the continual classes.

A split made with --heldout_per_class keeps some images of every continual class out of every continual task
(Split.heldout). After training, every task's checkpoint is evaluated on every task's held-out images: the
continual-learning accuracy matrix R[i][j] = accuracy (%) of the model after task i on task j's held-out images.
Every task labels its 5 classes 0..4 on the shared head, so a task's images are read as a 5-way question, the
argmax over outputs 0..4 (chance 20%). From R, as in GEM (Lopez-Paz & Ranzato, 2017), at a task T: the average
accuracy over tasks 0..T, R[T][j] averaged; backward transfer, the mean of R[T][j] - R[j][j] over j < T
(negative: forgetting); and the just-learned accuracy, the mean of the diagonal R[j][j], j <= T. Columns j > i
(tasks not yet trained) are kept so the figure shows where each task starts.

Because every task reuses outputs 0..4 for new classes, the head of a later model answers an earlier task with
the later task's mapping: off the diagonal the matrix measures the head's interference as much as what the
features still know. The features are measured apart, at the extraction task: a nearest-class-mean classifier
on the frozen conv features (cosine; each class's mean over the task's training images, each held-out image
given the nearest mean), for the collective model, a randomly initialised network of the same widths (the
floor) and, in utils/joint.py, the joint source.

A measurement keeps what it has finished in the run's heldout_progress.json (Progress), so an interrupted one goes
on where it stopped: at the cpu preset's scale on 2 cores the collective model's take about 23 minutes."""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils import heatmaps, readback, stats, study_figures
from utils.cli import INDEX, PERCENT, require
from utils.engine import DeviceData, autocast, normalize
from utils.fewshot import conv_features
from utils.files import torch_load, write_csv, write_json
from utils.methods import collective_net
from utils.repro import derived_seed

PROGRESS = "heldout_progress.json"
OUTPUTS = ("heldout_accuracy.csv", "heldout_summary.json", "heldout_matrix.png", PROGRESS)


def weights_digest(model):
    """The sha256 of a model's parameters and buffers: what a stored measurement of it is keyed by."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Progress:
    """The measurements of one run finished so far, {key: value}, kept in <folder>/heldout_progress.json after each
    one so that a rerun of an interrupted measurement computes only what is missing; removed once the measurement's
    outputs are written. Keys name what was read (the model by weights_digest, the task, the precision), so the
    values of a model trained again are not reused."""

    def __init__(self, folder):
        self.path = Path(folder) / PROGRESS
        self.values = {}
        if self.path.is_file():
            try:
                self.values = json.loads(self.path.read_text())
            except ValueError:  # not the file this class writes (atomically): measure again from the start
                print(f"warning: {self.path} is unreadable; measuring from the start")

    def value(self, key, compute):
        if key not in self.values:
            self.values[key] = compute()
            write_json(self.path, self.values)
        return self.values[key]

    def close(self):
        self.path.unlink(missing_ok=True)


def heldout_data(split, tasks, device):
    """Each task's held-out images on the device, or None for a split without them."""
    if "heldout" not in split.manifest:
        return None
    return [DeviceData.from_numpy(*split.heldout(t), device) for t in tasks]


def accuracy_matrix(run_dir, split, num_tasks, device, precision, progress):
    """R[i][j] in % for the checkpoints after tasks 0..num_tasks-1 of a collective run, or None without held-out
    images."""
    data = heldout_data(split, range(num_tasks), device)
    if data is None:
        return None
    matrix = np.zeros((num_tasks, num_tasks))
    for i in tqdm(range(num_tasks), desc="held-out accuracy matrix", unit="checkpoint", leave=False):
        ck = torch_load(Path(run_dir) / "checkpoints" / f"task_{i:03d}.pt", "collective checkpoint")
        model = collective_net(ck).to(device)
        matrix[i] = progress.value(f"matrix row {i} in {precision}, weights {weights_digest(model)}", lambda: [
            100 * choice_accuracy(model, d, torch.arange(5, device=device), precision)[0] for d in data])
    return matrix


@torch.no_grad()
def choice_accuracy(model, data, outputs, precision, batch_size=256):
    """In eval mode: the accuracy of the argmax over the given outputs (label y is outputs[y]), and of the argmax
    over all outputs, as fractions."""
    model.eval()
    local = overall = 0
    for start in range(0, len(data), batch_size):
        with autocast(data.images.device, precision):
            logits = model(normalize(data.images[start:start + batch_size])).float()
        y = data.labels[start:start + batch_size]
        local += (logits[:, outputs].argmax(1) == y).sum().item()
        overall += (logits.argmax(1) == outputs[y]).sum().item()
    return local / max(len(data), 1), overall / max(len(data), 1)


def feature_data(split, tasks, device):
    """Each task's (training images, held-out images) on the device, read once for every model measured on them."""
    return [(DeviceData.from_numpy(*split.continual(t), device), DeviceData.from_numpy(*split.heldout(t), device))
            for t in tasks]


def feature_accuracy(model, data, progress):
    """Per task of `data` (feature_data), in %: nearest class mean (cosine) on the model's frozen conv features, the
    class means from the task's training images, read on its held-out images."""
    digest = weights_digest(model)
    return [progress.value(f"nearest class mean on task {j}, weights {digest}", lambda: nearest_mean(model, *d))
            for j, d in enumerate(tqdm(data, desc="nearest class mean", unit="task", leave=False))]


def nearest_mean(model, train, held):
    f = F.normalize(conv_features(model, train.images).double(), dim=1)
    means = F.normalize(torch.stack([f[train.labels == c].mean(0) for c in range(int(train.labels.max()) + 1)]), dim=1)
    g = F.normalize(conv_features(model, held.images).double(), dim=1)
    return 100 * ((g @ means.T).argmax(1) == held.labels).double().mean().item()


def features_summary(run_dir, split, extract_task, device, seed, progress):
    """The nearest-class-mean accuracy over tasks 0..extract_task of the collective model after extract_task and of
    a randomly initialised network of its widths."""
    ck = torch_load(Path(run_dir) / "checkpoints" / f"task_{extract_task:03d}.pt", "collective checkpoint")
    data = feature_data(split, range(extract_task + 1), device)
    trained = feature_accuracy(collective_net(ck).to(device), data, progress)
    torch.manual_seed(derived_seed(seed, "random-features"))
    floor = feature_accuracy(collective_net(ck, trained=False).to(device), data, progress)
    return {"after_task": extract_task, "nearest_mean_accuracy": float(np.mean(trained)),
            "random_network_nearest_mean_accuracy": float(np.mean(floor)), "per_task": trained,
            "random_network_per_task": floor}


def describe_features(f):
    return (f"its conv features, nearest class mean over tasks 0-{f['after_task']}: {f['nearest_mean_accuracy']:.1f}% "
            f"(a random network of the same widths: {f['random_network_nearest_mean_accuracy']:.1f}%)")


def feature_series(held, joint=None):
    """{label: nearest-class-mean accuracy (%) per base task} through the frozen features of the random network of
    the collective model's widths (the floor), the collective model at the extraction task and, where given (its
    heldout_summary.json), the joint source: the same tasks' held-out images, read by each."""
    f = held["features"]
    series = {"random network of the same widths": f["random_network_per_task"],
              f"collective model after task {f['after_task']} (the learngene's source)": f["per_task"]}
    if joint is not None:
        require(len(joint["nearest_mean_per_task"]) == len(f["per_task"]),
                "the joint source was measured on other tasks than the collective model")
        series["joint source (same network, images and budget)"] = joint["nearest_mean_per_task"]
    return series


def paired_gaps(series):
    """Each source against the one before it in `series`, paired per task: [(label, mean, 95% half-width)] in points
    (Student t over the tasks: how consistently one model's features beat the other's across tasks, for these two
    trained models; not an interval over training runs)."""
    names = list(series)
    return [(f"{b.split(' (')[0]} minus {a.split(' (')[0]}", *stats.mean_ci95(np.subtract(series[b], series[a])))
            for a, b in zip(names, names[1:])]


def describe_gaps(series):
    """paired_gaps(series) in words."""
    tasks = len(next(iter(series.values())))
    return "; ".join(f"{label}: {mean:+.1f} points (95% interval ±{ci:.1f}, paired over {tasks} tasks)"
                     for label, mean, ci in paired_gaps(series))


def draw_features(path, held, joint, title, prov):
    series = feature_series(held, joint)
    gaps = describe_gaps(series)
    study_figures.source_features(path, series, title, prov, caption=[
        f"Each base task's held-out images ({held['heldout_images_per_class']} per class), read through each "
        f"model's frozen conv features by a nearest-class-mean classifier (class means from the task's training "
        f"images). " + gaps[:1].upper() + gaps[1:] + "."])  # not str.capitalize, which lowers the rest


def summary(matrix, task):
    """GEM's average accuracy and backward transfer at `task`, and the mean just-learned accuracy, in % / points."""
    row, diagonal = matrix[task, :task + 1], np.diag(matrix)[:task + 1]
    return {"after_task": int(task), "average_accuracy": float(row.mean()),
            "backward_transfer": float((row[:-1] - diagonal[:-1]).mean()) if task else 0.0,
            "just_learned_accuracy": float(diagonal.mean()), "tasks": int(task + 1)}


def describe(s):
    return (f"after task {s['after_task']}: {s['average_accuracy']:.1f}% on the held-out images of tasks "
            f"0-{s['after_task']} (each task's accuracy right after learning it: {s['just_learned_accuracy']:.1f}%; "
            f"backward transfer {s['backward_transfer']:+.1f} points); chance 20%")


def read_matrix(run_dir):
    """The matrix of a run's heldout_accuracy.csv (to draw it again), or None if the run has none; every cell
    (after task i, task j) once, each an accuracy, or the file is refused in one line."""
    path = Path(run_dir) / "heldout_accuracy.csv"
    if not path.is_file():
        return None
    rows = readback.read_table(path, {"after_task": INDEX, "task": INDEX, "accuracy": PERCENT}, "held-out matrix")
    n = max(r["after_task"] for r in rows) + 1
    cells = sorted((r["after_task"], r["task"]) for r in rows)
    require(cells == [(i, j) for i in range(n) for j in range(n)], f"{path} is a damaged held-out matrix (not "
            f"every cell of after_task x task 0..{n - 1} once)")
    matrix = np.zeros((n, n))
    for r in rows:
        matrix[r["after_task"], r["task"]] = r["accuracy"]
    return matrix


def draw(path, matrix, at, title, prov):
    caption = [describe(at["extraction"]) + " (extraction task)"]
    if at["last"]["after_task"] != at["extraction"]["after_task"]:
        caption.append(describe(at["last"]))
    if "features" in at:
        caption.append("after task {}: {}".format(at["features"]["after_task"], describe_features(at["features"])))
    heatmaps.accuracy_matrix(path, matrix, title, provenance=prov, caption=caption)


def measure(run_dir, split, num_tasks, extract_task, device, precision, seed, title, prov):
    """The collective run's source measurements (written by write), or None for a split without held-out images."""
    progress = Progress(run_dir)
    matrix = accuracy_matrix(run_dir, split, num_tasks, device, precision, progress)
    if matrix is None:
        return None
    features = features_summary(run_dir, split, extract_task, device, seed, progress)
    at = write(run_dir, matrix, features, split.manifest["heldout_per_class"], title, prov)
    progress.close()
    return at


def write(run_dir, matrix, features, images_per_class, title, prov):
    """heldout_accuracy.csv (one row per checkpoint and task), heldout_summary.json (at the extraction task and
    after the last, and the features') and heldout_matrix.png."""
    run_dir = Path(run_dir)
    n = len(matrix)
    write_csv(run_dir / "heldout_accuracy.csv", ["after_task", "task", "accuracy"],
              [[i, j, round(float(matrix[i, j]), 4)] for i in range(n) for j in range(n)])
    at = {"extraction": summary(matrix, features["after_task"]), "last": summary(matrix, n - 1),
          "features": features, "heldout_images_per_class": images_per_class}
    draw(run_dir / "heldout_matrix.png", matrix, at, title, prov)
    write_json(run_dir / "heldout_summary.json", at)  # last: the pipeline reads it as the collective stage's end
    print("held-out accuracy of the collective model " + describe(at["extraction"]) + "; " + describe_features(features))
    return at


def read_summary(run_dir):
    """A collective run's heldout_summary.json (this module's write) or the joint source's (utils/joint.py), checked
    field by field; None where the run has none (a split without held-out images)."""
    path = Path(run_dir) / "heldout_summary.json"
    if not path.is_file():
        return None
    held = readback.read_json(path, {}, "held-out summary")
    joint = "task_local_accuracy" in held
    p = readback.problem(held, readback.JOINT_SUMMARY if joint else readback.COLLECTIVE_SUMMARY)
    if p is None:  # each per-task list has one value per task measured, 0..after_task
        at = held if joint else held.get("features", {})
        lists = ("per_task_local_accuracy", "nearest_mean_per_task") if joint else ("per_task", "random_network_per_task")
        p = next((f"its {name} does not have {at['after_task'] + 1} values (tasks 0-{at['after_task']})"
                  for name in lists if name in at and len(at[name]) != at["after_task"] + 1), None)
    require(p is None, f"{path} is a damaged held-out summary ({p})")
    return held


def joint_heldout(model, split, tasks, class_index, device, precision, progress):
    """A jointly trained model (one output per base class) on each task's held-out images: the task-local accuracy,
    the argmax over that task's 5 classes' outputs (the question the collective model is asked), and the argmax
    over all base classes (its own, harder question), both in %."""
    data = heldout_data(split, tasks, device)
    if data is None:
        return None
    digest = weights_digest(model)
    local, overall = [], []
    for t, d in zip(tasks, data):
        outputs = torch.tensor([class_index[c] for c in split.manifest["continual"][t]["classes"]], device=device)
        local_acc, overall_acc = progress.value(f"joint head on task {t} in {precision}, weights {digest}",
                                                lambda: choice_accuracy(model, d, outputs, precision))
        local.append(100 * local_acc)
        overall.append(100 * overall_acc)
    return {"task_local_accuracy": float(np.mean(local)), "all_classes_accuracy": float(np.mean(overall)),
            "per_task_local_accuracy": local, "classes": len(class_index)}


def source_lines(work):
    """The source's held-out accuracy, for the pipeline results' header: the collective model's (this module's)
    and, where the joint source was trained, its own (utils/joint.py)."""
    held = read_summary(work / "collective")
    if held is None:
        return ("The collective model was not measured on held-out images (its split was made without "
                "--heldout_per_class).\n\n")
    text = (f"Source on held-out images of its classes ({held['heldout_images_per_class']} per class, never trained "
            f"on): collective model {describe(held['extraction'])}"
            + (f"; {describe_features(held['features'])}" if "features" in held else "") + ".")
    j = read_summary(work / "joint")
    if j is not None:
        text += (f" Joint source (same network, images and budget, all base classes at once): "
                 f"{j['task_local_accuracy']:.1f}% task-local (5-way, as the collective model is read), "
                 f"{j['all_classes_accuracy']:.1f}% over its {j['classes']} classes"
                 + (f"; its conv features, nearest class mean: {j['nearest_mean_accuracy']:.1f}%"
                    if "nearest_mean_accuracy" in j else "") + ".")
    if "features" in held:
        series = feature_series(held, j if j is not None and "nearest_mean_per_task" in j else None)
        text += " Features compared per base task (nearest class mean): " + describe_gaps(series) + "."
    return text + "\n\n"


def draw_source_features(work, study, prov, title):
    """<work>/<study>/features.png: the sources the study's controls are cut from, read through their features on
    the base tasks' held-out images; nothing for a split without held-out images."""
    held, joint = read_summary(work / "collective"), read_summary(work / "joint")
    if held is not None and "features" in held and joint is not None and "nearest_mean_per_task" in joint:
        draw_features(work / study / "features.png", held, joint, f"{title}: the sources' features on held-out "
                      f"images of their base classes", prov)
