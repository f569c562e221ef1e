"""A synthetic world where membership and the best achievable attack are known exactly.

Used to test that attacks are calibrated (null world: AUC 0.5) and powerful (LiRA reaches the
analytic optimum), independent of any trained model.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from ftaudit.signals.arrays import SignalSet


def _loss_from_conf(phi: np.ndarray) -> np.ndarray:
    """-log p for p = sigmoid(phi), i.e. softplus(-phi), stable for large |phi|."""
    return np.logaddexp(0.0, -phi)


def optimal_auc(effect: float, sigma: float, n_queries: int) -> float:
    """AUC of the Bayes-optimal membership test in :func:`gaussian_world` (see its docstring)."""
    return float(norm.cdf(abs(effect) * np.sqrt(n_queries) / (sigma * np.sqrt(2.0))))


def gaussian_world(
    n_models: int,
    n_examples: int,
    n_queries: int,
    n_pop: int,
    effect: float,
    sigma: float,
    seed: int,
    tau: float = 1.0,
    center: float = 0.0,
    base_sigma: float | None = None,
    with_base: bool = True,
) -> tuple[SignalSet, float]:
    """Signals of ``n_models`` models whose membership effect is a Gaussian mean shift.

    Example i has difficulty mu_i = center + tau * N(0, 1). Model m, query a sees the
    logit-scaled confidence phi = mu_i + effect * keep[m, i] + sigma * eps (eps iid N(0, 1) over
    models, examples and queries); loss = -log sigmoid(phi), consistent with phi = log p - log(1-p).
    Every example is IN for exactly n_models // 2 models (a random subset per example). Population
    examples have their own difficulty and are OUT for all models; the base (pretrained) model
    sees mu_i + base_sigma * eps (base_sigma defaults to sigma), i.e. an OUT-like model.

    Optimal AUC. An oracle that knows mu_i, effect and sigma observes A iid queries; the
    likelihood ratio prod_a N(phi_a; mu_i + effect, s^2) / N(phi_a; mu_i, s^2) equals
    exp(effect * A / s^2 * (xbar - mu_i - effect / 2)) with xbar the query mean, a monotone map of
    d = xbar - mu_i that is the same for every example. Members have d ~ N(effect, s^2 / A),
    non-members d ~ N(0, s^2 / A), for every example, so thresholding the likelihood ratio over
    the pooled rows (Neyman-Pearson optimal at every FPR) has ROC of these two Gaussians:
    AUC = Phi(|effect| sqrt(A) / (sigma sqrt 2)). Attacks that estimate mu_i from finitely many
    references approach it from below. effect = 0 gives the null world (AUC 0.5).
    """
    if n_models < 2 or n_examples < 1 or n_queries < 1 or n_pop < 0 or sigma <= 0 or tau < 0:
        raise ValueError("need n_models >= 2, n_examples >= 1, n_queries >= 1, n_pop >= 0, sigma > 0, tau >= 0")
    rng = np.random.default_rng(seed)
    m, n, a = n_models, n_examples, n_queries
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2  # a random half of the models per example
    mu = center + tau * rng.normal(size=n)
    conf = mu[None, :, None] + effect * keep[:, :, None] + sigma * rng.normal(size=(m, n, a))
    mu_pop = center + tau * rng.normal(size=n_pop)
    pop_conf = mu_pop[None, :, None] + sigma * rng.normal(size=(m, n_pop, a))
    base_conf = base_loss = None
    if with_base:
        bs = sigma if base_sigma is None else base_sigma
        base_conf = mu[:, None] + bs * rng.normal(size=(n, a))
        base_loss = _loss_from_conf(base_conf)
    signals = SignalSet(
        conf=conf,
        loss=_loss_from_conf(conf),
        keep=keep,
        pop_conf=pop_conf,
        pop_loss=_loss_from_conf(pop_conf),
        base_conf=base_conf,
        base_loss=base_loss,
    )
    return signals, optimal_auc(effect, sigma, a)
