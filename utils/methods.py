"""The methods compared on the target tasks, as data: what each model starts from, whether EWC holds its
inherited blocks, whether it is a linear probe; and how each method's fresh model is built from the inputs
(the learngene, and the collective checkpoint it was cut from). A study adds a method by adding a row here
and, if it starts from something new, a branch in build_model."""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from utils import learngene
from utils.cli import COUNT, INDEX, UserError, require
from utils.files import torch_load
from utils.models import BASE_WIDTHS, HIDDEN, CollectiveNet, IndividualNet


# the ladder's rungs: how many of the source's first conv blocks a rung keeps (each a pooling stage's end: the
# collective model pools after blocks 1, 3, 6, 9 and 12); 0 is the capacity control, 13 with the head's hidden
# layers kept is finetune-collective
LADDER = (2, 4, 7, 10, 13)


@dataclass(frozen=True)
class Method:
    name: str
    start: str        # what the model starts from: "random" (the individual architecture, every layer new);
                      # that architecture with inherited blocks: "learngene", "permuted-learngene" (the learngene
                      # with each filter's input channels shuffled), "other-layers" (another window of the same
                      # collective model) or "joint-learngene" (the learngene's layers of the joint source);
                      # a whole network: "collective" (the learngene's source collective model), "joint" (the
                      # joint source, utils/joint.py) or "random-collective" (the collective shape, untrained)
    keep: str = "all"  # of a whole-network start ("collective", "joint"): which of the source's weights the model
                       # starts from, the rest freshly initialised: "all" (every conv block and the head's hidden
                       # layers: the fine-tune), "first-K" (the first K conv blocks, head new), "window" (the
                       # learngene's window of conv blocks only, head new)
    ewc: bool = False  # an EWC penalty keeps the inherited blocks near their inherited values
    probe: bool = False  # a linear classifier on the start's frozen conv features instead of training it all
    frozen: bool = False  # the inherited blocks' weights are not trained at all (BatchNorm statistics still adapt)
    about: str = ""

    @property
    def needs_collective(self):
        return self.start in ("other-layers", "collective", "random-collective", "full-learngene")

    @property
    def held_prefixes(self):
        """The parameters it inherits (the ones EWC holds): the learngene's blocks, or every conv block."""
        return ("front.", "inherited.") if self.start in FULL_STARTS else ("inherited.",)

    @property
    def kept_blocks(self):
        """Of a whole-network start: 'all', or how many of the source's first conv blocks it keeps (an int), or
        'window' (the learngene's blocks)."""
        return int(self.keep.removeprefix("first-")) if self.keep.startswith("first-") else self.keep

    @property
    def needs_joint(self):
        return self.start in ("joint", "joint-learngene", "full-joint-learngene")

    @property
    def individual_architecture(self):
        return self.start in INDIVIDUAL_STARTS

    @property
    def groupable(self):
        """Trained with the others of its shot count as one grouped network (utils/grouped.py): the methods
        of the individual architecture that train every weight."""
        return self.individual_architecture and not self.frozen


FULL_STARTS = ("full-learngene", "full-joint-learngene")  # every conv block of the individual model inherited
INDIVIDUAL_STARTS = ("random", "learngene", "permuted-learngene", "other-layers", "joint-learngene", *FULL_STARTS)
LEARNGENE_WEIGHTS = ("learngene", "permuted-learngene")  # starts that read the learngene's weights


