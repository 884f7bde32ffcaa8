"""The networks: the expandable collective model, Net2Net widening, and the lightweight individual model built
around inherited learngene layers (README, "Collective model" and "Individual models")."""
import torch
import torch.nn as nn
import torch.nn.functional as F

BASE_WIDTHS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256)
POOL_AFTER = (1, 3, 6, 9, 12)  # 0-based conv blocks followed by a 2x2 max-pool
# task -> (0-based conv layer widened before that task, channels added)
WIDENING = {1: (2, 64), 2: (3, 64), 3: (4, 64), 4: (4, 64), 5: (5, 64), 6: (5, 64), 7: (6, 64), 8: (6, 64),
            **{t: (7 + (t - 9) // 2, 128) for t in range(9, 21)}}
HIDDEN = 1024
DROPOUT = 0.5  # in the head's two hidden layers, as the released VGG


def widths_at(task):
    """The conv widths the collective model has while training `task` (0-based)."""
    widths = list(BASE_WIDTHS)
    for t in range(1, task + 1):
        if t in WIDENING:
            layer, added = WIDENING[t]
            widths[layer] += added
    return widths


def pooled_size(size, pools):
    for _ in range(pools):
        size //= 2
    return size


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn(conv3x3(self.conv, x)), inplace=True)
        return F.max_pool2d(x, 2) if self.pool else x


def conv3x3(conv, x):
    """conv(x) for a 3x3, padding-1 nn.Conv2d. On a CPU, maps of at most 2x2 (the collective model's last three
    blocks at 32px) go through unfold and one matrix product instead: the same function, but oneDNN's
    convolution backward at such shapes is slow, in bf16 slower than in fp32 (512 channels at 2x2, batch 64,
    forward + backward: 33 ms as a convolution, 13 ms as a matrix product, measured on the 2-core CPU here)."""
    n, _, h, w = x.shape
    if x.device.type != "cpu" or h * w > 4:
        return conv(x)
    columns = F.unfold(x, 3, padding=1).transpose(1, 2)           # [N, h*w, Cin*9], ordered as the weight's
    y = F.linear(columns, conv.weight.flatten(1), conv.bias)      # [N, h*w, Cout]
    return y.transpose(1, 2).reshape(n, -1, h, w)


class CollectiveNet(nn.Module):
    """VGG-style: 13 conv blocks of the given widths, then a 3-layer MLP head sized from the input.
    Outputs logits (no Softmax: the loss applies log-softmax itself)."""

    def __init__(self, widths=BASE_WIDTHS, image_size=32, num_outputs=64):
        super().__init__()
        self.widths, self.image_size, self.num_outputs = list(widths), image_size, num_outputs
        cins = [3] + self.widths[:-1]
        self.features = nn.ModuleList(ConvBlock(a, b, i in POOL_AFTER) for i, (a, b) in enumerate(zip(cins, self.widths)))
        s = pooled_size(image_size, len(POOL_AFTER))
        if s < 1:  # a ValueError, so a loader reports a stored size that cannot be this network in one line
            raise ValueError(f"image size {image_size} is too small for {len(POOL_AFTER)} poolings")
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(self.widths[-1] * s * s, HIDDEN), nn.ReLU(inplace=True), nn.Dropout(DROPOUT),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(inplace=True), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, num_outputs))

    def trunk(self, x):
        """The conv blocks' output: the features the head (or a probe) reads."""
        for block in self.features:
            x = block(x)
        return x

    def forward(self, x):
        return self.head(self.trunk(x))

    def conv_weights(self):
        return [b.conv.weight for b in self.features]


# ---------------------------------------------------------------- Net2Net widening
def widening_map(width, added, generator):
    """Which old channel each of the width + added new channels copies (`mapping`), and the share of its
    source's outgoing weights each one takes (`shares`; a source and its copies share 1 between them).

    The shares are unequal random fractions (Net2Net's random split): the function is unchanged, but a copy's
    gradient scales with its share, so a source and its copies drift apart from the first SGD step and the
    added channels add capacity. With equal shares (and no noise) the copies would receive identical
    gradients and stay identical forever: the widened network would be the old one in bigger tensors."""
    extra = torch.randint(0, width, (added,), generator=generator)
    mapping = torch.cat([torch.arange(width), extra])
    weight = 0.5 + torch.rand(len(mapping), generator=generator, dtype=torch.float64)  # in [0.5, 1.5)
    totals = torch.zeros(width, dtype=torch.float64).index_add_(0, mapping, weight)
    return mapping, weight / totals[mapping]  # a source without copies keeps a share of exactly 1


