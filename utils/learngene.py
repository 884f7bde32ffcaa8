"""The learngene artifact: the selected conv blocks of the collective model (conv and BatchNorm weights and
running statistics), their shapes and positions, the criterion that chose them, and provenance.
Plain tensors and containers only, so it loads with torch.load(weights_only=True)."""
from pathlib import Path

from utils import criterion as crit
from utils.common import UserError, provenance, require, torch_load, torch_save, write_text
from utils.models import POOL_AFTER

FORMAT = "learngene-v1"
BLOCK_TENSORS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                 "bn.num_batches_tracked")


def check_layer_flags(args, num_layers):
    """The collective script's learngene flags, checked before any training: --learngene_layers consecutive conv
    layers in 1..num_layers-1 (the first conv reads RGB), --num_learngene_layers a window that fits there, and
    --extract_after_task a task."""
    require(args.extract_after_task >= 0, f"--extract_after_task must be >= 0, got {args.extract_after_task}")
    require(args.num_learngene_layers <= num_layers - 1, f"--num_learngene_layers {args.num_learngene_layers}: the "
            f"collective model has {num_layers - 1} candidate conv layers (1..{num_layers - 1})")
    if args.learngene_layers:
        layers = sorted(args.learngene_layers)
        require(all(1 <= i < num_layers for i in layers) and layers == list(range(layers[0], layers[0] + len(layers))),
                f"--learngene_layers must be distinct consecutive conv layers in 1..{num_layers - 1}, got "
                f"{' '.join(map(str, args.learngene_layers))}")


def extract(out, split, args, config, record, variant_record, num_tasks, device, argv=None):
    out = Path(out)
    source_task = min(args.extract_after_task, num_tasks - 1)
    checkpoint_path = out / "checkpoints" / f"task_{source_task:03d}.pt"
    ck = torch_load(checkpoint_path, "collective checkpoint")
    widths = ck["widths"]
    check_layer_flags(args, len(widths))
    if args.learngene_layers:
        layers = sorted(args.learngene_layers)
        reasoning, windows = f"learngene layers given by --learngene_layers: {layers}", {}
    else:
        layers, reasoning, windows = crit.select_layers(record, args.num_learngene_layers)
        reasoning += ("\n\nThe same rule on each statistic recorded beside it (heat map range over tasks x layers):\n"
                      + crit.variants_table(variant_record, args.num_learngene_layers))
    print(reasoning)
    write_text(out / "selection.txt", reasoning + "\n")
    artifact = make_artifact(ck["model"], widths, layers, dataset=split.dataset, image_size=split.image_size,
                             source_task=source_task, windows=windows, reasoning=reasoning,
                             checkpoint=str(checkpoint_path))
    artifact["provenance"] = {**provenance(device, argv, args.seed), "split_hash": split.hash,
                              "collective_config": config}
    torch_save(out / "learngene.pt", artifact)
    print(f"learngene: conv layers {layers} of the collective model after task {source_task} -> {out / 'learngene.pt'}")
    return artifact


def make_artifact(model_state, widths, layers, *, dataset, image_size, source_task, windows=None, reasoning="",
                  checkpoint=""):
    cins = [3] + list(widths[:-1])
    return {
        "format": FORMAT, "dataset": dataset, "image_size": image_size, "widths": list(widths),
        "layers": list(layers), "source_task": source_task,
        "blocks": [[cins[i], widths[i], i in POOL_AFTER] for i in layers],
        "state": {f"{j}.{name}": model_state[f"features.{i}.{name}"].clone()
                  for j, i in enumerate(layers) for name in BLOCK_TENSORS},
        "criterion": {"windows": {str(k): v for k, v in (windows or {}).items()}, "reasoning": reasoning},
        "collective_checkpoint": checkpoint,
    }


def load(path, dataset=None, image_size=None):
    """Load and check a learngene artifact; a foreign, corrupt or mismatched file is a UserError."""
    art = torch_load(path, "learngene artifact")
    require(isinstance(art, dict) and art.get("format") == FORMAT, f"{path} is not a learngene artifact ({FORMAT})")
    try:
        for j, (cin, cout, _) in enumerate(art["blocks"]):
            w = art["state"][f"{j}.conv.weight"]
            require(tuple(w.shape) == (cout, cin, 3, 3), f"{path}: block {j} holds a {tuple(w.shape)} conv, "
                    f"its header says {(cout, cin, 3, 3)}")
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is an incomplete learngene artifact (missing {e})")
    if dataset is not None:
        require(art["dataset"] == dataset, f"{path} is a learngene from {art['dataset']}; the split is {dataset}")
    if image_size is not None:
        require(art["image_size"] == image_size, f"{path} was made on {art['image_size']}px images; "
                f"the split has {image_size}px")
    return art


def inherit(individual, art):
    """Copy the learngene's blocks into an IndividualNet's inherited blocks."""
    own = individual.inherited.state_dict()
    require(set(own) == set(art["state"]), "the individual model's inherited blocks do not match the learngene")
    individual.inherited.load_state_dict({k: v.to(own[k].device) for k, v in art["state"].items()})
    return individual
