"""The learngene criterion ("judgement") and the rule that turns it into a choice.

Statistic: for each conv layer, the fraction of its weight-gradient entries above a threshold, averaged over
an epoch's batches, read from the gradients the training step already computed. The default is the
comparison of the released scripts as published, signed g > 5e-4: it ranges over about 0.15 to 0.55 and
falls with depth, the range and shape of the paper's appendix heat maps. The other readings are weaker:
signed g > 5e-10 is the fraction of positive entries (flat near 0.5), |g| > 5e-10 is one minus the fraction
of exact zeros (1.0 but for dead units), and |g| > 5e-4 is kept for comparison. Every run records all four
beside the chosen one (criterion_variants.csv) and reports which layers each would choose.

Selection rule: per layer, take the statistic's mean over the epochs of each task, then over tasks its
mean (low = few large gradients) and standard deviation (low = settled); score = mean + std. The
learngene is the window of k consecutive conv layers with the lowest mean score (the first conv, which
reads RGB, is never a candidate). The margin to the second-best window is reported; below MARGIN_TOLERANCE
the statistic does not separate them and the report says so, since the choice then rests on a tie-break.
"""
import numpy as np
import torch

from utils.cli import require

DEFAULT_THRESHOLD = 5e-4
VARIANTS = ((False, 5e-4), (False, 5e-10), (True, 5e-4), (True, 5e-10))  # (absolute, threshold)
MARGIN_TOLERANCE = 0.01  # window scores are fractions of gradient entries: one percentage point


def describe(absolute, threshold):
    return f"{'abs(g)' if absolute else 'g'} > {threshold:g}"  # not |g|: a pipe would split a markdown table cell


VARIANTS_EVERY = 4  # the side variants are read on every 4th batch: a quarter of their cost, same mean


class GradientCriterion:
    """Accumulates, per epoch, the statistic `absolute`/`threshold` (row 0) on every batch and the other VARIANTS
    (the other rows) on every VARIANTS_EVERY-th batch of the epoch (the first, the fifth, ...). Each row is an
    average over batches, so a regular subsample of the batches estimates it without bias; reading all four on
    every batch cost 22% of a training step at the final widths in bf16 (2-core CPU here)."""

    def __init__(self, threshold=DEFAULT_THRESHOLD, absolute=False):
        self.variants = [(absolute, threshold)] + [v for v in VARIANTS if v != (absolute, threshold)]
        self.start_epoch()

    def start_epoch(self):
        self.sums, self.batches = None, 0

    @torch.no_grad()
    def __call__(self, model):
        grads = [w.grad for w in model.conv_weights()]
        every = self.batches % VARIANTS_EVERY == 0
        variants = self.variants if every else self.variants[:1]
        # count_nonzero, not .float().mean(): no float copy of every gradient (40% of the statistic's time)
        counts = torch.stack([torch.stack([torch.count_nonzero((g.abs() if absolute else g) > threshold) for g in grads])
                              for absolute, threshold in variants])  # [variants, layers]
        if self.sums is None:
            self.sizes = torch.tensor([g.numel() for g in grads], device=counts.device)
            self.sums = torch.zeros(len(self.variants), len(grads), dtype=torch.long, device=counts.device)
        self.sums[:len(variants)] += counts
        self.batches += 1

    def end_epoch(self):
        """Per-variant, per-layer averages over the batches each was read on (one device sync per epoch)."""
        if self.sums is None:
            return []
        sampled = -(-self.batches // VARIANTS_EVERY)  # batches 0, VARIANTS_EVERY, ... read every variant
        batches = torch.tensor([self.batches] + [sampled] * (len(self.variants) - 1), device=self.sums.device)
        return (self.sums.double() / (batches[:, None] * self.sizes[None, :])).tolist()


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


def window_scores(record, k):
    """Per layer mean, std and score over tasks, and {window start: mean score of its k layers}."""
    tasks, m = task_layer_matrix(record)
    num_layers = m.shape[1]
    require(1 <= k <= num_layers - 1, f"cannot choose {k} consecutive layers out of conv 1..{num_layers - 1}")
    mean, std = m.mean(0), m.std(0)
    score = mean + std
    windows = {s: float(score[s:s + k].mean()) for s in range(1, num_layers - k + 1)}
    return tasks, mean, std, score, windows


def ranked(windows):
    """Window starts, best (lowest score) first; an exact tie goes to the deeper window."""
    return sorted(windows, key=lambda s: (windows[s], -s))


def margin(windows):
    """Score of the second-best window minus the best's (0 with a single window)."""
    order = ranked(windows)
    return windows[order[1]] - windows[order[0]] if len(order) > 1 else 0.0


def select_layers(record, k=3):
    """Apply the selection rule. Returns (chosen layer indices, a printable explanation, all window scores)."""
    require(len(record) > 0, "the criterion record is empty: train with --judgement to select a learngene")
    tasks, mean, std, score, windows = window_scores(record, k)
    order = ranked(windows)
    chosen = list(range(order[0], order[0] + k))
    lines = [f"learngene criterion over tasks {tasks[0]}..{tasks[-1]} ({len(tasks)} tasks); per conv layer "
             f"(0-based): mean and std over tasks of the per-task statistic, score = mean + std",
             "layer    mean     std   score"]
    lines += [f"{i:5d}  {mean[i]:.4f}  {std[i]:.4f}  {score[i]:.4f}" + ("  <- learngene" if i in chosen else "")
              for i in range(len(mean))]
    lines.append("windows of %d consecutive layers, best first: " % k +
                 ", ".join(f"{s}-{s + k - 1}: {windows[s]:.4f}" for s in order))
    lines.append(f"chosen: conv layers {chosen} (lowest mean score)")
    lines.append(margin_sentence(windows))
    return chosen, "\n".join(lines), windows


def margin_sentence(windows):
    gap = margin(windows)
    if len(windows) < 2:
        return "margin: only one window of that size exists"
    if gap < MARGIN_TOLERANCE:
        return (f"margin to the second-best window: {gap:.4f}, BELOW the tolerance {MARGIN_TOLERANCE}: the "
                f"criterion does not separate the best two windows, so this choice is not decided by it")
    return f"margin to the second-best window: {gap:.4f} (tolerance {MARGIN_TOLERANCE}): the criterion decides it"


def variants_table(variant_record, k=3):
    """How the statistic and its threshold change the heat map's range and the chosen layers.
    variant_record: rows (task, epoch, absolute, threshold, layer, value)."""
    lines = ["| statistic | range of the heat map | chosen conv layers | margin |", "|---|---|---|---:|"]
    for absolute, threshold in dict.fromkeys((bool(r[2]), float(r[3])) for r in variant_record):
        rows = [[r[0], r[1], r[4], r[5]] for r in variant_record if (bool(r[2]), float(r[3])) == (absolute, threshold)]
        _, m = task_layer_matrix(rows)
        _, _, _, _, windows = window_scores(rows, k)
        start = ranked(windows)[0]
        lines.append(f"| {describe(absolute, threshold)} | {m.min():.3f} to {m.max():.3f} | "
                     f"{start}-{start + k - 1} | {margin(windows):.4f} |")
    return "\n".join(lines)
