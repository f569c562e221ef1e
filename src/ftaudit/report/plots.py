"""Figures for the report, each returned as PNG bytes.

The figures only *draw* what the run stored (ROC points, raw scores, audit images); nothing here
computes a metric. Every figure gets its own Agg canvas, so importing this module never touches
pyplot's global backend and it works headless and in threads.
"""
from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ftaudit.store.atomic import atomic_write_bytes

DPI = 110
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# No "Software" tag: keeps the bytes free of URLs and identical across runs.
_PNG_METADATA = {"Software": None}
_MEMBER_COLOR = "#d95f02"
_NONMEMBER_COLOR = "#1b9e77"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=_PNG_METADATA)
    return buf.getvalue()


# --- ROC -------------------------------------------------------------------------------------


def roc_floor(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """Lower axis limit for a log-log ROC: the decade at or below the smallest positive FPR.

    The smallest positive FPR is 1/(number of non-members), the finest step the data can resolve,
    so the axis never shows decades the run cannot speak about. Bounded to [1e-6, 1e-2].
    """
    positive = [np.asarray(fpr, float) for fpr, _ in curves.values()]
    positive = [f[np.isfinite(f) & (f > 0)] for f in positive]
    smallest = min((f.min() for f in positive if f.size), default=1e-4)
    return float(min(1e-2, max(1e-6, 10.0 ** math.floor(math.log10(smallest)))))


# 10 colours × 4 dash patterns: attack i gets colour i % 10 and pattern (i + i // 10) % 4, so the first
# 40 attacks never share a colour *and* a pattern, and neighbours in the legend differ in both.
ROC_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
              "#bcbd22", "#393b79")
ROC_DASHES = ("-", (0, (6, 2)), (0, (4, 1.5, 1, 1.5)), (0, (1.2, 1.2)))


def roc_style(i: int) -> tuple[str, object]:
    """Colour and line style of the i-th attack; unique per attack for the first 40."""
    return ROC_COLORS[i % len(ROC_COLORS)], ROC_DASHES[(i + i // len(ROC_COLORS)) % len(ROC_DASHES)]


def plain(text: object) -> str:
    """User text (attack, corpus, model, record names) for matplotlib: a ``$`` would start mathtext
    (and a malformed formula fails the whole figure), so every ``$`` is escaped to a literal one."""
    return str(text).replace("$", r"\$")


@dataclass(frozen=True)
class RocFigure:
    """The ROC PNG and where its axes and legend ended up, as [x0, y0, x1, y1] fractions of the image
    (origin top left), so a browser check can see that the legend is outside the plot area."""

    png: bytes
    axes_box: tuple[float, float, float, float]
    legend_box: tuple[float, float, float, float] | None


ROC_SIZE = (10.0, 5.6)  # inches at DPI; the width then shrinks to what the square axes and legend use


def _shrink_to_content(fig: Figure, pad: float = 0.15) -> None:
    """Narrow the figure to its drawn content: square log-log axes (anchored left) beside an outside
    legend leave an empty right margin in a wide figure, and an image that is mostly margin displays
    small. One layout pass measures the margin; the axes keep their size (the height limits them)."""
    fig.canvas.draw()
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    spare = width - tight.x1 - pad
    if spare > 0.05 and tight.x0 >= 0:
        fig.set_size_inches(width - spare, height)


def _box(bbox, fig: Figure) -> tuple[float, float, float, float]:
    w, h = fig.bbox.width, fig.bbox.height
    return (round(float(bbox.x0 / w), 4), round(float(1 - bbox.y1 / h), 4), round(float(bbox.x1 / w), 4),
            round(float(1 - bbox.y0 / h), 4))


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    floor: float | None = None,
    emphasis: Sequence[str] = (),
    band: tuple[str, np.ndarray, np.ndarray, np.ndarray, str] | None = None,
) -> RocFigure:
    """Log-log ROC of every attack in one figure, plus the chance diagonal; legend outside the axes.

    ``curves`` maps a legend label to ``(fpr, tpr)``; its order fixes each curve's colour and style.
    Labels in ``emphasis`` (strongest first) are drawn thick and opaque and lead the legend, the
    rest thin. ``band`` = ``(label, fpr, lo, hi, text)`` shades a TPR interval over an FPR grid
    around the curve ``label``. Zeros cannot sit on log axes, so rates are clipped to ``floor``
    (default :func:`roc_floor`).
    """
    floor = roc_floor(curves) if floor is None else float(floor)
    strong = [label for label in emphasis if label in curves]
    fig = _new_figure(ROC_SIZE[0], ROC_SIZE[1])
    ax = fig.add_subplot()
    ax.set_box_aspect(1)
    ax.set_anchor("W")
    handles = {}
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        fpr, tpr = np.asarray(fpr, float).ravel(), np.asarray(tpr, float).ravel()
        if fpr.shape != tpr.shape:
            raise ValueError(f"ROC {label!r}: fpr has {fpr.size} points, tpr has {tpr.size}")
        keep = ~(np.isnan(fpr) | np.isnan(tpr))
        color, dash = roc_style(i)
        bold = label in strong
        (handles[label],) = ax.plot(np.clip(fpr[keep], floor, 1), np.clip(tpr[keep], floor, 1), color=color, ls=dash,
                                    lw=2.4 if bold else 1.2, alpha=1.0 if bold else 0.7, zorder=3 if bold else 2,
                                    label=plain(label))
        if band is not None and band[0] == label:
            grid, lo, hi = (np.asarray(v, float).ravel() for v in band[1:4])
            ok = np.isfinite(grid) & np.isfinite(lo) & np.isfinite(hi)
            handles[band[4]] = ax.fill_between(np.clip(grid[ok], floor, 1), np.clip(lo[ok], floor, 1),
                                               np.clip(hi[ok], floor, 1), color=color, alpha=0.18, lw=0,
                                               zorder=1, label=plain(band[4]))
    (chance,) = ax.plot([floor, 1], [floor, 1], ls=":", lw=1.0, color="0.35", label="chance", zorder=1)
    if not curves:
        ax.text(0.5, 0.5, "no ROC curves stored", transform=ax.transAxes, ha="center", color="0.4")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1))
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(True, which="major", lw=0.5, alpha=0.4)
    shaded = [band[4]] if band is not None and band[4] in handles else []
    order = strong + shaded + [k for k in handles if k not in strong and k not in shaded]
    legend = ax.legend([handles[k] for k in order] + [chance], [handles[k].get_label() for k in order] + ["chance"],
                       loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0, fontsize=9, frameon=False,
                       handlelength=3.2, ncols=1 if len(order) <= 18 else 2)
    for text, key in zip(legend.get_texts(), order):
        if key in strong:
            text.set_fontweight("bold")
    if title:
        ax.set_title("\n".join(textwrap.wrap(plain(title), 64)), fontsize=10)
    _shrink_to_content(fig)
    png = _to_png(fig)  # draws: the boxes below are those of the saved image
    return RocFigure(png, _box(ax.get_window_extent(), fig), _box(legend.get_window_extent(), fig))


