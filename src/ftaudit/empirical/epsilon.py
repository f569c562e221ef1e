"""Empirical lower bound on epsilon from canaries audited over many training runs.

Jagielski et al. 2020 / Nasr et al. 2021: if a mechanism is (eps, delta)-DP, any membership test
"guess IN when score >= t" obeys TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta. With
one-sided Clopper-Pearson bounds on the rates, every eps below

    max( ln((TPR_lo - delta) / FPR_hi), ln((TNR_lo - delta) / FNR_hi) )

is rejected at confidence ``level``. Only two intervals are needed, not four: by the symmetry of
Clopper-Pearson, TPR >= TPR_lo is the same event as FNR <= FNR_hi (and FPR <= FPR_hi the same as
TNR >= TNR_lo). A Bonferroni split gives each of the two intervals (1 - level) / 2, so both ratios
hold simultaneously and taking their max needs no further correction.

Convention (as in :mod:`ftaudit.metrics`): a higher score means "more likely a member".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats

SELECT_MODES = ("split", "all")


class Counts(NamedTuple):
    """Confusion counts of one threshold: IN runs split into tp/fn, OUT runs into fp/tn."""

    tp: int
    fn: int
    fp: int
    tn: int


@dataclass(frozen=True)
class EpsilonBound:
    """One audit's result. ``epsilon_lb`` holds at confidence ``level``; ``epsilon_point`` is the
    same formula on raw rates (no intervals, may be inf), useful only as a ceiling on what more
    trials could show. ``threshold`` is set when the bound came from scores."""

    epsilon_lb: float
    epsilon_point: float
    tpr: float
    fpr: float
    counts: Counts
    level: float
    delta: float
    threshold: float | None = None
    select: str | None = None


def cp_lower(k, n, alpha):
    """One-sided Clopper-Pearson lower bound on a proportion: P[p < lower] <= alpha (vectorized)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, lo)


def cp_upper(k, n, alpha):
    """One-sided Clopper-Pearson upper bound on a proportion: P[p > upper] <= alpha (vectorized)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        hi = stats.beta.isf(alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, hi)


def _log_ratio(num, den) -> np.ndarray:
    """ln(num/den) clipped below at 0; 0 where there is no evidence (num <= 0), inf if den == 0."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(num) - np.log(den)
    return np.where(num > 0, np.maximum(out, 0.0), 0.0)


def _lower_bounds(tp, fn, fp, tn, delta: float, alpha_each: float) -> np.ndarray:
    """Vectorized eps lower bound; each of the two proportions gets one-sided ``alpha_each``."""
    tp, fn, fp, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fn, fp, tn))
    tpr_lo, fnr_hi = cp_lower(tp, tp + fn, alpha_each), cp_upper(fn, tp + fn, alpha_each)
    fpr_hi, tnr_lo = cp_upper(fp, fp + tn, alpha_each), cp_lower(tn, fp + tn, alpha_each)
    return np.maximum(_log_ratio(tpr_lo - delta, fpr_hi), _log_ratio(tnr_lo - delta, fnr_hi))


