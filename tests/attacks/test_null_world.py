"""Null worlds: training leaks nothing, so every attack's mean AUC over many keep-matrices is 0.5.

Signals are independent of membership but not exchangeable between models: each example has its
own difficulty (something for the calibrated attacks to calibrate) and each model a systematic
offset that drifts with its index (as models trained in sequence, or on different hardware, may).
The offsets are what make the choice of references matter: when the references dropped to balance
IN and OUT are picked by their position after the target (the first m of each side in cyclic
order), which models are dropped depends on the target's label, and with model offsets so do the
reference means. Drawing the dropped references at random per (target, example) removes that.
"""
from __future__ import annotations

import numpy as np
import pytest

from ftaudit.attacks import ATTACKS, AttackInput, leave_one_out
from ftaudit.attacks.base import balanced_references
from ftaudit.metrics.roc import auc
from ftaudit.signals.arrays import SignalSet

ATTACK_NAMES = [n for n, s in ATTACKS.items() if "scores" not in s.needs]  # precomputed (LM) scores: tests/lm
N_WORLDS = 60


def null_world(seed: int, n_models: int = 8, n_examples: int = 200, n_queries: int = 2, n_pop: int = 100,
               drift: float = 2.0) -> SignalSet:
    """phi = mu_example + offset_model + N(0, 1) per model x example x query; keep: a random half of
    the models per example, drawn independently of phi; offset_model = drift * m / M."""
    rng = np.random.default_rng([seed, 0x5EED])
    m, n, a = n_models, n_examples, n_queries
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
    offset = drift * np.arange(m) / m
    mu, mu_pop = rng.normal(size=n), rng.normal(size=n_pop)
    conf = mu[None, :, None] + offset[:, None, None] + rng.normal(size=(m, n, a))
    pop_conf = mu_pop[None, :, None] + offset[:, None, None] + rng.normal(size=(m, n_pop, a))
    base_conf = mu[:, None] + rng.normal(size=(n, a))

    def loss(phi):
        return np.logaddexp(0.0, -phi)

    return SignalSet(conf=conf, loss=loss(conf), keep=keep, pop_conf=pop_conf, pop_loss=loss(pop_conf),
                     base_conf=base_conf, base_loss=loss(base_conf))


def null_aucs(names, n_worlds: int = N_WORLDS) -> dict[str, np.ndarray]:
    """AUC [n_worlds] of each attack, leave-one-out over all targets with every other model as reference."""
    out = {name: [] for name in names}
    for w in range(n_worlds):
        signals = null_world(w)
        pooled = leave_one_out(signals, names, {}, range(signals.n_models), signals.n_models - 1, seed=w)
        assert not pooled.skipped
        for name in names:
            out[name].append(auc(pooled.scores[name], pooled.labels))
    return {name: np.asarray(v) for name, v in out.items()}


def _bias(aucs: np.ndarray) -> tuple[float, float]:
    """Mean AUC - 0.5 and its standard error from the spread over worlds."""
    return float(aucs.mean() - 0.5), float(aucs.std(ddof=1) / np.sqrt(aucs.size))


@pytest.fixture(scope="module")
def aucs():
    return null_aucs(ATTACK_NAMES)


def test_every_signal_attack_is_tested():
    assert set(ATTACK_NAMES) == {"loss", "reference", "lira-online", "lira-online-global", "lira-offline",
                                 "lira-offline-global", "rmia-online", "rmia-offline",
                                 "rmia-paper-online", "rmia-paper-offline"}


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_null_world_mean_auc_is_one_half(aucs, name):
    bias, se = _bias(aucs[name])
    assert abs(bias) < 3 * se and abs(bias) < 0.01, (name, aucs[name].mean(), se)


def test_positional_reference_choice_is_biased(monkeypatch):
    """The test has power: with the first m references of each side in cyclic order (the rule before
    the random draw), LiRA online's null AUC is measurably off 0.5 in these worlds (about +0.02)."""
    monkeypatch.setattr(AttackInput, "ref_use", property(lambda inp: balanced_references(inp.ref_keep)))
    bias, se = _bias(null_aucs(["lira-online-global"])["lira-online-global"])
    assert bias > 0.01 and bias > 5 * se, (bias, se)
