"""Membership inference attacks: LOSS, reference-to-base, LiRA (4 variants) and RMIA (2 variants).

Every function maps an :class:`AttackInput` to float64 scores [N], higher = more likely member,
never NaN. Multiple queries (index 0 = original input, 1.. = augmentations) are combined by
averaging a per-query score, as LiRA does. Attacks that use references use equally many IN and
OUT ones per example (:attr:`AttackInput.ref_use`, a seeded random subset of the larger side), so
that leave-one-out evaluation on a balanced keep-matrix does not leak the target's label through
the reference counts.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from ftaudit.attacks.base import AttackInput

VAR_FLOOR = 1e-4  # smallest variance (logit scale): identical reference outputs must not give inf


def loss_attack(inp: AttackInput) -> np.ndarray:
    """LOSS (Yeom et al. 2018): members have lower loss. Uses the original query only."""
    return -inp.target_loss[:, 0]


def reference_attack(inp: AttackInput) -> np.ndarray:
    """Reference-to-base: how much fine-tuning lowered the loss relative to the pretrained base.

    Calibrates per-example difficulty with the model fine-tuning started from, without training
    any reference model. Averaged over queries.
    """
    if inp.base_loss is None:
        raise ValueError("the reference attack needs base_loss (signals of the pretrained base)")
    return -(inp.target_loss - inp.base_loss).mean(axis=1)


# --------------------------------------------------------------------------------------- LiRA


class _Fit:
    """Per-example, per-query statistics of the references on one side (IN or OUT).

    count [N]; mean [N, A] (NaN without references); ss [N, A] the within-example sum of squares.
    """

    def __init__(self, x: np.ndarray, mask: np.ndarray):
        m = mask[:, :, None]
        self.count = mask.sum(axis=0)
        mean = np.where(m, x, 0.0).sum(axis=0) / np.maximum(self.count, 1)[:, None]
        self.ss = (np.where(m, x - mean, 0.0) ** 2).sum(axis=0)
        self.mean = np.where(self.count[:, None] > 0, mean, np.nan)

    @property
    def dof(self) -> int:
        return int(np.maximum(self.count - 1, 0).sum())


def _pooled_var(fits: list[_Fit], x_all: np.ndarray) -> np.ndarray:
    """One variance per query pooled over examples (within-example deviations only) [A].

    Falls back, when no example has two references on these sides, to the plain variance of all
    reference outputs (an over-estimate that includes example difficulty), then to 1.
    """
    dof = sum(f.dof for f in fits)
    if dof > 0:
        var = sum(f.ss.sum(axis=0) for f in fits) / dof
    elif x_all.shape[0] * x_all.shape[1] >= 2:
        var = x_all.reshape(-1, x_all.shape[2]).var(axis=0)
    else:
        var = np.ones(x_all.shape[2])
    return np.maximum(var, VAR_FLOOR)


def _own_var(fit: _Fit, fallback: np.ndarray) -> np.ndarray:
    """Per-example variance [N, A]; examples with fewer than two references use ``fallback`` [A]."""
    enough = fit.count[:, None] >= 2
    var = np.where(enough, fit.ss / np.maximum(fit.count - 1, 1)[:, None], fallback[None, :])
    return np.maximum(var, VAR_FLOOR)


def _means(fin: _Fit, fout: _Fit) -> tuple[np.ndarray, np.ndarray]:
    """IN and OUT means [N, A], filling a missing side from the other with the typical shift.

    The shift is the average IN - OUT difference over examples that have both (0 if none), so an
    example whose references are all IN (or all OUT) still gets a finite, sensible pair of means.
    """
    both = (fin.count > 0) & (fout.count > 0)
    shift = (fin.mean[both] - fout.mean[both]).mean(axis=0) if both.any() else np.zeros(fin.mean.shape[1])
    mu_in = np.where(fin.count[:, None] > 0, fin.mean, fout.mean + shift)
    mu_out = np.where(fout.count[:, None] > 0, fout.mean, fin.mean - shift)
    return mu_in, mu_out


def _log_normal(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log N(x; mu, var) without the constant (it cancels in the online likelihood ratio)."""
    return -0.5 * np.log(var) - 0.5 * (x - mu) ** 2 / var


def _lira_fits(inp: AttackInput) -> tuple[_Fit, _Fit]:
    if inp.n_refs == 0:
        raise ValueError("LiRA needs at least one reference model")
    use = inp.ref_use
    return _Fit(inp.ref_conf, inp.ref_keep & use), _Fit(inp.ref_conf, ~inp.ref_keep & use)


