"""The figures, drawn from small hand-made tables: each has the size its content needs, is not blank, and
carries its provenance; the forest plot's numbers are the table's."""
import csv

import numpy as np
import pytest
from PIL import Image

from utils import heatmaps, plots, report, stats, study_figures
from utils.runstore import RunKey

PROV = {"commit": "abc123", "device": "cpu (test)", "time_utc": "2026-01-01T00:00:00Z", "command": "python x.py"}


def ink(path):
    """The fraction of pixels that are not white, and the image."""
    img = Image.open(path)
    a = np.asarray(img.convert("L"))
    return float((a < 250).mean()), img


def test_nice_ticks_cover_the_range_in_round_steps():
    assert plots.nice_ticks(-2.7, 1.2, 6) == [-3, -2, -1, 0, 1, 2]
    assert plots.nice_ticks(37.5, 52.0, 7) == [35, 40, 45, 50, 55]
    t = plots.nice_ticks(-14.5, 3.1, 6)
    assert t[0] <= -14.5 and t[-1] >= 3.1 and len(set(np.diff(t).round(9))) == 1


def table_rows():
    rows = []
    for k in (10, 20):
        for m, diff, ci in (("learngene", -0.7, 1.2), ("scratch", "", ""), ("other-layers", -0.3, 0.8),
                            ("probe-random", -10.7, 2.0)):
            rows.append([k, m, 20, 20, 47.0, 3.0, diff, ci, 0, 48.0, 11_800_000, "8-9-10" if m == "other-layers" else "", 1.0])
    return rows


def test_forest_plot_from_a_hand_made_table(tmp_path):
    lines = report.forest_rows(table_rows(), ewc_lambda=40000)
    assert [l["label"] for l in lines[:3]] == ["learngene (EWC 40000)", "other-layers (conv 8-10, EWC 40000)",
                                               "probe-random"]
    assert lines[0] == {"shots": 10, "label": "learngene (EWC 40000)", "diff": -0.7, "ci": 1.2}
    plots.forest(tmp_path / "f.png", lines, "test: accuracy minus scratch's", PROV)
    share, img = ink(tmp_path / "f.png")
    assert img.width >= 800 and img.height >= 200 and 0.02 < share < 0.5
    assert img.text["commit"] == "abc123" and img.text["command"] == "python x.py"
    # the same lines from the CSV the table is written to: one source of numbers
    header = report.TABLE_HEADER
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table_rows())
    from_csv = report.forest_rows(list(csv.DictReader(open(tmp_path / "t.csv"))), ewc_lambda=40000)
    assert from_csv == lines


def test_forest_lines_name_each_methods_own_learning_rate():
    """Where methods train at rates of their own (the tuned study), every line says its rate; elsewhere none does."""
    lrs = {"learngene": 0.005, "scratch": 0.001, "other-layers": 0.02, "probe-random": 0.005}
    labels = [l["label"] for l in report.forest_rows(table_rows(), 40000, lrs)[:3]]
    assert labels == ["learngene (EWC 40000, lr 0.005)", "other-layers (conv 8-10, EWC 40000, lr 0.02)",
                      "probe-random (lr 0.005)"]
    assert not any("lr" in l["label"] for l in report.forest_rows(table_rows(), 40000))


def test_caption_states_tasks_seeds_and_the_shared_or_own_settings():
    assert report.about_line("20 target", 1, 0.005, 30) == \
        "20 target tasks per shot count, 1 seed(s); SGD learning rate 0.005, 30 epochs."
    assert report.about_line("4 validation", 3, 0.005, 30, {"scratch": 0.001}, {"scratch": 60}) == \
        "4 validation tasks per shot count, 3 seed(s); each method at its own learning rate and epochs (in its label)."
    assert report.about_line("20", 1, None, None) == "20 tasks per shot count, 1 seed(s)."
    assert report.about_line("20", 1, None, 30, {"scratch": 0.001}) == \
        "20 tasks per shot count, 1 seed(s); each method at its own learning rate, 30 epochs."
    assert report.about_line("20", 1, 0.005, None, None, {"scratch": 60}) == \
        "20 tasks per shot count, 1 seed(s); SGD learning rate 0.005, each method at its own epochs (in its label)."
    assert report.baseline_line({"scratch": 0.001}, None) == ["The baseline, scratch at 0.001."]
    assert report.baseline_line(None, None) == []


