"""Train many individual models of one architecture at once, exactly as if one by one.

M IndividualNets become one network: every conv is a grouped conv (groups=M, model m's channels are
block m), every BatchNorm spans the M*C channels (a channel's batch statistics are its own model's),
and every Linear is a batched matmul over a [M, out, in] weight. Model m reads only its own images and
its own parameters, the loss is the sum of the per-model losses, and SGD (momentum, weight decay) acts
element by element, so each model follows the trajectory it would alone, up to floating-point
summation order. Each model keeps its own batch order and flips, drawn from the same seeded generator as
a sequential run. Small models on a big device are launch-bound; this turns M small launches into one.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.engine import EpochStats, autocast, batch_indices, class_accuracy, full_precision, normalize


class GroupedConvBlock(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        m = len(blocks)
        conv0 = blocks[0].conv
        self.pool = blocks[0].pool
        self.conv = nn.Conv2d(conv0.in_channels * m, conv0.out_channels * m, 3, padding=1, groups=m)
        self.bn = nn.BatchNorm2d(conv0.out_channels * m)
        with torch.no_grad():
            for part, names in (("conv", ("weight", "bias")), ("bn", ("weight", "bias", "running_mean", "running_var"))):
                for name in names:
                    getattr(getattr(self, part), name).copy_(torch.cat([getattr(getattr(b, part), name) for b in blocks]))

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        return F.max_pool2d(x, 2) if self.pool else x


class GroupedLinear(nn.Module):
    def __init__(self, linears):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([l.weight.detach() for l in linears]).clone())
        self.bias = nn.Parameter(torch.stack([l.bias.detach() for l in linears]).clone())

    def forward(self, x):  # x [B, M, in] -> [B, M, out]
        return torch.einsum("bmi,moi->bmo", x, self.weight) + self.bias


class GroupedIndividual(nn.Module):
    """M IndividualNets (same architecture) as one module. Input [B, M, 3, H, W], output logits [B, M, K]."""

    def __init__(self, models):
        super().__init__()
        self.m = len(models)
        self.blocks = nn.ModuleList(GroupedConvBlock([mod.front[i] for mod in models]) for i in range(len(models[0].front)))
        self.blocks.extend(GroupedConvBlock([mod.inherited[i] for mod in models]) for i in range(len(models[0].inherited)))
        self.linears = nn.ModuleList(GroupedLinear([mod.head[i] for mod in models]) for i in _linear_indices(models[0]))

    def forward(self, x):
        b = x.shape[0]
        x = x.reshape(b, -1, *x.shape[-2:])
        for block in self.blocks:
            x = block(x)
        x = x.reshape(b, self.m, -1)  # model m's channels are block m: its own (c, y, x) flattening
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i + 1 < len(self.linears):
                x = F.relu(x)
        return x


def _linear_indices(model):
    return [i for i, layer in enumerate(model.head) if isinstance(layer, nn.Linear)]


def grouped_names(model):
    """IndividualNet parameter name -> (grouped parameter name, stacking): 'cat' along dim 0 or 'stack'."""
    out = {}
    front = len(model.front)
    for prefix, count, offset in (("front", front, 0), ("inherited", len(model.inherited), front)):
        for i in range(count):
            for part in ("conv.weight", "conv.bias", "bn.weight", "bn.bias"):
                out[f"{prefix}.{i}.{part}"] = (f"blocks.{i + offset}.{part}", "cat")
    for j, i in enumerate(_linear_indices(model)):
        for part in ("weight", "bias"):
            out[f"head.{i}.{part}"] = (f"linears.{j}.{part}", "stack")
    return out


def group_tensors(per_model, names):
    """Stack per-model dicts {IndividualNet name: tensor} into {grouped name: tensor}."""
    out = {}
    for name, (gname, how) in names.items():
        if name in per_model[0]:
            ts = [d[name] for d in per_model]
            out[gname] = torch.cat(ts) if how == "cat" else torch.stack(ts)
    return out


def train_epoch_grouped(model, optimizer, images, labels, batch_size, generators, extra_loss=None, precision="fp32"):
    """One epoch for M models. images uint8 [M, N, 3, H, W], labels [M, N]; generators: one per model, used
    exactly as engine.train_epoch uses its one (a permutation, then one flip draw per batch); extra_loss(model)
    returns the M models' penalties [M]. Returns one engine.EpochStats per model."""
    model.train()
    m, n = labels.shape
    device = images.device
    chunks = [batch_indices(n, batch_size, g) for g in generators]
    rows = torch.arange(m, device=device)[:, None]
    total_loss = torch.zeros(m, device=device)
    total_penalty = torch.zeros(m, device=device)
    correct = torch.zeros(m, device=device)
    for step in range(len(chunks[0])):
        idx = torch.stack([c[step] for c in chunks]).to(device)                       # [M, b]
        flips = torch.stack([torch.rand(idx.shape[1], generator=g, device=g.device) < 0.5 for g in generators])
        x = images[rows, idx]                                                          # [M, b, 3, H, W]
        x = torch.where(flips.to(device)[:, :, None, None, None], x.flip(-1), x)
        x = normalize(x.flatten(0, 1)).view(*idx.shape, *x.shape[2:]).transpose(0, 1)  # [b, M, 3, H, W]
        y = labels[rows, idx]                                                          # [M, b]
        with autocast(device, precision):
            logits = full_precision(model(x))                                          # [b, M, K]
        per_model = F.cross_entropy(logits.permute(0, 2, 1), y.t(), reduction="none").mean(0)  # [M]
        penalties = extra_loss(model) if extra_loss is not None else torch.zeros_like(per_model)
        objective = (per_model + penalties).sum()  # model m's parameters see only its own terms
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total_loss += per_model.detach() * idx.shape[1]
        total_penalty += penalties.detach()
        correct += (logits.argmax(-1) == y.t()).sum(0)
    seen, steps = sum(len(c) for c in chunks[0]), len(chunks[0])
    return [EpochStats(loss, penalty, acc) for loss, penalty, acc in
            zip((total_loss / seen).tolist(), (total_penalty / steps).tolist(), (correct / seen).tolist())]


@torch.no_grad()
def evaluate_grouped(model, images, labels, precision="fp32", batch_size=256):
    """Per-model accuracy [M] in eval mode, and per model its accuracy on each label's images (engine.evaluate's
    by_class); images uint8 [M, N, 3, H, W]."""
    model.eval()
    m, n = labels.shape
    hits, n_classes = [], 0
    for start in range(0, n, batch_size):
        x = images[:, start:start + batch_size]
        b = x.shape[1]
        x = normalize(x.flatten(0, 1)).view(m, b, *x.shape[2:]).transpose(0, 1)
        with autocast(images.device, precision):
            logits = model(x)                                                           # [b, M, classes]
        hits.append(logits.argmax(-1).t() == labels[:, start:start + b])
        n_classes = logits.shape[-1]
    hits = torch.cat(hits, 1)                                                           # [M, N]
    return (hits.double().sum(1) / n).tolist(), [class_accuracy(hits[i], labels[i], n_classes) for i in range(m)]