def lira_online(inp: AttackInput, global_variance: bool = False) -> np.ndarray:
    """LiRA online (Carlini et al. 2022): Gaussian likelihood ratio of the logit-scaled confidence.

    Per example and query, IN and OUT references give mean (the sample mean: the Gaussian MLE,
    less noisy than the paper's median with the few references fine-tuning audits afford) and
    variance (unbiased; pooled over examples when ``global_variance`` or when an example has < 2
    references on a side). An example with no IN (OUT) reference takes the other side's mean
    plus (minus) the average IN - OUT shift. Score = mean over queries of
    log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out).
    """
    fin, fout = _lira_fits(inp)
    mu_in, mu_out = _means(fin, fout)
    x = inp.ref_conf
    if global_variance:
        var_in = var_out = np.broadcast_to(_pooled_var([fin, fout], x), mu_in.shape)
    else:
        var_in = _own_var(fin, _pooled_var([fin], x) if fin.dof else _pooled_var([fin, fout], x))
        var_out = _own_var(fout, _pooled_var([fout], x) if fout.dof else _pooled_var([fin, fout], x))
    phi = inp.target_conf
    return (_log_normal(phi, mu_in, var_in) - _log_normal(phi, mu_out, var_out)).mean(axis=1)


def lira_offline(inp: AttackInput, global_variance: bool = False) -> np.ndarray:
    """LiRA offline: one-sided test against the OUT references only.

    Score = mean over queries of log Phi((phi - mu_out) / s_out): confidence higher than the
    OUT distribution predicts means member. Means and variances as in :func:`lira_online` but from
    OUT references (an example without any OUT reference falls back to its IN mean minus the
    typical shift; the variance falls back to the pooled OUT, then all-reference, estimate).
    """
    fin, fout = _lira_fits(inp)
    _, mu_out = _means(fin, fout)
    x = inp.ref_conf
    pooled = _pooled_var([fout], x) if fout.dof else _pooled_var([fin, fout], x)
    var_out = np.broadcast_to(pooled, mu_out.shape) if global_variance else _own_var(fout, pooled)
    z = (inp.target_conf - mu_out) / np.sqrt(var_out)
    return norm.logcdf(z).mean(axis=1)


# --------------------------------------------------------------------------------------- RMIA


def log_marginal(ref_loss: np.ndarray, use: np.ndarray, offline_a: float | None) -> np.ndarray:
    """log Pr(x) [K, A] from reference losses [R, K, A] where ``use`` [R, K] marks usable references.

    Online (offline_a None): Pr(x) = mean of p_y over the references (half IN, half OUT). Offline: the mean over OUT
    references approximates Pr_out, and Pr(x) = 1/2 ((1 + a) Pr_out + (1 - a)) (RMIA, Sec. 3),
    i.e. Pr_in is approximated by a Pr_out + (1 - a). Points without a usable reference use all.
    """
    use = np.where(use.any(axis=0, keepdims=True), use, True)[:, :, None]
    logp = np.where(use, -ref_loss, -np.inf)
    log_mean = logsumexp(logp, axis=0) - np.log(use.sum(axis=0))
    if offline_a is None:
        return log_mean
    with np.errstate(divide="ignore"):  # a = 1 makes the constant term log(0) = -inf
        return np.logaddexp(np.log((1 + offline_a) / 2) + log_mean, np.log((1 - offline_a) / 2))


def rmia(inp: AttackInput, gamma: float = 2.0, offline_a: float | None = None) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024): how often x's likelihood ratio beats population points'.

    LR(x) = Pr(x | target) / Pr(x) with Pr(. | model) = p_y = exp(-loss), likewise LR(z) for the
    population points z (non-members of every model, so all references are OUT for them).
    Score(x) = fraction of z with LR(x) / LR(z) >= gamma, computed per query (x's query a against
    the z's query a) and averaged over queries, like LiRA. Done in log space with one sort of the
    population per query and a binary search per x: O((N + Z) log Z).

    gamma = 2 follows LeakPro's RMIA default (privacy-meter's code compares against 1). For one
    query the score is a monotone map of LR(x) whatever gamma is, so gamma only moves where the
    score saturates; a larger gamma leaves fewer ties at score 1, which matter at low FPR.
    ``offline_a`` None = online (Pr(x) from all references); a number = offline (OUT refs only).
    """
    if inp.n_refs == 0:
        raise ValueError("RMIA needs at least one reference model")
    if inp.n_pop == 0:
        raise ValueError("RMIA needs population examples")
    use_x = inp.ref_use
    if offline_a is not None:
        use_x = use_x & ~inp.ref_keep
    log_lr_x = -inp.target_loss - log_marginal(inp.ref_loss, use_x, offline_a)
    use_z = np.ones(inp.ref_pop_loss.shape[:2], dtype=bool)
    log_lr_z = -inp.target_pop_loss - log_marginal(inp.ref_pop_loss, use_z, offline_a)
    log_lr_z = np.sort(log_lr_z, axis=0)
    frac = np.empty_like(log_lr_x)
    for a in range(log_lr_x.shape[1]):
        # LR(x)/LR(z) >= gamma  <=>  log LR(z) <= log LR(x) - log gamma
        frac[:, a] = np.searchsorted(log_lr_z[:, a], log_lr_x[:, a] - np.log(gamma), side="right")
    return frac.mean(axis=1) / inp.n_pop
