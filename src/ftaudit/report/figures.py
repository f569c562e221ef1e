"""The figures of a run's report, drawn from what the run stored: the ROC (with the best attack's
stored CI band), the score histogram and the most exposed images, as PNG bytes or data URIs.

Split from :mod:`ftaudit.report.html`, which lays the page out; neither recomputes a metric.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ftaudit.report import plots
from ftaudit.report.table import DASH, attacks_of, fmt_number, tpr_at
from ftaudit.store.runs import read_results

MAX_EXPOSED_IMAGES = 24  # more than this is a wall of digits, the table below still lists all
EMPHASISED = 3  # the strongest attacks drawn thick in the ROC
HEADLINE = 0.01


# --- reading the run -------------------------------------------------------------------------


class RunArrays:
    """Lazy access to ``<run_dir>/arrays``; a missing optional file reads as None."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "arrays"

    def get(self, name: str) -> np.ndarray | None:
        path = self.dir / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def roc(self, attack: str) -> np.ndarray | None:
        return self.get(f"roc-{attack}")

    def scores(self, attack: str) -> np.ndarray | None:
        return self.get(f"scores-{attack}")


# --- figures ---------------------------------------------------------------------------------


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _roc_label(attack: Mapping[str, Any]) -> str:
    auc = (attack.get("auc") or {}).get("value")
    return f"{attack.get('name')} (AUC {fmt_number(auc, '.3f')})" if auc is not None else str(attack.get("name"))


def _strength(attack: Mapping[str, Any]) -> tuple[float, float]:
    """Stored TPR at 1 % FPR, then AUC: the order the strongest attacks are picked in (as best_attack)."""
    def value(ci: Any) -> float:
        v = ci.get("value") if isinstance(ci, Mapping) else None
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -1.0

    return value(tpr_at(attack, HEADLINE)), value(attack.get("auc"))


def strongest(results: Mapping[str, Any], k: int = EMPHASISED) -> list[str]:
    """Names of the k strongest attacks, the stored best attack first."""
    ranked = sorted(attacks_of(results), key=_strength, reverse=True)
    names = [str(a.get("name")) for a in ranked]
    best = results.get("best_attack")
    if best in names:
        names.remove(best)
        names.insert(0, best)
    return names[:k]


def _roc_curves(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> dict[str, tuple]:
    curves = {}
    for attack in attacks_of(results):
        roc = arrays.roc(attack.get("name"))
        if roc is None:
            problems.append(f"arrays/roc-{attack.get('name')}.npy is missing; ROC not drawn")
        elif roc.ndim != 2 or roc.shape[0] != 2:
            problems.append(f"arrays/roc-{attack.get('name')}.npy has shape {roc.shape}, expected [2, K]")
        else:
            curves[_roc_label(attack)] = (roc[0], roc[1])
    return curves


def _roc_band(results: Mapping[str, Any], arrays: RunArrays, labels: dict[str, str]) -> tuple | None:
    """The best attack's stored bootstrap band (arrays/rocband-<attack>.npy: fpr grid, lo, hi)."""
    best = results.get("best_attack")
    band = arrays.get(f"rocband-{best}") if best in labels else None
    if band is None or band.ndim != 2 or band.shape[0] != 3:
        return None
    level = results.get("ci_level")
    text = f"{best}: {level:.0%} CI" if isinstance(level, (int, float)) else f"{best}: CI"
    return labels[best], band[0], band[1], band[2], text


def roc_figure(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> plots.RocFigure:
    curves = _roc_curves(results, arrays, problems)
    labels = {str(a.get("name")): _roc_label(a) for a in attacks_of(results)}
    labels = {name: label for name, label in labels.items() if label in curves}
    emphasis = [labels[n] for n in strongest(results) if n in labels]
    return plots.roc_figure(curves, title=results.get("title") or "", emphasis=emphasis,
                            band=_roc_band(results, arrays, labels))


def _roc_png(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> bytes:
    return roc_figure(results, arrays, problems).png


def roc_png(run_dir: str | Path) -> bytes:
    """The report's log-log ROC figure as PNG bytes (for exporting, e.g. the README figure)."""
    return _roc_png(read_results(Path(run_dir)), RunArrays(Path(run_dir)), [])


def histogram_png(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> bytes | None:
    labels = arrays.get("labels")
    if labels is None:
        problems.append("arrays/labels.npy is missing; score histograms not drawn")
        return None
    scores = {}
    for attack in attacks_of(results):
        name = attack.get("name")
        values = arrays.scores(name)
        if values is None:
            problems.append(f"arrays/scores-{name}.npy is missing; its histogram not drawn")
        elif values.shape != labels.shape:
            problems.append(f"arrays/scores-{name}.npy has shape {values.shape}, labels {labels.shape}")
        else:
            scores[name] = values
    return plots.score_histograms(scores, labels) if scores else None


def _exposed_caption(item: Mapping[str, Any]) -> str:
    found = item.get("detected_at_1pct_fpr")
    if isinstance(found, (int, float)):
        rate_text = f"found {found:.0%}"
    else:
        rate = item.get("member_rate")
        rate_text = f"{rate:.0%} in" if isinstance(rate, (int, float)) else DASH
    return f"#{item.get('example')}  y={item.get('label')}\ns={fmt_number(item.get('score'))}  {rate_text}"


def exposed_png(exposed: list[Mapping[str, Any]], arrays: RunArrays, problems: list[str]) -> bytes | None:
    """Images of the most exposed examples, or None when the run has no images to show."""
    if not exposed:
        return None
    audit_x = arrays.get("audit_x")
    if audit_x is None or audit_x.ndim not in (3, 4):  # absent, or not images (e.g. tabular rows)
        return None
    shown = [e for e in exposed[:MAX_EXPOSED_IMAGES] if isinstance(e.get("example"), int) and 0 <= e["example"] < len(audit_x)]
    if len(shown) < len(exposed[:MAX_EXPOSED_IMAGES]):
        problems.append("some exposed examples index outside arrays/audit_x.npy; their images are not shown")
    if not shown:
        return None
    images = audit_x[[e["example"] for e in shown]]
    return plots.example_grid(images, [_exposed_caption(e) for e in shown])


# --- context for the template ---------------------------------------------------------------
