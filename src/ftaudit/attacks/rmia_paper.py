"""RMIA exactly as its paper runs it (Zarifzadeh, Liu and Shokri, ICML 2024).

``attacks.membership.rmia`` is ftaudit's variant: the per-view fractions of dominated population
points averaged over views, and a fixed offline ``a``. This module is the paper's protocol, kept
beside it so the two can be compared on the same signals:

- Pr(x | theta) = p_y(x) = exp(-loss), per augmented view (computed in log space).
- Online: Pr(x) = the mean of Pr(x | theta') over the references (half IN, half OUT).
  Offline: Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2 with Pr_OUT the mean over OUT references.
- The pairwise likelihood ratio LR(x, z) = (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z)) against
  every population point z; x dominates z when LR(x, z) >= gamma in a strict majority of the views
  (the paper's vote across augmented queries; with one view it is the plain test).
- Score(x) = the fraction of population points x dominates. gamma = 1 as in the authors' code.
- Offline ``a``: calibrated as the authors do, by attacking one reference model (pretending it is
  the target, its own keep row as the labels) with the other references for each a in
  {0, 0.1, ..., 1} and keeping the a of the highest AUC.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_auc_score

from ftaudit.attacks.base import AttackInput
from ftaudit.attacks.membership import log_marginal

log = logging.getLogger(__name__)

A_GRID = tuple(np.round(np.arange(0.0, 1.0001, 0.1), 1))
A_FALLBACK = 0.3  # when no reference has both IN and OUT audit examples, nothing can calibrate a
CHUNK = 256  # audit examples per block of the N x Z x A comparison


def dominated_fraction(log_ratio_x: np.ndarray, log_ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """For each x [N, A], the fraction of z [Z, A] with ratio_x / ratio_z >= gamma in a strict
    majority of the A views (ratios given as logs)."""
    n_views = log_ratio_x.shape[1]
    threshold = log_ratio_z[None, :, :] + np.log(gamma)
    out = np.empty(log_ratio_x.shape[0])
    for start in range(0, log_ratio_x.shape[0], CHUNK):
        wins = (log_ratio_x[start:start + CHUNK, None, :] >= threshold).sum(axis=2)  # [n, Z]
        out[start:start + CHUNK] = (2 * wins > n_views).mean(axis=1)
    return out


def score(loss_x: np.ndarray, ref_loss_x: np.ndarray, use_x: np.ndarray, loss_z: np.ndarray, ref_loss_z: np.ndarray,
          gamma: float, offline_a: float | None) -> np.ndarray:
    """The paper's RMIA score from losses (-log p_y): target loss_x [N, A], references ref_loss_x
    [R, N, A] (``use_x`` [R, N] the ones averaged), population loss_z [Z, A], ref_loss_z [R, Z, A]."""
    log_ratio_x = -loss_x - log_marginal(ref_loss_x, use_x, offline_a)
    log_ratio_z = -loss_z - log_marginal(ref_loss_z, np.ones(ref_loss_z.shape[:2], dtype=bool), offline_a)
    return dominated_fraction(log_ratio_x, log_ratio_z, gamma)


def calibrate_offline_a(inp: AttackInput, gamma: float) -> float:
    """The a of the grid whose offline attack on a reference model (as a stand-in target, the
    other references as references) has the highest AUC; ties keep the smaller a."""
    keep, use = inp.ref_keep, inp.ref_use
    stand_in = next((r for r in range(inp.n_refs) if keep[r].any() and not keep[r].all()), None)
    if stand_in is None or inp.n_refs < 2:
        log.warning("rmia-paper-offline: no reference has both IN and OUT audit examples to calibrate a; "
                    "using a = %.1f", A_FALLBACK)
        return A_FALLBACK
    others = np.arange(inp.n_refs) != stand_in
    out_refs = (use & ~keep)[others]
    best_a, best_auc = A_FALLBACK, -np.inf
    for a in A_GRID:
        scores = score(inp.ref_loss[stand_in], inp.ref_loss[others], out_refs, inp.ref_pop_loss[stand_in],
                       inp.ref_pop_loss[others], gamma, float(a))
        auc = roc_auc_score(keep[stand_in], scores)
        if auc > best_auc:
            best_a, best_auc = float(a), auc
    return best_a


def rmia_paper(inp: AttackInput, gamma: float = 1.0, offline: bool = False) -> np.ndarray:
    """The paper's RMIA on one target: online (all balanced references) or offline (OUT
    references, ``a`` calibrated on a reference model). Higher = member."""
    if inp.n_refs == 0:
        raise ValueError("RMIA needs at least one reference model")
    if inp.n_pop == 0:
        raise ValueError("RMIA needs population examples")
    use = inp.ref_use
    offline_a = None
    if offline:
        use = use & ~inp.ref_keep
        offline_a = calibrate_offline_a(inp, gamma)
    return score(inp.target_loss, inp.ref_loss, use, inp.target_pop_loss, inp.ref_pop_loss, gamma, offline_a)
