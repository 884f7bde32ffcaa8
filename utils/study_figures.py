"""The studies' own figures: the source's features per task, the source-budget study, the released study's chain
positions (PNG, drawn with PIL on utils/plots.py's primitives)."""
import math

import numpy as np
from PIL import Image, ImageDraw

from utils.plots import SPARE_COLOURS, Panel, _legend, font, method_colour, nice_ticks, save_png

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
            # each method's markers and bars a bar's width apart from the next, so no bar hides another
            series(panel, pts, method_colour(m, methods), (i - (len(methods) - 1) / 2) * 14)
    x0 = left + len(shots) * (pw + gap)
    panel = Panel(d, (x0, top, x0 + pw, top + ph), xticks, aticks, xlabel=xlabel, ylabel="held-out accuracy (%)",
                  title="the source on held-out images of its classes", xformat=_count_label)
    source_colours = SOURCE_COLOURS[:len(source) - 1] + [FLOOR_COLOUR]  # the floor last, dashed
    for i, ((label, pts), colour) in enumerate(zip(source.items(), source_colours)):
        series(panel, [(math.log10(x), v, h) for x, v, h in pts], colour, 0, dashed=i == len(source) - 1)
    legend = Image.new("RGB", (img.width, 22 * (math.ceil(len(methods) / 3) + math.ceil(len(source) / 2)) + 62),
                       "white")
    ld = ImageDraw.Draw(legend)
    ld.text((left, 4), "Paired-difference panels:", fill="black", font=font(14))
    y = _legend(ld, [(m, method_colour(m, methods), False) for m in methods], left, 26, per_row=3, width=300)
    ld.text((left, y + 4), "Held-out panel:", fill="black", font=font(14))
    _legend(ld, [(label, c, i == len(source) - 1) for i, (label, c) in enumerate(zip(source, source_colours))], left,
            y + 26, per_row=2, width=480)
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
