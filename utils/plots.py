"""PNG figures drawn with PIL alone (no plotting library in the requirements): the forest plot of the paired
differences, the learning curves, the criterion heat map."""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from utils.files import write_bytes


def font(size=15):
    """PIL's bundled TrueType font at a legible size (the bitmap fallback where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, AttributeError):
        return ImageFont.load_default()


def save_png(img, path, provenance=None, caption=()):
    """Write atomically; caption lines and the provenance (commit, command, device, time; all of it also in the
    PNG's text chunks) go under the figure."""
    info = PngInfo()
    lines = list(caption)
    if provenance:
        lines.append(", ".join(f"{k} {provenance[k]}" for k in ("commit", "device", "time_utc") if k in provenance))
        if provenance.get("command"):
            lines.append(f"command: {provenance['command']}"[:600])
        for k, v in provenance.items():
            info.add_text(str(k), str(v))
    if lines:
        f = font(13)
        d = ImageDraw.Draw(img)
        width = max(img.width, 720)  # a long command wraps under the figure instead of widening it
        lines = [part for line in lines for part in _wrap(d, line, f, width - 16)]
        canvas = Image.new("RGB", (width, img.height + 18 * len(lines) + 6), "white")
        canvas.paste(img, (0, 0))
        for i, line in enumerate(lines):
            ImageDraw.Draw(canvas).text((8, img.height + 3 + 18 * i), line, fill=(70, 70, 70), font=f)
        img = canvas
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    write_bytes(path, buf.getvalue())


def _wrap(draw, text, f, width):
    """`text` in lines at most `width` pixels wide, broken at spaces (a word wider than that gets a line of its own)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and draw.textlength(f"{line} {word}", font=f) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def nice_ticks(lo, hi, count=6):
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 x 10^k, about `count` of them."""
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / max(count - 1, 1)
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda v: (v < raw, v))
    first = math.floor(lo / step) * step
    ticks = [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]
    return [round(t, 10) for t in ticks]


def _tick_label(v):
    return f"{v:g}"


class Panel:
    """A plotting rectangle with data ranges: maps data to pixels and draws its axes, ticks and labels."""

    def __init__(self, draw, box, xticks, yticks=None, xlabel="", ylabel="", title="", xformat=_tick_label):
        """yticks None: a panel with no y scale (the forest plot's rows), spanning 0..1; xformat: a tick value's
        label (a log-scale axis passes log10 values and labels them with the value itself)."""
        self.d, (self.x0, self.y0, self.x1, self.y1) = draw, box
        self.xlo, self.xhi = xticks[0], xticks[-1]
        self.ylo, self.yhi = (yticks[0], yticks[-1]) if yticks else (0, 1)
        f, small = font(15), font(13)
        d = draw
        for v in yticks or []:
            y = self.y(v)
            d.line([self.x0, y, self.x1, y], fill=(232, 232, 232))
            label = _tick_label(v)
            d.text((self.x0 - 6 - d.textlength(label, font=small), y - 8), label, fill="black", font=small)
        for v in xticks:
            x = self.x(v)
            d.line([x, self.y1, x, self.y1 + 5], fill="black")
            label = xformat(v)
            d.text((x - d.textlength(label, font=small) / 2, self.y1 + 7), label, fill="black", font=small)
        d.rectangle([self.x0, self.y0, self.x1, self.y1], outline="black")
        if xlabel:
            d.text(((self.x0 + self.x1 - d.textlength(xlabel, font=f)) / 2, self.y1 + 26), xlabel, fill="black", font=f)
        if ylabel:  # vertical text: drawn on its own image and rotated
            w = int(d.textlength(ylabel, font=f)) + 4
            label = Image.new("RGB", (w, 20), "white")
            ImageDraw.Draw(label).text((2, 1), ylabel, fill="black", font=f)
            label = label.rotate(90, expand=True)
            draw._image.paste(label, (int(self.x0 - 62), int((self.y0 + self.y1 - w) / 2)))
        if title:
            d.text((self.x0, self.y0 - 22), title, fill="black", font=f)

    def x(self, v):
        return self.x0 + (v - self.xlo) / (self.xhi - self.xlo) * (self.x1 - self.x0)

    def y(self, v):
        return self.y1 - (v - self.ylo) / (self.yhi - self.ylo) * (self.y1 - self.y0)


