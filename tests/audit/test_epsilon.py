"""Many-run epsilon audit: Clopper-Pearson against scipy, edge counts, and mechanisms of known eps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from audit_sim import gaussian_delta, gaussian_scores, gaussian_sigma, rr_scores
from ftaudit.empirical import cp_lower, cp_upper, epsilon_from_counts, epsilon_from_scores
from ftaudit.empirical.epsilon import candidate_thresholds

SEEDS = range(4)


def _scipy_lower(k, n, alpha):
    return stats.binomtest(k, n, alternative="greater").proportion_ci(1 - alpha, method="exact").low


def _scipy_upper(k, n, alpha):
    return stats.binomtest(k, n, alternative="less").proportion_ci(1 - alpha, method="exact").high


@pytest.mark.parametrize("alpha", [0.025, 0.05, 0.001])
def test_clopper_pearson_matches_scipy_binomtest(alpha):
    rng = np.random.default_rng(0)
    cases = [(0, 1), (1, 1), (0, 50), (50, 50), (1, 50), (49, 50)]
    cases += [(int(k), int(n)) for n in rng.integers(2, 5000, 20) for k in [rng.integers(0, n + 1)]]
    for k, n in cases:
        assert cp_lower(k, n, alpha) == pytest.approx(_scipy_lower(k, n, alpha), abs=1e-12)
        assert cp_upper(k, n, alpha) == pytest.approx(_scipy_upper(k, n, alpha), abs=1e-12)


def test_counts_bound_matches_formula_computed_with_scipy():
    tp, fn, fp, tn, delta, level = 90, 10, 12, 88, 0.01, 0.9
    a = (1 - level) / 2  # Bonferroni: half of the error to each of the two intervals
    e1 = math.log((_scipy_lower(tp, tp + fn, a) - delta) / _scipy_upper(fp, fp + tn, a))
    e2 = math.log((_scipy_lower(tn, fp + tn, a) - delta) / _scipy_upper(fn, tp + fn, a))
    b = epsilon_from_counts(tp, fn, fp, tn, delta, level)
    assert b.epsilon_lb == pytest.approx(max(e1, e2), rel=1e-10)
    assert b.epsilon_point == pytest.approx(max(math.log((0.9 - delta) / 0.12), math.log((0.88 - delta) / 0.1)))
    assert (b.tpr, b.fpr, tuple(b.counts), b.level, b.delta) == (0.9, 0.12, (90, 10, 12, 88), level, delta)
    # swapping IN/OUT in both truth and guess swaps the two ratios: same bound
    assert epsilon_from_counts(tn, fp, fn, tp, delta, level).epsilon_lb == pytest.approx(b.epsilon_lb)


@pytest.mark.parametrize("counts", [
    (0, 10, 0, 10), (10, 0, 10, 0), (0, 1, 1, 0), (5, 5, 5, 5), (1, 0, 0, 1), (0, 100, 100, 0),
])
def test_zero_and_uninformative_counts_give_a_finite_nonnegative_bound(counts):
    b = epsilon_from_counts(*counts, delta=1e-5)
    assert np.isfinite(b.epsilon_lb) and b.epsilon_lb >= 0
    if counts[0] / (counts[0] + counts[1]) <= counts[2] / (counts[2] + counts[3]):
        assert b.epsilon_lb == 0.0  # guessing no better than chance is no evidence


def test_perfect_separation_bound_is_finite_grows_with_trials_and_shrinks_with_delta():
    small, large = epsilon_from_counts(100, 0, 0, 100, 0.0), epsilon_from_counts(10_000, 0, 0, 10_000, 0.0)
    assert np.isfinite(large.epsilon_lb) and 0 < small.epsilon_lb < large.epsilon_lb
    assert small.epsilon_point == math.inf
    assert epsilon_from_counts(100, 0, 0, 100, 0.5).epsilon_lb < small.epsilon_lb
    # delta >= TPR wipes out the evidence
    assert epsilon_from_counts(30, 70, 0, 100, 0.5).epsilon_lb == 0.0


@pytest.mark.parametrize("bad", [
    dict(tp=-1, fn=1, fp=1, tn=1, delta=0.0), dict(tp=0, fn=0, fp=1, tn=1, delta=0.0),
    dict(tp=1, fn=1, fp=0, tn=0, delta=0.0), dict(tp=1, fn=1, fp=1, tn=1, delta=1.0),
    dict(tp=1, fn=1, fp=1, tn=1, delta=-0.1), dict(tp=1, fn=1, fp=1, tn=1, delta=0.0, level=1.0),
])
def test_counts_reject_bad_input(bad):
    with pytest.raises(ValueError):
        epsilon_from_counts(**bad)


def test_counts_bound_covers_true_epsilon_at_the_stated_level():
    # Randomized response at eps = 1 is tight: TPR / FPR = e^eps exactly at delta = 0.
    eps, n, reps = 1.0, 2000, 400
    rng = np.random.default_rng(7)
    tp, fp = rng.binomial(n, expit(eps), reps), rng.binomial(n, expit(-eps), reps)
    lbs = np.array([epsilon_from_counts(a, n - a, b, n - b, 0.0).epsilon_lb for a, b in zip(tp, fp)])
    assert (lbs > eps).mean() <= 0.05
    assert np.median(lbs) > 0.7 * eps


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_randomized_response_bound_is_below_and_close_to_true_eps(eps):
    n = 100_000
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        s_in, s_out = rr_scores(eps, np.ones(n, bool), rng), rr_scores(eps, np.zeros(n, bool), rng)
        for select in ("split", "all"):
            b = epsilon_from_scores(s_in, s_out, delta=0.0, select=select)
            assert 0.5 * eps <= b.epsilon_lb <= eps, (seed, select, b)
            assert b.threshold == 1.0  # report 1 => guess IN


@pytest.mark.parametrize("eps,floor", [(0.5, 0.0), (1.0, 0.0), (2.0, 0.3), (4.0, 1.5)])
def test_gaussian_mechanism_bound_is_below_true_eps(eps, floor):
    delta, n = 1e-5, 100_000
    assert gaussian_delta(gaussian_sigma(eps, delta), eps) == pytest.approx(delta, rel=1e-6)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        s_in = gaussian_scores(eps, delta, np.ones(n, bool), rng)
        s_out = gaussian_scores(eps, delta, np.zeros(n, bool), rng)
        assert floor <= epsilon_from_scores(s_in, s_out, delta, seed=seed).epsilon_lb <= eps


def test_non_private_mechanism_gives_a_large_bound():
    rng = np.random.default_rng(0)
    n = 5000
    s_in, s_out = rng.uniform(1, 2, n), rng.uniform(-1, 0, n)  # members perfectly separable
    b = epsilon_from_scores(s_in, s_out, delta=1e-5)
    assert b.epsilon_lb > 5 and b.counts.fp == 0 and b.counts.fn == 0
    assert 0 <= b.threshold <= 2


def test_no_signal_gives_zero():
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        s_in, s_out = rng.normal(size=20_000), rng.normal(size=20_000)
        for select in ("split", "all"):
            assert epsilon_from_scores(s_in, s_out, delta=0.0, select=select, seed=seed).epsilon_lb < 0.05


def test_all_mode_is_the_counts_bound_with_bonferroni_over_candidates():
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
    b = epsilon_from_scores(s_in, s_out, 1e-5, level=0.95, select="all", n_thresholds=50)
    k = candidate_thresholds(np.sort(s_in), np.sort(s_out), 50).size
    tp, fp = int((s_in >= b.threshold).sum()), int((s_out >= b.threshold).sum())
    ref = epsilon_from_counts(tp, s_in.size - tp, fp, s_out.size - fp, 1e-5, 1 - 0.05 / k)
    assert b.epsilon_lb == ref.epsilon_lb > 0 and b.level == 0.95 and b.select == "all"


def test_split_mode_is_seeded_and_evaluates_on_half_the_data():
    rng = np.random.default_rng(4)
    s_in, s_out = rng.normal(1.0, 1.0, 1001), rng.normal(0.0, 1.0, 999)
    a, b = epsilon_from_scores(s_in, s_out, 0.0, seed=5), epsilon_from_scores(s_in, s_out, 0.0, seed=5)
    assert a == b
    assert (a.counts.tp + a.counts.fn, a.counts.fp + a.counts.tn) == (501, 500)


def test_candidate_thresholds_reach_every_small_fp_and_fn_count():
    rng = np.random.default_rng(0)
    s_in, s_out = np.sort(rng.normal(1, 1, 50_000)), np.sort(rng.normal(0, 1, 50_000))
    cand = candidate_thresholds(s_in, s_out, 300)
    assert cand.size <= 300 and np.isin(cand, np.concatenate([s_in, s_out])).all()
    fp = (s_out[None, :] >= cand[:, None]).sum(1)
    fn = (s_in[None, :] < cand[:, None]).sum(1)
    for j in range(16):
        assert j in fp and j in fn
    assert candidate_thresholds(np.array([1.0, 1.0]), np.array([0.0]), 300).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("kw", [dict(select="best"), dict(level=0.0), dict(delta=1.0), dict(n_thresholds=2)])
def test_scores_reject_bad_options(kw):
    args = dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], delta=0.0) | kw
    with pytest.raises(ValueError):
        epsilon_from_scores(**args)


def test_scores_reject_bad_arrays():
    with pytest.raises(ValueError):
        epsilon_from_scores([1.0], [0.0, 1.0], 0.0)  # split needs two per class
    with pytest.raises(ValueError):
        epsilon_from_scores([1.0, np.nan], [0.0, 1.0], 0.0)
