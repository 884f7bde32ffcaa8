"""Figures of matrices as colour grids: the criterion per task and layer, the source's held-out accuracy per
trained task and task measured (PNG, drawn with PIL on utils/plots.py's primitives)."""
import numpy as np
from PIL import Image, ImageDraw

from utils.plots import font, save_png

_VIRIDIS = np.array(  # viridis at 5 stops: a colour scale readable in grey
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)


def _colour(v):
    x = min(max(v, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    return tuple(int(c) for c in _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i]))


def criterion_heatmap(tasks, m, path, title, chosen=(), provenance=None):
    """Task (x) by conv layer (y) heat map of the criterion's per-task statistic m[task, layer] (from
    criterion.task_layer_matrix), like the paper's appendix figure; * marks the learngene's layers."""
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


def accuracy_matrix(path, m, title, provenance=None, caption=()):
    """The continual-learning accuracy matrix m[i, j] (%; after training task i, on task j's held-out images) as
    a heat map on a fixed 0-100% scale, each cell's value written in it when the cells are large enough; the cells of
    tasks not trained yet (j > i: the model has never seen their classes) are grey and empty."""
    n = len(m)
    cell = max(14, min(44, 640 // n))
    left, top = 110, 50
    f, small = font(15), font(max(9, min(13, cell // 3)))
    title_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=f)
    width, height = int(max(left + cell * n + 130, 20 + title_width + 20)), top + cell * n + 70
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((20, 12), title, fill="black", font=f)
    for i in range(n):
        for j in range(n):
            box = [left + cell * j, top + cell * i, left + cell * (j + 1) - 1, top + cell * (i + 1) - 1]
            if j > i:
                d.rectangle(box, fill=(236, 236, 236))
                continue
            d.rectangle(box, fill=_colour(m[i, j] / 100))
            if cell >= 26:
                label = f"{m[i, j]:.0f}"
                d.text((box[0] + (cell - d.textlength(label, font=small)) / 2, box[1] + cell / 2 - 7), label,
                       fill="white" if m[i, j] < 60 else "black", font=small)
    step = max(1, n // 12)
    for k in range(0, n, step):
        label = str(k)
        d.text((left + cell * k + (cell - d.textlength(label, font=small)) / 2, top + cell * n + 4), label,
               fill="black", font=small)
        d.text((left - 8 - d.textlength(label, font=small), top + cell * k + cell / 2 - 7), label, fill="black",
               font=small)
    d.text((left, top + cell * n + 24), "task evaluated (its held-out images)", fill="black", font=f)
    ylabel = "after training task"
    w = int(d.textlength(ylabel, font=f)) + 4
    rotated = Image.new("RGB", (w, 20), "white")
    ImageDraw.Draw(rotated).text((2, 1), ylabel, fill="black", font=f)
    img.paste(rotated.rotate(90, expand=True), (left - 62, int(top + (cell * n - w) / 2)))
    bx, bh = left + cell * n + 24, cell * n
    for k in range(bh):  # colour bar, top = 100%
        d.line([bx, top + k, bx + 15, top + k], fill=_colour(1 - k / max(bh - 1, 1)))
    for v in range(0, 101, 20):
        y = top + bh - v / 100 * (bh - 1)
        d.line([bx + 15, y, bx + 20, y], fill="black")
        d.text((bx + 23, y - 7), f"{v}%", fill="black", font=small)
    save_png(img, path, provenance, [*caption, "Grey: tasks not trained yet at that row (never seen: not read)."])


