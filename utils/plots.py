"""PNG figures drawn with PIL alone (no plotting library in the requirements): the forest plot of the paired
differences, the learning curves, the criterion heat map."""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from utils.files import write_bytes
from utils.repro import for_display


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
    lines = [for_display(line) for line in caption]
    if provenance:
        lines.append(", ".join(f"{k} {provenance[k]}" for k in ("commit", "device", "time_utc") if k in provenance))
        if provenance.get("command"):
            lines.append(for_display(f"command: {provenance['command']}")[:600])
        for k, v in provenance.items():
            info.add_text(str(k), for_display(str(v)))
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
    items = [(m + (" (probe, after training)" if once[m] else ""), method_colour(m, methods), once[m])
             for m in methods]
    # one legend for both panels, under both and headed so (two columns read as one legend per panel)
    per_row = 3 if len(shots) > 1 else 2
    legend = Image.new("RGB", (img.width, 22 * ((len(items) + per_row - 1) // per_row) + 34), "white")
    ld = ImageDraw.Draw(legend)
    ld.text((left, 4), "Both panels:" if len(shots) > 1 else "Legend:", fill="black", font=font(14))
    _legend(ld, items, left, 28, per_row=per_row, width=(img.width - left) // per_row)
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    note = (f"Only {len(epochs_all)} evaluated epochs ({', '.join(map(str, epochs_all))}): the measured points with "
            f"their 95% intervals, not a curve." if few else
            f"Line and markers: mean over tasks at the evaluated epochs; band: 95% interval over tasks "
            f"({' and '.join(banded)}; the table gives every method's).")
    save_png(full, path, provenance, [*caption, note])
