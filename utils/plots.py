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
    """One panel per shot count: mean test accuracy per epoch of each method over its runs."""
    shots = sorted({key[1] for key in runs})
    methods = list(dict.fromkeys(key[0] for key in runs))
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
            rs = [r for key, r in runs.items() if key[0] == m and key[1] == k]
            if rs:
                epochs = [c[0] for c in rs[0]["curve"]]
                curves[m] = (epochs, np.mean([[c[3] for c in r["curve"]] for r in rs], axis=0))
        if not curves:
            continue
        emax = max(max(e) for e, _ in curves.values())
        for acc in (0.2, 0.4, 0.6, 0.8, 1.0):
            y = y0 + ph - acc * ph
            d.line([x0, y, x0 + pw, y], fill=(225, 225, 225))
            d.text((x0 - 30, y - 6), f"{acc:.1f}", fill="black")
        for i, (m, (epochs, acc)) in enumerate(curves.items()):
            pts = [(x0 + e / emax * pw, y0 + ph - a * ph) for e, a in zip(epochs, acc)]
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
