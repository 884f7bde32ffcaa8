"""Readers for the raw datasets: CIFAR-100 pickles, ImageNet folders, mini-ImageNet csv, Tiny-ImageNet-100 npz.

Every reader returns a `Source`: class names, a label per image in each of its two splits ("train",
"test"), and `load(split, indices)` giving uint8 images [n, H, W, 3]. An image's id everywhere in this
project is "split:index" into these lists, so a split manifest can be audited against the raw files.
"""
import csv
import hashlib
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from utils.cli import UserError, require
from utils.files import file_digest

CIFAR_MD5 = {  # torchvision's and the archive's published checksums
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
SPLITS = ("train", "test")
TINY_SHA256 = {  # sha256 of the jpeg and labels arrays, from ../shared/data/tiny-imagenet-100/README.md
    "train": ("4081fce6e913751acd45ebd547cd07f794717dc8741a30b87727682fe7052d68",
              "ac1fc6f67f41e276cbeebcd46daa93fcb61bfea4800008f7ed155d60f08efe57"),
    "test": ("322bd2e53c30e4df2a50d32be8e8d7b5c9e9a0b8e3817e70002f69456a837fe2",
             "ed8c06d893f443e0d1c6e45e834b32ad0ebe9d565a63fe749638a3d7414bf8ce"),
}


@dataclass
class Source:
    dataset: str
    classes: list                       # class names; label i is classes[i]
    labels: dict                        # split -> int64 array, one label per image
    native_size: int
    loader: Callable                    # (split, indices) -> uint8 [n, H, W, 3] at native_size
    checksums: dict = field(default_factory=dict)
    files: dict = None                  # split -> list of file names, where ids index files on disk

    def indices_of(self, split, class_name):
        return np.flatnonzero(self.labels[split] == self.classes.index(class_name))

    def load(self, split, indices, size):
        images = self.loader(split, np.asarray(indices, dtype=np.int64))
        return resize(images, size)


def resize(images, size):
    """Resize uint8 [n, H, W, 3] to size x size: exact box average for integer shrink factors, else bicubic."""
    n, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images
    if h == w and h % size == 0:
        f = h // size
        pooled = images.reshape(n, size, f, size, f, 3).astype(np.float32).mean(axis=(2, 4))
        return np.clip(np.rint(pooled), 0, 255).astype(np.uint8)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BICUBIC))
    return out


# ---------------------------------------------------------------- CIFAR-100 (python pickles)
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only builtins and numpy arrays: the CIFAR files need no more, and a foreign pickle must not
    be able to run code."""
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),  # protocol-2 bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(path):
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, KeyError, MemoryError, OverflowError) as e:
        raise UserError(f"{path} is not a CIFAR-100 pickle (truncated or foreign: {type(e).__name__}: {e})")
    require(isinstance(obj, dict), f"{path} is not a CIFAR-100 pickle (holds a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar100(root, verify=True, download=False):
    root = Path(root)
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    missing = [n for n in ("train", "test", "meta") if not (folder / n).is_file()]
    if missing and download:
        try:
            from torchvision.datasets import CIFAR100
            CIFAR100(str(root), train=True, download=True)
        except Exception as e:  # any network or archive failure is the user's environment, not a bug
            raise UserError(f"could not download CIFAR-100 into {root}: {type(e).__name__}: {str(e)[:200]}")
        folder = root / "cifar-100-python"
        missing = [n for n in ("train", "test", "meta") if not (folder / n).is_file()]
    require(not missing, f"CIFAR-100 not found: {folder} lacks {', '.join(missing)}. Put the extracted "
            f"cifar-100-python/{{train,test,meta}} from cifar-100-python.tar.gz "
            f"(https://www.cs.toronto.edu/~kriz/cifar.html) under --path, or pass --download when online")
    checksums = {n: file_digest(folder / n, "md5") for n in ("train", "test", "meta")}
    if verify:
        for n, md5 in checksums.items():
            require(md5 == CIFAR_MD5[n], f"checksum mismatch for {folder / n}: md5 {md5}, expected {CIFAR_MD5[n]} "
                    f"(a truncated or modified file; --no-verify skips this check)")
    meta = _read_pickle(folder / "meta")
    require("fine_label_names" in meta, f"{folder / 'meta'} has no fine_label_names: not a CIFAR-100 meta file")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta["fine_label_names"]]
    data, labels = {}, {}
    for split in SPLITS:
        d = _read_pickle(folder / split)
        require("data" in d and "fine_labels" in d, f"{folder / split} lacks data/fine_labels: not a CIFAR-100 pickle")
        x, y = np.asarray(d["data"]), np.asarray(d["fine_labels"], dtype=np.int64)
        require(x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072 and len(x) == len(y),
                f"{folder / split} has data of shape {x.shape} ({x.dtype}) for {len(y)} labels, expected [N, 3072] uint8")
        require(len(y) == 0 or (y.min() >= 0 and y.max() < len(classes)), f"{folder / split} has labels outside 0..{len(classes) - 1}")
        data[split] = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels[split] = y
    return Source("cifar100", classes, labels, 32, lambda split, idx: np.ascontiguousarray(data[split][idx]),
                  checksums={f"{n}.md5": v for n, v in checksums.items()})


# ---------------------------------------------------------------- JPEG helpers
def _decode(raw, where):
    try:
        return _to_rgb(Image.open(io.BytesIO(raw)))
    except Exception as e:  # PIL raises many types for a broken file
        raise UserError(f"cannot decode image {where}: {type(e).__name__}: {e}")


def _to_rgb(img):
    """8-bit RGB. PIL's own conversion clips a high-bit-depth grey image (16-bit PNG, 32-bit integer or float TIFF)
    at 255 instead of scaling it: 16-bit values are scaled by 255/65535, floats in [0, 1] by 255."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255
        elif img.mode != "F" and (img.mode.startswith("I;16") or a.max(initial=0) > 255):
            a = a / 257
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


