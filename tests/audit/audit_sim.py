"""Mechanisms with a known (epsilon, delta), simulated for the audit tests (not a test module)."""
from __future__ import annotations

import numpy as np
from scipy import optimize, special
from scipy.stats import norm


def rr_scores(eps: float, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomized response on the membership bit: reports it truthfully w.p. e^eps / (1 + e^eps).

    Exactly eps-DP (delta = 0) and tight: the report itself is the optimal test.
    """
    truthful = rng.random(member.shape) < special.expit(eps)
    return np.where(truthful, member, ~member).astype(np.float64)


def gaussian_delta(sigma: float, eps: float) -> float:
    """delta(eps) of the 1-D Gaussian mechanism with sensitivity 1 (Balle & Wang 2018, Thm 8)."""
    a = 1.0 / (2.0 * sigma)
    b = eps * sigma
    return float(norm.cdf(a - b) - np.exp(eps) * norm.cdf(-a - b))


def gaussian_sigma(eps: float, delta: float) -> float:
    """Smallest sigma making x + N(0, sigma^2), |x - x'| <= 1, exactly (eps, delta)-DP."""
    return float(optimize.brentq(lambda s: gaussian_delta(s, eps) - delta, 1e-3, 1e3, xtol=1e-12))


def gaussian_scores(eps: float, delta: float, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Output of the calibrated Gaussian mechanism on x = 1 (member) or 0 (non-member)."""
    return member.astype(np.float64) + gaussian_sigma(eps, delta) * rng.standard_normal(member.shape)
