"""Figures: valid PNGs, and robust to what real runs store (zeros on log axes, inf/NaN scores)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ftaudit.report import plots

PNG = plots.PNG_SIGNATURE


def _size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_roc_plot_survives_zeros_and_is_deterministic():
    fpr = np.array([0.0, 0.0, 0.001, 0.5, 1.0])
    tpr = np.array([0.0, 0.02, 0.05, 0.8, 1.0])
    curves = {"a (AUC 0.710)": (fpr, tpr), "b": (np.array([0.0, 1.0]), np.array([0.0, 1.0]))}
    png = plots.roc_plot(curves, title="t")
    assert png.startswith(PNG)
    w, h = _size(png)
    assert 700 < w < 1200 and 500 < h < 700  # wide enough for the plot and the legend beside it, at ~110 dpi
    assert plots.roc_plot(curves, title="t") == png  # no timestamps/metadata drift
    assert b"http" not in png


@pytest.mark.parametrize(
    ("smallest", "floor"), [(1 / 4500, 1e-4), (0.01, 1e-2), (0.004, 1e-3), (1e-9, 1e-6), (None, 1e-4)]
)
def test_roc_floor_is_the_decade_below_the_finest_fpr(smallest, floor):
    fpr = np.array([0.0, 0.0] if smallest is None else [0.0, smallest, 1.0])
    assert plots.roc_floor({"a": (fpr, fpr)}) == pytest.approx(floor)


def test_roc_plot_rejects_mismatched_points_and_draws_empty():
    with pytest.raises(ValueError, match="fpr has 3 points"):
        plots.roc_plot({"a": (np.zeros(3), np.zeros(4))})
    assert plots.roc_plot({}).startswith(PNG)


def test_score_histograms_handle_inf_nan_heavy_tails_and_empty_classes():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.5
    wild = rng.standard_cauchy(200)
    wild[:4] = [np.inf, -np.inf, np.nan, 1e300]
    scores = {
        "wild": wild,
        "constant": np.full(200, 3.0),
        "all-nan": np.full(200, np.nan),
        "normal": rng.standard_normal(200) + labels,
    }
    png = plots.score_histograms(scores, labels)
    assert png.startswith(PNG)
    w, h = _size(png)
    assert w > h  # 3 columns x 2 rows
    assert plots.score_histograms({"only-members": np.ones(5)}, np.ones(5, bool)).startswith(PNG)
    assert plots.score_histograms({}, labels).startswith(PNG)


def test_score_histograms_reject_misaligned_labels():
    with pytest.raises(ValueError, match="labels"):
        plots.score_histograms({"a": np.zeros(5)}, np.zeros(6, bool))


def test_robust_range_clips_to_finite_percentiles():
    values = np.concatenate([np.linspace(0, 1, 1000), [np.inf, -np.inf, np.nan, 1e12]])
    lo, hi = plots.robust_range(values)
    assert 0 <= lo < 0.01 and 0.99 < hi <= 1.0
    assert plots.robust_range(np.array([np.nan, np.inf])) is None
    lo, hi = plots.robust_range(np.full(10, 2.0))
    assert lo < 2.0 < hi


def test_example_grid_checks_captions():
    images = np.random.default_rng(0).integers(0, 17, (10, 8, 8)).astype(np.float32)
    assert plots.example_grid(images, [f"#{i}" for i in range(10)]).startswith(PNG)
    with pytest.raises(ValueError, match="captions"):
        plots.example_grid(images, ["only one"])
    with pytest.raises(ValueError, match="non-empty"):
        plots.example_grid(np.zeros((0, 8, 8)), [])


def test_save_png_is_atomic(tmp_path, monkeypatch):
    png = plots.roc_plot({})
    target = tmp_path / "docs" / "roc.png"
    assert plots.save_png(png, target) == target
    assert target.read_bytes() == png
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        plots.save_png(plots.roc_plot({"x": (np.array([0, 1.0]), np.array([0, 1.0]))}), target)
    assert target.read_bytes() == png  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["roc.png"]  # no temp file left


def test_save_png_refuses_non_png(tmp_path):
    with pytest.raises(ValueError):
        plots.save_png(b"<svg/>", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_forty_attacks_never_share_colour_and_line_style():
    styles = [plots.roc_style(i) for i in range(40)]
    assert len({(c, str(d)) for c, d in styles}) == 40
    assert all(styles[i][0] != styles[i + 1][0] and styles[i][1] != styles[i + 1][1] for i in range(39))


def _twelve_curves(names=None) -> dict:
    rng = np.random.default_rng(0)
    names = names or [f"attack-{i}" for i in range(12)]
    out = {}
    for name in names:
        fpr = np.concatenate([[0.0], np.sort(rng.random(30)), [1.0]])
        out[name] = (fpr, np.clip(fpr ** rng.uniform(0.3, 1.0), 0, 1))
    return out


def test_roc_legend_is_outside_the_axes_and_the_figure_is_wide():
    curves = _twelve_curves()
    fig = plots.roc_figure(curves, title="twelve attacks", emphasis=["attack-3", "attack-0"])
    ax, leg = fig.axes_box, fig.legend_box
    assert leg[0] >= ax[2]  # the legend starts right of the plot area
    assert all(0 <= v <= 1 for v in (*ax, *leg))  # and nothing is cut off
    w, h = _size(fig.png)
    assert w >= 700 and w * (ax[2] - ax[0]) >= 450  # the plot alone ~500 px (it was ~400 px with the legend on it)


def test_roc_emphasis_and_band_change_the_drawing():
    curves = _twelve_curves(["attack-4", "attack-5", "attack-6"])
    plain = plots.roc_plot(curves)
    strong = plots.roc_plot(curves, emphasis=["attack-5"])
    grid = np.geomspace(1e-3, 1, 20)
    banded = plots.roc_plot(curves, emphasis=["attack-5"], band=("attack-5", grid, grid * 0.5, np.minimum(grid * 2, 1),
                                                                   "attack-5: 95% CI"))
    assert len({plain, strong, banded}) == 3


@pytest.mark.parametrize("name", ["$\\notacommand{$", "price $5", "a$b$c", "$x^$"])
def test_user_text_with_dollars_is_not_mathtext(name):
    """A `$` in an attack, corpus or record name would start mathtext; a malformed formula would fail
    the whole report. Every user-controlled string is escaped."""
    curves = _twelve_curves([name, "loss"])
    assert plots.roc_plot(curves, title=f"corpus {name}", emphasis=[name],
                          band=(name, np.array([0.1, 1.0]), np.array([0.1, 0.5]), np.array([0.5, 1.0]), name)).startswith(PNG)
    assert plots.score_histograms({name: np.arange(6.0)}, np.array([1, 0, 1, 0, 1, 0], bool)).startswith(PNG)
    assert plots.example_grid(np.zeros((2, 8, 8)), [name, "ok"]).startswith(PNG)
    spec = {"title": name, "xlabel": name, "ylabel": name, "series": [{"label": name, "x": [0, 1], "y": [0, 1]}]}
    assert plots.study_figure(spec).startswith(PNG)
    assert plots.plain(name).count("\\$") == name.count("$")


def test_unescaped_mathtext_would_have_failed():
    """The escape is what makes the test above pass: matplotlib rejects this formula when parsed."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.text(0.5, 0.5, "$\\notacommand{$")
    with pytest.raises(ValueError):
        fig.savefig(__import__("io").BytesIO(), format="png")