# ---------------------------------------------------------------- Tiny-ImageNet-100 (offline, npz of JPEGs)
def tiny_imagenet100(root, verify=True):
    root = Path(root)
    files = {"train": root / "train.npz", "test": root / "val.npz"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    require(not missing, f"Tiny-ImageNet-100 not found: missing {', '.join(missing)} "
            f"(expected the folder ../shared/data/tiny-imagenet-100 with train.npz and val.npz)")
    arrays = {}
    for split, path in files.items():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays[split] = {k: z[k] for k in ("jpeg", "offsets", "labels", "classes")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a truncated copy: BadZipFile
            raise UserError(f"{path} is not a Tiny-ImageNet-100 npz ({type(e).__name__}: {e})")
    classes = [str(c) for c in arrays["train"]["classes"]]
    require(classes == [str(c) for c in arrays["test"]["classes"]], "train.npz and val.npz list different classes")
    for split, path in files.items():  # the counts a reader relies on, before any image is decoded
        a = arrays[split]
        offsets, n = a["offsets"], len(a["labels"])
        require(a["jpeg"].ndim == 1 and offsets.ndim == 1 and len(offsets) == n + 1 and n > 0,
                f"{path} holds {len(offsets)} offsets for {n} labels, expected labels + 1")
        require(offsets[0] == 0 and offsets[-1] == len(a["jpeg"]) and (np.diff(offsets) > 0).all(),
                f"{path} has offsets that do not cut its {len(a['jpeg'])} jpeg bytes into images")
        require(a["labels"].min() >= 0 and a["labels"].max() < len(classes),
                f"{path} has labels outside 0..{len(classes) - 1}")
    labels = {s: arrays[s]["labels"].astype(np.int64) for s in SPLITS}

    def load(split, idx):
        a = arrays[split]
        out = np.empty((len(idx), 64, 64, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            img = _decode(a["jpeg"][a["offsets"][i]:a["offsets"][i + 1]].tobytes(), f"{split}:{i} of {files[split]}")
            require(img.size == (64, 64), f"{split}:{i} of {files[split]} is {img.size}, expected 64x64")
            out[j] = np.asarray(img)
        return out

    checksums = {}
    for split, path in files.items():
        a = arrays[split]
        got = (hashlib.sha256(a["jpeg"].tobytes()).hexdigest(),
               hashlib.sha256(a["labels"].astype("<i8").tobytes()).hexdigest())
        checksums[f"{path.name}:jpeg.sha256"], checksums[f"{path.name}:labels.sha256"] = got
        require(not verify or got == TINY_SHA256[split], f"checksum mismatch for {path}: its jpeg/labels arrays "
                f"hash to {got[0][:12]}../{got[1][:12]}.., not the published values (--no-verify skips this check)")
    return Source("tiny-imagenet-100", classes, labels, 64, load, checksums=checksums)


# ---------------------------------------------------------------- ImageNet100 (class folders or mini-ImageNet csv)
def imagenet100(root, wnids, train_per_class=500, test_per_class=100):
    """ImageNet100 = the mini-ImageNet classes, 600 images each like mini-ImageNet: per class the first
    `train_per_class` files in name order are "train", the next `test_per_class` are "test".

    Two layouts are read: an ImageNet train folder (root/<wnid>/*.JPEG) or mini-ImageNet's own
    (root/images/*.jpg plus train.csv, val.csv, test.csv of filename,label)."""
    root = Path(root)
    require(root.is_dir(), f"ImageNet100 not found: {root} is not a folder")
    if any((root / f"{s}.csv").is_file() for s in ("train", "val", "test")):
        per_class = _mini_imagenet_csv(root)
        layout = "mini-imagenet-csv"
    else:
        per_class = {}
        for wnid in wnids:
            d = root / wnid
            if d.is_dir():
                per_class[wnid] = sorted(f"{wnid}/{p.name}" for p in d.iterdir()
                                         if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        layout = "imagenet-folders"
    missing = [w for w in wnids if w not in per_class]
    require(not missing, f"ImageNet100 at {root} ({layout}) lacks {len(missing)} of the {len(wnids)} classes, "
            f"e.g. {', '.join(missing[:3])}: expected class folders named by wnid, or mini-ImageNet's images/ and csv files")
    need = train_per_class + test_per_class
    short = [(w, len(per_class[w])) for w in wnids if len(per_class[w]) < need]
    if short:
        raise UserError(f"ImageNet100 class {short[0][0]} has {short[0][1]} images, fewer than the {need} needed")
    files = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    for label, wnid in enumerate(wnids):
        names = per_class[wnid]
        files["train"] += names[:train_per_class]
        files["test"] += names[train_per_class:need]
        labels["train"] += [label] * train_per_class
        labels["test"] += [label] * test_per_class
    image_dir = root / "images" if layout == "mini-imagenet-csv" else root

    def load(split, idx):  # mini-ImageNet's own recipe: squash the whole image to 84x84 (no crop)
        return np.stack([read_image(image_dir / files[split][i]) for i in idx]) if len(idx) else \
            np.empty((0, FOLDER_SIZE, FOLDER_SIZE, 3), dtype=np.uint8)

    return Source("imagenet100", list(wnids), {s: np.asarray(v, dtype=np.int64) for s, v in labels.items()},
                  84, load, checksums={"layout": layout}, files=files)


def _mini_imagenet_csv(root):
    per_class = {}
    for s in ("train", "val", "test"):
        path = root / f"{s}.csv"
        if not path.is_file():
            continue
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{path} is not a mini-ImageNet csv ({type(e).__name__}: {e})")
        require(rows and [c.strip() for c in rows[0][:2]] == ["filename", "label"],
                f"{path} is not a mini-ImageNet csv (its first line should be 'filename,label')")
        for row in rows[1:]:
            require(len(row) >= 2, f"{path} has a malformed line: {','.join(row)!r}")
            per_class.setdefault(row[1].strip(), []).append(row[0].strip())
    return {w: sorted(v) for w, v in per_class.items()}


# ---------------------------------------------------------------- any folder of class folders (a user's own data)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_SIZE = 84  # a folder's (and ImageNet100's) images, of any size, are first squashed to this square (mini-ImageNet's recipe)
TEST_FRACTION = 0.2  # of each class's images, held out as its test images where the folder has no test part


def image_folder(root, seed=0, test_fraction=None):
    """Any image folder as a dataset, its class names being its folder names. Three layouts, tried in this order:
    CUB-200-2011 (images/<class>/*, images.txt, train_test_split.txt: its official train/test split);
    root/train/<class>/* beside root/test/<class>/* or root/val/<class>/*; and root/<class>/*, of which a seeded
    `test_fraction` of each class's images (in file-name order, then permuted) are its test images."""
    root = Path(root)
    require(root.is_dir(), f"image folder not found: {root} is not a folder")
    cub = (root / "images.txt").is_file() and (root / "train_test_split.txt").is_file()
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    require(test_fraction is None or not (cub or test_dir and (root / "train").is_dir()),
            f"--test_fraction is for a folder without a test part; {root} has one")
    if cub:
        layout, per_split = "cub-200-2011", _cub_files(root)
    elif test_dir and (root / "train").is_dir():
        layout = f"train/{test_dir.name}"
        per_split = {"train": _class_files(root / "train", "train/"), "test": _class_files(test_dir, f"{test_dir.name}/")}
    else:
        layout = "class folders"
        test_fraction = TEST_FRACTION if test_fraction is None else test_fraction
        per_split = _held_out(_class_files(root, ""), test_fraction, seed)
    classes = sorted(per_split["train"])
    for split, other in (("train", "test"), ("test", "train")):
        extra = sorted(set(per_split[split]) - set(per_split[other]))
        if extra:
            raise UserError(f"class {extra[0]!r} of {root} has {split} images but no {other} images")
    require(len(classes) >= 2, f"{root} holds {len(classes)} class folder(s): a dataset needs classes to tell apart")
    digests = {s: {f: _checked_image(root / f) for c in classes for f in per_split[s][c]} for s in SPLITS}
    both = set(digests["train"].values()) & set(digests["test"].values())
    if both:
        shared = min(both)
        pair = [next(f for f, d in digests[s].items() if d == shared) for s in SPLITS]
        raise UserError(f"the same image is among the train and the test images of {root}: {pair[0]} and {pair[1]}")
    files = {s: [f for c in classes for f in per_split[s][c]] for s in SPLITS}
    labels = {s: np.asarray([y for y, c in enumerate(classes) for _ in per_split[s][c]], dtype=np.int64) for s in SPLITS}
    content = hashlib.sha256("".join(f"{s} {f} {digests[s][f]}\n" for s in SPLITS for f in files[s]).encode())

    def load(split, idx):
        return np.stack([read_image(root / files[split][i]) for i in idx]) if len(idx) else \
            np.empty((0, FOLDER_SIZE, FOLDER_SIZE, 3), dtype=np.uint8)

    checksums = {"layout": layout, "content.sha256": content.hexdigest()}
    if layout == "class folders":
        checksums.update(test_fraction=test_fraction, seed=seed)
    return Source("folder", classes, labels, FOLDER_SIZE, load, checksums=checksums, files=files)


def read_image(path):
    """One image file of a folder dataset, squashed to FOLDER_SIZE x FOLDER_SIZE RGB (uint8 [H, W, 3])."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}")
    return np.asarray(_decode(raw, str(path)).resize((FOLDER_SIZE, FOLDER_SIZE), Image.LANCZOS))


def _checked_image(path):
    """The file's sha256, once PIL has read its header and checked what it can without decoding (a PNG's
    checksums): a broken or foreign file is found when the folder is opened, not when a task first reads it."""
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}" if e.strerror else f"cannot decode image {path}: {e}")
    except Exception as e:  # PIL raises many types for a broken file
        raise UserError(f"cannot decode image {path}: {type(e).__name__}: {e}")
    return hashlib.sha256(raw).hexdigest()


def _class_files(folder, prefix):
    """{class: its image files, as paths relative to the dataset root, in name order} of folder/<class>/*."""
    per_class = {}
    for d in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        require(d.is_dir(), f"{d} is a file where class folders are expected ({folder}/<class>/<image>)")
        names = sorted(p for p in d.iterdir() if not p.name.startswith("."))
        for path in (d, *names):  # a name the file system holds as bytes that are not UTF-8 (class names are text)
            require(_utf8(path.name), f"{folder}/{ascii(path.relative_to(folder).as_posix())[1:-1]}: the name is not "
                    f"valid UTF-8; rename it (class names and file names are written to the results as text)")
        odd = [p for p in names if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES]
        require(not odd, f"{odd[0] if odd else d} is not an image file (a class folder holds only "
                f"{', '.join(IMAGE_SUFFIXES)} files)")
        require(names, f"class folder {d} holds no images")
        per_class[d.name] = [f"{prefix}{d.name}/{p.name}" for p in names]
    return per_class


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # Python holds undecodable bytes of a file name as lone surrogates
        return False


def _held_out(per_class, fraction, seed):
    """Split each class's files into train and test: a seeded permutation, its first round(fraction x n) for test."""
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(b"folder test").digest()[:4], "little")])
    out = {"train": {}, "test": {}}
    for c, names in per_class.items():
        n_test = round(fraction * len(names))
        require(0 < n_test < len(names), f"class folder {c} has {len(names)} images: too few to hold out "
                f"{fraction:g} of them as test images and keep the rest for training")
        order = rng.permutation(len(names))
        out["test"][c] = [names[i] for i in sorted(order[:n_test])]
        out["train"][c] = [names[i] for i in sorted(order[n_test:])]
    return out


def _cub_files(root):
    """CUB-200-2011: images.txt (id, path under images/) and train_test_split.txt (id, 1 for train)."""
    def table(name):
        rows = {}
        for n, line in enumerate((root / name).read_text().splitlines(), 1):
            if line.strip():
                parts = line.split()
                require(len(parts) == 2, f"{root / name} line {n} is not 'image-id value': {line[:80]!r}")
                rows[parts[0]] = parts[1]
        return rows
    try:
        paths, is_train = table("images.txt"), table("train_test_split.txt")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the CUB-200-2011 lists of {root}: {e}")
    require(set(paths) == set(is_train), f"{root}: images.txt and train_test_split.txt list different image ids")
    out = {"train": {}, "test": {}}
    for i, rel in sorted(paths.items(), key=lambda kv: kv[1]):
        require(is_train[i] in ("0", "1"), f"{root / 'train_test_split.txt'}: image {i} is marked {is_train[i]!r}, not 0 or 1")
        path = root / "images" / rel
        require(path.is_file(), f"{path}, listed in images.txt, does not exist")
        require(path.suffix.lower() in IMAGE_SUFFIXES, f"{path} is not an image file")
        c = Path(rel).parent.name
        require(c, f"{root / 'images.txt'}: image {i} ({rel}) is not in a class folder")
        out["train" if is_train[i] == "1" else "test"].setdefault(c, []).append(f"images/{rel}")
    return out
