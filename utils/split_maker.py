"""The split makers' command line (utils/data_cifar_mk.py, utils/data_imagenet_mk.py): their flags, the raw dataset
opened and checked, the settings resolved from the flags and the dataset's protocol, and the split written
(utils/splits.py builds, writes and reads it)."""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from utils import sources
from utils.cli import COUNT, FRACTION, IMAGE_SIZE, INDEX, SEED, require
from utils.repro import command_line
from utils.splits import (DATASETS, WAYS, build_manifest, class_split, draw_class_split, read_class_split,
                          used_ids, write_split)


def maker_parser(description, dataset_choices):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--path", required=True, metavar="RAW", help="where the raw dataset is")
    p.add_argument("--out", default=None, metavar="OUTDIR", help="split directory to write (default: data/<dataset>-split)")
    p.set_defaults(dataset=dataset_choices[0])
    if len(dataset_choices) > 1:
        p.add_argument("--dataset", choices=dataset_choices, default=dataset_choices[0],
                       help="imagenet100: ImageNet class folders or mini-ImageNet csv layout (84px); "
                            "tiny-imagenet-100: the offline npz set (64px); folder: any <class>/<image> tree, "
                            "train/ and test/ (or val/) trees, or CUB-200-2011 (84px; class names: folder names)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--num_tasks", type=COUNT, default=50, help="continual (source) tasks")
    p.add_argument("--num_imgs_per_cat_train", dest="images_per_class", type=COUNT, default=None,
                   help="images per class in a continual task (default: cifar100 600, imagenet100 400, tiny 550)")
    p.add_argument("--num_target_tasks", type=COUNT, default=None,
                   help="target (and validation) tasks per shot count (default: cifar100 5, imagenet 10)")
    p.add_argument("--shots", type=COUNT, nargs="+", default=[10, 20])
    p.add_argument("--size", type=IMAGE_SIZE, default=None,
                   help="image side in pixels (default: the dataset's native 32/84/64); e.g. 32 for CIFAR-like Tiny")
    p.add_argument("--heldout_per_class", type=INDEX, default=0,
                   help="images of every continual class (its test images first) kept out of every continual task, "
                        "to measure the source model on images it never saw (default 0: none, the released pool)")
    p.add_argument("--continual_pool", choices=["base", "base+open_world"], default="base",
                   help="classes of the continual tasks; the released ImageNet script drew from base+open_world, "
                        "which leaves no clean validation classes")
    p.add_argument("--class_split", default=None, metavar="CLASSES",
                   help="a JSON file of base, open_world and novel class names (the format of utils/splits/*.json) "
                        "instead of the dataset's own; a folder without one draws them, 64/16/20, with --seed")
    if "folder" in dataset_choices:
        p.add_argument("--test_fraction", type=FRACTION, default=None,
                       help=f"folder: of each class's images, the share held out as its test images where the folder "
                            f"has no train/ and test/ (or val/) parts (default {sources.TEST_FRACTION})")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the source checksum check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split at --out")
    p.add_argument("--export_imagefolder", action="store_true", help="also write every task as PNG files")
    return p


# flags that only say where to write, left out of the recorded command so the manifest depends on content alone
_OUTPUT_FLAGS = {"--out": 1, "--overwrite": 0, "--export_imagefolder": 0}


def _content_command(argv):
    kept, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in _OUTPUT_FLAGS:
            skip = _OUTPUT_FLAGS[name] if "=" not in a else 0
            continue
        kept.append(a)
    return command_line(kept)


def open_raw(dataset, path, verify=True, download=False, seed=0, test_fraction=None):
    """The raw dataset as a `Source`, checked as it is read: a missing, truncated or foreign file is one line
    naming it (the makers, and the pipeline before it starts any stage)."""
    require(test_fraction is None or dataset == "folder", "--test_fraction is for --dataset folder")
    if dataset == "folder":
        return sources.image_folder(path, seed, test_fraction)
    if dataset == "cifar100":
        return sources.cifar100(path, verify=verify, download=download)
    if dataset == "tiny-imagenet-100":
        return sources.tiny_imagenet100(path, verify=verify)
    return sources.imagenet100(path, [w for pool in class_split("imagenet100").values() for w in pool])


