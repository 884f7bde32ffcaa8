"""Any image folder as a dataset (utils/sources.image_folder): the three layouts, the class split given or drawn,
the official CUB-200-2011 split honoured, byte-identical reruns, bad folders refused, and the pipeline on one."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, assert_clean_error, needs_tiny, run_script
from PIL import Image

from utils import sources, splits
from utils.cli import UserError

MAKER = "utils/data_imagenet_mk.py"


def make(path, out, *extra):
    return run_script(MAKER, "--dataset", "folder", "--path", path, "--out", out, "--size", "32", "--num_tasks", "2",
                      "--num_imgs_per_cat_train", "4", "--num_target_tasks", "1", "--shots", "2", *extra)


def export_tiny(root, classes=32, train=6, test=3):
    """Real Tiny-ImageNet-100 photos as root/train/<wnid>/*.jpg and root/test/<wnid>/*.png (both formats read)."""
    tiny = sources.tiny_imagenet100(TINY, verify=False)
    for c in tiny.classes[:classes]:
        for split, n, suffix in (("train", train, ".jpg"), ("test", test, ".png")):
            (root / split / c).mkdir(parents=True)
            for i in tiny.indices_of(split, c)[:n]:
                Image.fromarray(tiny.loader(split, np.array([i]))[0]).save(root / split / c / f"{i}{suffix}", quality=95)
    return root


def image(path, seed):
    """A small random PNG, different for every seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)


def write_cub(root, classes=32, per_class=4):
    """The CUB-200-2011 layout: images/<class>/*.jpg, images.txt, train_test_split.txt (each class's first half
    train: not a rule of the ids or the names that a reader could follow instead of the file)."""
    lines, marks = [], []
    for c in range(classes):
        for j in range(per_class):
            i = len(lines) + 1
            rel = f"{c + 1:03d}.Bird_{c}/Bird_{c}_{j}.jpg"
            image(root / "images" / rel, i)
            lines.append(f"{i} {rel}")
            marks.append(f"{i} {int(j < per_class // 2)}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(marks) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    return export_tiny(tmp_path_factory.mktemp("folder") / "tiny")


@needs_tiny
def test_train_test_folders_make_a_split_of_their_images_byte_identically(tiny_folder, tmp_path):
    assert make(tiny_folder, tmp_path / "a").returncode == 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["dataset"] == "folder" and m["source"]["checksums"]["layout"] == "train/test"
    # 32 classes drawn 64/16/20: 6 novel, 5 open-world, 21 base, disjoint, recorded as drawn
    assert [len(m["classes"][k]) for k in ("base", "open_world", "novel")] == [21, 5, 6]
    assert len({c for v in m["classes"].values() for c in v}) == 32 and m["class_split"]["seed"] == 0
    # every image of the split is its file's, under its own class folder, and test images come from test/
    split, files = splits.Split(tmp_path / "a"), m["source"]["files"]
    task = m["target"]["2"][0]
    for part, subtree in (("train", "train/"), ("test", "test/")):
        for c, ids in task[part].items():
            for i in ids:
                name = files[i.split(":")[0]][int(i.split(":")[1])]
                assert name.startswith(f"{subtree}{c}/")
                raw = Image.open(tiny_folder / name).convert("RGB").resize((84, 84), Image.LANCZOS)
                assert np.array_equal(sources.resize(np.asarray(raw)[None], 32)[0], split.images[split._row[i]])
    assert make(tiny_folder, tmp_path / "b").returncode == 0  # the same command, another --out: the same bytes
    for name in ("manifest.json", "images.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert make(tiny_folder, tmp_path / "c", "--seed", "1").returncode == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["classes"] != m["classes"]


@needs_tiny
def test_a_given_class_split_is_used_and_checked(tiny_folder, tmp_path):
    names = sorted(p.name for p in (tiny_folder / "train").iterdir())
    given = {"base": names[:20], "open_world": names[20:26], "novel": names[26:]}
    (tmp_path / "classes.json").write_text(json.dumps(given))
    assert make(tiny_folder, tmp_path / "s", "--class_split", tmp_path / "classes.json").returncode == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["classes"] == given and m["class_split"] == {"file": str(tmp_path / "classes.json")}
    (tmp_path / "bad.json").write_text(json.dumps({**given, "novel": given["novel"][:-1] + ["n99999999"]}))
    assert_clean_error(make(tiny_folder, tmp_path / "t", "--class_split", tmp_path / "bad.json"), "unknown class name")
    (tmp_path / "twice.json").write_text(json.dumps({**given, "novel": given["novel"] + names[:1]}))
    assert_clean_error(make(tiny_folder, tmp_path / "t", "--class_split", tmp_path / "twice.json"), "more than one pool")
    assert not (tmp_path / "t").exists()


def test_cub_layout_keeps_its_official_train_test_split(tmp_path):
    cub = write_cub(tmp_path / "CUB_200_2011")
    source = sources.image_folder(cub)
    assert source.checksums["layout"] == "cub-200-2011" and len(source.classes) == 32
    marks = dict(line.split() for line in (cub / "train_test_split.txt").read_text().splitlines())
    paths = {rel: i for i, rel in (line.split() for line in (cub / "images.txt").read_text().splitlines())}
    for split, mark in (("train", "1"), ("test", "0")):
        assert len(source.files[split]) == 64
        assert all(marks[paths[f.removeprefix("images/")]] == mark for f in source.files[split])
    for split in ("train", "test"):  # labels are the class folders
        assert all(source.classes[y] == f.split("/")[1] for f, y in zip(source.files[split], source.labels[split]))
    assert make(cub, tmp_path / "s").returncode == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for c, ids in m["target"]["2"][0]["test"].items():  # a target task's test images are the official test images
        assert len(ids) == 2 and all(i.startswith("test:") for i in ids)


def test_class_folders_hold_out_a_seeded_fraction(tmp_path):
    for c in range(3):
        for j in range(10):
            image(tmp_path / "raw" / f"class{c}" / f"{j}.png", 10 * c + j)
    a, b = sources.image_folder(tmp_path / "raw"), sources.image_folder(tmp_path / "raw", test_fraction=0.3)
    assert a.checksums["layout"] == "class folders" and [len(a.files[s]) for s in ("train", "test")] == [24, 6]
    assert [len(b.files[s]) for s in ("train", "test")] == [21, 9]
    assert not set(a.files["train"]) & set(a.files["test"])
    assert sources.image_folder(tmp_path / "raw").files == a.files  # seeded
    assert sources.image_folder(tmp_path / "raw", seed=1).files != a.files


def test_cub_layout_is_read_under_the_makers_own_checks_too(tmp_path):
    """The class split of a small CUB copy cannot be drawn from 8 classes: one line, nothing written."""
    cub = write_cub(tmp_path / "cub", classes=8)
    assert_clean_error(make(cub, tmp_path / "s"), "give the split with --class_split")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("case,fragment", [
    ("empty class", "holds no images"),
    ("text file", "is not an image file"),
    ("not an image", "cannot decode image"),
    ("duplicate", "among the train and the test images"),
    ("class without test", "has train images but no test images"),
    ("too few images", "more than the"),
    ("fraction with test part", "--test_fraction is for a folder without a test part"),
])
def test_bad_folders_are_refused_in_one_line_and_nothing_is_written(tmp_path, case, fragment):
    raw = tmp_path / "raw"
    for split, n in (("train", 6), ("test", 2)):
        for c in range(32):
            for j in range(n):
                image(raw / split / f"c{c:02d}" / f"{j}.png", hash((split, c, j)) % 2 ** 32)
    extra = []
    if case == "empty class":
        (raw / "train" / "c40").mkdir()
    elif case == "text file":
        (raw / "train" / "c03" / "notes.txt").write_text("hello")
    elif case == "not an image":  # found when the folder is opened, whether or not a task would read it
        (raw / "train" / "c11" / "3.png").write_bytes(b"not a png")
    elif case == "duplicate":
        (raw / "test" / "c05" / "copy.png").write_bytes((raw / "train" / "c07" / "2.png").read_bytes())
    elif case == "class without test":
        image(raw / "train" / "c99" / "0.png", 7)
    elif case == "too few images":
        extra = ["--num_imgs_per_cat_train", "9"]
    elif case == "fraction with test part":
        extra = ["--test_fraction", "0.5"]
    before = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(raw.rglob("*")) if p.is_file())).hexdigest()
    proc = run_script(MAKER, "--dataset", "folder", "--path", raw, "--out", tmp_path / "s", "--size", "32",
                      "--num_tasks", "2", "--num_target_tasks", "1", "--shots", "2", *extra)
    assert_clean_error(proc, fragment)
    assert not (tmp_path / "s").exists()
    assert hashlib.sha256(b"".join(p.read_bytes() for p in sorted(raw.rglob("*")) if p.is_file())).hexdigest() == before


@pytest.mark.slow
@needs_tiny
def test_the_smoke_pipeline_runs_on_an_image_folder(tmp_path):
    """The whole pipeline on a folder of real photos (enough images for the smoke preset's 20 shots)."""
    folder = export_tiny(tmp_path / "photos", classes=32, train=24, test=4)
    proc = run_script("pipeline.py", "--preset", "smoke", "--dataset", "folder", "--data", folder, "--root",
                      tmp_path / "out", "--studies", "individual", "--no-cuda")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "out" / "results" / "folder-smoke.md").read_text()
    assert "learngene" in table and "scratch" in table
    assert (tmp_path / "out" / "results" / "folder-smoke-heatmap.png").is_file()


@pytest.mark.parametrize("mode, top", [("I;16", 65535), ("I", 65535), ("F", 1.0), ("L", 255)])
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, mode, top):
    """A grey ramp from black to white in a 16-bit PNG, a 32-bit integer image and a float image in [0, 1] reads as
    the same 8-bit ramp an 8-bit image gives (PIL's convert("RGB") alone leaves 97% of a 16-bit ramp at 255)."""
    import io
    from utils.sources import _decode
    ramp = np.linspace(0, top, 64 * 64).reshape(64, 64)
    image = Image.fromarray(ramp.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32, "L": np.uint8}[mode]),
                            mode if mode != "I;16" else None)
    buf = io.BytesIO()
    image.save(buf, format="TIFF" if mode in ("I", "F") else "PNG")
    rgb = np.asarray(_decode(buf.getvalue(), "ramp"))
    expected = np.linspace(0, 255, 64 * 64).reshape(64, 64)
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - expected).max() <= 1.0
    assert (rgb[..., 0] == 255).mean() < 0.01


def test_a_class_folder_whose_name_is_not_utf8_is_refused_in_one_line(tmp_path):
    raw = tmp_path / "raw"
    for name in (b"cats", b"dogs-\xff"):
        folder = Path(os.fsdecode(bytes(raw) + b"/" + name))
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "a.png")
    with pytest.raises(UserError, match=r"dogs-\\udcff: the name is not valid UTF-8"):
        sources.image_folder(raw, 0, 0.5)
