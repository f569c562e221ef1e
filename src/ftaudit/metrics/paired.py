"""Paired comparisons of two attacks scored on the same rows.

"A beats B" is said only when a paired bootstrap CI of the difference excludes zero: both
attacks are evaluated on the same resampled audit examples in every replicate (a cluster
bootstrap), so the interval covers the difference itself, not two overlapping marginal CIs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.metrics.roc import weighted_roc_stats


@dataclass(frozen=True)
class PairedDifference:
    """``b`` against ``a`` on the same rows: AUC and TPR@fpr differences (b − a) and the TPR
    factor (b / a), each with a paired percentile interval."""

    a: str
    b: str
    fpr: float
    auc_diff: float
    auc_diff_lo: float
    auc_diff_hi: float
    tpr_diff: float
    tpr_diff_lo: float
    tpr_diff_hi: float
    tpr_factor: float  # inf when only b finds members, nan when neither does
    tpr_factor_lo: float
    tpr_factor_hi: float
    level: float

    @property
    def tpr_resolved(self) -> bool:
        """The TPR difference's CI excludes zero."""
        return self.tpr_diff_lo > 0 or self.tpr_diff_hi < 0

    @property
    def auc_resolved(self) -> bool:
        return self.auc_diff_lo > 0 or self.auc_diff_hi < 0

    def verdict(self, metric: str = "tpr") -> str:
        """'b beats a', 'a beats b' or 'not resolved', by the paired CI of the chosen difference."""
        lo, hi = (self.tpr_diff_lo, self.tpr_diff_hi) if metric == "tpr" else (self.auc_diff_lo, self.auc_diff_hi)
        if lo > 0:
            return f"{self.b} beats {self.a}"
        if hi < 0:
            return f"{self.a} beats {self.b}"
        return "not resolved"

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in self.__dict__.items()}


def cluster_weights(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[1 + n_boot, rows] bootstrap multiplicities resampling clusters (row 0: the full data)."""
    _, cluster = np.unique(groups, return_inverse=True)
    k = int(cluster.max()) + 1
    rng = np.random.default_rng([seed, 0x9A1D])
    picks = rng.integers(0, k, size=(n_boot, k))
    counts = np.bincount((picks + np.arange(n_boot)[:, None] * k).ravel(), minlength=n_boot * k).reshape(n_boot, k)
    return np.vstack([np.ones(k), counts])[:, cluster]


def paired_difference(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, groups: np.ndarray, fpr: float,
                      n_boot: int = 1000, level: float = 0.95, seed: int = 0, names: tuple[str, str] = ("a", "b")
                      ) -> PairedDifference:
    """Paired cluster bootstrap of b − a (AUC and TPR at ``fpr``) on the same rows."""
    weights = cluster_weights(np.asarray(groups), n_boot, seed)
    auc_a, tpr_a = weighted_roc_stats(scores_a, labels, weights, [fpr])
    auc_b, tpr_b = weighted_roc_stats(scores_b, labels, weights, [fpr])
    a, b = tpr_a[:, 0], tpr_b[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(a > 0, b / np.where(a > 0, a, 1.0), np.where(b > 0, np.inf, np.nan))
    q = [(1 - level) / 2, (1 + level) / 2]

    def interval(reps: np.ndarray) -> tuple[float, float]:
        reps = reps[~np.isnan(reps)]
        if not reps.size:
            return float("nan"), float("nan")
        lo, hi = np.quantile(reps, q, method="inverted_cdf")  # no interpolation: a factor may be inf
        return float(lo), float(hi)

    auc_d, tpr_d = auc_b - auc_a, b - a
    return PairedDifference(names[0], names[1], float(fpr), float(auc_d[0]), *interval(auc_d[1:]), float(tpr_d[0]),
                            *interval(tpr_d[1:]), float(factor[0]), *interval(factor[1:]), float(level))


def example_weights(n_examples: int, n_boot: int, seed: int) -> np.ndarray:
    """[1 + n_boot, n_examples] multiplicities of audit examples (row 0: the full data)."""
    rng = np.random.default_rng([seed, 0xCE11])
    picks = rng.integers(0, n_examples, size=(n_boot, n_examples))
    counts = np.bincount((picks + np.arange(n_boot)[:, None] * n_examples).ravel(),
                         minlength=n_boot * n_examples).reshape(n_boot, n_examples)
    return np.vstack([np.ones(n_examples), counts])


def cross_difference(scores_a, labels_a, example_a, scores_b, labels_b, example_b, fpr: float, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """TPR@fpr of b − a for two evaluations on the SAME audit examples by different models (two
    cells of a sweep): each replicate resamples audit examples once and weights both cells' rows
    by it, so the interval covers the difference of the two cells' rates, example noise shared."""
    n = int(max(np.max(example_a), np.max(example_b))) + 1
    w = example_weights(n, n_boot, seed)
    _, tpr_a = weighted_roc_stats(scores_a, labels_a, w[:, example_a], [fpr])
    _, tpr_b = weighted_roc_stats(scores_b, labels_b, w[:, example_b], [fpr])
    d = tpr_b[:, 0] - tpr_a[:, 0]
    reps = d[1:][np.isfinite(d[1:])]
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) if reps.size else (np.nan, np.nan)
    return {"value": float(d[0]), "lo": float(lo), "hi": float(hi), "level": float(level)}


def mean_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """mean(a) − mean(b) of two per-example measurements on the SAME examples (e.g. two models'
    correctness on one test set), with a paired bootstrap CI: each replicate resamples the examples
    once for both. {"value", "lo", "hi", "level"}."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"need two equally long 1-d arrays, got {a.shape} and {b.shape}")
    w = example_weights(len(a), n_boot, seed)
    d = w @ (a - b) / w.sum(axis=1)
    lo, hi = np.quantile(d[1:], [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(d[0]), "lo": float(lo), "hi": float(hi), "level": float(level)}