def _legend(d, items, x, y, per_row=3, width=270):
    f = font(14)
    for i, (label, colour, dashed) in enumerate(items):
        lx, ly = x + (i % per_row) * width, y + (i // per_row) * 22
        if dashed:
            for s in range(0, 24, 8):
                d.line([lx + s, ly + 8, lx + s + 4, ly + 8], fill=colour, width=3)
        else:
            d.line([lx, ly + 8, lx + 24, ly + 8], fill=colour, width=3)
            d.ellipse([lx + 9, ly + 5, lx + 15, ly + 11], fill=colour)
        d.text((lx + 30, ly), label, fill="black", font=f)
    return y + ((len(items) + per_row - 1) // per_row) * 22


# The methods' colours: the learngene and scratch, whose difference is the question, in strong colours; the
# other baselines in lighter ones. Methods the table does not know get the remaining colours in turn.
METHOD_COLOURS = {"learngene": (214, 39, 40), "scratch": (20, 20, 20), "learngene-noewc": (255, 152, 150),
                  "other-layers": (148, 103, 189), "finetune-collective": (31, 119, 180),
                  "probe-collective": (44, 160, 44), "probe-random": (150, 150, 150)}
SPARE_COLOURS = [(255, 127, 14), (140, 86, 75), (188, 189, 34), (23, 190, 207), (227, 119, 194)]


def method_colour(method, order):
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    unknown = [m for m in order if m not in METHOD_COLOURS]
    return SPARE_COLOURS[unknown.index(method) % len(SPARE_COLOURS)]


def forest(path, rows, title, provenance=None, caption=(), xlabel="vs scratch (points of accuracy)"):
    """The paired differences against the baseline (or against each line's own, named in its label) as a forest
    plot: one line per method, a marker at the mean difference (points) and a bar over its 95% interval, a line at
    0; one panel per shot count, side by side.
    rows: dicts with shots, label (the method and its settings), diff and ci (ci nan: no interval, 1 task)."""
    shots = sorted({r["shots"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    ends = [r["diff"] + s * (0 if math.isnan(r["ci"]) else r["ci"]) for r in rows for s in (-1, 1)]
    xticks = nice_ticks(min(ends + [0.0]), max(ends + [0.0]), 6)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 30 + max(int(probe.textlength(label, font=font(15))) for label in labels)
    pw, rh, top = 330, 34, 70
    ph = rh * len(labels)
    img = Image.new("RGB", (left + len(shots) * (pw + 150) + 10, top + ph + 70), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    for i, label in enumerate(labels):
        d.text((10, top + rh * i + rh / 2 - 9), label, fill="black", font=font(15))
    for p, k in enumerate(shots):
        x0 = left + p * (pw + 150)
        panel = Panel(d, (x0, top, x0 + pw, top + ph), xticks, xlabel=xlabel,
                      title=f"{k} shots per class")
        zero = panel.x(0)
        for y in range(top, top + ph, 8):
            d.line([zero, y, zero, y + 4], fill=(120, 120, 120), width=1)
        for r in (r for r in rows if r["shots"] == k):
            i = labels.index(r["label"])
            y = top + rh * i + rh / 2
            colour = (214, 39, 40) if not math.isnan(r["ci"]) and (r["diff"] - r["ci"] > 0 or r["diff"] + r["ci"] < 0) \
                else (30, 30, 30)
            if not math.isnan(r["ci"]):
                d.line([panel.x(r["diff"] - r["ci"]), y, panel.x(r["diff"] + r["ci"]), y], fill=colour, width=3)
                for e in (r["diff"] - r["ci"], r["diff"] + r["ci"]):
                    d.line([panel.x(e), y - 6, panel.x(e), y + 6], fill=colour, width=2)
            cx = panel.x(r["diff"])
            d.rectangle([cx - 5, y - 5, cx + 5, y + 5], fill=colour)
            ci = "no interval" if math.isnan(r["ci"]) else f"± {r['ci']:.1f}"
            d.text((x0 + pw + 10, y - 9), f"{r['diff']:+.1f} {ci}", fill=colour, font=font(15))
    save_png(img, path, provenance, [*caption, "Marker: mean paired difference over tasks; bar: its 95% interval "
                                     "(Student t over tasks); red: the interval excludes 0."])


def learning_curves(path, curves, title, provenance=None, caption=()):
    """Test accuracy (%) against epoch, one panel per shot count: per method the mean over tasks with its 95%
    interval as a band, markers at the evaluated epochs. curves: {(shots, method): (epochs, mean, ci)} (stats);
    a method evaluated once (the probes, trained to convergence, not by epochs) is a dashed horizontal line."""
    shots = sorted({k for k, _ in curves})
    methods = list(dict.fromkeys(m for _, m in curves))
    epochs_all = sorted({e for (_, _), (epochs, _, _) in curves.items() for e in epochs})
    values = [v for (_, _), (_, mean, ci) in curves.items() for v in np.concatenate([mean - np.nan_to_num(ci),
                                                                                    mean + np.nan_to_num(ci)])]
    yticks = nice_ticks(max(0.0, min(values) - 2), min(100.0, max(values) + 2), 7)
    xticks = [0] + epochs_all if len(epochs_all) <= 12 else nice_ticks(0, max(epochs_all), 7)
    pw, ph, left, top = 460, 330, 90, 60
    img = Image.new("RGB", (left + len(shots) * (pw + 100), top + ph + 60), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    few = len(epochs_all) < 4
    # the question's two methods get the shaded interval; five overlapping bands would hide every line (the
    # table gives each method's interval)
    banded = [m for m in methods if m in ("learngene", "scratch")] or methods
    for p, k in enumerate(shots):
        x0 = left + p * (pw + 100)
        panel = Panel(d, (x0, top, x0 + pw, top + ph), xticks, yticks, xlabel="epoch",
                      ylabel="test accuracy (%)", title=f"{k} shots per class")
        band = Image.new("RGBA", img.size, (0, 0, 0, 0))
        bd = ImageDraw.Draw(band)
        for m in methods:
            if (k, m) not in curves:
                continue
            epochs, mean, ci = curves[(k, m)]
            colour = method_colour(m, methods)
            if len(epochs) == 1:  # one accuracy after training: a reference line across the panel
                y = panel.y(mean[0])
                for x in range(int(panel.x0), int(panel.x1), 12):
                    d.line([x, y, min(x + 7, panel.x1), y], fill=colour, width=2)
                continue
            ci = np.nan_to_num(ci)
            # with few points, each method's markers sit a little apart so that overlapping intervals stay visible
            dodge = (methods.index(m) - (len(methods) - 1) / 2) * 7 if few else 0
            pts = [(panel.x(e) + dodge, panel.y(v)) for e, v in zip(epochs, mean)]
            if not few:
                if m in banded:
                    upper = [(panel.x(e), panel.y(v + c)) for e, v, c in zip(epochs, mean, ci)]
                    lower = [(panel.x(e), panel.y(v - c)) for e, v, c in zip(epochs, mean, ci)]
                    bd.polygon(upper + lower[::-1], fill=(*colour, 40))
                d.line(pts, fill=colour, width=3 if m in banded else 2)
            else:  # too few evaluated epochs for a curve: the measured points and their intervals only
                for (x, _), v, c in zip(pts, mean, ci):
                    d.line([x, panel.y(v - c), x, panel.y(v + c)], fill=colour, width=2)
            for x, y in pts:
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        img.paste(Image.alpha_composite(img.convert("RGBA"), band).convert("RGB"))
        d = ImageDraw.Draw(img)
    once = {m: any(len(curves[(k, m)][0]) == 1 for k in shots if (k, m) in curves) for m in methods}
    items = [(m + (" (probe: one accuracy, after training)" if once[m] else ""), method_colour(m, methods), once[m])
             for m in methods]
    legend = Image.new("RGB", (img.width, 22 * ((len(items) + 1) // 2) + 10), "white")
    _legend(ImageDraw.Draw(legend), items, left, 4, per_row=2, width=max(420, (img.width - left) // 2))
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    note = (f"Only {len(epochs_all)} evaluated epochs ({', '.join(map(str, epochs_all))}): the measured points with "
            f"their 95% intervals, not a curve." if few else
            f"Line and markers: mean over tasks at the evaluated epochs; band: 95% interval over tasks "
            f"({' and '.join(banded)}; the table gives every method's).")
    save_png(full, path, provenance, [*caption, note])


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
    a heat map on a fixed 0-100% scale, each cell's value written in it when the cells are large enough."""
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
    save_png(img, path, provenance, caption)


def _log_ticks(lo, hi):
    """log10 tick positions at 1, 2 and 5 x 10^k covering [lo, hi] (values, not logs)."""
    ticks = [m * 10 ** e for e in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if lo <= t <= hi]
    below, above = [t for t in ticks if t < lo], [t for t in ticks if t > hi]
    return [math.log10(t) for t in ([below[-1]] if below else []) + inside + ([above[0]] if above else [])]


def _count_label(log_v):
    v = 10 ** log_v
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


# the sources' colours: none a method uses, so that a source's line is not read as a method; a floor in grey
SOURCE_COLOURS = [(148, 103, 189), (140, 86, 75), (23, 190, 207)]
FLOOR_COLOUR = (150, 150, 150)


def source_features(path, series, title, provenance=None, caption=()):
    """Nearest-class-mean accuracy (%) on each base task's held-out images through each source's frozen features:
    per source its tasks' points joined, and its mean over tasks as a dashed line across the panel. series:
    {label: [accuracy per task]}, the first the floor (drawn grey)."""
    n = max(len(v) for v in series.values())
    values = [v for vs in series.values() for v in vs]
    yticks = nice_ticks(max(0.0, min(values + [20.0]) - 3), min(100.0, max(values) + 3), 7)
    xticks = list(range(n)) if n <= 25 else nice_ticks(0, n - 1, 8)
    pw, ph, left, top = max(520, 30 * n), 340, 90, 50
    title_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font(17))
    img = Image.new("RGB", (int(max(left + pw + 40, 10 + title_width + 20)), top + ph + 60), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    panel = Panel(d, (left, top, left + pw, top + ph), [-0.5, *xticks, n - 0.5] if n <= 25 else xticks, yticks,
                  xlabel="base task (its held-out images)", ylabel="nearest class mean accuracy (%)",
                  xformat=lambda v: "" if v != int(v) else str(int(v)))
    chance = panel.y(20)
    for x in range(int(panel.x0), int(panel.x1), 10):
        d.line([x, chance, x + 5, chance], fill=(120, 120, 120))
    d.text((panel.x1 - 70, chance + 2), "chance 20%", fill=(120, 120, 120), font=font(12))
    colours = [FLOOR_COLOUR, *SOURCE_COLOURS]
    for i, (vs, colour) in enumerate(zip(series.values(), colours)):
        mean = panel.y(float(np.mean(vs)))
        for x in range(int(panel.x0), int(panel.x1), 14):
            d.line([x, mean, min(x + 8, panel.x1), mean], fill=colour, width=2)
        dodge = (i - (len(series) - 1) / 2) * 5
        pts = [(panel.x(t) + dodge, panel.y(v)) for t, v in enumerate(vs)]
        d.line(pts, fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    legend = Image.new("RGB", (img.width, 22 * len(series) + 10), "white")
    _legend(ImageDraw.Draw(legend), [(f"{label}: mean {np.mean(vs):.1f}% (dashed)", colour, False)
                                     for (label, vs), colour in zip(series.items(), colours)], left, 4, per_row=1,
            width=img.width)
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    save_png(full, path, provenance, caption)


def source_budget(path, diffs, source, title, provenance=None, caption=()):
    """The source-budget study's figure: per shot count a panel of each method's paired difference against scratch
    (points; marker and 95% interval bar) and a last panel of the source's held-out accuracies (%), all against
    the images the source saw before the extraction (log scale). diffs: {shots: {method: [(images, diff, ci,
    hollow)]}}; source: {label: [(images, accuracy, hollow)]}; hollow points are drawn unjoined and hollow."""
    shots = sorted(diffs)
    xs = [p[0] for per in diffs.values() for pts in per.values() for p in pts] + \
         [p[0] for pts in source.values() for p in pts]
    xticks = _log_ticks(min(xs) / 1.2, max(xs) * 1.2)
    ends = [p[1] + s * (0 if math.isnan(p[2]) else p[2]) for per in diffs.values() for pts in per.values()
            for p in pts for s in (-1, 1)]
    dticks = nice_ticks(min(ends + [0.0]), max(ends + [0.0]), 7)
    accs = [p[1] for pts in source.values() for p in pts]
    aticks = nice_ticks(max(0.0, min(accs) - 5), min(100.0, max(accs) + 5), 7)
    pw, ph, left, top, gap = 420, 330, 90, 60, 110
    img = Image.new("RGB", (left + (len(shots) + 1) * (pw + gap), top + ph + 70), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    xlabel = "images the source trained on (log scale)"

    def series(panel, pts, colour, dodge, dashed=False):
        pts = sorted(pts, key=lambda p: p[0])  # joined in order of the x axis, whatever order the points came in
        joined = [(panel.x(x) + dodge, panel.y(v)) for x, v, *_ in pts if not _[-1]]
        for (xa, ya), (xb, yb) in zip(joined, joined[1:]):
            steps = max(1, int(math.hypot(xb - xa, yb - ya) // 12)) if dashed else 1
            for i in range(steps):  # a dashed line: every other twelfth-pixel stretch left out
                f0, f1 = i / steps, (i + (0.5 if dashed else 1)) / steps
                d.line([xa + f0 * (xb - xa), ya + f0 * (yb - ya), xa + f1 * (xb - xa), ya + f1 * (yb - ya)],
                       fill=colour, width=3)
        for x, v, *rest in pts:
            cx, cy, hollow = panel.x(x) + dodge, panel.y(v), rest[-1]
            if len(rest) == 2 and not math.isnan(rest[0]):  # a difference with its interval
                d.line([cx, panel.y(v - rest[0]), cx, panel.y(v + rest[0])], fill=colour, width=2)
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill="white" if hollow else colour, outline=colour, width=2)

    methods = list(dict.fromkeys(m for per in diffs.values() for m in per))
    for p, k in enumerate(shots):
        x0 = left + p * (pw + gap)
        panel = Panel(d, (x0, top, x0 + pw, top + ph), xticks, dticks, xlabel=xlabel,
                      ylabel="vs scratch (points of accuracy)", title=f"{k} shots per class: paired difference",
                      xformat=_count_label)
        zero = panel.y(0)
        for x in range(int(panel.x0), int(panel.x1), 10):
            d.line([x, zero, x + 5, zero], fill=(120, 120, 120))
        for i, m in enumerate(methods):
            pts = [(math.log10(x), v, c, h) for x, v, c, h in diffs[k].get(m, [])]
            series(panel, pts, method_colour(m, methods), (i - (len(methods) - 1) / 2) * 6)
    x0 = left + len(shots) * (pw + gap)
    panel = Panel(d, (x0, top, x0 + pw, top + ph), xticks, aticks, xlabel=xlabel, ylabel="held-out accuracy (%)",
                  title="the source on held-out images of its classes", xformat=_count_label)
    source_colours = SOURCE_COLOURS[:len(source) - 1] + [FLOOR_COLOUR]  # the floor last, dashed
    for i, ((label, pts), colour) in enumerate(zip(source.items(), source_colours)):
        series(panel, [(math.log10(x), v, h) for x, v, h in pts], colour, 0, dashed=i == len(source) - 1)
    legend = Image.new("RGB", (img.width, 22 * (math.ceil(len(methods) / 3) + math.ceil(len(source) / 2)) + 14),
                       "white")
    ld = ImageDraw.Draw(legend)
    y = _legend(ld, [(m, method_colour(m, methods), False) for m in methods], left, 4, per_row=3, width=300)
    _legend(ld, [(label, c, i == len(source) - 1) for i, (label, c) in enumerate(zip(source, source_colours))], left,
            y + 4, per_row=2, width=480)
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    save_png(full, path, provenance, [*caption, "Marker: mean over target tasks; bar: 95% interval of the paired "
                                      "difference (Student t over tasks); markers of one point sit a little apart."])


CHAIN_COLOURS = {"learngene, chained": (214, 39, 40), "scratch, chained": (31, 119, 180),
                 "scratch, fresh per task": (20, 20, 20)}


def chain_positions(path, panels, title, provenance=None, caption=(), xlabel="position in the chain"):
    """Test accuracy (%) against position in the chain (1..L), or another count (`xlabel`): one panel per (protocol,
    shots), a line per series with its 95% interval as a bar. panels: {(row label, shots): {series: (xs, mean, ci)}}."""
    rows = list(dict.fromkeys(r for r, _ in panels))
    shots = sorted({k for _, k in panels})
    values = [v for series in panels.values() for _, mean, ci in series.values()
              for v in np.concatenate([mean - np.nan_to_num(ci), mean + np.nan_to_num(ci)])]
    yticks = nice_ticks(max(0.0, min(values) - 2), min(100.0, max(values) + 2), 7)
    first = min(min(xs) for series in panels.values() for xs, _, _ in series.values())
    length = max(max(xs) for series in panels.values() for xs, _, _ in series.values())
    xticks = list(range(first - 1, length + 2))
    pw, ph, left, top, gap_x, gap_y = 420, 260, 90, 60, 100, 90
    img = Image.new("RGB", (left + len(shots) * (pw + gap_x), top + len(rows) * (ph + gap_y)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    for i, row in enumerate(rows):
        for j, k in enumerate(shots):
            if (row, k) not in panels:
                continue
            x0, y0 = left + j * (pw + gap_x), top + i * (ph + gap_y)
            panel = Panel(d, (x0, y0, x0 + pw, y0 + ph), xticks, yticks, xlabel=xlabel,
                          ylabel="test accuracy (%)", title=f"{row}, {k} shots per class",
                          xformat=lambda v, ends=(xticks[0], xticks[-1]): "" if v in ends else f"{v:g}")
            series = panels[(row, k)]
            for s, (label, (xs, mean, ci)) in enumerate(series.items()):
                colour = CHAIN_COLOURS.get(label, SPARE_COLOURS[s % len(SPARE_COLOURS)])
                dodge = (s - (len(series) - 1) / 2) * 6
                pts = [(panel.x(x) + dodge, panel.y(v)) for x, v in zip(xs, mean)]
                if len(pts) > 1:
                    d.line(pts, fill=colour, width=3)
                for (px, py), v, c in zip(pts, mean, ci):
                    if not np.isnan(c):
                        d.line([px, panel.y(v - c), px, panel.y(v + c)], fill=colour, width=2)
                    d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    legend = Image.new("RGB", (img.width, 36), "white")
    _legend(ImageDraw.Draw(legend), [(label, CHAIN_COLOURS.get(label, SPARE_COLOURS[i % len(SPARE_COLOURS)]), False)
                                     for i, label in enumerate(labels)], left, 6, per_row=3, width=300)
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    save_png(full, path, provenance, caption)
