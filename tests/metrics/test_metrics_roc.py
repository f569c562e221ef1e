"""ROC metrics: agreement with sklearn, and the bootstrap intervals' coverage and clustering."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from ftaudit.metrics import auc, mean_ci, roc_curve, summarize, tpr_at_fpr, weighted_roc_stats

FPRS = (0.0, 0.001, 0.05, 0.1, 0.25, 1 / 3, 0.5, 1.0)


def _sk_tpr_at(y, s, f):
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    return tpr[fpr <= f].max()


def _random_case(rng, ties: bool):
    n = int(rng.integers(6, 80))
    s = rng.integers(0, 5, size=n).astype(float) if ties else rng.normal(size=n)
    y = rng.random(n) < rng.uniform(0.15, 0.85)
    y[0], y[1] = True, False
    return s, y


@pytest.mark.parametrize("ties", [False, True])
def test_single_sample_functions_match_sklearn(ties):
    rng = np.random.default_rng(1)
    for _ in range(40):
        s, y = _random_case(rng, ties)
        assert auc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        fpr, tpr = roc_curve(s, y)
        ref_fpr, ref_tpr, _ = skm.roc_curve(y, s)
        np.testing.assert_array_equal(fpr, ref_fpr)
        np.testing.assert_array_equal(tpr, ref_tpr)
        for f in FPRS:
            assert tpr_at_fpr(s, y, f) == _sk_tpr_at(y, s, f)


@pytest.mark.parametrize("ties", [False, True])
def test_vectorized_replicates_equal_sklearn_on_expanded_samples(ties):
    """Replicate weights are multiplicities: stats must equal sklearn on the repeated rows."""
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(30):
        s, y = _random_case(rng, ties)
        w = rng.integers(0, 4, size=(6, s.size))
        a, t = weighted_roc_stats(s, y, w, FPRS)
        for b in range(w.shape[0]):
            idx = np.repeat(np.arange(s.size), w[b])
            yy, ss = y[idx], s[idx]
            if yy.all() or not yy.any():
                assert np.isnan(a[b]) and np.isnan(t[b]).all()
                continue
            checked += 1
            assert a[b] == pytest.approx(skm.roc_auc_score(yy, ss), abs=1e-12)
            for j, f in enumerate(FPRS):
                assert t[b, j] == _sk_tpr_at(yy, ss, f)
    assert checked > 100


def test_summarize_point_estimates_and_dict_shape():
    rng = np.random.default_rng(3)
    y = rng.random(600) < 0.4
    s = rng.normal(size=600) + y
    m = summarize(s, y, fprs=(0.01, 0.1), n_boot=200, seed=1)
    d = json.loads(json.dumps(m.to_dict()))
    assert set(d) == {"auc", "tpr_at_fpr", "n_members", "n_nonmembers"}
    assert set(d["auc"]) == {"value", "lo", "hi"}
    assert [set(r) for r in d["tpr_at_fpr"]] == [{"fpr", "value", "lo", "hi"}] * 2
    assert d["auc"]["value"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert [r["value"] for r in d["tpr_at_fpr"]] == [tpr_at_fpr(s, y, f) for f in (0.01, 0.1)]
    assert (d["n_members"], d["n_nonmembers"]) == (int(y.sum()), int((~y).sum()))
    assert d["auc"]["lo"] < d["auc"]["value"] < d["auc"]["hi"]
    for r in d["tpr_at_fpr"]:
        assert r["lo"] <= r["value"] <= r["hi"]
    # deterministic given the seed, different with another seed
    assert summarize(s, y, fprs=(0.01, 0.1), n_boot=200, seed=1) == m
    assert summarize(s, y, fprs=(0.01, 0.1), n_boot=200, seed=2).auc.lo != m.auc.lo


def test_auc_interval_coverage_on_a_world_with_known_auc():
    """Members N(d,1) vs non-members N(0,1): AUC = Phi(d / sqrt 2); the 95 % CI should cover it ~95 %."""
    d, n, draws = 0.8, 120, 150
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(4)
    y = np.arange(2 * n) < n
    hits = 0
    for i in range(draws):
        s = rng.normal(size=2 * n) + d * y
        m = summarize(s, y, fprs=(0.1,), n_boot=300, seed=i)
        hits += m.auc.lo <= truth <= m.auc.hi
    assert 0.88 <= hits / draws <= 0.99


def test_cluster_bootstrap_widens_interval_for_duplicated_rows():
    rng = np.random.default_rng(5)
    n_groups, copies = 150, 6
    y_g = rng.random(n_groups) < 0.5
    s_g = rng.normal(size=n_groups) + 0.7 * y_g
    s, y = np.repeat(s_g, copies), np.repeat(y_g, copies)
    groups = np.repeat(np.arange(n_groups), copies)
    rows = summarize(s, y, n_boot=400, fprs=(0.1,))
    clustered = summarize(s, y, groups=groups, n_boot=400, fprs=(0.1,))
    single = summarize(s_g, y_g, n_boot=400, fprs=(0.1,))
    width = lambda m: m.auc.hi - m.auc.lo  # noqa: E731
    assert rows.auc.value == clustered.auc.value == pytest.approx(single.auc.value)
    # copies add no information: clustering restores the width of the de-duplicated data
    assert width(clustered) > 1.8 * width(rows)
    assert width(clustered) == pytest.approx(width(single), rel=0.25)


def test_summarize_rejects_bad_input():
    with pytest.raises(ValueError):
        summarize([0.1, 0.2], [True, True])
    with pytest.raises(ValueError):
        summarize([0.1, np.nan], [True, False])
    with pytest.raises(ValueError):
        summarize([0.1, 0.2], [True, False], groups=[0])


def test_mean_ci():
    v = np.random.default_rng(6).normal(0.9, 0.02, size=40)
    out = mean_ci(v, n_boot=2000)
    assert out["value"] == pytest.approx(v.mean())
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert out["hi"] - out["lo"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert mean_ci([0.5]) == {"value": 0.5, "lo": 0.5, "hi": 0.5}