def _check_params(delta: float, level: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def epsilon_from_counts(tp: int, fn: int, fp: int, tn: int, delta: float,
                        level: float = 0.95) -> EpsilonBound:
    """Lower bound on eps from one threshold's counts (IN runs: tp + fn, OUT runs: fp + tn).

    The threshold must be fixed independently of these counts, else the bound is optimistic.
    """
    _check_params(delta, level)
    counts = Counts(*(int(x) for x in (tp, fn, fp, tn)))
    if min(counts) < 0:
        raise ValueError(f"counts must be non-negative, got {counts}")
    n_in, n_out = counts.tp + counts.fn, counts.fp + counts.tn
    if n_in == 0 or n_out == 0:
        raise ValueError(f"need at least one IN and one OUT trial, got {n_in} IN and {n_out} OUT")
    tpr, fpr = counts.tp / n_in, counts.fp / n_out
    lb = _lower_bounds(*counts, delta=delta, alpha_each=(1.0 - level) / 2.0)
    point = max(_log_ratio(tpr - delta, fpr), _log_ratio((1.0 - fpr) - delta, 1.0 - tpr))
    return EpsilonBound(float(lb), float(point), tpr, fpr, counts, level, delta)


def _counts_at(thresholds: np.ndarray, s_in: np.ndarray, s_out: np.ndarray):
    """Counts of "guess IN when score >= t" for every t; inputs must be sorted ascending."""
    fn = np.searchsorted(s_in, thresholds, side="left")
    tn = np.searchsorted(s_out, thresholds, side="left")
    return s_in.size - fn, fn, s_out.size - tn, tn


def _geom_ranks(n: int, k: int) -> np.ndarray:
    """About k ranks in [0, n): 0, 1, ..., 15, then geometrically spaced up to n - 1."""
    geom = np.geomspace(1, n, max(k, 1)).astype(np.int64) - 1
    return np.unique(np.concatenate([np.arange(min(16, n)), geom]))


def candidate_thresholds(s_in: np.ndarray, s_out: np.ndarray, n_max: int) -> np.ndarray:
    """At most ~``n_max`` thresholds (data values) to try; every distinct value if few enough.

    Large eps shows up where FPR or FNR is tiny, so beyond a coarse uniform grid the candidates
    are the ones leaving exactly j OUT scores at or above them and exactly j IN scores below them,
    for j = 0, 1, 2, ... spaced geometrically. Inputs must be sorted ascending.
    """
    pool = np.unique(np.concatenate([s_in, s_out]))
    if pool.size <= n_max:
        return pool
    k = n_max // 3
    fn_j = s_in[_geom_ranks(s_in.size, k)]  # fn = j: the j lowest IN scores fall below
    above = np.searchsorted(pool, s_out[::-1][_geom_ranks(s_out.size, k)], side="right")
    fp_j = pool[above[above < pool.size]]  # fp = j: the next value above the j-th highest OUT
    mid = pool[np.linspace(0, pool.size - 1, k).astype(np.int64)]
    return np.unique(np.concatenate([fn_j, fp_j, mid]))


def _best_threshold(s_in, s_out, delta, alpha_each, cand) -> tuple[float, float]:
    """(threshold, its bound) maximizing the bound on these sorted scores; Youden's J breaks a 0 tie."""
    tp, fn, fp, tn = _counts_at(cand, s_in, s_out)
    lb = _lower_bounds(tp, fn, fp, tn, delta, alpha_each)
    if lb.max() > 0:
        i = int(np.argmax(lb))
    else:
        i = int(np.argmax(tp / s_in.size - fp / s_out.size))
    return float(cand[i]), float(lb[i])


def _check_scores(x, name: str, n_min: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size < n_min:
        raise ValueError(f"{name} must be 1-D with at least {n_min} scores, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return a


def epsilon_from_scores(scores_in, scores_out, delta: float, level: float = 0.95,
                        select: str = "split", *, seed: int = 0,
                        n_thresholds: int = 2000) -> EpsilonBound:
    """Lower bound on eps from canary scores in runs where the canary was IN vs OUT.

    ``select="split"`` (the honest default): a seeded random half of each class picks the
    threshold, the other half alone gives the bound, so the guarantee holds as stated.
    ``select="all"``: the threshold is picked on the same scores the bound is computed on, with a
    Bonferroni correction over the candidate thresholds tried. The candidates are themselves data
    values, which the correction does not account for, so treat this mode as optimistic.
    At most ~``n_thresholds`` candidates are tried (see :func:`candidate_thresholds`).
    """
    _check_params(delta, level)
    if select not in SELECT_MODES:
        raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")
    if n_thresholds < 3:
        raise ValueError(f"n_thresholds must be at least 3, got {n_thresholds}")
    n_min = 2 if select == "split" else 1
    s_in, s_out = _check_scores(scores_in, "scores_in", n_min), _check_scores(scores_out, "scores_out", n_min)
    if select == "all":
        sel_in, sel_out = np.sort(s_in), np.sort(s_out)
        cand = candidate_thresholds(sel_in, sel_out, n_thresholds)
        eval_in, eval_out, eval_level = s_in, s_out, 1.0 - (1.0 - level) / cand.size
    else:
        rng = np.random.default_rng(seed)
        p_in, p_out = rng.permutation(s_in), rng.permutation(s_out)
        h_in, h_out = p_in.size // 2, p_out.size // 2
        sel_in, sel_out = np.sort(p_in[:h_in]), np.sort(p_out[:h_out])
        cand = candidate_thresholds(sel_in, sel_out, n_thresholds)
        eval_in, eval_out, eval_level = p_in[h_in:], p_out[h_out:], level
    t, _ = _best_threshold(sel_in, sel_out, delta, (1.0 - eval_level) / 2.0, cand)
    tp, fp = int((eval_in >= t).sum()), int((eval_out >= t).sum())
    b = epsilon_from_counts(tp, eval_in.size - tp, fp, eval_out.size - fp, delta, eval_level)
    # Report the level the user asked for: under "all" it is what the corrected bound guarantees.
    return EpsilonBound(b.epsilon_lb, b.epsilon_point, b.tpr, b.fpr, b.counts, level, delta,
                        threshold=t, select=select)
