"""TMI (pretraining membership through the fine-tuned model): features, batched metaclassifiers
against their per-point loop, baselines against independent formulas, and leave-one-out worlds."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf

from ftaudit.attacks.membership import VAR_FLOOR
from ftaudit.attacks.tmi import (
    ADAPTED_LIRA,
    GLOBAL_THRESHOLD,
    TMI,
    MetaConfig,
    adapted_lira_scores,
    clip_rows,
    global_threshold_scores,
    ledoit_wolf,
    logit_scale,
    shifted_logits_world,
    tmi_attacks,
    tmi_features,
    tmi_scores,
    train_metaclassifiers,
    train_metaclassifiers_loop,
)
from ftaudit.metrics import summarize


# ------------------------------------------------------------------------------------ features


def test_logit_scale_matches_an_independent_computation():
    z = np.random.default_rng(0).normal(scale=4.0, size=(2, 3, 4, 6))
    expected = np.empty_like(z)
    for k in range(6):
        expected[..., k] = z[..., k] - logsumexp(np.delete(z, k, axis=-1), axis=-1)
    np.testing.assert_allclose(logit_scale(z), expected, rtol=1e-12, atol=1e-12)
    p = np.exp(z - logsumexp(z, axis=-1, keepdims=True))
    np.testing.assert_allclose(logit_scale(z), np.log(p) - np.log1p(-p), rtol=1e-9)


def test_logit_scale_is_finite_and_exact_for_extreme_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [50.0, 50.0, 0.0], [-3e38, 3e38, 0.0]], dtype=np.float32)
    phi = logit_scale(z)
    assert np.isfinite(phi).all()
    # the naive log p - log(1 - p) gives inf / -inf here
    np.testing.assert_allclose(phi[0], [1000.0, -1000.0, -2000.0])
    np.testing.assert_allclose(phi[1], [-np.log1p(np.exp(-50.0)), -np.log1p(np.exp(-50.0)), -50 - np.log(2)],
                               rtol=1e-12, atol=1e-15)
    assert phi[2, 1] == pytest.approx(3e38, rel=1e-6) and phi[2, 0] < -3e38 * 1.5


def test_clipping_only_scales_down():
    x = np.random.default_rng(1).normal(scale=[[[0.1]], [[1.0]], [[30.0]]], size=(3, 7, 5))
    x[0, 0] = 0.0
    c = clip_rows(x)
    norm, cnorm = np.linalg.norm(x, axis=-1), np.linalg.norm(c, axis=-1)
    short = norm <= 1.0
    assert short.any() and (~short).any()
    np.testing.assert_array_equal(c[short], x[short])  # inside the ball: untouched
    np.testing.assert_allclose(cnorm[~short], 1.0)  # outside: onto the sphere ...
    np.testing.assert_allclose(c[~short], x[~short] / norm[~short][:, None])  # ... same direction
    assert (c[0, 0] == 0).all()


def test_tmi_features_clip_the_logit_scaled_rows():
    z = np.random.default_rng(2).normal(scale=10.0, size=(3, 4, 2, 5)).astype(np.float32)
    f = tmi_features(z)
    assert f.shape == z.shape and f.dtype == np.float32
    np.testing.assert_allclose(f, clip_rows(logit_scale(z)), rtol=1e-6, atol=1e-7)
    assert (np.linalg.norm(f, axis=-1) <= 1 + 1e-6).all()
    assert np.isfinite(tmi_features(np.full((1, 1, 1, 3), [1e30, 0, -1e30], dtype=np.float32))).all()


# ----------------------------------------------------------------------------- metaclassifiers


def _training_case(seed: int, n_points=7, n_rows=45, k=5, n_queries=3):
    rng = np.random.default_rng(seed)
    y = rng.random((n_points, n_rows)) < 0.5
    x = rng.normal(size=(n_points, n_rows, k)) + 2.0 * y[:, :, None] * rng.normal(size=(n_points, 1, k))
    use = rng.random((n_points, n_rows)) < 0.85  # unequal row counts per point
    use[0] = False  # three rows, fewer than the batches per epoch: some of its steps are empty
    use[0, :3], y[0, :2] = True, [True, False]
    y[1] = True  # no OUT row: uninformative
    return x.astype(np.float32), y, use, rng.normal(size=(n_points, n_queries, k)).astype(np.float32)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_batched_training_equals_the_per_point_loop(dropout):
    x, y, use, q = _training_case(0)
    cfg = MetaConfig(hidden=16, dropout=dropout, epochs=8, batch_size=8, decay_every=3, lr_decay=0.5, seed=3)
    batched = train_metaclassifiers(x, y, use, q, cfg)
    loop = train_metaclassifiers_loop(x, y, use, q, cfg)
    np.testing.assert_allclose(batched, loop, atol=1e-5)
    assert batched[1] == loop[1] == 0.5
    assert np.ptp(batched[2:]) > 0.1  # trained, not stuck at one value
    np.testing.assert_array_equal(train_metaclassifiers(x, y, use, q, cfg), batched)  # seeded
    assert not np.allclose(train_metaclassifiers(x, y, use, q, replace(cfg, seed=4)), batched)


def test_metaclassifier_separates_in_from_out():
    rng = np.random.default_rng(5)
    y = np.tile(np.arange(40) % 2 == 0, (6, 1))
    centre = rng.normal(size=(6, 1, 4))
    x = np.where(y[:, :, None], centre, -centre) + 0.3 * rng.normal(size=(6, 40, 4))
    q = np.concatenate([centre, -centre], axis=1)  # one query like IN, one like OUT
    cfg = MetaConfig(epochs=60)
    p_in = train_metaclassifiers(x, y, None, q[:, :1], cfg)
    p_out = train_metaclassifiers(x, y, None, q[:, 1:], cfg)
    assert (p_in > 0.9).all() and (p_out < 0.1).all()


def test_bad_shapes_are_rejected():
    x, y, use, q = _training_case(1)
    with pytest.raises(ValueError, match="need x"):
        train_metaclassifiers(x, y[:, :-1], use, q)
    x[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train_metaclassifiers(x, y, use, q)
    with pytest.raises(ValueError, match="dropout"):
        MetaConfig(dropout=1.0)


# ------------------------------------------------------------------------------------ baselines


def test_ledoit_wolf_matches_sklearn_per_point():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(9, 4, 3)) * [1.0, 3.0, 0.5]
    w = (rng.random((9, 4)) < 0.7).astype(float)
    w[:3, 0] = 1.0
    mean, cov = ledoit_wolf(x, w)
    for p in range(4):
        rows = x[w[:, p] > 0, p]
        np.testing.assert_allclose(mean[p], rows.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(cov[p], sk_ledoit_wolf(rows)[0], rtol=1e-10, atol=1e-12)


def test_adapted_lira_and_global_threshold_formulas():
    logits, keep = shifted_logits_world(7, 5, 3, 4, effect=1.5, seed=7)
    phi = logit_scale(logits)
    v = 2
    lira = adapted_lira_scores(phi, keep, [v], balance=False).scores[ADAPTED_LIRA]
    others = [m for m in range(7) if m != v]
    for p in range(5):
        c = phi[v, p, 0].argmax()
        x = phi[:, p, :, c]  # [M, A]
        logpdf = []
        for side in (keep[others, p], ~keep[others, p]):
            rows = x[others][side]
            cov = sk_ledoit_wolf(rows)[0] + VAR_FLOOR * np.eye(3)
            logpdf.append(multivariate_normal.logpdf(x[v], rows.mean(axis=0), cov))
        assert lira[p] == pytest.approx(logpdf[0] - logpdf[1], rel=1e-9)
    thr = global_threshold_scores(phi, keep, [v, 0]).scores[GLOBAL_THRESHOLD]
    np.testing.assert_allclose(thr, np.concatenate([phi[v].max(-1).mean(-1), phi[0].max(-1).mean(-1)]))


# -------------------------------------------------------------------------------- leave-one-out


def _auc(pooled, name):
    return summarize(pooled.scores[name], pooled.labels, groups=pooled.example, fprs=(0.1,), n_boot=300).auc


CFG = MetaConfig(epochs=15)


def test_pooled_layout_and_victim_checks():
    logits, keep = shifted_logits_world(6, 10, 2, 3, effect=1.0, seed=8)
    pooled = tmi_attacks(logits, keep, [4, 1], CFG)
    assert set(pooled.scores) == {TMI, ADAPTED_LIRA, GLOBAL_THRESHOLD}
    np.testing.assert_array_equal(pooled.labels, np.concatenate([keep[4], keep[1]]))
    np.testing.assert_array_equal(pooled.example, np.tile(np.arange(10), 2))
    np.testing.assert_array_equal(pooled.target, np.repeat([4, 1], 10))
    assert all(s.shape == (20,) and s.dtype == np.float64 and np.isfinite(s).all() for s in pooled.scores.values())
    for bad in ([], [6], [1, 1], [-1]):
        with pytest.raises(ValueError, match="victims"):
            tmi_scores(tmi_features(logits), keep, bad)


def test_leaky_world_is_detected():
    logits, keep = shifted_logits_world(12, 150, 4, 5, effect=2.0, seed=9)
    pooled = tmi_attacks(logits, keep, range(4), CFG)
    for name in (TMI, ADAPTED_LIRA):
        assert _auc(pooled, name).lo > 0.65, name


def test_null_world_is_calibrated():
    """No leak and a half keep-matrix: without balanced shadows TMI would score members LOWER."""
    logits, keep = shifted_logits_world(12, 150, 4, 5, effect=0.0, seed=10)
    pooled = tmi_attacks(logits, keep, range(4), CFG)
    for name in pooled.scores:
        est = _auc(pooled, name)
        assert est.lo < 0.5 < est.hi, (name, est)


def test_the_victims_own_rows_never_train_its_metaclassifier():
    """Victim 0 is OUT but answers exactly like the IN shadow. Excluded, its rows look IN (score ~1);
    had its OUT-labelled rows been trained on, that region would be half OUT (score ~0.5)."""
    n_points, a, k = 6, 4, 5
    rng = np.random.default_rng(11)
    e = rng.normal(size=(n_points, 1, k))
    keep = np.zeros((3, n_points), dtype=bool)
    keep[1] = True  # model 1 IN, model 2 OUT, victim 0 OUT
    noise = 0.05 * rng.normal(size=(3, n_points, a, k))
    f = clip_rows(np.stack([e, e, -e])[:, :, [0] * a] / np.linalg.norm(e, axis=-1, keepdims=True) + noise)
    f = f.astype(np.float32)
    cfg = MetaConfig(epochs=150, dropout=0.0)
    excluded = tmi_scores(f, keep, [0], cfg).scores[TMI]
    assert (excluded > 0.9).all()
    rows = f.transpose(1, 0, 2, 3).reshape(n_points, 3 * a, k)
    labels = np.repeat(keep.T, a, axis=1)
    included = train_metaclassifiers(rows, labels, None, f[0], cfg)
    assert (included < 0.7).all()  # the test would catch an inclusion
    # and the victim's own label never matters
    flipped = keep.copy()
    flipped[0] = True
    np.testing.assert_array_equal(tmi_scores(f, flipped, [0], cfg).scores[TMI], excluded)
    phi = logit_scale(rng.normal(size=(5, 8, 3, 4)))
    keep5 = np.argsort(rng.random((5, 8)), axis=0) < 2
    flip5 = keep5.copy()
    flip5[3] = ~flip5[3]
    np.testing.assert_array_equal(adapted_lira_scores(phi, keep5, [3]).scores[ADAPTED_LIRA],
                                  adapted_lira_scores(phi, flip5, [3]).scores[ADAPTED_LIRA])


def test_the_registered_evaluator_pools_the_attacks_of_each_victim():
    """``tmi-metaclassifiers`` through an evaluation request equals the attacks themselves; a memo
    sees every victim, and only the missing ones are computed."""
    from ftaudit.attacks.evaluators import EvaluationRequest
    from ftaudit.attacks.tmi import MetaclassifierInputs

    logits, keep = shifted_logits_world(6, 12, 3, 4, effect=1.5, seed=12)
    direct = tmi_attacks(logits, keep, [3, 0], CFG)
    pooled = EvaluationRequest("tmi-metaclassifiers", MetaclassifierInputs(logits, keep, [3, 0], CFG)).scores()
    assert list(pooled.scores) == [TMI, ADAPTED_LIRA, GLOBAL_THRESHOLD]
    for name, s in direct.scores.items():
        np.testing.assert_allclose(pooled.scores[name], s)
    for field in ("labels", "example", "target"):
        np.testing.assert_array_equal(getattr(pooled, field), getattr(direct, field))
    store = {0: {n: s[12:] for n, s in direct.scores.items()}}  # victim 0 already scored
    asked = []

    def memo(victims, compute):
        missing = [i for i, v in enumerate(victims) if v not in store]
        asked.append(missing)
        store.update({victims[i]: d for i, d in zip(missing, compute(missing))})
        return [store[v] for v in victims]

    memoized = EvaluationRequest("tmi-metaclassifiers", MetaclassifierInputs(logits, keep, [3, 0], CFG, memo=memo))
    np.testing.assert_allclose(memoized.scores().scores[TMI], direct.scores[TMI])
    assert asked == [[0]]  # only victim 3, the first of [3, 0]
    with pytest.raises(ValueError, match="output kind"):
        MetaclassifierInputs(logits, keep, [0], CFG, kind="probabilities")
