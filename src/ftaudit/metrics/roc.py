"""ROC metrics of a membership attack, with bootstrap confidence intervals.

Convention everywhere: ``labels`` is bool (True = member) and a higher score means "more likely a
member". The single-sample functions delegate to scikit-learn so they are the reference; the
bootstrap computes every replicate at once with numpy (one sort, then weighted cumulative sums),
because ~1000 replicates x ~9000 rows x ~8 attacks per run is too slow with a Python loop over
sklearn. A bootstrap replicate is a vector of integer multiplicities (how often each row was
drawn), so the vectorized statistics equal sklearn's on the expanded (repeated-row) sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from sklearn import metrics as _skm

DEFAULT_FPRS = (0.001, 0.01, 0.1)
_CHUNK_ELEMENTS = 2_000_000  # replicates x rows handled per block, bounds memory (~16 MB per array)


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be bool (True = member) or 0/1")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    if y.all() or not y.any():
        raise ValueError("need at least one member and one non-member")
    return s, y


def roc_curve(scores, labels, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve, as sklearn.metrics.roc_curve computes it (for plotting)."""
    s, y = _check(scores, labels)
    fpr, tpr, _ = _skm.roc_curve(y, s, drop_intermediate=drop_intermediate)
    return fpr, tpr


def auc(scores, labels) -> float:
    """Area under the ROC curve (sklearn.metrics.roc_auc_score); ties count one half."""
    s, y = _check(scores, labels)
    return float(_skm.roc_auc_score(y, s))


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """Largest TPR over the ROC points whose FPR <= ``fpr`` (the LiRA paper's convention).

    The curve always contains (0, 0), so the answer is 0 when no threshold reaches the budget.
    Every threshold counts: sklearn's default ``drop_intermediate`` also drops real operating
    points that lie on a sloped segment (common with tied scores), which can lower the answer.
    """
    f, t = roc_curve(scores, labels, drop_intermediate=False)
    return float(t[f <= fpr].max())


class _Layout(NamedTuple):
    """Rows split by class and sorted by score, with the index maps the ROC statistics need.

    Members (p) and non-members (n) are each sorted ascending. For member i, ``lo[i]``/``hi[i]``
    count non-members scoring below / at-or-below it (ties count one half in the AUC). For a cut
    that excludes the i lowest non-members, ``keep_members[i]`` counts the members scoring at or
    below the highest excluded non-member (they are excluded by the same threshold).
    """

    pos_cols: np.ndarray  # weight column of each sorted member (its row, or its cluster)
    neg_cols: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    keep_members: np.ndarray


def _layout(scores: np.ndarray, labels: np.ndarray, columns: np.ndarray | None = None) -> _Layout:
    pos_rows = np.flatnonzero(labels)
    neg_rows = np.flatnonzero(~labels)
    pos_rows = pos_rows[np.argsort(scores[pos_rows], kind="stable")]
    neg_rows = neg_rows[np.argsort(scores[neg_rows], kind="stable")]
    sp, sn = scores[pos_rows], scores[neg_rows]
    lo = np.searchsorted(sn, sp, side="left")
    hi = np.searchsorted(sn, sp, side="right")
    keep_members = np.concatenate(([0], np.searchsorted(sp, sn, side="right")))
    if columns is not None:
        pos_rows, neg_rows = columns[pos_rows], columns[neg_rows]
    return _Layout(pos_rows, neg_rows, lo, hi, keep_members)


