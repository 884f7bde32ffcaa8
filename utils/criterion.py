"""The learngene criterion ("judgement", PROTOCOL.md section 5) and the rule that turns it into a choice.

Statistic: for each conv layer, the fraction of its weight-gradient entries whose magnitude exceeds a
threshold (default 5e-10), averaged over an epoch's batches, read from the gradients the training step
already computed. `signed=True` reproduces the released comparison (g > threshold, not |g|).

Selection rule: per layer, take the statistic's mean over the epochs of each task, then over tasks its
mean (low = few active gradients) and standard deviation (low = settled); score = mean + std. The
learngene is the window of k consecutive conv layers with the lowest mean score (the first conv, which
reads RGB, is never a candidate; ties go to the deeper window).
"""
import numpy as np
import torch
from PIL import Image, ImageDraw

from utils.common import require


class GradientCriterion:
    def __init__(self, threshold=5e-10, signed=False):
        self.threshold, self.signed = threshold, signed
        self.sums, self.batches = None, 0

    def start_epoch(self):
        self.sums, self.batches = None, 0

    @torch.no_grad()
    def __call__(self, model):
        grads = [w.grad for w in model.conv_weights()]
        if self.signed:
            vals = torch.stack([(g > self.threshold).float().mean() for g in grads])
        else:
            vals = torch.stack([(g.abs() > self.threshold).float().mean() for g in grads])
        self.sums = vals if self.sums is None else self.sums + vals
        self.batches += 1

    def end_epoch(self):
        """Per-layer averages over the epoch's batches (one device sync per epoch)."""
        if self.sums is None:
            return []
        return (self.sums / self.batches).tolist()


def task_layer_matrix(record):
    """record: rows (task, epoch, layer, value) -> (tasks, [T x L] mean over each task's epochs)."""
    tasks = sorted({r[0] for r in record})
    layers = max(r[2] for r in record) + 1
    m = np.zeros((len(tasks), layers))
    n = np.zeros((len(tasks), layers))
    pos = {t: i for i, t in enumerate(tasks)}
    for t, _, layer, v in record:
        m[pos[t], layer] += v
        n[pos[t], layer] += 1
    return tasks, m / np.maximum(n, 1)


def select_layers(record, k=3):
    """Apply the selection rule. Returns (chosen layer indices, a printable explanation, all window scores)."""
    require(len(record) > 0, "the criterion record is empty: train with --judgement to select a learngene")
    tasks, m = task_layer_matrix(record)
    num_layers = m.shape[1]
    require(1 <= k <= num_layers - 1, f"cannot choose {k} consecutive layers out of conv 1..{num_layers - 1}")
    mean, std = m.mean(0), m.std(0)
    score = mean + std
    windows = {s: float(score[s:s + k].mean()) for s in range(1, num_layers - k + 1)}
    best = min(windows, key=lambda s: (windows[s], -s))
    chosen = list(range(best, best + k))
    lines = [f"learngene criterion over tasks {tasks[0]}..{tasks[-1]} ({len(tasks)} tasks); per conv layer "
             f"(0-based): mean and std over tasks of the per-task statistic, score = mean + std",
             "layer    mean     std   score"]
    lines += [f"{i:5d}  {mean[i]:.4f}  {std[i]:.4f}  {score[i]:.4f}" + ("  <- learngene" if i in chosen else "")
              for i in range(num_layers)]
    ranked = sorted(windows, key=lambda s: (windows[s], -s))
    lines.append("windows of %d consecutive layers, best first: " % k +
                 ", ".join(f"{s}-{s + k - 1}: {windows[s]:.4f}" for s in ranked))
    lines.append(f"chosen: conv layers {chosen} (lowest mean score)")
    return chosen, "\n".join(lines), windows


# ---------------------------------------------------------------- heat map (PIL only)
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)


def _colour(v):
    x = min(max(v, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    return tuple(int(c) for c in _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i]))


def heatmap_png(record, path, title, chosen=(), provenance=None):
    """Task (x) by conv layer (y) heat map of the per-task statistic, like the paper's appendix figure."""
    from utils.plots import save_png
    tasks, m = task_layer_matrix(record)
    lo, hi = float(m.min()), float(m.max())
    norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    cw, ch, left, top = max(8, min(40, 600 // len(tasks))), 22, 80, 40
    width, height = max(left + cw * len(tasks) + 110, 420), top + ch * m.shape[1] + 50
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill="black")
    for j in range(m.shape[1]):
        y = top + ch * j
        d.text((8, y + 5), f"conv {j}" + (" *" if j in chosen else ""), fill="black")
        for i in range(len(tasks)):
            d.rectangle([left + cw * i, y, left + cw * (i + 1) - 1, y + ch - 1], fill=_colour(norm[i, j]))
    step = max(1, len(tasks) // 10)
    for i in range(0, len(tasks), step):
        d.text((left + cw * i, top + ch * m.shape[1] + 4), str(tasks[i]), fill="black")
    d.text((left, top + ch * m.shape[1] + 24), "task (x), conv layer (y, 0-based; * = learngene)", fill="black")
    bx = left + cw * len(tasks) + 20
    for k in range(100):  # colour bar, top = high
        d.line([bx, top + k * 2, bx + 15, top + k * 2 + 1], fill=_colour(1 - k / 99), width=2)
    d.text((bx + 20, top), f"{hi:.3g}", fill="black")
    d.text((bx + 20, top + 190), f"{lo:.3g}", fill="black")
    save_png(img, path, provenance)