def widen_state(state, layer, mapping, last_layer, shares=None):
    """Widen a CollectiveNet-shaped dict of tensors (weights, or per-parameter EWC importances) at conv `layer`.

    Outgoing side (the layer's conv and BatchNorm, running statistics too): new channels copy their sources.
    Incoming side (the next conv, or the first Linear after the last conv): the columns of a copied channel
    are copied and, given `shares`, multiplied by them, so the sum the next layer computes is unchanged. An
    importance (shares=None) is copied, not split."""
    out = dict(state)
    p = f"features.{layer}."
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        if p + name in out:
            t = out[p + name]
            out[p + name] = t[mapping.to(t.device)].clone()
    nxt = "head.1.weight" if layer == last_layer else f"features.{layer + 1}.conv.weight"
    if nxt in out:
        w = out[nxt]
        m = mapping.to(w.device)
        s = torch.ones(len(mapping)) if shares is None else shares
        s = s.to(w.device, w.dtype)
        if nxt.startswith("head"):  # flattened (channel, y, x) inputs of the first Linear
            old_width = int(m.max()) + 1  # the mapping lists every old channel
            w3 = w.reshape(w.shape[0], old_width, -1)
            out[nxt] = (w3[:, m] * s[None, :, None]).reshape(w.shape[0], -1)
        else:
            out[nxt] = w[:, m] * s[None, :, None, None]
    return out


def widen(model, layer, added, generator):
    """A new CollectiveNet with `added` more channels at conv `layer`, computing the same function in eval mode.
    Returns the model and the (mapping, shares) used, so other per-parameter state can be widened alike."""
    mapping, shares = widening_map(model.widths[layer], added, generator)
    state = widen_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, layer, mapping,
                        len(model.widths) - 1, shares)
    widths = list(model.widths)
    widths[layer] += added
    new = CollectiveNet(widths, model.image_size, model.num_outputs)
    new.load_state_dict(state)
    device = next(model.parameters()).device
    return new.to(device), (mapping, shares)


@torch.no_grad()
def distinct_filters(weight, tolerance=1e-4):
    """How many of a conv layer's filters are not (near-)copies of another: a filter counts once per group of
    filters whose cosine similarity exceeds 1 - tolerance. A widened layer whose copies never drifted apart
    has as many distinct filters as before its widening."""
    w = weight.detach().flatten(1).double()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
    similar = (w @ w.t()).triu(1) > 1 - tolerance
    return int(len(w) - similar.any(0).sum())


# ---------------------------------------------------------------- the individual model
FRONT_WIDTHS = (64, 128, 256)


class IndividualNet(nn.Module):
    """New random front blocks (each pooled), one more new conv to the learngene's input width, the
    learngene blocks (pooled as they were in the collective model, and always after the last), then a new
    3-layer head. `blocks` is [(in, out, pool)] of the learngene layers."""

    def __init__(self, blocks, image_size=32, num_classes=5, front=FRONT_WIDTHS):
        super().__init__()
        self.blocks_spec = [(int(a), int(b), bool(p)) for a, b, p in blocks]
        self.image_size, self.num_classes = image_size, num_classes
        self.blocks_spec[-1] = (*self.blocks_spec[-1][:2], True)
        cins = [3] + list(front)
        self.front = nn.ModuleList([ConvBlock(a, b, True) for a, b in zip(cins, front)]
                                   + [ConvBlock(front[-1], self.blocks_spec[0][0], False)])
        self.inherited = nn.ModuleList(ConvBlock(a, b, p) for a, b, p in self.blocks_spec)
        s = pooled_size(image_size, len(front) + sum(p for _, _, p in self.blocks_spec))
        if s < 1:
            raise ValueError(f"image size {image_size} is too small for this individual model")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.blocks_spec[-1][1] * s * s, HIDDEN),
                                  nn.ReLU(inplace=True), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(inplace=True),
                                  nn.Linear(HIDDEN, num_classes))

    def forward(self, x):
        for block in (*self.front, *self.inherited):
            x = block(x)
        return self.head(x)

    def conv_shapes(self):
        """(in, out, pooled) of every conv block, front first."""
        return [(b.conv.in_channels, b.conv.out_channels, b.pool) for b in (*self.front, *self.inherited)]


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