def test_a_table_redrawn_says_its_tasks_seeds_and_the_rates_given(tmp_path, capsys):
    """draw_results.py takes the tasks and seeds from the table's own columns and the rates from its flags; a
    tuned table's --lr_of must name every row's rate or --lr the rest."""
    from utils import draw_results
    rows = [dict(zip(report.TABLE_HEADER, map(str, r))) for r in table_rows()]
    assert draw_results.about(rows, 0.005, 30, None) == "20 tasks per shot count, 1 seed(s); SGD learning rate " \
                                                        "0.005, 30 epochs."
    rows[0]["tasks"], rows[0]["runs"] = "3", "9"
    assert draw_results.about(rows, None, None, None) == "3-20 tasks per shot count, 1-3 seed(s)."
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows([report.TABLE_HEADER, *table_rows()])
    with pytest.raises(SystemExit):
        draw_results.main([str(tmp_path / "t.csv"), "--lr_of", "scratch=0.001", "learngene=0.005"])
    assert "--lr_of names no rate for other-layers, probe-random: give --lr too" in capsys.readouterr().err
    assert not (tmp_path / "t-forest.png").exists()
    draw_results.main([str(tmp_path / "t.csv"), "--lr_of", "scratch=0.001", "learngene=0.005", "--lr", "0.02"])
    assert (tmp_path / "t-forest.png").read_bytes()[:4] == b"\x89PNG"


def test_a_contrasts_table_is_redrawn_as_its_own_forest(tmp_path, capsys):
    """A contrasts CSV (each row against the row it stands in for) drawn from the table alone; a half-width that is
    no half-width is refused in one line and nothing is drawn."""
    from utils import contrasts, draw_results
    table = tmp_path / "c.csv"
    rows = [[10, "learngene-joint", "learngene", "joint layers", 20, 1.14, 1.05],
            [20, "probe-collective", "probe-random", "features", 20, 9.1, float("nan")]]
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([contrasts.HEADER, *rows])
    draw_results.main([str(table), "--title", "made up"])
    share, img = ink(tmp_path / "c.png")
    assert share > 0.01 and "made up" in img.text["command"] and img.text["device"].startswith("none")
    rows[0][6] = -1.0
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([contrasts.HEADER, *rows])
    with pytest.raises(SystemExit):
        draw_results.main([str(table), "--out", str(tmp_path / "d.png")])
    assert "has the half-width -1.0" in capsys.readouterr().err and not (tmp_path / "d.png").exists()


def fake_runs(epochs, probe=False):
    runs = {}
    rng = np.random.default_rng(0)
    for m in ("learngene", "scratch") + (("probe-collective",) if probe else ()):
        for t in range(4):
            e = [epochs[-1]] if m.startswith("probe") else epochs
            curve = [[x, 1.0, 50.0, 30 + x + rng.normal(), 0.0] for x in e]
            runs[RunKey(m, 10, t, 0)] = {"curve": curve, "final_acc": curve[-1][3]}
    return runs


@pytest.mark.parametrize("epochs", [[5, 10, 15, 20, 25, 30], [10, 20, 30]])
def test_learning_curves_from_hand_made_runs(tmp_path, epochs):
    runs = fake_runs(epochs, probe=True)
    curves = {(10, m): stats.curve(runs, m, 10) for m in ("learngene", "scratch", "probe-collective")}
    e, mean, ci = curves[(10, "learngene")]
    assert e == epochs and len(mean) == len(ci) == len(epochs) and all(ci > 0)
    assert mean[-1] == pytest.approx(np.mean([r["final_acc"] for k, r in runs.items() if k.method == "learngene"]))
    plots.learning_curves(tmp_path / "c.png", curves, "test: accuracy per epoch", PROV)
    share, img = ink(tmp_path / "c.png")
    assert img.width >= 500 and img.height >= 400 and 0.02 < share < 0.5
    assert stats.curve(runs, "other-layers", 10) is None