METHODS = {m.name: m for m in (
    Method("learngene", "learngene", ewc=True, about="learngene blocks + new random front and head, EWC on the "
           "inherited blocks"),
    Method("learngene-noewc", "learngene", about="the same without EWC"),
    Method("scratch", "random", about="the same architecture, every layer random, no EWC (the released baseline)"),
    Method("other-layers", "other-layers", ewc=True, about="the same architecture and EWC, inheriting another "
           "window of conv layers of the same shapes from the same collective checkpoint (the one sharing fewest "
           "layers with the learngene, then the one the criterion ranks worst)"),
    Method("finetune-collective", "collective", about="the whole collective model the learngene came from, a new "
           "5-way output layer, no EWC"),
    Method("probe-collective", "collective", probe=True, about="a linear classifier on the frozen conv features of "
           "that collective model (the few-shot 'Baseline' of Chen et al., ICLR 2019): did the collective model "
           "learn anything transferable?"),
    Method("probe-random", "random-collective", probe=True, about="the same on a randomly initialised collective "
           "network of the same shape: the floor"),
    Method("learngene-frozen", "learngene", frozen=True, about="learngene blocks held fixed (their weights are not "
           "trained; BatchNorm statistics adapt), new random front and head"),
    Method("learngene-permuted", "permuted-learngene", ewc=True, about="structure control: the learngene with each "
           "inherited filter's input channels shuffled (same tensors, norms and BatchNorm statistics, learned wiring "
           "destroyed), EWC as learngene"),
    Method("learngene-joint", "joint-learngene", ewc=True, about="strong-source control: the learngene's conv layers "
           "cut from the joint source (the same network trained on all base classes at once, same images and "
           "budget), EWC as learngene"),
    Method("finetune-joint", "joint", about="the whole joint source, a new 5-way output layer, no EWC"),
    Method("probe-joint", "joint", probe=True, about="a linear classifier on the joint source's frozen conv features"),
    # a lightweight model that inherits every layer it can (README, "A lightweight model that inherits every layer")
    Method("learngene-full", "full-learngene", ewc=True, about="the learngene's architecture with every conv block "
           "inherited: the learngene's blocks and, for each new front block, the collective model's conv layer of "
           "its shape (full_inheritance_layers); head new, EWC on every inherited block"),
    Method("learngene-full-noewc", "full-learngene", about="the same without EWC"),
    Method("learngene-full-joint", "full-joint-learngene", ewc=True, about="the same layers cut from the joint "
           "source, EWC on every inherited block"),
    # where the knowledge sits: the source's own architecture, some of its blocks kept, the rest fresh
    Method("scratch-collective", "random-collective", about="capacity control: the collective architecture at the "
           "extraction widths, every weight random, trained as finetune-collective"),
    *(Method(f"first{k}-{source}", source, keep=f"first-{k}", about=f"the {source} source's first {k} conv blocks, "
             f"every later block and the head fresh (the capacity control's initialisation), trained whole")
      for source in ("collective", "joint") for k in LADDER),
    *(Method(f"window-{source}", source, keep="window", about=f"the converse of the learngene at the source's "
             f"capacity: the {source} source's blocks of the learngene's window kept, every block before and after "
             f"them and the head fresh, trained whole") for source in ("collective", "joint")),
)}
# the methods of the plain individual study (the pipeline's `individual`, the script's default); the others belong
# to the studies that ask their questions: the controls to `source`, the rest to `inherit` and `knowledge`
DEFAULT_METHODS = ("learngene", "learngene-noewc", "scratch", "other-layers", "finetune-collective", "probe-collective",
                   "probe-random")
CONTROLS = ("learngene-frozen", "learngene-permuted", "learngene-joint", "finetune-joint", "probe-joint")
FULL_INHERITANCE = ("learngene-full", "learngene-full-noewc", "learngene-full-joint")
LADDER_ROWS = ("scratch-collective", *(f"first{k}-collective" for k in LADDER), "window-collective",
               *(f"first{k}-joint" for k in LADDER), "window-joint")
BASELINE = "scratch"  # the paired differences are taken against it


@dataclass
class Inputs:
    """What the runs start from: the learngene artifact (and its file), and the collective checkpoint the
    baselines use (None when no requested method needs it; its file is collective["path"])."""
    learngene: dict
    learngene_path: str
    collective: dict = None
    joint: dict = None  # the joint source's checkpoint (utils/joint.py), for the methods that read it


def reads(method, identity):
    """The part of a run identity (runstore.run_identity) that a run of `method` depends on: the training settings
    and split, EWC's strength only if it uses EWC, and of the learngene and the collective checkpoint their weights
    only where it inherits them, else only their shapes, and its own learning rate. Runs with equal reads are the same computation, so one
    results folder can reuse another's (a scratch run does not change with the learngene it is compared to)."""
    m = METHODS[method]
    start = m.start
    dropped = {"ewc_lambda"} if not m.ewc else set()
    # other-layers: the learngene's criterion picks its window; full-learngene: the learngene's blocks are its own
    if start not in LEARNGENE_WEIGHTS + ("other-layers", "full-learngene"):
        dropped.add("learngene_sha256")
    if start not in LEARNGENE_WEIGHTS + ("other-layers", "joint-learngene", *FULL_STARTS) and m.keep != "window":
        dropped.add("learngene_layers")  # the individual architecture is learngene_shapes
    if start not in ("other-layers", "collective", "full-learngene"):
        dropped.add("collective_sha256")
    if not m.needs_joint:
        dropped.add("joint_sha256")
    # the architecture a run builds: the individual one (the learngene's shapes) or the collective one
    dropped.add("collective_shapes" if m.individual_architecture else "learngene_shapes")
    kept = {k: v for k, v in identity.items() if k not in dropped and k not in ("lr_of", "epochs_of")}
    # a method given its own learning rate (--lr_of) or schedule (--epochs_of) reads that one, not the others'
    for setting in ("lr", "epochs"):
        if setting in kept:
            kept[setting] = (identity.get(f"{setting}_of") or {}).get(method, kept[setting])
    return kept