def run_maker(parser, argv):
    """The makers' shared body: parse, open the raw data, build the manifest, write the split, print a summary."""
    args = parser.parse_args(argv)
    config = DATASETS[args.dataset]
    given = read_class_split(args.class_split) if args.class_split else None
    source = open_raw(args.dataset, args.path, args.verify, getattr(args, "download", False), args.seed,
                      getattr(args, "test_fraction", None))
    classes = given or (class_split(args.dataset) if config["split_file"] else draw_class_split(source.classes, args.seed))
    per_class = args.images_per_class or config["images_per_class"] or smallest_class(
        source, classes, args.continual_pool, args.heldout_per_class)
    settings = SplitSettings(num_tasks=args.num_tasks, images_per_class=per_class, num_target_tasks=args.num_target_tasks
                             or config["num_target_tasks"], shots=tuple(args.shots), seed=args.seed,
                             continual_pool=args.continual_pool, heldout_per_class=args.heldout_per_class)
    out = Path(args.out or Path("data") / f"{args.dataset}-split")
    origin = None if config["split_file"] and not given else (
        {"file": str(args.class_split)} if given else {"drawn": "64/16/20 of the sorted class names", "seed": args.seed})
    return make_split(args.dataset, source, settings, out, size=args.size or source.native_size,
                      raw_path=args.path, verified=args.verify, overwrite=args.overwrite,
                      export_imagefolder=args.export_imagefolder, argv=argv, classes=classes, class_origin=origin)


def smallest_class(source, classes, continual_pool, heldout_per_class):
    """A folder's default images per class in a continual task: all that its smallest continual class keeps."""
    pool = classes["base"] + (classes["open_world"] if continual_pool == "base+open_world" else [])
    counts = [sum(len(source.indices_of(s, c)) for s in sources.SPLITS) for c in pool if c in source.classes]
    return max(1, min(counts, default=1) - heldout_per_class)


@dataclass(frozen=True)
class SplitSettings:
    """What a split holds (defaults: the paper's, and per dataset the protocol's images per class and tasks)."""
    num_tasks: int = 50  # continual (source) tasks
    images_per_class: int = 500  # in a continual task
    num_target_tasks: int = 10  # target and validation tasks per shot count
    shots: tuple = (10, 20)
    seed: int = 0
    continual_pool: str = "base"  # or "base+open_world", the released ImageNet script's pool
    heldout_per_class: int = 0  # images per continual class no continual task draws (the source's held-out test)


def make_split(dataset, source, settings, out, *, size, raw_path, verified, overwrite=False,
               export_imagefolder=False, argv=None, classes=None, class_origin=None):
    """Build the manifest of `settings` over `source` and write the split to `out` at `size` pixels; `classes`
    (default: the dataset's own split file) and where they came from, recorded where they are not the default."""
    manifest = build_manifest(source, classes or class_split(dataset), num_tasks=settings.num_tasks,
                              images_per_class=settings.images_per_class,
                              num_target_tasks=settings.num_target_tasks, shots=list(settings.shots),
                              seed=settings.seed, continual_pool=settings.continual_pool,
                              heldout_per_class=settings.heldout_per_class)
    manifest["source"] = {"path": str(raw_path), "checksums": source.checksums, "verified": verified}
    if class_origin:  # absent for a dataset's own split, so those splits keep the bytes (and hashes) they had
        manifest["class_split"] = class_origin
    manifest["command"] = _content_command(sys.argv[1:] if argv is None else argv)
    write_split(out, manifest, source, size, overwrite=overwrite, export_imagefolder=export_imagefolder)
    print(f"wrote {out}: {dataset} at {size}px, {settings.num_tasks} continual tasks x {WAYS} classes x "
          f"{settings.images_per_class} images, {len(next(iter(manifest['target'].values())))} target and "
          f"validation tasks per shot count {list(settings.shots)}, {len(used_ids(manifest))} distinct images")
    return out
