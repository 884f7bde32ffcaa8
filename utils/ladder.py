"""Where in the source the knowledge a new task uses sits (the knowledge studies): the source's own architecture
trained on a target task from its first K conv blocks (the rest and the head fresh), for K from 0 (the capacity
control: no source weight at all) to 13 (every conv block), the whole fine-tune (the head's hidden layers kept
too), and the converse of the learngene at the source's capacity (only the learngene's window kept). The figure
puts each row's paired difference against the capacity control, and against scratch, on one axis of blocks kept,
for each source, so a reader sees at which depth a gain appears; ladder.csv beside it holds the same numbers."""
import math
from pathlib import Path

from PIL import Image, ImageDraw

from utils.contrasts import read_folders
from utils.files import write_csv
from utils.methods import LADDER
from utils.plots import Panel, _legend, font, nice_ticks, save_png
from utils.stats import mean_ci95, per_task

CAPACITY = "scratch-collective"
SOURCES = {"collective": (214, 39, 40), "joint": (148, 103, 189)}
# the x axis: blocks kept; then the whole fine-tune and the window-only row, each at a position of its own
FINETUNE_X, WINDOW_X, X_END = LADDER[-1] + 2.5, LADDER[-1] + 5.5, LADDER[-1] + 7
X_LABELS = {FINETUNE_X: "13+head", WINDOW_X: "window", X_END: ""}
HEADER = ["shots", "source", "method", "blocks_kept", "against", "tasks", "diff", "diff_ci95"]


def rungs(source):
    """(x, method) of one source's rows, the capacity control at 0."""
    return [(0, CAPACITY), *((k, f"first{k}-{source}") for k in LADDER), (FINETUNE_X, f"finetune-{source}"),
            (WINDOW_X, f"window-{source}")]


def points(results, shots, against):
    """{source: [(x, mean paired difference, its 95% half-width, tasks)]} against `against` (a method), per target
    task, for the rows that have runs; the capacity control against itself is left out (0 by definition), and a
    source with no row of its own (only the capacity control, which every source shares) is left out whole."""
    out = {}
    for source in SOURCES:
        pts, own = [], False
        for x, method in rungs(source):
            if method == against:
                continue
            diffs = per_task(results, method, shots, against)
            if diffs:
                diff, ci = mean_ci95(list(diffs.values()))
                pts.append((x, diff, ci, len(diffs)))
                own = own or method != CAPACITY
        if own:
            out[source] = pts
    return out


def table_rows(results):
    """HEADER rows: every point of the figure, against the capacity control and against scratch, per shot count and
    source (blocks_kept as the figure's x axis labels it)."""
    rows = []
    for against in (CAPACITY, "scratch"):
        for k in sorted({key.shots for key in results}):
            for source, series in points(results, k, against).items():
                method_at = dict(rungs(source))
                rows += [[k, source, method_at[x], X_LABELS.get(x, f"{x:g}"), against, n, diff, ci]
                         for x, diff, ci, n in series]
    return rows


def report(out, files, title, prov):
    """ladder.png and ladder.csv in `out` from the runs of `files` (a knowledge study's and the studies it reused),
    as its contrasts are: arithmetic on stored runs, done on no device."""
    runs = {key: result for key, (_, result) in read_folders(files).items()}
    prov = {**prov, "device": "none (computed from the stored runs)"}
    rows = table_rows(runs)
    if rows:
        write_csv(Path(out) / "ladder.csv", HEADER, rows, prov)
    return draw(Path(out) / "ladder.png", runs, f"{title}: where the knowledge sits", prov)


def draw(path, results, title, provenance=None):
    """The ladder figure: per shot count (columns), the rows against the capacity control and against scratch
    (rows of panels); False where no ladder row has runs (nothing written)."""
    shots = sorted({key.shots for key in results})
    grid = [(against, k, points(results, k, against)) for against in (CAPACITY, "scratch") for k in shots]
    grid = [(a, k, p) for a, k, p in grid if p]
    if not grid:
        return False
    ends = [d + s * (0 if math.isnan(c) else c) for _, _, p in grid for pts in p.values() for _, d, c, _ in pts
            for s in (-1, 1)]
    yticks = nice_ticks(min(ends + [0.0]), max(ends + [0.0]), 7)
    xticks = [0, *LADDER, FINETUNE_X, WINDOW_X, X_END]
    pw, ph, left, top, gap, vgap = 430, 280, 90, 60, 110, 110
    columns = len(shots)
    panel_rows = sorted({a for a, _, _ in grid}, key=[CAPACITY, "scratch"].index)
    img = Image.new("RGB", (left + columns * (pw + gap), top + len(panel_rows) * (ph + vgap)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font(17))
    for against, k, pts in grid:
        x0, y0 = left + shots.index(k) * (pw + gap), top + panel_rows.index(against) * (ph + vgap)
        panel = Panel(d, (x0, y0, x0 + pw, y0 + ph), xticks, yticks, xlabel="conv blocks of the source kept (of 13)",
                      ylabel=f"vs {against} (points)", title=f"{k} shots per class: minus {against}",
                      xformat=lambda v: X_LABELS.get(v, f"{v:g}"))
        zero = panel.y(0)
        for x in range(int(panel.x0), int(panel.x1), 10):
            d.line([x, zero, x + 5, zero], fill=(120, 120, 120))
        for i, (source, series) in enumerate(pts.items()):
            colour, dodge = SOURCES[source], (i - (len(pts) - 1) / 2) * 8
            line = [(panel.x(x) + dodge, panel.y(v)) for x, v, _, _ in series if x <= LADDER[-1]]
            for a, b in zip(line, line[1:]):
                d.line([*a, *b], fill=colour, width=3)
            for x, v, ci, _ in series:
                cx, cy = panel.x(x) + dodge, panel.y(v)
                if not math.isnan(ci):
                    d.line([cx, panel.y(v - ci), cx, panel.y(v + ci)], fill=colour, width=2)
                if x == WINDOW_X:  # the converse of the learngene: a diamond
                    d.polygon([(cx, cy - 7), (cx + 7, cy), (cx, cy + 7), (cx - 7, cy)], fill=colour)
                else:
                    d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour)
    legend = Image.new("RGB", (img.width, 40), "white")
    drawn = [s for s in SOURCES if any(s in p for _, _, p in grid)]  # a source without rows gets no legend entry
    _legend(ImageDraw.Draw(legend), [(f"{s} source", SOURCES[s], False) for s in drawn], left, 8, per_row=2)
    full = Image.new("RGB", (img.width, img.height + legend.height), "white")
    full.paste(img, (0, 0))
    full.paste(legend, (0, img.height))
    save_png(full, path, provenance, [
        "x: how many of the source's conv blocks (from the input) the model starts from, the rest and the head fresh "
        "(0: the capacity control, the collective architecture from random); 13+head: the whole fine-tune; window "
        "(diamond): only the learngene's window of blocks kept. Marker: mean paired difference over target tasks "
        "(points of accuracy), bar: its 95% interval (Student t over tasks); each row at the learning rate and number "
        "of epochs its validation tasks chose."])
    return True
