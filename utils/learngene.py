"""The learngene artifact: the selected conv blocks of the collective model (conv and BatchNorm weights and
running statistics), their shapes and positions, the criterion that chose them, and provenance.
Plain tensors and containers only, so it loads with torch.load(weights_only=True)."""
from dataclasses import dataclass
from pathlib import Path

from utils.criterion import select_layers, variants_table
from utils.cli import COUNT, Number, UserError, require
from utils.files import torch_load, torch_save, write_text
from utils.repro import provenance
from utils.models import POOL_AFTER

FORMAT = "learngene-v1"
BLOCK_TENSORS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                 "bn.num_batches_tracked")


@dataclass(frozen=True)
class Selection:
    """How the learngene is taken from a collective run (the collective script's learngene flags)."""
    num_layers: int = 3  # consecutive conv layers chosen by the criterion (the paper: 3)
    layers: tuple = ()   # 0-based conv layers given outright, skipping the criterion (the released scripts: 10 11 12)
    after_task: int = 20  # the weights after this task (the paper: 20, the last widening); capped at the last trained

    def check(self, num_conv_layers):
        """Before any training: given layers distinct, consecutive and in 1..num_conv_layers-1 (the first conv
        reads RGB), a window that fits there, and a task."""
        require(self.after_task >= 0, f"--extract_after_task must be >= 0, got {self.after_task}")
        require(self.num_layers <= num_conv_layers - 1, f"--num_learngene_layers {self.num_layers}: the collective "
                f"model has {num_conv_layers - 1} candidate conv layers (1..{num_conv_layers - 1})")
        if self.layers:
            layers = sorted(self.layers)
            require(all(1 <= i < num_conv_layers for i in layers) and layers == list(range(layers[0], layers[0] + len(layers))),
                    f"--learngene_layers must be distinct consecutive conv layers in 1..{num_conv_layers - 1}, got "
                    f"{' '.join(map(str, self.layers))}")


def extract(out, split, selection, config, record, variant_record, num_tasks, device, argv=None):
    """Choose the learngene's layers (the criterion's rule on `record`, or the given ones), cut them from the
    checkpoint after the source task, and write learngene.pt and selection.txt."""
    out = Path(out)
    source_task = min(selection.after_task, num_tasks - 1)
    checkpoint_path = out / "checkpoints" / f"task_{source_task:03d}.pt"
    ck = torch_load(checkpoint_path, "collective checkpoint")
    widths = ck["widths"]
    selection.check(len(widths))
    if selection.layers:
        layers = sorted(selection.layers)
        reasoning, windows = f"learngene layers given by --learngene_layers: {layers}", {}
    else:
        layers, reasoning, windows = select_layers(record, selection.num_layers)
        reasoning += ("\n\nThe same rule on each statistic recorded beside it (heat map range over tasks x layers):\n"
                      + variants_table(variant_record, selection.num_layers))
    print(reasoning)
    write_text(out / "selection.txt", reasoning + "\n")
    artifact = make_artifact(ck["model"], widths, layers, dataset=split.dataset, image_size=split.image_size,
                             source_task=source_task, windows=windows, reasoning=reasoning,
                             checkpoint=str(checkpoint_path))
    artifact["provenance"] = {**provenance(device, argv, config["seed"]), "split_hash": split.hash,
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


# what an artifact's numbers may be (wider than the flags that make them: a file of another version still reads)
STORED_IMAGE_SIZE, STORED_LAYER = Number(int, 8, 4096), Number(int, 0, 1000)


def check_artifact(art, path):
    """Every field a reader uses, with the types and shapes it needs: a hand-edited or damaged artifact is one line
    naming the file and the field, before any model is built from it."""
    def bad(what):
        raise UserError(f"{path} is a damaged learngene artifact ({what})")
    import torch
    if not (isinstance(art.get("dataset"), str) and STORED_IMAGE_SIZE.holds(art.get("image_size"))):
        bad(f"dataset {art.get('dataset')!r}, image size {art.get('image_size')!r}")
    blocks, layers, state = art.get("blocks"), art.get("layers"), art.get("state")
    if not (isinstance(blocks, list) and blocks and isinstance(layers, list) and len(layers) == len(blocks)
            and all(STORED_LAYER.holds(i) for i in layers) and layers == list(range(layers[0], layers[0] + len(layers)))):
        bad(f"blocks {blocks!r:.80} for layers {layers!r:.80}: one block per consecutive conv layer")
    if not all(isinstance(b, list) and len(b) == 3 and COUNT.holds(b[0]) and COUNT.holds(b[1])
               and isinstance(b[2], bool) for b in blocks):
        bad("a block is not [in channels, out channels, pooled]")
    if not all(blocks[j][1] == blocks[j + 1][0] for j in range(len(blocks) - 1)):
        bad("a block's input width is not the previous block's output width")
    if not (isinstance(state, dict) and set(state) == {f"{j}.{n}" for j in range(len(blocks)) for n in BLOCK_TENSORS}):
        bad("its state does not hold exactly the blocks' conv and BatchNorm tensors")
    for j, (cin, cout, _) in enumerate(blocks):
        for name in BLOCK_TENSORS:
            t = state[f"{j}.{name}"]
            shape = (cout, cin, 3, 3) if name == "conv.weight" else () if name == "bn.num_batches_tracked" else (cout,)
            if not (isinstance(t, torch.Tensor) and tuple(t.shape) == shape):
                bad(f"block {j} {name}: {type(t).__name__} {tuple(getattr(t, 'shape', ()))}, its header says {shape}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad(f"block {j} {name} holds non-finite values")


def load(path, dataset=None, image_size=None):
    """Load and check a learngene artifact; a foreign, corrupt or mismatched file is a UserError."""
    art = torch_load(path, "learngene artifact")
    require(isinstance(art, dict) and art.get("format") == FORMAT, f"{path} is not a learngene artifact ({FORMAT})")
    check_artifact(art, path)
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
