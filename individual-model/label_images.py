"""Label new images with a model trained by your_task.py: one CSV line per image, its class and probability.

    python individual-model/label_images.py --model my_task/learngene.pt --path new_photos --out labels.csv
    python individual-model/label_images.py --model my_task/learngene.pt --path more_labelled --labelled --out l.csv
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import your_task  # noqa: E402
from utils.cli import cli, require  # noqa: E402
from utils.files import FolderLock, require_apart, require_replaceable, starts_with, write_csv  # noqa: E402
from utils.repro import pick_device  # noqa: E402


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="MODEL", help="learngene.pt or scratch.pt of your_task.py")
    p.add_argument("--path", required=True, metavar="RAW", help="a folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="OUTFILE", help="the CSV to write")
    p.add_argument("--labelled", action="store_true", help="--path is <class>/<image> with the model's class names: "
                   "also write each image's true class and print the accuracy")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    require(not out.is_dir(), f"--out {out} is a folder; give a file name")
    require_apart(out, [("--model", args.model), ("--path", args.path)])
    # the output's folder is held from the check to the write: two runs to one --out cannot both believe it theirs
    with FolderLock(out.parent if str(out.parent) else Path(".")):
        require_replaceable(out, args.overwrite, starts_with(b"file,class,probability"))
        model, record = your_task.load_model(args.model)
        files = your_task.image_files(args.path)
        truth = your_task.true_classes(files, args.path, record["classes"]) if args.labelled else None
        labels = your_task.predict(model, record, files, pick_device(args.no_cuda))
        rows = [[str(f.relative_to(args.path)), c, round(q, 6)] for f, (c, q) in zip(files, labels)]
        header = ["file", "class", "probability"]
        if truth:
            header.append("true_class")
            rows = [[*row, t] for row, t in zip(rows, truth)]
        write_csv(out, header, rows)
    print(f"labelled {len(rows)} images of {args.path} into {out} ({len(record['classes'])} classes, "
          f"{record['method']} model, {record['test_accuracy']:.1f}% on its held-out images)")
    if truth:
        print(f"accuracy on these labelled images: {100 * sum(r[1] == r[3] for r in rows) / len(rows):.1f}%")


if __name__ == "__main__":
    main()
