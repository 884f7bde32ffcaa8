"""Train the recommended lightweight model on your own labelled images, the learngene and scratch beside it; save them.

    python individual-model/your_task.py --learngene checkpoints/<preset>/collective/learngene.pt \
        --path my_photos --out my_task
    python individual-model/label_images.py --model my_task/learngene.pt --path new_photos --out labels.csv

--path is a folder of class folders (<class>/<image>, a seeded --test_fraction of each class held out for the test
accuracy), train/<class>/ beside test/<class>/ (or val/), or CUB-200-2011. What it inherits (--method) is, by
default, what the repository's evidence recommends (results/reference/recommendation.json, written by
utils/recommend.py from the inherit study's target runs: the learngene's blocks behind new front layers, the
paper's design, or the same lightweight model with every conv block from the source); the learngene itself and
scratch train beside it. Each model trains at the learning rate and number of epochs the evidence chose for it on
its validation tasks (without a recommendation, the paper's: 30 epochs, lr 0.005; --lr and --epochs set them for
every model), batch 32, EWC on the inherited blocks, at the learngene's image size; the EWC strength is the one the
learngene's pipeline run chose where that run is beside it, else --ewc_lambda (default: the released 40000). --out
gets <method>.pt per model (loadable with torch.load(weights_only=True): class names, weights, test accuracy,
provenance) and results.json, which says what was trained and why; a run stopped before its end leaves nothing and
is simply run again.
"""
import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import learngene, methods, recommend, your_task  # noqa: E402
from utils.cli import BATCH, COUNT, EWC_LAMBDA, FRACTION, LEARNING_RATE, SEED, cli, require  # noqa: E402
from utils.engine import PRECISIONS, resolve_precision  # noqa: E402
from utils.ewc import RELEASED_LAMBDA  # noqa: E402
from utils.fewshot import TrainSettings  # noqa: E402
from utils.files import FolderLock, foreign_files, replace_dir, require_apart, torch_save, write_json  # noqa: E402
from utils.repro import pick_device, provenance  # noqa: E402