def _cumsum0(w: np.ndarray) -> np.ndarray:
    """Cumulative sums along rows with a leading zero column: out[:, i] = sum of the first i."""
    out = np.zeros((w.shape[0], w.shape[1] + 1))
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _block_stats(lay: _Layout, w: np.ndarray, fprs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """AUC [B] and TPR@FPR [B, F] for weights w [B, columns]; NaN where a replicate lacks a class.

    Works on integer multiplicities in float64 (exact below 2**53), so the cut FP/n_neg <= fpr is
    decided exactly as sklearn decides it.
    """
    wp = w[:, lay.pos_cols].astype(np.float64)
    cn = _cumsum0(w[:, lay.neg_cols])  # cumulative non-member weight, ascending score
    cp = _cumsum0(wp)
    n_pos, n_neg = cp[:, -1], cn[:, -1]
    ok = (n_pos > 0) & (n_neg > 0)
    den_pos = np.where(ok, n_pos, 1.0)
    den_neg = np.where(ok, n_neg, 1.0)
    # Mann-Whitney: each member beats the non-members below it; ties (hi - lo of them) count half.
    beaten = cn[:, lay.lo] + cn[:, lay.hi]
    auc_b = np.einsum("ij,ij->i", wp, beaten) / (2.0 * den_pos * den_neg)
    rows = np.arange(w.shape[0])
    tpr_b = np.empty((w.shape[0], len(fprs)))
    for j, f in enumerate(fprs):
        # largest integer FP count c with c / n_neg <= f, found by correcting floor(f * n_neg)
        c = np.floor(f * den_neg)
        c = np.where((c + 1) / den_neg <= f, c + 1, c)
        c = np.where(c / den_neg > f, c - 1, c)
        # exclude the fewest lowest non-members so that at most c weight remains above the cut
        n_cut = np.minimum((cn < (den_neg - c)[:, None]).sum(axis=1), cn.shape[1] - 1)
        tpr_b[:, j] = (den_pos - cp[rows, lay.keep_members[n_cut]]) / den_pos
    auc_b[~ok] = np.nan
    tpr_b[~ok] = np.nan
    return auc_b, tpr_b


def weighted_roc_stats(scores, labels, weights, fprs: Sequence[float] = DEFAULT_FPRS) -> tuple[np.ndarray, np.ndarray]:
    """AUC [B] and TPR@FPR [B, F] for B weightings of the same rows (weights [B, P] or [P]).

    With integer weights (bootstrap multiplicities) the result equals sklearn's on the sample
    where row i is repeated weights[b, i] times. Replicates lacking a class give NaN.
    """
    s, y = _check(scores, labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != s.size:
        raise ValueError(f"weights must have {s.size} columns, got {w.shape}")
    return _stats_in_blocks(_layout(s, y), tuple(fprs), w.shape[0], lambda lo, size: w[lo:lo + size])


def _stats_in_blocks(lay: _Layout, fprs: tuple[float, ...], n_rep: int, block) -> tuple[np.ndarray, np.ndarray]:
    """Run _block_stats over replicates in blocks; ``block(lo, size)`` gives their weights."""
    n_rows = lay.pos_cols.size + lay.neg_cols.size
    size = max(1, _CHUNK_ELEMENTS // n_rows)
    parts = [_block_stats(lay, block(lo, min(size, n_rep - lo)), fprs) for lo in range(0, n_rep, size)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([t for _, t in parts])


class Estimate(NamedTuple):
    value: float
    lo: float
    hi: float


class RateEstimate(NamedTuple):
    fpr: float
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class AttackMetrics:
    """Point estimates on the full data with bootstrap percentile intervals.

    n_members / n_nonmembers count rows (pooled target x example pairs), not distinct examples.
    """

    auc: Estimate
    tpr_at_fpr: list[RateEstimate]
    n_members: int
    n_nonmembers: int

    def to_dict(self) -> dict:
        return {
            "auc": {"value": float(self.auc.value), "lo": float(self.auc.lo), "hi": float(self.auc.hi)},
            "tpr_at_fpr": [
                {"fpr": float(r.fpr), "value": float(r.value), "lo": float(r.lo), "hi": float(r.hi)}
                for r in self.tpr_at_fpr
            ],
            "n_members": int(self.n_members),
            "n_nonmembers": int(self.n_nonmembers),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AttackMetrics":
        return cls(auc=Estimate(d["auc"]["value"], d["auc"]["lo"], d["auc"]["hi"]),
                   tpr_at_fpr=[RateEstimate(t["fpr"], t["value"], t["lo"], t["hi"]) for t in d["tpr_at_fpr"]],
                   n_members=d["n_members"], n_nonmembers=d["n_nonmembers"])

    def tpr_at(self, fpr: float) -> RateEstimate:
        """The reported rate at the FPR closest to ``fpr``."""
        return min(self.tpr_at_fpr, key=lambda r: abs(r.fpr - fpr))


def _interval(reps: np.ndarray, value: float, level: float) -> tuple[float, float]:
    """Percentile interval of the finite replicates; collapses to the point if there are none."""
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return value, value
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def summarize(
    scores,
    labels,
    groups=None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> AttackMetrics:
    """AUC and TPR at each FPR in ``fprs``, with bootstrap percentile intervals.

    ``groups`` (one int per row) names the audit example behind each pooled row. Rows of one
    example (its leave-one-out turns against different targets) are correlated, so with groups the
    bootstrap resamples examples and takes all their rows (cluster bootstrap); without, it
    resamples rows. The point estimate is always the full-data value.
    """
    s, y = _check(scores, labels)
    _check_level(level, n_boot)
    fprs = tuple(float(f) for f in fprs)
    auc0, tpr0 = _block_stats(_layout(s, y), np.ones((1, s.size)), fprs)

    if groups is None:
        cluster = np.arange(s.size)
    else:
        g = np.asarray(groups)
        if g.shape != s.shape:
            raise ValueError(f"groups must have the shape of scores {s.shape}, got {g.shape}")
        _, cluster = np.unique(g, return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    lay = _layout(s, y, columns=cluster)  # replicate weights live on clusters, not rows
    rng = np.random.default_rng(seed)

    def draw(_lo: int, b: int) -> np.ndarray:
        # multiplicity of each cluster in b replicates
        picks = rng.integers(0, n_clusters, size=(b, n_clusters))
        flat = (picks + (np.arange(b) * n_clusters)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters)
        return counts

    auc_b, tpr_b = _stats_in_blocks(lay, fprs, n_boot, draw)
    auc_v = float(auc0[0])
    return AttackMetrics(
        auc=Estimate(auc_v, *_interval(auc_b, auc_v, level)),
        tpr_at_fpr=[
            RateEstimate(f, float(tpr0[0, j]), *_interval(tpr_b[:, j], float(tpr0[0, j]), level))
            for j, f in enumerate(fprs)
        ],
        n_members=int(y.sum()),
        n_nonmembers=int((~y).sum()),
    )


def mean_ci(values, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean with a bootstrap percentile interval: {"value", "lo", "hi"} (e.g. per-model accuracy)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("mean_ci needs at least one value, all finite")
    _check_level(level, n_boot)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    value = float(v.mean())
    lo, hi = _interval(means, value, level)
    return {"value": value, "lo": lo, "hi": hi}
