"""Continual (source) and target splits: build them from a `Source`, write them as a split directory,
and load a task's images from one.

A split directory holds `manifest.json` (every task's classes and the source ids of its images) and
`images.npy`, the uint8 [N, H, W, 3] images of every id the manifest uses, once each, in the order of
`manifest["images"]["ids"]`. Training code memory-maps that one array and gathers a task from it.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import sources
from utils.cli import UserError, require
from utils.files import foreign_files, replace_dir, file_digest, write_json

FORMAT = "learngene-split-v1"
SPLIT_FILES = Path(__file__).resolve().parent / "splits"

# The datasets this project knows; the makers differ only by these settings.
DATASETS = {
    "cifar100": dict(split_file="cifar100_split.json", family="cifar", images_per_class=600, num_target_tasks=5),
    "imagenet100": dict(split_file="imagenet100_split.json", family="imagenet", images_per_class=400,
                        num_target_tasks=10),
    # The offline stand-in: 500 train + 50 val(=test) images per class, so up to 550 per base class.
    "tiny-imagenet-100": dict(split_file="tiny_imagenet100_split.json", family="imagenet", images_per_class=550,
                              num_target_tasks=10),
    # any image folder (utils/sources.image_folder): its class split is given (--class_split) or drawn, and a
    # continual task takes as many images per class as the smallest base class has unless told
    "folder": dict(split_file=None, family="imagenet", images_per_class=None, num_target_tasks=10),
}
DRAWN_PROPORTIONS = {"base": 0.64, "open_world": 0.16, "novel": 0.20}  # the paper's 64/16/20 of CIFAR-100
WAYS = 5


def class_split(dataset):
    with open(SPLIT_FILES / DATASETS[dataset]["split_file"]) as f:
        d = json.load(f)
    return {k: list(d[k]) for k in ("base", "open_world", "novel")}


def read_class_split(path):
    """A class split file in the format of utils/splits/*.json: base, open_world and novel lists of class names,
    disjoint (the names are checked against the dataset when the manifest is built)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--class_split {path}: not a readable JSON class split ({type(e).__name__}: {e})")
    pools = ("base", "open_world", "novel")
    require(isinstance(d, dict) and all(isinstance(d.get(k), list) and all(isinstance(c, str) for c in d[k])
                                        for k in pools),
            f"--class_split {path}: expected an object with base, open_world and novel lists of class names")
    names = [c for k in pools for c in d[k]]
    require(len(names) == len(set(names)), f"--class_split {path}: a class is in more than one pool, or twice")
    return {k: list(d[k]) for k in pools}


def draw_class_split(classes, seed):
    """Base, open-world and novel classes drawn in the paper's 64/16/20 proportions by a seeded permutation of the
    sorted class names (the way utils/splits/tiny_imagenet100_split.json was made)."""
    perm = [str(c) for c in _rng(seed, "class split").permutation(sorted(classes))]
    n_novel, n_open = round(DRAWN_PROPORTIONS["novel"] * len(perm)), round(DRAWN_PROPORTIONS["open_world"] * len(perm))
    split = {"base": perm[:len(perm) - n_novel - n_open], "open_world": perm[len(perm) - n_novel - n_open:len(perm) - n_novel],
             "novel": perm[len(perm) - n_novel:]}
    require(min(len(v) for v in split.values()) >= WAYS, f"{len(perm)} classes drawn in 64/16/20 proportions leave "
            f"fewer than {WAYS} classes in a pool; give the split with --class_split")
    return split


def _rng(seed, section):
    # one independent stream per section, so e.g. changing --num_tasks leaves the target tasks as they were
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(section.encode()).digest()[:4], "little")])


def _ids(split, indices):
    return [f"{split}:{int(i)}" for i in sorted(indices)]


def build_manifest(source, classes, *, num_tasks, images_per_class, num_target_tasks, shots, seed,
                   continual_pool="base", heldout_per_class=0):
    """Choose every task's classes and images. Pure: the same arguments give the same manifest. With
    heldout_per_class > 0, that many images of every continual class (its test images first, in a seeded order)
    are kept out of every continual task, to measure the source model on images it never trained on."""
    known = set(source.classes)
    for pool, names in classes.items():
        unknown = [c for c in names if c not in known]
        require(not unknown, f"unknown class name(s) in the {pool} pool: {', '.join(unknown[:5])} "
                f"(not among the {len(known)} classes of {source.dataset})")
    for name, n in [("num_tasks", num_tasks), ("num_imgs_per_cat_train", images_per_class),
                    ("num_target_tasks", num_target_tasks)] + [("shots", k) for k in shots]:
        require(isinstance(n, int) and n > 0, f"--{name} must be a positive integer, got {n}")
    require(len(set(shots)) == len(shots), f"--shots has repeats: {shots}")

    pool = classes["base"] + (classes["open_world"] if continual_pool == "base+open_world" else [])
    heldout = {}  # class -> its held-out images, as the signed indices below
    if heldout_per_class:
        rng = _rng(seed, "heldout")
        for c in pool:
            ordered = np.concatenate([-1 - rng.permutation(source.indices_of("test", c)),
                                      rng.permutation(source.indices_of("train", c))])
            require(heldout_per_class < len(ordered), f"--heldout_per_class {heldout_per_class} leaves no image of class "
                    f"{c} ({len(ordered)} images) for the continual tasks")
            heldout[c] = ordered[:heldout_per_class]
    rng = _rng(seed, "continual")
    continual = []
    for _ in range(num_tasks):
        task_classes = [str(c) for c in rng.choice(pool, WAYS, replace=False)]
        samples = {}
        for c in task_classes:
            # the class's train images as indices i >= 0 and its test images as -1 - i < 0, in one array, so a
            # single permutation draws from both (the released pool: all 600 CIFAR images of a class)
            available = np.concatenate([source.indices_of("train", c), -1 - source.indices_of("test", c)])
            if heldout:
                available = available[~np.isin(available, heldout[c])]
            require(images_per_class <= len(available), f"--num_imgs_per_cat_train {images_per_class} is more than "
                    f"the {len(available)} images class {c} has")
            chosen = rng.permutation(available)[:images_per_class]
            samples[c] = _ids("train", chosen[chosen >= 0]) + _ids("test", -1 - chosen[chosen < 0])
        continual.append({"classes": task_classes, "samples": samples})

    def few_shot_tasks(section, pool):
        rng = _rng(seed, section)
        tasks = {str(k): [] for k in shots}
        for _ in range(num_target_tasks):
            task_classes = [str(c) for c in rng.choice(pool, WAYS, replace=False)]
            # one ordering of each class's train images; the K-shot set is its first K, so the 10 shots
            # are a subset of the 20 and shot counts compare on the same classes
            order = {c: rng.permutation(source.indices_of("train", c)) for c in task_classes}
            for k in shots:
                for c in task_classes:
                    require(k <= len(order[c]), f"{k} shots is more than the {len(order[c])} training images "
                            f"class {c} has")
                tasks[str(k)].append({
                    "classes": task_classes,
                    "train": {c: _ids("train", order[c][:k]) for c in task_classes},
                    "test": {c: _ids("test", source.indices_of("test", c)) for c in task_classes},
                })
        return tasks

    require(len(classes["novel"]) >= WAYS and len(classes["open_world"]) >= WAYS, "need at least 5 novel and open-world classes")
    held = {"heldout_per_class": heldout_per_class,
            "heldout": {c: _ids("train", h[h >= 0]) + _ids("test", -1 - h[h < 0]) for c, h in heldout.items()}
            } if heldout else {}  # absent when off, so such splits keep the bytes (and hashes) they had
    return {
        "format": FORMAT,
        "dataset": source.dataset,
        "seed": seed,
        "ways": WAYS,
        "shots": list(shots),
        "continual_pool": continual_pool,
        "classes": classes,
        "continual": continual,
        "target": few_shot_tasks("target", classes["novel"]),
        "validation": few_shot_tasks("validation", classes["open_world"]),
        **held,
    }


def used_ids(manifest):
    ids = set(i for v in manifest.get("heldout", {}).values() for i in v)
    for task in manifest["continual"]:
        for v in task["samples"].values():
            ids.update(v)
    for section in ("target", "validation"):
        for tasks in manifest[section].values():
            for task in tasks:
                for part in ("train", "test"):
                    for v in task[part].values():
                        ids.update(v)
    split_rank = {s: i for i, s in enumerate(sources.SPLITS)}
    return sorted(ids, key=lambda s: (split_rank[s.split(":")[0]], int(s.split(":")[1])))


SPLIT_OUTPUTS = ("manifest.json", "images.npy", "imagefolder/*")  # all a split maker writes in its --out


def write_split(out, manifest, source, size, *, overwrite=False, export_imagefolder=False, chunk=2048):
    """Gather the images the manifest uses and write the split directory atomically."""
    out = Path(out)
    if out.exists():
        require(out.is_dir(), f"--out {out} exists and is not a directory")
        if (out / "manifest.json").exists():
            require(overwrite, f"{out} already holds a split; pass --overwrite to replace it")
            foreign = foreign_files(out, SPLIT_OUTPUTS)
            require(not foreign, f"{out} holds files a split maker did not write ({', '.join(foreign[:3])}); "
                    f"--overwrite replaces a split and nothing else: move them or choose another --out")
        else:
            require(not any(out.iterdir()), f"--out {out} is a non-empty folder that is not a split; refusing to touch it")
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = used_ids(manifest)
    images = np.empty((len(ids), size, size, 3), dtype=np.uint8)
    for split in sources.SPLITS:
        rows = [r for r, i in enumerate(ids) if i.startswith(split + ":")]
        indices = [int(ids[r].split(":")[1]) for r in rows]
        for start in tqdm(range(0, len(rows), chunk), desc=f"{source.dataset} {split} images", unit="chunk",
                          disable=not rows, leave=False):
            images[rows[start:start + chunk]] = source.load(split, indices[start:start + chunk], size)

    remove_interrupted_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        np.save(tmp / "images.npy", images)
        manifest = dict(manifest)
        manifest["image_size"] = size
        manifest["source"] = dict(manifest["source"], files=source.files)
        manifest["images"] = {"file": "images.npy", "shape": list(images.shape),
                              "sha256": file_digest(tmp / "images.npy"), "ids": ids}
        write_json(tmp / "manifest.json", manifest)
        if export_imagefolder:
            _export_imagefolder(tmp / "imagefolder", manifest, images)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def remove_interrupted_partials(out):
    """A split maker stopped by SIGKILL or a power cut leaves its temporary folder, .<out>.partial-<pid>, beside
    --out (449 MB at the default size). Remove those whose process is gone and that hold only what a split
    maker writes; a folder of a maker still running, or holding anything else, is left alone."""
    for partial in sorted(out.parent.glob(f".{out.name}.partial-*")):
        pid = partial.name.rsplit("-", 1)[1]
        if not (pid.isdigit() and partial.is_dir()) or _process_alive(int(pid)) or foreign_files(partial, SPLIT_OUTPUTS):
            continue
        size = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
        shutil.rmtree(partial)
        print(f"removed {partial}, the temporary folder of an interrupted split maker ({size / 1e6:.0f} MB)")


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _export_imagefolder(root, manifest, images):
    """For inspection only: every task's images as PNG files in class folders."""
    from PIL import Image
    row = {i: r for r, i in enumerate(manifest["images"]["ids"])}
    jobs = [(f"continual/task{t:02d}/train", task["samples"]) for t, task in enumerate(manifest["continual"])]
    for section in ("target", "validation"):
        for k, tasks in manifest[section].items():
            for t, task in enumerate(tasks):
                jobs += [(f"{section}/{k}shot/task{t:02d}/{part}", task[part]) for part in ("train", "test")]
    for folder, per_class in tqdm(jobs, desc="imagefolder", leave=False):
        for c, ids in per_class.items():
            d = root / folder / c
            d.mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray(images[row[i]]).save(d / f"{i.replace(':', '_')}.png")


# ---------------------------------------------------------------- reading a split directory
def check_manifest(m, where):
    """A hand-edited or truncated manifest is refused when the split is opened, with what is wrong, instead of
    a KeyError halfway through training: every key a reader uses, the images' shape, and every sample id."""
    def bad(what):
        raise UserError(f"{where} is malformed ({what}); make the split again with its maker")
    try:
        images, size = m["images"], m["image_size"]
        ids = set(images["ids"])
        if not (isinstance(images["file"], str) and Path(images["file"]).name == images["file"]):
            bad(f"images file {images['file']!r} is not a file name in the split folder")
        if images["shape"] != [len(images["ids"]), size, size, 3]:
            bad(f"images shape {images['shape']} is not [{len(images['ids'])} ids, {size}, {size}, 3]")
        tasks = [(f"continual task {t}", task, ("samples",)) for t, task in enumerate(m["continual"])]
        for section in ("target", "validation"):
            tasks += [(f"{section} {k}-shot task {t}", task, ("train", "test"))
                      for k, section_tasks in m[section].items() for t, task in enumerate(section_tasks)]
        if "heldout" in m:
            tasks.append(("held-out images", {"classes": list(m["heldout"]), "heldout": m["heldout"]}, ("heldout",)))
        ways = m.get("ways", WAYS)
        for name, task, parts in tasks:
            if name != "held-out images" and (len(task["classes"]) != ways or len(set(task["classes"])) != ways):
                bad(f"{name}: {len(task['classes'])} classes, not {ways} distinct ones")
            for part in parts:
                if list(task[part]) != list(task["classes"]):
                    bad(f"{name}: its {part} classes are not its classes")
                unknown = [i for c in task["classes"] for i in task[part][c] if i not in ids]
                if unknown:
                    bad(f"{name}: sample id {unknown[0]!r} is not among the split's images")
                if part != "heldout" and not all(task[part][c] for c in task["classes"]):
                    bad(f"{name}: a class without {part} images")
            if "test" in task:  # what a few-shot task trains on is never what it is tested on
                shared = {i for c in task["classes"] for i in task["train"][c]} & \
                    {i for c in task["classes"] for i in task["test"][c]}
                if shared:
                    bad(f"{name}: sample {sorted(shared)[0]!r} is both a training and a test image")
        for section in ("target", "validation"):
            for k, section_tasks in m[section].items():
                for t, task in enumerate(section_tasks):
                    if any(len(task["train"][c]) != int(k) for c in task["classes"]):
                        bad(f"{section} {k}-shot task {t}: a class without exactly {k} training images")
        shots = m["shots"]
        if not (isinstance(shots, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in shots)
                and sorted(map(str, shots)) == sorted(m["target"]) == sorted(m["validation"])):
            bad(f"shots {shots!r} are not the shot counts of its target and validation tasks")
        if "heldout" in m:
            if not isinstance(m["heldout"], dict) or not m["heldout"]:
                bad("held-out images: not a non-empty {class: image ids}")
            missing = [c for task in m["continual"] for c in task["classes"] if c not in m["heldout"]]
            if missing:
                bad(f"held-out images: continual class {missing[0]!r} has none")
        if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= 4096):
            bad(f"image size {size!r}")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        bad(f"missing or wrong-typed entry {e}")


class Split:
    def __init__(self, path, family=None):
        path = Path(path)
        manifest_path = path / "manifest.json"
        require(manifest_path.is_file(), f"{path} is not a split directory (no manifest.json); make one with "
                f"utils/data_cifar_mk.py or utils/data_imagenet_mk.py")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{manifest_path} is not valid JSON ({e})")
        m = self.manifest
        require(isinstance(m, dict) and m.get("format") == FORMAT, f"{manifest_path} is not a {FORMAT} manifest")
        require(isinstance(m.get("dataset"), str) and m["dataset"] in DATASETS,
                f"{manifest_path} names an unknown dataset {m.get('dataset')!r}")
        check_manifest(m, manifest_path)
        if family is not None:
            require(DATASETS[m["dataset"]]["family"] == family,
                    f"{path} is a {m['dataset']} split; this script is for the {family} family "
                    f"({', '.join(d for d, c in DATASETS.items() if c['family'] == family)})")
        self.path, self.dataset, self.image_size = path, m["dataset"], m["image_size"]
        self.hash = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
        try:
            self.images = np.load(path / m["images"]["file"], mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the images of split {path}: {e}")
        require(list(self.images.shape) == m["images"]["shape"],
                f"{path}/images.npy has shape {list(self.images.shape)}, the manifest says {m['images']['shape']}")
        # flipped bytes keep the shape: check the content too (about 1 s for a 450 MB paper-size split)
        require(file_digest(path / m["images"]["file"]) == m["images"].get("sha256"),
                f"{path}/images.npy does not match the sha256 in its manifest: the file is damaged or was changed; "
                f"make the split again")
        self._row = {i: r for r, i in enumerate(m["images"]["ids"])}

    @property
    def num_tasks(self):
        return len(self.manifest["continual"])

    def _gather(self, classes, per_class):
        rows = [self._row[i] for c in classes for i in per_class[c]]
        labels = [y for y, c in enumerate(classes) for _ in per_class[c]]
        return np.ascontiguousarray(self.images[rows]), np.asarray(labels, dtype=np.int64)

    def continual(self, t):
        task = self.manifest["continual"][t]
        return self._gather(task["classes"], task["samples"])

    def heldout(self, t):
        """(images, task-local labels) of continual task t's classes held out from every continual task, or None
        for a split made without --heldout_per_class."""
        if "heldout" not in self.manifest:
            return None
        return self._gather(self.manifest["continual"][t]["classes"], self.manifest["heldout"])

    def few_shot(self, section, shots, t):
        """(train images, train labels, test images, test labels) of a target or validation task."""
        tasks = self.manifest[section].get(str(shots))
        require(tasks is not None, f"split {self.path} has no {shots}-shot {section} tasks "
                f"(it has {', '.join(self.manifest[section]) or 'none'})")
        task = tasks[t]
        return (*self._gather(task["classes"], task["train"]), *self._gather(task["classes"], task["test"]))

    def num_few_shot(self, section, shots):
        return len(self.manifest[section].get(str(shots), []))