OUTPUTS = (*(f"{m}.pt" for m in (*your_task.INHERITING, "scratch")), "results.json")


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learngene", required=True, metavar="LEARNGENE", help="a learngene.pt of the collective script")
    p.add_argument("--path", required=True, metavar="RAW", help="your labelled image folder")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="folder for the trained models and results.json")
    p.add_argument("--test_fraction", type=FRACTION, default=None, help="of each class's images, the share held "
                   "out for the test accuracy where the folder has no test part (default 0.2)")
    p.add_argument("--ewc_lambda", type=EWC_LAMBDA, default=None, help="EWC strength (default: the learngene's "
                   f"pipeline run's choice where it is beside the learngene, else the released {RELEASED_LAMBDA:g})")
    p.add_argument("--epochs", type=COUNT, default=None, help="for every model (default: each model's in the "
                   f"recommendation, else {TrainSettings.epochs})")
    p.add_argument("--batch_size", type=BATCH, default=TrainSettings.batch_size)
    p.add_argument("--lr", type=LEARNING_RATE, default=None, help="for every model (default: each model's in the "
                   f"recommendation, else {TrainSettings.lr:g})")
    p.add_argument("--seed", type=SEED, default=0, help="the held-out draw, the new layers and the batches")
    p.add_argument("--method", choices=your_task.INHERITING, default=None, help="what the model inherits: "
                   "the learngene's blocks behind new front layers (the paper's design), or learngene-full(-noewc), "
                   "every conv block of the same lightweight model from the source (needs the collective checkpoint "
                   "the learngene was cut from); default: the recommendation's, else learngene")
    p.add_argument("--recommendation", default=str(recommend.DEFAULT), metavar="RECOMMENDATION",
                   help="the evidence that picks the default --method and each model's settings (default: the "
                   "repository's results/reference/recommendation.json, used where it exists; none: the paper's "
                   "design at the paper's settings)")
    p.add_argument("--collective", default=None, metavar="CHECKPOINT", help="for learngene-full: the collective "
                   "checkpoint (default: the learngene's source, the model after the extraction task)")
    p.add_argument("--no_scratch", action="store_true", help="train the chosen inheriting model only")
    p.add_argument("--overwrite", action="store_true", help="replace the models of an earlier run at --out")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = p.parse_args(argv)
    art = learngene.load(args.learngene)
    require(args.recommendation in ("none", str(recommend.DEFAULT)) or Path(args.recommendation).exists(),
            f"--recommendation {args.recommendation} does not exist")
    advice = None if args.recommendation == "none" else recommend.load(args.recommendation)
    method, chosen_by = ((args.method, "--method") if args.method else (advice["method"], advice["why"]) if advice
                         else ("learngene", "the paper's design (no recommendation)"))
    trained = list(dict.fromkeys((method, *(() if args.no_scratch else ("learngene", "scratch")))))
    collective = None
    if any(methods.METHODS[m].start == "full-learngene" for m in trained) or args.collective:  # before any work
        collective = methods.load_collective(args.collective, art, SimpleNamespace(dataset=art["dataset"],
                                                                                   image_size=art["image_size"]))
    inputs = methods.Inputs(art, str(args.learngene), collective)
    methods.check_sources(trained, inputs)
    out = Path(args.out).resolve()  # `--out .` is a folder with a name, the one the user is in
    require_apart(out, [("--path", args.path), ("--learngene", args.learngene)])

    def check_out():
        if out.exists():
            require(out.is_dir(), f"--out {out} exists and is not a folder")
            foreign = foreign_files(out, OUTPUTS)
            require(not foreign, f"{out} holds files this script did not write ({', '.join(foreign[:3])}); choose "
                    f"another --out")
            require(args.overwrite or not any(out.iterdir()), f"{out} holds an earlier run's models: pass --overwrite "
                    f"to replace them")
    check_out()  # before any work, and again once the lock is held (another run may have finished meanwhile)
    device = pick_device(args.no_cuda)
    source, data = your_task.read_task(args.path, art["image_size"], device, args.seed, args.test_fraction)
    lam, lam_note = (args.ewc_lambda, "given") if args.ewc_lambda is not None else your_task.tuned_lambda(args.learngene)
    if lam is None:
        lam, lam_note = RELEASED_LAMBDA, f"the released strength: {lam_note}"
    settings = {}  # each model's: its learning rate and epochs given, else the evidence's, else the paper's
    for m in trained:
        chosen = (advice or {}).get("settings", {}).get(m, {})
        epochs = args.epochs or chosen.get("epochs", TrainSettings.epochs)
        settings[m] = TrainSettings(epochs, args.batch_size, args.lr or chosen.get("lr", TrainSettings.lr),
                                    ewc_lambda=lam, eval_every=epochs, precision=resolve_precision(args.precision,
                                                                                                 device))
    n_train, n_test = len(data["train"]), len(data["test"])
    print(f"{len(source.classes)} classes, {n_train} training and {n_test} test images "
          f"({source.checksums['layout']}); EWC strength {lam:g} ({lam_note})")
    prov = {**provenance(device, argv, args.seed), "learngene": str(args.learngene), "data": str(args.path),
            "layout": source.checksums["layout"], "content_sha256": source.checksums["content.sha256"],
            "ewc_lambda": lam, "ewc_lambda_from": lam_note, "batch_size": args.batch_size,
            "recommendation": str(args.recommendation) if advice else None}
    results = {"classes": source.classes, "train_images": n_train, "test_images": n_test, "provenance": prov}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"  # moved into place when every model is written; locked until then
    with FolderLock(tmp):
        check_out()
        for name in OUTPUTS:  # an interrupted run's models are not mixed with this run's
            (tmp / name).unlink(missing_ok=True)
        results["method"] = {"trained": method, "chosen_by": chosen_by,
                             "measured_on": advice["measured_on"] if advice and not args.method else None}
        print(f"{method}: {chosen_by}" + (f", on {advice['measured_on']}" if advice and not args.method else ""))
        for m in trained:
            s = settings[m]
            model, curve, diverged, class_acc = your_task.train(m, inputs, data, len(source.classes), s, device,
                                                                args.seed)
            accuracy = curve[-1][3]
            torch_save(tmp / f"{m}.pt", your_task.model_record(model, m, source.classes, art, accuracy,
                                                                {**prov, "lr": s.lr, "epochs": s.epochs}))
            results[m] = {"test_accuracy": accuracy, "train_loss": curve[-1][1], "diverged": diverged,
                          "lr": s.lr, "epochs": s.epochs,
                          "class_accuracy": {c: None if a is None else 100 * a for c, a in zip(source.classes,
                                                                                                class_acc)}}
            print(f"{m} (lr {s.lr:g}, {s.epochs} epochs): test accuracy {accuracy:.1f}% on {n_test} held-out images"
                  + (" (the training loss diverged)" if diverged else ""))
        for m in trained if "scratch" in results else ():
            if m != "scratch":
                gain = results[m]["test_accuracy"] - results["scratch"]["test_accuracy"]
                results[f"{m}_minus_scratch"] = gain
                print(f"{m} - scratch: {gain:+.1f} points (one split of your images; other --seed values draw "
                      f"other held-out images and new layers)")
        write_json(tmp / "results.json", results)
        replace_dir(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