def test_source_budget_figure_joins_its_points_along_the_axis(tmp_path):
    """Points given out of x order (the preset's point comes first in the study) are joined along the axis: the
    figure drawn from shuffled points is the figure drawn from sorted ones."""
    pts = [(48_000, -0.8, 2.0, False), (12_000, -1.1, 1.1, False), (108_000, -0.1, 4.0, False), (48_000, 0.5, 1.0, True)]
    source = {"features": [(48_000, 47.2, False), (12_000, 39.8, False), (108_000, 45.3, False)]}
    study_figures.source_budget(tmp_path / "a.png", {10: {"learngene": pts}}, source, "test", PROV)
    study_figures.source_budget(tmp_path / "b.png", {10: {"learngene": sorted(pts)}}, {"features": sorted(source["features"])},
                        "test", PROV)
    a, b = (np.asarray(Image.open(tmp_path / f).convert("L")) for f in ("a.png", "b.png"))
    assert a.shape == b.shape and (a != b).mean() < 1e-3  # the same picture (up to nothing but the dodge order)
    share, img = ink(tmp_path / "a.png")
    assert img.width >= 900 and 0.02 < share < 0.5 and img.text["commit"] == "abc123"


def test_chain_position_figure(tmp_path):
    xs = [1, 2, 3]
    panels = {(row, k): {"learngene, chained": (xs, np.array([50.0, 52.0, 55.0]), np.array([1.0, 1.0, np.nan])),
                         "scratch, chained": (xs, np.array([49.0, 51.0, 53.0]), np.array([1.0, 2.0, 1.0])),
                         "scratch, fresh per task": (xs, np.array([49.0, 48.0, 50.0]), np.array([1.0, 1.0, 1.0]))}
              for row in ("clean protocol, chained", "released protocol") for k in (10, 20)}
    study_figures.chain_positions(tmp_path / "c.png", panels, "test", PROV, ["caption"])
    share, img = ink(tmp_path / "c.png")
    assert img.width >= 900 and img.height >= 600 and 0.02 < share < 0.5 and img.text["commit"] == "abc123"


def test_a_long_command_wraps_under_the_figure_instead_of_widening_it(tmp_path):
    """The accuracy matrix of few tasks is narrow; a long command line wraps beneath it, and the whole command is
    kept in the PNG's text chunks."""
    command = "python collective-model/val_lifelong_imagenet.py " + " ".join(f"--option{i} value{i}" for i in range(40))
    heatmaps.accuracy_matrix(tmp_path / "m.png", np.full((3, 3), 50.0), "matrix", provenance={**PROV, "command": command})
    _, img = ink(tmp_path / "m.png")
    short = tmp_path / "short.png"
    heatmaps.accuracy_matrix(short, np.full((3, 3), 50.0), "matrix", provenance=PROV)
    assert img.width == Image.open(short).width <= 720
    assert img.height > Image.open(short).height + 18  # the command took more than one line
    assert img.text["command"] == command


def test_the_ladder_points_are_paired_differences_and_name_only_sources_with_rows():
    """Each rung's point is its mean paired difference over tasks; the capacity control (x = 0) is shared by the
    sources, so a source whose own rows have no runs gets no curve (no lone point at 0 for it); ladder.csv lists
    the same points by row."""
    from utils import ladder
    acc = {"scratch": [50, 40, 60], "scratch-collective": [48, 41, 57], "first2-collective": [55, 44, 62]}
    runs = {RunKey(m, 10, t, 0): {"final_acc": float(a)} for m, accs in acc.items() for t, a in enumerate(accs)}
    pts = ladder.points(runs, 10, "scratch")
    assert list(pts) == ["collective"]
    (x0, d0, _, n0), (x2, d2, _, n2) = pts["collective"]
    assert (x0, n0, x2, n2) == (0, 3, 2, 3)
    assert d0 == pytest.approx((-2 + 1 - 3) / 3) and d2 == pytest.approx((5 + 4 + 2) / 3)
    table = ladder.table_rows(runs)  # the figure's numbers, as ladder.csv holds them
    assert [r[:6] for r in table] == [[10, "collective", "first2-collective", "2", "scratch-collective", 3],
                                      [10, "collective", "scratch-collective", "0", "scratch", 3],
                                      [10, "collective", "first2-collective", "2", "scratch", 3]]
    assert [r[6] for r in table] == pytest.approx([(7 + 3 + 5) / 3, d0, d2])
    runs.update({RunKey("first2-joint", 10, t, 0): {"final_acc": 52.0} for t in range(3)})
    assert list(ladder.points(runs, 10, "scratch")) == ["collective", "joint"]
    assert [x for x, *_ in ladder.points(runs, 10, "scratch-collective")["joint"]] == [2]
