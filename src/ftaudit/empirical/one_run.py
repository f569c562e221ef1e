"""Empirical lower bound on epsilon from ONE training run (Steinke, Nasr, Jagielski 2023).

m canaries are each included independently with probability 1/2. The auditor guesses IN for the
k+ highest scores, OUT for the k- lowest, and abstains on the rest; r = k+ + k- guesses, v correct.

delta = 0 (paper, Thm 3.1): under eps-DP the number of correct guesses is stochastically dominated
by W ~ Binomial(r, q), q = e^eps / (1 + e^eps). eps is rejected at level beta when
P[W >= v] < beta; that tail grows with q, so the largest rejected eps is logit(q*), with q* the
one-sided Clopper-Pearson lower bound for v of r -- a closed form, no search.

delta > 0 (paper, Thm 5.2 and its appendix algorithm ``p_value_DP_audit``): the p-value is

    P[W >= v] + 2 m delta * max_{1 <= i <= v} P[v - i <= W < v] / i,

and the bound is found by bisection, which assumes this p-value grows with eps; the tests check
that it does (and shrinks with v) over a grid of (m, r, v, delta).

Choosing (k+, k-) after seeing the scores is paid for with a Bonferroni correction over the grid
of candidates tried (the paper reports the best k without a correction).
Ties in the scores are broken by canary index, so the index must not carry membership.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import special, stats

# Candidate k+ = k- as fractions of m/2, the expected number of members. 0.9 is there because the
# realized count deviates by ~sqrt(m)/2: k = m/2 then forces some wrong guesses even with no noise.
DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0)
_BISECTION_STEPS = 60
_EPS_CAP = 64.0  # expit(64) == 1.0 in float64, where the p-value is 1


@dataclass(frozen=True)
class OneRunBound:
    """``epsilon_lb`` holds at confidence ``level`` after the correction for ``n_candidates``
    (k+, k-) pairs tried; ``r``, ``v``, ``k_plus``, ``k_minus`` are those of the best pair."""

    epsilon_lb: float
    r: int
    v: int
    k_plus: int
    k_minus: int
    m: int
    level: float
    delta: float
    n_candidates: int


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of "at least v of r guesses correct" under (epsilon, delta)-DP (paper, Thm 5.2)."""
    _check(m, r, v, delta)
    if v == 0:
        return 1.0
    q = special.expit(epsilon)
    tail = stats.binom.sf(v - 1, r, q)
    if delta == 0.0:
        return float(min(tail, 1.0))
    # window sums P[v - i <= W <= v - 1] for i = 1..v, as one cumulative sum going down from v - 1
    windows = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(windows / np.arange(1, v + 1)))
    return float(min(tail + 2.0 * m * delta * alpha, 1.0))


def one_run_epsilon_from_counts(m: int, r: int, v: int, delta: float, level: float = 0.95) -> float:
    """Largest eps rejected at level 1 - ``level`` given v correct of r guesses among m canaries."""
    _check(m, r, v, delta)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    beta = 1.0 - level
    if v == 0:
        return 0.0
    if delta == 0.0:
        # q* solves P[Bin(r, q) >= v] = beta; ln q* - ln(1 - q*) with 1 - q* from the mirrored Beta
        # so that q* close to 1 keeps its precision.
        q_lo = stats.beta.ppf(beta, v, r - v + 1)
        one_minus = stats.beta.isf(beta, r - v + 1, v)
        return max(0.0, float(math.log(q_lo) - math.log(one_minus)))
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: p(lo) < beta <= p(hi)
    while one_run_p_value(m, r, v, hi, delta) < beta and hi < _EPS_CAP:
        lo, hi = hi, 2.0 * hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if one_run_p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guess_counts(scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int) -> tuple[int, int]:
    """(r, v): guesses IN for the k_plus top scores, OUT for the k_minus bottom ones (stable ties)."""
    order = np.argsort(scores, kind="stable")
    top, bottom = order[order.size - k_plus:], order[:k_minus]
    v = int(included[top].sum() + (~included[bottom]).sum())
    return k_plus + k_minus, v


def default_grid(m: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[tuple[int, int]]:
    """Symmetric (k, k) pairs, k = round(f * m / 2), duplicates and zeros dropped."""
    ks = sorted({min(int(round(f * m / 2)), m // 2) for f in fractions} - {0})
    return [(k, k) for k in ks]


def one_run_epsilon(scores, included, delta: float, level: float = 0.95,
                    k_plus: int | None = None, k_minus: int | None = None,
                    grid: Sequence[tuple[int, int]] | None = None) -> OneRunBound:
    """Lower bound on eps from one run: ``scores`` of the m canaries, ``included`` their membership.

    Give both ``k_plus`` and ``k_minus`` (fixed in advance: no correction), or neither: then every
    (k+, k-) in ``grid`` (default :func:`default_grid`) is tried at level 1 - (1 - level) / len(grid)
    and the best bound is returned.
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included)
    if s.ndim != 1 or inc.shape != s.shape or s.size == 0:
        raise ValueError(f"scores and included must be 1-D of equal, non-zero length, got {s.shape} and {inc.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    if inc.dtype != np.bool_:
        if not np.isin(inc, (0, 1)).all():
            raise ValueError("included must be bool or 0/1")
        inc = inc.astype(bool)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m = s.size
    if (k_plus is None) != (k_minus is None):
        raise ValueError("give both k_plus and k_minus, or neither (then a grid is tried)")
    if k_plus is not None:
        if grid is not None:
            raise ValueError("give either k_plus/k_minus or grid, not both")
        pairs = [(int(k_plus), int(k_minus))]
    else:
        pairs = [(int(a), int(b)) for a, b in (default_grid(m) if grid is None else grid)]
    if not pairs:
        raise ValueError("no (k_plus, k_minus) pair to try")
    for kp, km in pairs:
        if kp < 0 or km < 0 or kp + km > m or kp + km == 0:
            raise ValueError(f"need k_plus, k_minus >= 0 and 0 < k_plus + k_minus <= m={m}, got ({kp}, {km})")
    each_level = 1.0 - (1.0 - level) / len(pairs)
    best = None
    for kp, km in pairs:
        r, v = guess_counts(s, inc, kp, km)
        eps = one_run_epsilon_from_counts(m, r, v, delta, each_level)
        if best is None or eps > best[0]:
            best = (eps, r, v, kp, km)
    eps, r, v, kp, km = best
    return OneRunBound(eps, r, v, kp, km, m, level, delta, len(pairs))
