"""RMIA as its paper runs it: an independent computation of the formula, the vote across views,
the calibration of the offline a, and the analytic optimum on a Gaussian world."""
from __future__ import annotations

import numpy as np
import pytest

from ftaudit.attacks import AttackInput, gaussian_world, leave_one_out, run_attack
from ftaudit.attacks.rmia_paper import A_GRID, calibrate_offline_a, dominated_fraction
from ftaudit.metrics import summarize
from sklearn.metrics import roc_auc_score


def _input(r=6, n=9, a=3, z=25, seed=3) -> AttackInput:
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((r, n)), axis=0) < r // 2
    conf = rng.normal(size=(r + 1, n, a)) + 0.8 * np.vstack([np.zeros((1, n)), keep])[:, :, None]
    pop = rng.normal(size=(r + 1, z, a))
    loss, pop_loss = np.logaddexp(0, -conf), np.logaddexp(0, -pop)
    return AttackInput(target_conf=conf[0], target_loss=loss[0], ref_conf=conf[1:], ref_loss=loss[1:], ref_keep=keep,
                       target_pop_loss=pop_loss[0], ref_pop_loss=pop_loss[1:], ref_seed=5)


def _brute(p_x, p_ref, use, p_z, p_ref_z, gamma, a_coef):
    """The paper's formula with probabilities and loops: x dominates z when the pairwise ratio is
    >= gamma in more than half of the views; the score is the fraction of z dominated."""
    def marginal(values):
        m = float(np.mean(values))
        return m if a_coef is None else 0.5 * ((1 + a_coef) * m + (1 - a_coef))

    n, views = p_x.shape
    out = []
    for i in range(n):
        refs = use[:, i] if use[:, i].any() else np.ones(use.shape[0], bool)
        dominated = 0
        for z in range(p_z.shape[0]):
            wins = 0
            for v in range(views):
                lr_x = p_x[i, v] / marginal(p_ref[refs, i, v])
                lr_z = p_z[z, v] / marginal(p_ref_z[:, z, v])
                wins += lr_x / lr_z >= gamma
            dominated += 2 * wins > views
        out.append(dominated / p_z.shape[0])
    return np.array(out)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_online_matches_an_independent_computation(gamma):
    inp = _input()
    got = run_attack("rmia-paper-online", inp, gamma=gamma)
    want = _brute(np.exp(-inp.target_loss), np.exp(-inp.ref_loss), inp.ref_use, np.exp(-inp.target_pop_loss),
                  np.exp(-inp.ref_pop_loss), gamma, None)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_offline_matches_an_independent_computation_with_its_calibrated_a():
    inp = _input(r=8, n=30, z=30, seed=7)
    gamma = 1.0
    # the calibration, recomputed by brute force: reference 0 (it has IN and OUT examples) as target
    assert inp.ref_keep[0].any() and not inp.ref_keep[0].all()
    others = np.arange(inp.n_refs) != 0
    p_ref, p_ref_z = np.exp(-inp.ref_loss), np.exp(-inp.ref_pop_loss)
    out_use = (inp.ref_use & ~inp.ref_keep)[others]
    aucs = [roc_auc_score(inp.ref_keep[0], _brute(p_ref[0], p_ref[others], out_use, p_ref_z[0], p_ref_z[others],
                                                  gamma, a)) for a in A_GRID]
    a_best = A_GRID[int(np.argmax(aucs))]
    assert calibrate_offline_a(inp, gamma) == pytest.approx(a_best)
    got = run_attack("rmia-paper-offline", inp, gamma=gamma)
    want = _brute(np.exp(-inp.target_loss), p_ref, inp.ref_use & ~inp.ref_keep, np.exp(-inp.target_pop_loss), p_ref_z,
                  gamma, a_best)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_the_vote_is_not_the_mean_of_per_view_fractions():
    """Three views, two population points: x beats z0 in one view of three and z1 in all three. The
    vote dominates only z1 (score 1/2); the mean of per-view fractions would give (1/2+1/2+1)/3."""
    log_x = np.log(np.array([[2.0, 2.0, 2.0]]))
    log_z = np.log(np.array([[1.0, 3.0, 3.0], [1.0, 1.0, 1.0]]))
    assert dominated_fraction(log_x, log_z, 1.0)[0] == pytest.approx(0.5)


def test_underflowing_probabilities_stay_finite():
    inp = _input()
    big = AttackInput(**{**inp.__dict__, "target_loss": inp.target_loss + 900.0, "ref_loss": inp.ref_loss + 900.0,
                         "target_pop_loss": inp.target_pop_loss + 900.0, "ref_pop_loss": inp.ref_pop_loss + 900.0})
    np.testing.assert_allclose(run_attack("rmia-paper-online", big), run_attack("rmia-paper-online", inp), atol=1e-12)


def test_offline_without_a_stand_in_falls_back_to_the_default_a(caplog):
    inp = _input()
    none_in = AttackInput(**{**inp.__dict__, "ref_keep": np.zeros_like(inp.ref_keep)})
    assert calibrate_offline_a(none_in, 1.0) == 0.3
    assert "calibrate" in caplog.text


def test_reaches_the_analytic_optimum_where_its_likelihood_ratio_is_exact():
    """center = -8: p = sigmoid(phi) ~ exp(phi), so p_target / Pr(x) is a function of
    phi - mu_i alone, the same monotone map for every example: with one view the paper's RMIA is
    the Neyman-Pearson test, and with many references its AUC reaches Phi(effect / (sigma sqrt 2))."""
    signals, opt = gaussian_world(64, 250, 1, 400, 1.0, 1.0, seed=11, center=-8.0)
    pooled = leave_one_out(signals, ["rmia-paper-online"], {}, range(16), 63)
    m = summarize(pooled.scores["rmia-paper-online"], pooled.labels, groups=pooled.example, fprs=(0.01,), n_boot=300)
    assert m.auc.lo <= opt <= m.auc.hi, (m.auc, opt)
    assert m.auc.value > opt - 0.02
