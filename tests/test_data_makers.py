"""The split makers: protocol properties, determinism, the real offline images, and every bad input."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import (SHARED, TINY, Hostile, assert_clean_error, class_names, hostile_code_ran, needs_tiny, run_script,
                      write_cifar)

from utils import sources, splits

SMALL = ["--num_tasks", "4", "--num_imgs_per_cat_train", "10", "--num_target_tasks", "2", "--shots", "2", "3"]


def make_cifar(root, out, *extra):
    return run_script("utils/data_cifar_mk.py", "--path", root, "--out", out, "--no-verify", *SMALL, *extra)


def load(out):
    return json.loads((Path(out) / "manifest.json").read_text()), np.load(Path(out) / "images.npy")


def test_cifar_split_follows_the_protocol(cifar_root, tmp_path):
    proc = make_cifar(cifar_root, tmp_path / "split")
    assert proc.returncode == 0, proc.stderr
    m, images = load(tmp_path / "split")
    pools = m["classes"]
    assert (len(pools["base"]), len(pools["open_world"]), len(pools["novel"])) == (64, 16, 20)
    assert not (set(pools["base"]) & set(pools["open_world"]) or set(pools["base"]) & set(pools["novel"])
                or set(pools["open_world"]) & set(pools["novel"]))
    assert "cattle" in pools["open_world"] and len(set(sum(pools.values(), []))) == 100
    src = sources.cifar100(cifar_root, verify=False)
    row = {i: r for r, i in enumerate(m["images"]["ids"])}

    def check_ids(ids, cls, split=None):
        for i in ids:
            s, k = i.split(":")
            assert split is None or s == split
            assert src.classes[src.labels[s][int(k)]] == cls
            assert np.array_equal(images[row[i]], src.load(s, [int(k)], 32)[0])

    assert len(m["continual"]) == 4
    for task in m["continual"]:
        assert len(set(task["classes"])) == 5 and set(task["classes"]) <= set(pools["base"])
        for c in task["classes"]:
            assert len(task["samples"][c]) == 10 and len(set(task["samples"][c])) == 10
            check_ids(task["samples"][c], c)
    for section, pool in (("target", "novel"), ("validation", "open_world")):
        assert set(m[section]) == {"2", "3"}
        for t in range(2):
            two, three = m[section]["2"][t], m[section]["3"][t]
            assert two["classes"] == three["classes"] and set(two["classes"]) <= set(pools[pool])
            for c in two["classes"]:
                assert len(two["train"][c]) == 2 and len(three["train"][c]) == 3
                assert set(two["train"][c]) <= set(three["train"][c])  # nested shots
                check_ids(three["train"][c], c, "train")
                check_ids(three["test"][c], c, "test")
                assert len(three["test"][c]) == 3  # every test image of the class
                assert not set(three["train"][c]) & set(three["test"][c])
    assert m["command"].startswith("python utils/data_cifar_mk.py") and "--out" not in m["command"]
    assert set(m["source"]["checksums"]) == {"train.md5", "test.md5", "meta.md5"}


def test_same_seed_same_bytes_other_seed_other_split(cifar_root, tmp_path):
    for name in ("a", "b"):
        assert make_cifar(cifar_root, tmp_path / name).returncode == 0
    assert make_cifar(cifar_root, tmp_path / "c", "--seed", "1").returncode == 0
    read = lambda n, f: (tmp_path / n / f).read_bytes()  # noqa: E731
    assert read("a", "manifest.json") == read("b", "manifest.json")
    assert read("a", "images.npy") == read("b", "images.npy")
    assert json.loads(read("a", "manifest.json"))["continual"] != json.loads(read("c", "manifest.json"))["continual"]


def test_overwrite_and_refusals(cifar_root, tmp_path):
    out = tmp_path / "split"
    assert make_cifar(cifar_root, out).returncode == 0
    before = (out / "manifest.json").read_bytes()
    assert_clean_error(make_cifar(cifar_root, out, "--seed", "3"), "already holds a split")
    assert (out / "manifest.json").read_bytes() == before
    assert make_cifar(cifar_root, out, "--seed", "3", "--overwrite").returncode == 0
    assert (out / "manifest.json").read_bytes() != before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert_clean_error(make_cifar(cifar_root, other), "not a split")
    assert (other / "mine.txt").read_text() == "keep me"
    # a split folder holding something else: --overwrite replaces the split, never the user's files
    (out / "src").mkdir()
    (out / "src" / "app.js").write_text("keep me too")
    assert_clean_error(make_cifar(cifar_root, out, "--overwrite"), "did not write (src/app.js)")
    assert (out / "src" / "app.js").read_text() == "keep me too"
    (out / "src" / "app.js").unlink()
    (out / "src").rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "raw", "split"]  # no temporary left behind


def test_export_imagefolder(cifar_root, tmp_path):
    assert make_cifar(cifar_root, tmp_path / "s", "--export_imagefolder").returncode == 0
    pngs = list((tmp_path / "s" / "imagefolder" / "continual" / "task00" / "train").glob("*/*.png"))
    assert len(pngs) == 50


@pytest.mark.parametrize("case,fragment", [
    ("missing", "lacks train"),
    ("checksum", "checksum mismatch"),
    ("truncated", "not a CIFAR-100 pickle"),
    ("foreign", "refusing to load"),
    ("not_a_dict", "not a CIFAR-100 pickle"),
    ("unknown_class", "unknown class name"),
    ("too_many_shots", "more than the 8 training images"),
    ("too_many_images", "more than the 11 images"),
    ("zero_tasks", "an integer in [1, 100000]"),
    ("negative_shots", "an integer in [1, 100000]"),
])
def test_bad_inputs_fail_cleanly(tmp_path, case, fragment):
    root = tmp_path / "raw"
    args = SMALL
    verify = ["--no-verify"]
    if case == "missing":
        root.mkdir()
    elif case == "unknown_class":
        names = class_names()
        names[names.index("whale")] = "orca"
        write_cifar(root, meta={"fine_label_names": names, "coarse_label_names": ["x"] * 20})
    else:
        write_cifar(root)
        f = root / "cifar-100-python" / "train"
        if case == "checksum":
            verify = []
        elif case == "truncated":
            f.write_bytes(f.read_bytes()[:1000])
        elif case == "foreign":
            f.write_bytes(pickle.dumps(Hostile()))
        elif case == "not_a_dict":
            f.write_bytes(pickle.dumps([1, 2, 3]))
        elif case == "too_many_shots":
            args = ["--num_tasks", "2", "--num_imgs_per_cat_train", "5", "--shots", "9"]
        elif case == "too_many_images":
            args = ["--num_tasks", "2", "--num_imgs_per_cat_train", "12"]
        elif case == "zero_tasks":
            args = ["--num_tasks", "0"]
        elif case == "negative_shots":
            args = ["--shots", "-10"]
    out = tmp_path / "split"
    proc = run_script("utils/data_cifar_mk.py", "--path", root, "--out", out, *verify, *args)
    assert_clean_error(proc, fragment)
    assert not hostile_code_ran()
    assert not out.exists()


def test_cifar_split_file_matches_the_shared_facts():
    ours = splits.class_split("cifar100")
    shared = SHARED / "cifar100_split.json"
    if shared.exists():
        facts = json.loads(shared.read_text())
        assert ours == {k: facts[k] for k in ours}
    assert set(sum(ours.values(), [])) == set(class_names())  # the real CIFAR-100 meta's 100 names


# ---------------------------------------------------------------- the real offline images
@needs_tiny
def test_tiny_class_split_is_the_documented_derivation():
    wnids = [l.strip() for l in open(TINY / "wnids.txt") if l.strip()]
    perm = [str(w) for w in np.random.default_rng(0).permutation(sorted(wnids))]
    assert splits.class_split("tiny-imagenet-100") == {"base": perm[:64], "open_world": perm[64:80], "novel": perm[80:]}


@needs_tiny
def test_tiny_split_from_real_images(tiny_split):
    m, images = load(tiny_split)
    assert m["dataset"] == "tiny-imagenet-100" and m["image_size"] == 32 and images.shape[1:] == (32, 32, 3)
    assert m["source"]["verified"] and len(m["source"]["checksums"]) == 4
    src = sources.tiny_imagenet100(TINY, verify=False)
    row = {i: r for r, i in enumerate(m["images"]["ids"])}
    task = m["target"]["4"][0]
    for c in task["classes"]:
        assert c in m["classes"]["novel"] and len(task["test"][c]) == 50 and len(task["train"][c]) == 4
        i = task["train"][c][0]
        raw = src.load("train", [int(i.split(":")[1])], 64)[0].astype(np.float32)
        box = raw.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))  # the 2x2 box average to 32px
        assert np.abs(images[row[i]].astype(np.float32) - box).max() <= 0.5 + 1e-4
    # real photos, not noise: neighbouring pixels are strongly correlated
    x = images[:200].astype(np.float32)
    assert np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1] > 0.8


@needs_tiny
def test_tiny_checksum_mismatch(tmp_path):
    fake = tmp_path / "tiny"
    fake.mkdir()
    with np.load(TINY / "val.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = arrays["labels"][::-1].copy()
    for name in ("train.npz", "val.npz"):
        np.savez(fake / name, **arrays)
    proc = run_script("utils/data_imagenet_mk.py", "--dataset", "tiny-imagenet-100", "--path", fake,
                      "--out", tmp_path / "s", "--num_tasks", "1")
    assert_clean_error(proc, "checksum mismatch")


# ---------------------------------------------------------------- ImageNet layouts (fake images)
def _jpeg(path, colour):
    from PIL import Image
    Image.new("RGB", (40, 30), colour).save(path)


def test_imagenet_folder_and_csv_layouts(tmp_path):
    wnids = [w for pool in splits.class_split("imagenet100").values() for w in pool]
    folders, mini = tmp_path / "train", tmp_path / "mini"
    (mini / "images").mkdir(parents=True)
    rows = ["filename,label"]
    for k, w in enumerate(wnids):
        (folders / w).mkdir(parents=True)
        for j in range(6):
            _jpeg(folders / w / f"{w}_{j}.JPEG", (k, j * 10, 0))
            _jpeg(mini / "images" / f"{w}{j:08d}.jpg", (k, j * 10, 0))
            rows.append(f"{w}{j:08d}.jpg,{w}")
    (mini / "train.csv").write_text("\n".join(rows) + "\n")
    for root in (folders, mini):
        src = sources.imagenet100(root, wnids, train_per_class=4, test_per_class=2)
        assert len(src.labels["train"]) == 400 and len(src.labels["test"]) == 200
        img = src.load("test", [1], 84)[0]
        assert img.shape == (84, 84, 3) and tuple(img[40, 40]) == (0, 50, 0)  # class 0, its 6th image
        m = splits.build_manifest(src, splits.class_split("imagenet100"), num_tasks=2, images_per_class=6,
                                  num_target_tasks=1, shots=[2], seed=0)
        assert len(m["target"]["2"][0]["test"][m["target"]["2"][0]["classes"][0]]) == 2
    proc = run_script("utils/data_imagenet_mk.py", "--path", folders, "--out", tmp_path / "s")
    assert_clean_error(proc, "fewer than the 600 needed")
    proc = run_script("utils/data_imagenet_mk.py", "--path", tmp_path / "nowhere", "--out", tmp_path / "s")
    assert_clean_error(proc, "not a folder")


def test_a_damaged_split_is_refused_when_opened(cifar_root, tmp_path):
    """Bytes flipped in images.npy keep its shape: the manifest's sha256 catches them before any training."""
    assert make_cifar(cifar_root, tmp_path / "split").returncode == 0
    splits.Split(tmp_path / "split")  # intact: opens
    images = tmp_path / "split" / "images.npy"
    data = bytearray(images.read_bytes())
    data[-10:] = bytes(255 - b for b in data[-10:])
    images.write_bytes(bytes(data))
    proc = run_script("collective-model/val_lifelong_cifar100.py", "--path", tmp_path / "split", "--out",
                      tmp_path / "run", "--no-cuda")
    assert_clean_error(proc, "does not match the sha256")
    assert not (tmp_path / "run").exists()


