"""One-run audit: the paper's p-value, the closed form at delta = 0, and canaries of known eps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logit

from audit_sim import gaussian_scores, rr_scores
from ftaudit.empirical import one_run_epsilon, one_run_epsilon_from_counts, one_run_p_value
from ftaudit.empirical.one_run import default_grid, guess_counts

M = 1000


def _paper_p_value(m, r, v, eps, delta):
    """The appendix algorithm written out term by term, as an independent reference."""
    q = math.exp(eps) / (1 + math.exp(eps))
    p = sum(stats.binom.pmf(w, r, q) for w in range(v, r + 1))
    best, window = 0.0, 0.0
    for i in range(1, v + 1):
        window += stats.binom.pmf(v - i, r, q)
        best = max(best, window / i)
    return min(1.0, p + 2 * m * delta * best)


def _canaries(eps, seed, gaussian_delta=None):
    """M canaries included w.p. 1/2, scored by randomized response (or the Gaussian mechanism)."""
    rng = np.random.default_rng(seed)
    included = rng.random(M) < 0.5
    if gaussian_delta is None:
        return rr_scores(eps, included, rng), included
    return gaussian_scores(eps, gaussian_delta, included, rng), included


@pytest.mark.parametrize("m,r,v,eps,delta", [
    (1000, 1000, 881, 1.8, 1e-5), (1000, 100, 95, 2.0, 1e-3), (50, 20, 12, 0.3, 0.01),
    (1000, 10, 10, 3.0, 0.0), (200, 200, 0, 1.0, 1e-5), (1000, 500, 300, 0.0, 1e-4),
])
def test_p_value_matches_the_papers_algorithm(m, r, v, eps, delta):
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(_paper_p_value(m, r, v, eps, delta), rel=1e-9)


def test_p_value_grows_with_eps_and_shrinks_with_v():
    # The bisection for delta > 0 relies on the first; a valid p-value needs the second.
    eps = np.linspace(0, 6, 25)
    for m, r, delta in [(100, 20, 1e-2), (1000, 100, 1e-5), (1000, 60, 1e-3)]:
        p = np.array([[one_run_p_value(m, r, v, e, delta) for v in range(r + 1)] for e in eps])
        assert (np.diff(p, axis=0) >= -1e-12).all()
        assert (np.diff(p, axis=1) <= 1e-12).all()


@pytest.mark.parametrize("r,v", [(1000, 881), (200, 190), (10, 10), (50, 40), (1, 1), (3, 3)])
def test_delta_zero_bound_is_logit_of_the_clopper_pearson_lower_bound(r, v):
    q_lo = stats.binomtest(v, r, alternative="greater").proportion_ci(0.95, method="exact").low
    eps = one_run_epsilon_from_counts(M, r, v, 0.0, 0.95)
    assert eps == pytest.approx(max(0.0, logit(q_lo)), rel=1e-9)
    if eps == 0.0:  # 1 of 1 right is no evidence at 95%
        assert one_run_p_value(M, r, v, 0.0, 0.0) >= 0.05
        return
    # ...and it is the edge of the rejected set
    assert one_run_p_value(M, r, v, eps, 0.0) == pytest.approx(0.05, rel=1e-6)
    assert one_run_p_value(M, r, v, eps * 0.999, 0.0) < 0.05 <= one_run_p_value(M, r, v, eps * 1.001, 0.0)


def test_delta_positive_bound_is_the_edge_of_the_rejected_set_and_below_delta_zero():
    m, r, v = 1000, 400, 360
    b0 = one_run_epsilon_from_counts(m, r, v, 0.0)
    b_small, b_big = one_run_epsilon_from_counts(m, r, v, 1e-6), one_run_epsilon_from_counts(m, r, v, 1e-4)
    assert 0 < b_big < b_small <= b0
    assert one_run_p_value(m, r, v, b_big, 1e-4) < 0.05 <= one_run_p_value(m, r, v, b_big + 1e-6, 1e-4)
    # tiny delta reproduces the closed form through the bisection path
    assert one_run_epsilon_from_counts(m, r, v, 1e-300) == pytest.approx(b0, abs=1e-9)


@pytest.mark.parametrize("m,r,v,delta", [(1000, 100, 50, 0.0), (1000, 100, 0, 0.0), (10, 10, 10, 0.1)])
def test_no_evidence_gives_zero(m, r, v, delta):
    assert one_run_epsilon_from_counts(m, r, v, delta) == 0.0


def test_guess_counts_by_hand():
    scores = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.7])
    included = np.array([True, False, True, False, True, True])
    # top 2 = {0.9: in, 0.8: out}, bottom 2 = {0.1: out, 0.2: in}
    assert guess_counts(scores, included, 2, 2) == (4, 2)
    assert guess_counts(scores, included, 1, 0) == (1, 1)
    assert guess_counts(scores, included, 0, 1) == (1, 1)


def test_default_grid_is_symmetric_and_within_m():
    assert default_grid(1000) == [(k, k) for k in (5, 10, 25, 50, 100, 250, 450, 500)]
    assert default_grid(7) == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_randomized_response_canaries_bound_is_positive_and_below_eps(eps):
    for seed in range(4):
        scores, included = _canaries(eps, seed)
        for delta in (0.0, 1e-5):
            b = one_run_epsilon(scores, included, delta)
            assert 0.5 * eps < b.epsilon_lb <= eps, (seed, delta, b)  # m = 1000 gets reasonably close
            assert b.n_candidates == 8 and b.m == M and b.r == b.k_plus + b.k_minus
            assert b.v == guess_counts(scores, included, b.k_plus, b.k_minus)[1]


def test_gaussian_canaries_bound_is_below_eps():
    for seed in range(3):
        scores, included = _canaries(4.0, seed, gaussian_delta=1e-5)
        assert 0 < one_run_epsilon(scores, included, 1e-5).epsilon_lb <= 4.0


def test_one_run_bound_covers_true_eps_at_the_stated_level():
    eps, reps = 1.0, 300
    hits = [one_run_epsilon(*_canaries(eps, 100 + s), 0.0).epsilon_lb > eps for s in range(reps)]
    assert np.mean(hits) <= 0.05


def test_separable_canaries_give_a_large_bound_and_noise_gives_zero():
    rng = np.random.default_rng(0)
    included = rng.random(M) < 0.5
    assert one_run_epsilon(included + rng.random(M) * 0.5, included, 1e-5).epsilon_lb > 5
    assert one_run_epsilon(rng.random(M), included, 0.0).epsilon_lb < 0.1


def test_fixed_k_is_not_corrected_and_a_grid_pays_bonferroni():
    scores, included = _canaries(2.0, 0)
    fixed = one_run_epsilon(scores, included, 0.0, k_plus=500, k_minus=500)
    r, v = guess_counts(scores, included, 500, 500)
    assert (fixed.n_candidates, fixed.r, fixed.v) == (1, r, v)
    assert fixed.epsilon_lb == pytest.approx(one_run_epsilon_from_counts(M, r, v, 0.0, 0.95))
    pairs = [(500, 500), (250, 250), (100, 0)]
    grid = one_run_epsilon(scores, included, 0.0, grid=pairs)
    each = [one_run_epsilon_from_counts(M, *guess_counts(scores, included, a, b), 0.0, 1 - 0.05 / 3)
            for a, b in pairs]
    assert grid.n_candidates == 3 and grid.epsilon_lb == pytest.approx(max(each))
    assert grid.epsilon_lb < fixed.epsilon_lb or (grid.k_plus, grid.k_minus) != (500, 500)


@pytest.mark.parametrize("kw", [
    dict(k_plus=10), dict(k_minus=10), dict(k_plus=600, k_minus=600), dict(k_plus=0, k_minus=0),
    dict(k_plus=-1, k_minus=5), dict(k_plus=5, k_minus=5, grid=[(1, 1)]), dict(grid=[]), dict(level=1.0),
])
def test_one_run_rejects_bad_options(kw):
    scores, included = _canaries(1.0, 0)
    with pytest.raises(ValueError):
        one_run_epsilon(scores, included, 0.0, **kw)


def test_one_run_rejects_bad_arrays():
    with pytest.raises(ValueError):
        one_run_epsilon([0.1, 0.2], [True], 0.0)
    with pytest.raises(ValueError):
        one_run_epsilon([0.1, np.nan], [True, False], 0.0)
    with pytest.raises(ValueError):
        one_run_epsilon([0.1, 0.2], [2, 0], 0.0)
    with pytest.raises(ValueError):
        one_run_p_value(10, 5, 6, 1.0, 0.0)
