"""Elastic weight consolidation (Kirkpatrick et al. 2017) that actually acts.

penalty = lambda / 2 * sum_i F_i (theta_i - theta*_i)^2 over the chosen parameters, where theta* is the
anchor and F the diagonal empirical Fisher: the mean over *all* given samples of the squared per-sample
gradient of the cross-entropy at the true label (per-sample gradients from torch.func).

Which normalisation the Fisher sees matters by orders of magnitude. Per-sample gradients need eval mode
(BatchNorm on running statistics), but a freshly built individual model's new layers hold their initial
running statistics (mean 0, variance 1), not the statistics training normalises with: the activations
reaching the inherited layers are then mis-scaled, many channels are dead, and the Fisher comes out about
1000 times too small in the median and wildly uneven, which with the released lambda (40000) makes SGD
diverge. So by default the Fisher is computed on a copy of the model whose BatchNorm running statistics
were first re-estimated on the same images (train-mode forward passes, no weight changes): eval mode then
normalises as training does, up to the batch-to-batch noise of batch statistics.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from utils.engine import full_precision, normalize

# The released scripts' constants: importance 40, multiplied by 1000 in the penalty.
RELEASED_LAMBDA = 40 * 1000


@torch.no_grad()
def estimate_batchnorm_statistics(model, data, batch_size=256):
    """Set every BatchNorm's running statistics to their average over `data` (no flips, no weight change)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches instead of an exponential one
    was_training = model.training
    model.train()
    for start in range(0, len(data), batch_size):
        if len(data) - start > 1:  # BatchNorm cannot take a batch of one
            model(normalize(data.images[start:start + batch_size]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return model


@torch.no_grad()
def fisher_diagonal(model, data, names, chunk=16, estimate_batchnorm=True):
    """Diagonal empirical Fisher of parameters `names` over every sample of `data` (a DeviceData).
    estimate_batchnorm=False uses the model's running statistics as they are (the error described above)."""
    if estimate_batchnorm:
        model = estimate_batchnorm_statistics(copy.deepcopy(model), data)
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    fixed.update({k: v.detach() for k, v in model.named_buffers()})
    chosen = {k: params[k].detach() for k in names}

    def sample_loss(p, x, y):
        out = functional_call(model, {**fixed, **p}, (x.unsqueeze(0),))
        return F.cross_entropy(full_precision(out), y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in chosen.items()}
    for start in range(0, len(data), chunk):
        x = normalize(data.images[start:start + chunk])
        with torch.enable_grad():
            g = per_sample(chosen, x, data.labels[start:start + chunk])
        for k in fisher:
            fisher[k] += g[k].pow(2).sum(0)
    model.train(was_training)
    return {k: v / max(len(data), 1) for k, v in fisher.items()}


def fisher_with_batch_statistics(model, data, names):
    """The reference the Fisher is checked against: per-sample squared gradients with the normalisation training
    uses (BatchNorm on the statistics of the batch, here all of `data`), one backward pass per sample. Exact in
    what it measures, but slow (a whole-batch forward per sample), so for checks only."""
    model = copy.deepcopy(model).train()
    x = normalize(data.images)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    for i in range(len(data)):
        model.zero_grad()
        F.cross_entropy(model(x)[i:i + 1], data.labels[i:i + 1]).backward()
        for n, p in model.named_parameters():
            if n in names:
                fisher[n] += p.grad ** 2 / len(data)
    return fisher


class EWC:
    def __init__(self, anchor, fisher, lam):
        self.anchor = {k: v.detach().clone() for k, v in anchor.items()}
        self.fisher = {k: v.detach().clone() for k, v in fisher.items()}
        self.lam = lam

    def penalty(self, model, groups=None):
        """The penalty, a scalar; with `groups=M` (utils/grouped.py: every tensor holds M models' blocks one
        after the other along dim 0) a vector of the M models' own penalties."""
        params = dict(model.named_parameters())
        total = 0.0
        for k, f in self.fisher.items():
            term = f * (params[k] - self.anchor[k]).pow(2)
            total = total + (term.sum() if groups is None else term.reshape(groups, -1).sum(1))
        return 0.5 * self.lam * total

    def __call__(self, model):
        return self.penalty(model)
