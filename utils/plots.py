"""PNG figures drawn with PIL alone (no plotting library in the requirements)."""
import io

import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from utils.common import write_bytes


def save_png(img, path, provenance=None):
    """Write atomically; provenance (a dict) goes into the PNG's text chunks and, shortened, under the figure."""
    info = PngInfo()
    if provenance:
        foot = ", ".join(f"{k} {provenance[k]}" for k in ("commit", "device", "time_utc") if k in provenance)[:160]
        width = max(img.width, int(ImageDraw.Draw(img).textlength(foot)) + 10)
        canvas = Image.new("RGB", (width, img.height + 18), "white")
        canvas.paste(img, (0, 0))
        ImageDraw.Draw(canvas).text((5, img.height + 3), foot, fill=(90, 90, 90))
        img = canvas
        for k, v in provenance.items():
            info.add_text(str(k), str(v))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    write_bytes(path, buf.getvalue())


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (127, 127, 127), (188, 189, 34)]  # one per method: no two share a colour


def learning_curves(path, runs, title, provenance=None):
    """One panel per shot count: mean test accuracy (%) per epoch of each method over its runs ({RunKey: run})."""
    shots = sorted({key.shots for key in runs})
    methods = list(dict.fromkeys(key.method for key in runs))
    pw, ph, left, top = 420, 300, 50, 40
    img = Image.new("RGB", (left + len(shots) * (pw + 30) + 10, top + ph + 90), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill="black")
    for p, k in enumerate(shots):
        x0, y0 = left + p * (pw + 30), top
        d.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
        d.text((x0 + 5, y0 + 5), f"{k} shots", fill="black")
        curves = {}
        for m in methods:
            rs = [r for key, r in runs.items() if key.method == m and key.shots == k]
            if rs:
                epochs = [c[0] for c in rs[0]["curve"]]
                curves[m] = (epochs, np.mean([[c[3] for c in r["curve"]] for r in rs], axis=0))
        if not curves:
            continue
        emax = max(max(e) for e, _ in curves.values())
        for acc in (20, 40, 60, 80, 100):
            y = y0 + ph - acc / 100 * ph
            d.line([x0, y, x0 + pw, y], fill=(225, 225, 225))
            d.text((x0 - 30, y - 6), f"{acc}%", fill="black")
        for i, (m, (epochs, acc)) in enumerate(curves.items()):
            pts = [(x0 + e / emax * pw, y0 + ph - a / 100 * ph) for e, a in zip(epochs, acc)]
            if len(pts) > 1:
                d.line(pts, fill=COLOURS[i % len(COLOURS)], width=2)
            else:
                # a single point (the probes: one accuracy, after training): a marker large enough to see
                d.ellipse([pts[0][0] - 4, pts[0][1] - 4, pts[0][0] + 4, pts[0][1] + 4], fill=COLOURS[i % len(COLOURS)])
        d.text((x0 + pw / 2 - 20, y0 + ph + 5), "epoch", fill="black")
        d.text((x0 + pw - 20, y0 + ph + 5), str(emax), fill="black")
        d.text((x0, y0 + ph + 5), "0", fill="black")
    for i, m in enumerate(methods):
        x = left + (i % 3) * 200
        y = top + ph + 30 + (i // 3) * 18
        d.line([x, y + 6, x + 20, y + 6], fill=COLOURS[i % len(COLOURS)], width=3)
        d.text((x + 25, y), m, fill="black")
    save_png(img, path, provenance)


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
