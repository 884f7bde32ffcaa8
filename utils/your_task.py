"""A learngene applied to a user's own learning task ("from open-world to your learning task"): a small labelled
image folder read as any folder dataset is (utils/sources.image_folder), the individual model built from the
learngene and trained on it exactly as on the paper's target tasks (N-way instead of 5-way), scratch trained
beside it on the same new-layer initialisation and batches, the trained models saved with their class names, and
new images labelled with one of them."""
from pathlib import Path

import numpy as np
import torch

from utils import learngene, recommend, report, sources
from utils.cli import UserError, require
from utils.engine import DeviceData, normalize
from utils.fewshot import Protocol, fit, prepare
from utils.files import torch_load
from utils.models import IndividualNet
from utils.runstore import RunKey

MODEL_FORMAT = "learngene-task-model-v1"
# what a model for your task inherits: the learngene's blocks behind new front layers (the paper's), or every conv
# block from the source (the lightweight model of the inherit study); scratch, the paired baseline, beside either
INHERITING = recommend.CANDIDATES


def read_task(path, image_size, device, seed=0, test_fraction=None):
    """The folder's classes and its train and test images at the learngene's size, on the device."""
    source = sources.image_folder(path, seed, test_fraction)
    data = {}
    for split in sources.SPLITS:
        images = source.load(split, np.arange(len(source.labels[split])), image_size)
        data[split] = DeviceData.from_numpy(images, source.labels[split], device)
    return source, data


def tuned_lambda(learngene_path):
    """The EWC strength the learngene's own pipeline run chose on its validation tasks (<work>/tune-ewc beside
    <work>/collective/learngene.pt), and a line saying so; (None, reason) where there is no such run."""
    tune = Path(learngene_path).resolve().parent.parent / "tune-ewc"
    grid = [d.name.removeprefix("lambda-") for d in sorted(tune.glob("lambda-*")) if (d / "results.csv").is_file()]
    if not grid:
        return None, f"no pipeline tuning beside the learngene ({tune} holds no lambda-*/results.csv)"
    lam, by_lambda = report.best_lambda(tune, grid)
    return float(lam), f"chosen by the learngene's pipeline run on its validation tasks ({by_lambda})"


def train(method, inputs, data, num_classes, settings, device, seed):
    """One model of `method` on the task: (model, curve, diverged, accuracy on each class's test images), curve as
    fewshot.result_row takes it. Every
    method draws its new layers and its batches from the same seed, so its difference from scratch is what it
    inherits. inputs: a methods.Inputs (the collective checkpoint in it for learngene-full)."""
    key = RunKey(method, 0, 0, seed)
    model, _, ewc = prepare(key, inputs, data["train"], settings, device, num_classes)
    curve, diverged, class_acc = fit(model, ewc, key, data["train"], data["test"], settings, device, Protocol())
    return model, curve, diverged, class_acc


def model_record(model, method, classes, art, accuracy, provenance):
    """What a trained model's file holds: plain tensors and containers, loadable with weights_only=True."""
    return {"format": MODEL_FORMAT, "method": method, "classes": list(classes), "image_size": art["image_size"],
            "blocks": [list(b) for b in model.blocks_spec], "learngene_blocks": [list(b) for b in art["blocks"]],
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "test_accuracy": accuracy, "provenance": provenance}


def load_model(path):
    """A model written by your_task.py, rebuilt; a foreign or damaged file is one line."""
    record = torch_load(path, "task model")
    require(isinstance(record, dict) and record.get("format") == MODEL_FORMAT,
            f"{path} is not a model written by individual-model/your_task.py ({MODEL_FORMAT})")
    classes = record.get("classes")
    require(isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes), f"{path} is a damaged task model (its classes: not two or more "
            f"distinct names)")
    require(learngene.STORED_IMAGE_SIZE.holds(record.get("image_size")), f"{path} is a damaged task model (its "
            f"image_size {record.get('image_size')!r:.40})")
    try:
        model = IndividualNet(record["learngene_blocks"], record["image_size"], len(record["classes"]))
        model.load_state_dict(record["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is an incomplete task model ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return model.eval(), record


def image_files(folder):
    """Every image file under `folder`, in name order (hidden files skipped; others refused as not images)."""
    folder = Path(folder)
    require(folder.is_dir(), f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    odd = [p for p in files if p.suffix.lower() not in sources.IMAGE_SUFFIXES]
    require(not odd, f"{odd[0] if odd else folder} is not an image file ({', '.join(sources.IMAGE_SUFFIXES)})")
    require(files, f"{folder} holds no images")
    return files


def true_classes(files, folder, classes):
    """The class of each file of a labelled folder (<class>/<image>), each class being one the model knows."""
    truth = [Path(f).relative_to(folder).parts[0] for f in files]
    unknown = sorted(set(truth) - set(classes))
    require(all(len(Path(f).relative_to(folder).parts) > 1 for f in files),
            f"{folder} holds images outside class folders: a labelled folder is <class>/<image>")
    require(not unknown, f"{folder} has class folder(s) {', '.join(unknown[:3])} that the model does not know "
            f"(its classes: {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
    return truth


@torch.no_grad()
def predict(model, record, files, device, batch_size=256):
    """(class name, probability) of every file, the model in eval mode, images read as its training images were."""
    model = model.to(device)
    out = []
    for start in range(0, len(files), batch_size):
        images = np.stack([sources.read_image(f) for f in files[start:start + batch_size]])
        x = torch.from_numpy(sources.resize(images, record["image_size"])).to(device).permute(0, 3, 1, 2)
        probs = torch.softmax(model(normalize(x.contiguous())).float(), dim=1)
        p, y = probs.max(dim=1)
        out += [(record["classes"][int(c)], float(q)) for c, q in zip(y.cpu(), p.cpu())]
    return out
