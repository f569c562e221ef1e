import zlib

import numpy as np
import pytest

from ftaudit.attacks import ATTACKS, attack_input, run_attack
from ftaudit.attacks.lm import (PRECOMPUTED, lm_score_set, loss_score, mean_nll, min_k_plus_plus_score, min_k_score,
                                mlm_ratio_score, pll_score, ratio_score, sequence_signals, zlib_entropy, zlib_score)
from ftaudit.signals.arrays import SignalSet


def test_min_k_takes_the_lowest_fraction():
    logp = np.array([[-1.0, -5.0, -2.0, -0.5, -3.0, -4.0, -0.1, -0.2, -0.3, -0.4]])
    assert min_k_score(logp, 0.2) == pytest.approx([-4.5])  # int(10 * 0.2) = 2 lowest: -5, -4
    assert min_k_score(logp, 0.05) == pytest.approx([-5.0])  # at least one token
    assert min_k_score(logp, 1.0) == pytest.approx(logp.mean(-1))
    with_nan = np.concatenate([logp, np.full((1, 5), np.nan)], 1)  # padding does not count
    assert min_k_score(with_nan, 0.2) == pytest.approx([-4.5])
    with pytest.raises(ValueError):
        min_k_score(logp, 0.0)


def test_min_k_plus_plus_standardises_each_token():
    logp = np.array([[-1.0, -2.0, -3.0, -4.0, -5.0]])
    mu = np.array([[-1.0, -1.0, -4.0, -4.0, -5.0]])
    sigma = np.array([[1.0, 0.5, 1.0, 2.0, 0.0]])  # sigma 0 (a one-hot prediction) must not divide by zero
    z = np.array([0.0, -2.0, 1.0, 0.0, 0.0])
    assert min_k_plus_plus_score(logp, mu, sigma, 0.4) == pytest.approx([np.sort(z)[:2].mean()])
    assert np.isfinite(min_k_plus_plus_score(logp, mu, sigma, 1.0)).all()


def test_zlib_score_sign_and_value():
    texts = ["the cat sat on the mat " * 4, "qx7 vv!k zz0 ##p Lm9 yy$ 2wq"]
    logp = np.array([[-2.0, -2.0], [-2.0, -2.0]])
    entropy = zlib_entropy(texts)
    assert entropy[0] == len(zlib.compress(texts[0].encode()))
    score = zlib_score(logp, texts)
    np.testing.assert_allclose(score, -2.0 / entropy)
    assert (score < 0).all()
    # a lower NLL (a memorised block) scores higher for the same text
    assert zlib_score(np.array([[-0.5, -0.5]]), texts[:1]) > zlib_score(np.array([[-2.0, -2.0]]), texts[:1])
    # at equal NLL, the hard-to-compress text is the more surprising one to predict well: it scores higher
    assert score[1] > score[0]
    with pytest.raises(ValueError):
        zlib_score(logp, texts[:1])


def test_loss_ratio_and_pll_directions():
    logp = np.array([[-1.0, -3.0], [-0.5, np.nan]])
    np.testing.assert_allclose(mean_nll(logp), [2.0, 0.5])
    np.testing.assert_allclose(loss_score(logp), [-2.0, -0.5])
    np.testing.assert_allclose(ratio_score(np.array([1.0, 2.0]), np.array([3.0, 2.5])), [2.0, 0.5])
    pll = np.array([[-1.0, -2.0, np.nan]])
    assert pll_score(pll) == pytest.approx([-1.5])
    assert mlm_ratio_score(pll, np.array([[-3.0, -3.0, np.nan]])) == pytest.approx([1.5])


def test_score_set_shapes_and_broadcast_reference():
    rng = np.random.default_rng(0)
    m, n, t = 3, 5, 7
    logp = -rng.random((m, n, t))
    base = -rng.random((n, t))  # one base model for every target
    scores = lm_score_set(logp=logp, mu=logp - 0.1, sigma=np.ones_like(logp), texts=[f"text {i}" for i in range(n)],
                          reference_logp=base, pll=-rng.random((m, n, t + 1)), reference_pll=-rng.random((n, t + 1)))
    assert set(scores) == set(PRECOMPUTED)
    assert all(s.shape == (m, n) for s in scores.values())
    np.testing.assert_allclose(scores["lm-ratio"][1], mean_nll(base) - mean_nll(logp[1]))
    assert set(lm_score_set(logp=logp)) == {"min-k"}
    with pytest.raises(ValueError):
        lm_score_set(logp=logp[0])  # one model: not [M, N]


def test_registered_attacks_read_the_scores():
    assert set(PRECOMPUTED) <= set(ATTACKS) and all("scores" in ATTACKS[n].needs for n in PRECOMPUTED)
    rng = np.random.default_rng(1)
    m, n = 4, 6
    nll = rng.random((m, n)) + 1
    conf, loss = sequence_signals(nll)
    assert conf.shape == (m, n, 1) and (conf == -loss).all()
    scores = lm_score_set(logp=-rng.random((m, n, 9)))
    signals = SignalSet(conf=conf, loss=loss, keep=rng.random((m, n)) < 0.5, pop_conf=conf[:, :2], pop_loss=loss[:, :2],
                        scores=scores)
    inp = attack_input(signals, 0, [1, 2, 3])
    np.testing.assert_array_equal(run_attack("min-k", inp), scores["min-k"][0])
    np.testing.assert_array_equal(run_attack("loss", inp), -nll[0])
    with pytest.raises(ValueError, match="did not compute"):
        run_attack("zlib", inp)