def load_collective(path, art, split):
    """The collective checkpoint the baselines start from: by default the learngene's own source (the model after
    the extraction task), so other-layers and finetune-collective differ from the learngene in one thing only."""
    if path is None:
        path = Path(art["collective_checkpoint"])
        require(path.is_file(), f"the learngene's source checkpoint {path} is not there; give --collective")
    ck = torch_load(path, "collective checkpoint")
    require(isinstance(ck, dict) and {"config", "widths", "model", "task"} <= set(ck),
            f"{path} is not a collective checkpoint of this project")
    check_checkpoint(ck, path)
    require(ck["config"].get("dataset") == split.dataset and ck["config"].get("image_size") == split.image_size,
            f"{path} is a collective model of {ck['config'].get('dataset')} at {ck['config'].get('image_size')}px; "
            f"the split is {split.dataset} at {split.image_size}px")
    ck["path"] = str(path)
    return ck



def check_checkpoint(ck, path):
    """A collective checkpoint's fields, and its weights' names and shapes against the network its widths make (built
    on the meta device: no memory), every weight finite: a damaged file is one line naming the file and the field."""
    def bad(what):
        raise UserError(f"{path} is a damaged collective checkpoint ({what})")
    config, widths, state = ck["config"], ck["widths"], ck["model"]
    if not (isinstance(config, dict) and isinstance(config.get("dataset"), str)
            and learngene.STORED_IMAGE_SIZE.holds(config.get("image_size")) and COUNT.holds(config.get("num_outputs"))):
        bad("its config's dataset, image_size or num_outputs")
    if not (isinstance(widths, list) and len(widths) == len(BASE_WIDTHS) and all(COUNT.holds(w) for w in widths)):
        bad(f"widths {widths!r:.80}")
    if not (INDEX.holds(ck["task"]) and isinstance(state, dict)):
        bad("its task or its weights")
    with torch.device("meta"):
        expected = CollectiveNet(widths, config["image_size"], config["num_outputs"]).state_dict()
    if set(state) != set(expected):
        bad(f"its weights are not the network's ({sorted(set(state) ^ set(expected))[0]})")
    for name, t in state.items():
        if not (isinstance(t, torch.Tensor) and t.shape == expected[name].shape):
            bad(f"{name}: {tuple(getattr(t, 'shape', ()))}, the widths say {tuple(expected[name].shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad(f"{name} holds non-finite values")


def collective_net(collective, trained=True):
    """The collective model of a checkpoint, with its trained weights or freshly initialised."""
    config = collective["config"]
    model = CollectiveNet(collective["widths"], config["image_size"], config["num_outputs"])
    if trained:
        model.load_state_dict(collective["model"])
    return model


def build_model(method, inputs, image_size, num_classes=5):
    """A method's fresh model and the source's conv layers it inherits (None: none, or all of them)."""
    art, m = inputs.learngene, METHODS[method]
    start = m.start
    if start in ("collective", "joint", "random-collective"):
        return source_architecture(m, inputs, num_classes)
    model = IndividualNet(art["blocks"], image_size, num_classes)  # the new layers' initialisation: the same for every method
    if start in FULL_STARTS:
        source = inputs.joint if start == "full-joint-learngene" else inputs.collective
        layers = full_inheritance_layers(model.conv_shapes(), art["layers"], source["widths"])
        inherit_blocks(model, source["model"], layers)
        return model, layers
    if start in LEARNGENE_WEIGHTS:
        learngene.inherit(model, art)
        if start == "permuted-learngene":
            permute_input_channels(model)
        return model, art["layers"]
    if start == "joint-learngene":
        joint = inputs.joint
        learngene.inherit(model, learngene.make_artifact(joint["model"], joint["widths"], art["layers"],
                                                         dataset=art["dataset"], image_size=image_size,
                                                         source_task=joint["task"]))
        return model, art["layers"]
    if start == "other-layers":
        collective = inputs.collective
        other = other_layers(art, collective)
        learngene.inherit(model, learngene.make_artifact(collective["model"], collective["widths"], other,
                                                         dataset=art["dataset"], image_size=image_size,
                                                         source_task=collective["task"]))
        return model, other
    return model, None  # random


def source_architecture(m, inputs, num_classes):
    """A model of the collective architecture at the source's widths and the source's weights where the method keeps
    them. The whole fine-tune is the source with a new `num_classes` output layer. Every other row is first drawn
    whole (from the global generator, which the caller seeded per run) with a `num_classes` head, so the capacity
    control and every rung of either source hold the same fresh weights wherever they keep none; then the kept
    blocks are copied in. Returns the model and the source's conv layers it keeps (None: all of them, with the
    head's hidden layers, or none)."""
    source = inputs.joint if m.start == "joint" else inputs.collective
    if m.keep == "all" and m.start != "random-collective":
        model = collective_net(source)
        model.head[-1] = nn.Linear(HIDDEN, num_classes)
        return model, None
    model = CollectiveNet(source["widths"], source["config"]["image_size"], num_classes)
    kept = 0 if m.start == "random-collective" else m.kept_blocks
    layers = list(inputs.learngene["layers"]) if kept == "window" else list(range(kept))
    with torch.no_grad():
        for i in layers:
            model.features[i].load_state_dict({name: source["model"][f"features.{i}.{name}"]
                                               for name in learngene.BLOCK_TENSORS})
    return model, layers or None


def full_inheritance_layers(conv_shapes, learngene_layers, widths):
    """Which of the source's conv layers each conv block of the learngene's individual model inherits: the
    learngene's own layers for its blocks, and for each new block before them, from the deepest back, the deepest
    layer of the same shape (in -> out channels) below the layer the next block inherits, so the blocks keep the
    source's order of depth and each reads what fed it most closely there. A source without such a layer for some
    block is refused."""
    cins = [3] + list(widths[:-1])
    shapes = [(a, b) for a, b, _ in conv_shapes]
    layers = list(learngene_layers)
    for shape in reversed(shapes[:len(shapes) - len(layers)]):
        below = [i for i in range(layers[0]) if (cins[i], widths[i]) == shape]
        require(below, f"the source (conv widths {list(widths)}) has no {shape[0]}->{shape[1]} conv layer below "
                f"layer {layers[0]}: no block of it can start the individual model's {shape[0]}->{shape[1]} block")
        layers.insert(0, below[-1])
    return layers


def check_sources(method_names, inputs):
    """Refuse, before anything trains, a source that cannot give some requested method its blocks."""
    art = inputs.learngene
    for name in method_names:
        start = METHODS[name].start
        if start in FULL_STARTS:
            source = inputs.joint if start == "full-joint-learngene" else inputs.collective
            full_inheritance_layers(IndividualNet(art["blocks"], art["image_size"]).conv_shapes(), art["layers"],
                                    source["widths"])


def inherit_blocks(model, source_state, layers):
    """Copy the source's conv blocks `layers` (weights, biases, BatchNorm parameters and running statistics) into
    the individual model's conv blocks, in order."""
    blocks = [*model.front, *model.inherited]
    require(len(blocks) == len(layers), f"{len(layers)} source layers for {len(blocks)} conv blocks")
    with torch.no_grad():
        for block, i in zip(blocks, layers):
            block.load_state_dict({name: source_state[f"features.{i}.{name}"] for name in learngene.BLOCK_TENSORS})


@torch.no_grad()
def permute_input_channels(model):
    """Shuffle the input channels of every inherited filter, each filter by its own permutation (from the global
    generator, after the new layers were initialised): every tensor keeps its values per filter, so each filter's
    norm, its bias and the BatchNorm parameters and statistics are unchanged, while which input each weight reads,
    the structure learned, is destroyed."""
    for block in model.inherited:
        w = block.conv.weight
        order = torch.argsort(torch.rand(w.shape[0], w.shape[1]), dim=1).to(w.device)
        w.copy_(torch.gather(w, 1, order[:, :, None, None].expand_as(w)))


def other_layers(art, collective):
    """Another window of conv layers with the learngene's shapes, from the same collective checkpoint: the one
    sharing the fewest layers with the learngene, and among those the one the criterion ranks worst (or,
    without a criterion record, the shallowest). The individual model's architecture, pooling included, is the
    learngene's: only which weights are inherited differs."""
    widths, k = collective["widths"], len(art["layers"])
    cins = [3] + list(widths[:-1])
    shapes = [(a, b) for a, b, _ in art["blocks"]]
    candidates = [s for s in range(1, len(widths) - k + 1)
                  if s != art["layers"][0] and [(cins[i], widths[i]) for i in range(s, s + k)] == shapes]
    require(candidates, f"the collective model has no other window of {k} conv layers shaped like the learngene "
            f"{shapes}; leave out the other-layers method")
    scores = {int(s): v for s, v in art["criterion"]["windows"].items()}
    shared = {s: len(set(range(s, s + k)) & set(art["layers"])) for s in candidates}
    chosen = min(candidates, key=lambda s: (shared[s], -scores.get(s, 0.0), s))
    return list(range(chosen, chosen + k))


