"""Elastic weight consolidation (Kirkpatrick et al. 2017) that actually acts (PROTOCOL.md section 7.1).

penalty = lambda / 2 * sum_i F_i (theta_i - theta*_i)^2 over the chosen parameters, where theta* is the
anchor and F the diagonal empirical Fisher: the mean over *all* given samples of the squared per-sample
gradient of the cross-entropy at the true label, computed in eval mode (BatchNorm on its running
statistics, no dropout) with per-sample gradients from torch.func.
"""
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from utils.engine import normalize

# The released scripts' constants: importance 40, multiplied by 1000 in the penalty.
RELEASED_LAMBDA = 40 * 1000


@torch.no_grad()
def fisher_diagonal(model, data, names, chunk=16):
    """Diagonal empirical Fisher of parameters `names` over every sample of `data` (a DeviceData)."""
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    fixed.update({k: v.detach() for k, v in model.named_buffers()})
    chosen = {k: params[k].detach() for k in names}

    def sample_loss(p, x, y):
        out = functional_call(model, {**fixed, **p}, (x.unsqueeze(0),))
        return F.cross_entropy(out.float(), y.unsqueeze(0))

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


class EWC:
    def __init__(self, anchor, fisher, lam):
        self.anchor = {k: v.detach().clone() for k, v in anchor.items()}
        self.fisher = {k: v.detach().clone() for k, v in fisher.items()}
        self.lam = lam

    def penalty(self, model):
        params = dict(model.named_parameters())
        total = 0.0
        for k, f in self.fisher.items():
            total = total + (f * (params[k] - self.anchor[k]).pow(2)).sum()
        return 0.5 * self.lam * total

    def __call__(self, model):
        return self.penalty(model)