@needs_tiny
def test_continual_pool_with_open_world_classes(tmp_path):
    """--continual_pool base+open_world draws the continual tasks from base and open-world classes (the released
    scripts' pool); the default keeps open-world for validation only."""
    out = tmp_path / "pool"
    proc = run_script("utils/data_imagenet_mk.py", "--dataset", "tiny-imagenet-100", "--path", TINY, "--out", out,
                      "--size", "32", "--num_tasks", "40", "--num_imgs_per_cat_train", "2", "--num_target_tasks", "1",
                      "--shots", "2", "--continual_pool", "base+open_world")
    assert proc.returncode == 0, proc.stderr
    m, _ = load(out)
    used = {c for task in m["continual"] for c in task["classes"]}
    assert used <= set(m["classes"]["base"]) | set(m["classes"]["open_world"])
    assert used & set(m["classes"]["open_world"]) and m["continual_pool"] == "base+open_world"


def test_heldout_images_are_never_in_a_continual_task(cifar_root, tmp_path):
    """--heldout_per_class keeps that many images of every continual class (test images first) out of every
    continual task, disjoint from every image any task uses; without it the manifest is as before."""
    base = ["--path", cifar_root, "--no-verify", "--num_tasks", "30", "--num_imgs_per_cat_train", "8",
            "--num_target_tasks", "2", "--shots", "2", "3"]
    assert run_script("utils/data_cifar_mk.py", *base, "--out", tmp_path / "held", "--heldout_per_class",
                      "2").returncode == 0
    m, images = load(tmp_path / "held")
    assert m["heldout_per_class"] == 2 and set(m["heldout"]) == set(m["classes"]["base"])
    held = {c: set(ids) for c, ids in m["heldout"].items()}
    assert all(len(ids) == 2 and all(i.startswith("test:") for i in ids) for ids in held.values())  # 3 test images
    for task in m["continual"]:
        for c, ids in task["samples"].items():
            assert len(ids) == 8 and not set(ids) & held[c]  # 11 images - 2 held out: 9 left, 8 drawn
    every_task_id = {i for section in ("target", "validation") for tasks in m[section].values() for task in tasks
                     for part in ("train", "test") for v in task[part].values() for i in v}
    assert not every_task_id & set().union(*held.values())
    split = splits.Split(tmp_path / "held")
    x, y = split.heldout(0)
    assert x.shape == (10, 32, 32, 3) and sorted(set(y.tolist())) == [0, 1, 2, 3, 4]
    # off: no held-out section, the same tasks as a split made before the option existed
    assert run_script("utils/data_cifar_mk.py", *base, "--out", tmp_path / "off").returncode == 0
    off, _ = load(tmp_path / "off")
    assert "heldout" not in off and splits.Split(tmp_path / "off").heldout(0) is None
    assert run_script("utils/data_cifar_mk.py", *base, "--out", tmp_path / "zero", "--heldout_per_class",
                      "0").returncode == 0
    zero, _ = load(tmp_path / "zero")
    assert {k: v for k, v in zero.items() if k != "command"} == {k: v for k, v in off.items() if k != "command"}
    too_many = run_script("utils/data_cifar_mk.py", *base, "--out", tmp_path / "x", "--heldout_per_class", "11")
    assert_clean_error(too_many, "leaves no image")