def roc_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    floor: float | None = None,
    emphasis: Sequence[str] = (),
    band: tuple[str, np.ndarray, np.ndarray, np.ndarray, str] | None = None,
) -> bytes:
    """:func:`roc_figure` as PNG bytes."""
    return roc_figure(curves, title, floor, emphasis, band).png


# --- score histograms ------------------------------------------------------------------------


def robust_range(values: np.ndarray, pct: float = 0.5) -> tuple[float, float] | None:
    """``[pct, 100 - pct]`` percentiles of the finite values, widened if degenerate; None if none.

    Clipping to this range keeps one huge (or infinite) score from squashing the whole histogram
    into a single bin.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(finite, [pct, 100.0 - pct]))
    if hi <= lo:
        pad = max(abs(lo) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _histogram_panel(ax, name: str, scores: np.ndarray, labels: np.ndarray, bins: int) -> None:
    ax.set_title(plain(name), fontsize=9)
    ax.tick_params(labelsize=7)
    span = robust_range(scores)
    if span is None:
        ax.text(0.5, 0.5, "no finite scores", transform=ax.transAxes, ha="center", color="0.4")
        return
    lo, hi = span
    valid = ~np.isnan(scores)
    clipped = np.clip(scores, lo, hi)  # +/-inf land in the outermost bins
    n_clipped = int(np.count_nonzero(valid & (clipped != scores)))
    edges = np.linspace(lo, hi, bins + 1)
    for mask, color, label in ((~labels, _NONMEMBER_COLOR, "non-members"), (labels, _MEMBER_COLOR, "members")):
        data = clipped[mask & valid]
        if data.size:
            ax.hist(data, bins=edges, density=True, color=color, alpha=0.5, label=label, histtype="stepfilled")
    if n_clipped:
        ax.text(0.98, 0.96, f"{n_clipped} clipped", transform=ax.transAxes, ha="right", va="top", fontsize=6, color="0.4")
    ax.set_yticks([])
    ax.locator_params(axis="x", nbins=5)  # long score labels in narrow panels would run into each other


def score_histograms(scores: Mapping[str, np.ndarray], labels: np.ndarray, bins: int = 40) -> bytes:
    """One panel per attack: member vs non-member score densities over shared bins."""
    labels = np.asarray(labels).astype(bool).ravel()
    ncols = max(1, min(3, len(scores)))
    nrows = max(1, math.ceil(len(scores) / ncols))
    fig = _new_figure(3.0 * ncols, 2.3 * nrows)
    if not scores:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no scores stored", ha="center", color="0.4")
        return _to_png(fig)
    for i, (name, values) in enumerate(scores.items()):
        values = np.asarray(values, float).ravel()
        if values.shape != labels.shape:
            raise ValueError(f"scores {name!r} has {values.size} rows, labels has {labels.size}")
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _histogram_panel(ax, name, values, labels, bins)
        if i == 0:
            ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.supxlabel("attack score (higher = member)", fontsize=8)
    return _to_png(fig)


# --- audit images ----------------------------------------------------------------------------


def example_grid(images: np.ndarray, captions: Sequence[str], ncols: int = 8) -> bytes:
    """Audit images (``[K, H, W]`` gray or ``[K, H, W, 3]`` RGB) in a grid, one caption each.

    Gray images share one color scale, so brightness is comparable across the grid.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"expected a non-empty [K, H, W] or [K, H, W, C] array, got shape {images.shape}")
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    finite = images[np.isfinite(images)] if images.dtype.kind == "f" else images
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig = _new_figure(1.05 * ncols, 1.4 * nrows)
    for i, (img, caption) in enumerate(zip(images, captions)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if img.ndim == 2:
            ax.imshow(img, cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(plain(caption), fontsize=6.5, linespacing=1.1)
        ax.set_axis_off()
    return _to_png(fig)


# --- files -----------------------------------------------------------------------------------


def save_png(png: bytes, path: str | os.PathLike) -> Path:
    """Save PNG bytes (e.g. from :func:`roc_plot`) atomically; refuses bytes that are not a PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("save_png expects PNG bytes")
    return atomic_write_bytes(path, png)


# --- study figures (drawn from the Figure specs a scenario stores) ----------------------------

_SERIES_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
                  "#1f78b4", "#b2df8a"]


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    return xa[ok], ya[ok]


def study_figure(spec: Mapping) -> bytes:
    """Draw a stored figure spec: series of lines (with CI bands), points (with error bars) and
    Pareto frontiers (a step line through the frontier points)."""
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, series in enumerate(spec.get("series") or []):
        color = _SERIES_COLORS[i % len(_SERIES_COLORS)]
        x, y = _finite_pairs(series.get("x") or [], series.get("y") or [])
        if not x.size:
            continue
        style = series.get("style", "line")
        lo, hi = series.get("lo"), series.get("hi")
        if style == "frontier":
            order = np.argsort(x)
            ax.plot(x[order], y[order], color="black", lw=1.2, ls="--", drawstyle="steps-post",
                    label=plain(series.get("label") or ""), zorder=1)
            continue
        if style == "points":
            yerr = None
            if lo is not None and hi is not None and len(lo) == len(y) == len(hi):
                lo_a, hi_a, y_a = (np.asarray(v, float) for v in (lo, hi, series["y"]))
                keep = np.isfinite(np.asarray(series["x"], float)) & np.isfinite(y_a)
                yerr = np.vstack([np.clip(y_a - lo_a, 0, None), np.clip(hi_a - y_a, 0, None)])[:, keep]
            ax.errorbar(x, y, yerr=yerr, fmt="o", ms=5, color=color, capsize=2, lw=1, label=plain(series.get("label") or ""), zorder=2)
            continue
        ax.plot(x, y, marker="o", ms=3.5, lw=1.6, color=color, label=plain(series.get("label") or ""), zorder=2)
        if lo is not None and hi is not None and len(lo) == len(hi) == len(series.get("x") or []):
            xs = np.asarray(series["x"], float)
            lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
            ok = np.isfinite(xs) & np.isfinite(lo_a) & np.isfinite(hi_a)
            ax.fill_between(xs[ok], lo_a[ok], hi_a[ok], color=color, alpha=0.18, lw=0)
    if spec.get("xlog"):
        ax.set_xscale("log")
    if spec.get("ylog"):
        ax.set_yscale("log")
    ax.set_xlabel(plain(spec.get("xlabel") or ""))
    ax.set_ylabel(plain(spec.get("ylabel") or ""))
    ax.set_title(plain(spec.get("title") or ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if any(s.get("label") for s in spec.get("series") or []):
        ax.legend(fontsize=7.5, loc="best")
    return _to_png(fig)
