"""Repeating a study over independent seeds: the spread of each headline metric across seeds.

Every CI elsewhere in a report resamples audit examples, so it covers example-level variation
only. Rerunning the whole study (base, keep-matrix, training) with other seeds shows the
model-level variation beside it.
"""
from __future__ import annotations

import numpy as np

from ftaudit.config import MetricsConfig
from ftaudit.evaluation import HEADLINE_FPR, Evaluation
from ftaudit.report.blocks import ReportSection


def _spread(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return f"{v.mean():.4g} ± {sd:.2g} [{v.min():.4g}, {v.max():.4g}]"


def seed_spread_section(repeats: dict[int, Evaluation], metrics: MetricsConfig) -> ReportSection:
    """One row per attack: AUC and TPR at each FPR, mean ± sd [min, max] across seeds, beside the
    first seed's example-bootstrap CI width."""
    seeds = list(repeats)
    first = repeats[seeds[0]]
    rows = []
    for att in first.attacks:
        per_seed = [ev.by_name(att.name) for ev in repeats.values() if any(a.name == att.name for a in ev.attacks)]
        row = {"attack": att.name, "seeds": len(per_seed),
               "AUC across seeds (mean ± sd [min, max])": _spread([a.auc.value for a in per_seed]),
               "AUC bootstrap CI width (seed %d)" % seeds[0]: f"{att.auc.hi - att.auc.lo:.3g}"}
        for fpr in metrics.fprs:
            row[f"TPR@{fpr:g} across seeds"] = _spread([a.tpr_at(fpr).value for a in per_seed])
        rows.append(row)
    headline = [ev.best.tpr_at(HEADLINE_FPR).value for ev in repeats.values() if ev.best]
    text = [f"The whole study was repeated with seeds {seeds} (base, keep-matrix, training and queries all re-drawn). "
            "Every other interval in this report resamples audit examples of the first seed's run, so it covers "
            "example-level variation only; the spread below is the model-level variation across independent runs.",
            f"Best attack's TPR at 1 % FPR per seed: {', '.join(f'{v:.2%}' for v in headline)}."]
    return ReportSection("Spread across seeds", text, rows)
