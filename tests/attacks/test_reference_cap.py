"""A few-reference audit on a larger ensemble (``cap``): k/2 IN and k/2 OUT references per example.

Before the cap, k references meant the first k of a target's (``n_refs = k``). With k = 2 an
example's two references are often on one side, and in leave-one-out how often depends on the
target's own label (an IN target leaves one IN model fewer among the others), so members and
non-members were scored from different mixtures of reference configurations. On the null worlds
below (30 worlds, drift 0) that gave lira-online a mean AUC of 0.629 ± 0.003 with 4 models and
0.526 ± 0.002 with 18 (lira-offline 0.470 ± 0.003 with 4); with the cap every attack is within
2.5 standard errors of 0.5.
"""
from __future__ import annotations

import numpy as np
import pytest

from ftaudit.attacks import gaussian_world, leave_one_out
from ftaudit.attacks.base import attack_input, balanced_references
from ftaudit.attacks.leave_one_out import reference_models
from ftaudit.errors import UserError
from ftaudit.metrics import summarize
from ftaudit.metrics.roc import auc
from ftaudit.studies.digits.config import FinetuneMIAConfig

from test_null_world import ATTACK_NAMES, null_world


def _null_aucs(n_models: int, n_worlds: int, names, capped: bool, k: int = 2) -> dict[str, np.ndarray]:
    out = {name: [] for name in names}
    for w in range(n_worlds):
        s = null_world(w, n_models=n_models, n_examples=200, drift=0.0)
        if capped:
            pooled = leave_one_out(s, names, {}, range(n_models), n_models - 1, seed=w, cap=k)
        else:  # the old rule: the first k references of each target
            pooled = leave_one_out(s, names, {}, range(n_models), k, seed=w)
        for name in names:
            out[name].append(auc(pooled.scores[name], pooled.labels))
    return {name: np.asarray(v) for name, v in out.items()}


def _bias(aucs: np.ndarray) -> tuple[float, float]:
    return float(aucs.mean() - 0.5), float(aucs.std(ddof=1) / np.sqrt(aucs.size))


def test_cap_takes_half_of_each_side_per_example():
    rng = np.random.default_rng(0)
    keep = rng.random((9, 300)) < 0.5
    n_in = keep.sum(axis=0)
    m = np.minimum(n_in, 9 - n_in)
    for per_side in (1, 2, 3):
        use = balanced_references(keep, np.random.default_rng(1), per_side)
        both = m > 0
        np.testing.assert_array_equal((use & keep).sum(axis=0)[both], np.minimum(m, per_side)[both])
        np.testing.assert_array_equal((use & ~keep).sum(axis=0)[both], np.minimum(m, per_side)[both])
        assert (use.sum(axis=0)[~both] == np.minimum(2 * per_side, 9)).all()  # one side only: at most k of it
        # the capped draw is a subset of the uncapped one (same keys): a cap only drops references
        assert not (use & ~balanced_references(keep, np.random.default_rng(1)))[:, both].any()
    # a cap no example reaches changes nothing (and None is the uncapped rule)
    np.testing.assert_array_equal(balanced_references(keep, np.random.default_rng(1), 9),
                                  balanced_references(keep, np.random.default_rng(1)))


def test_capped_configuration_does_not_depend_on_the_targets_label():
    """In leave-one-out on a balanced keep-matrix every (target, example) gets exactly k/2 of each
    side under the cap; with the first k references, which side an example lacks depends on the label."""
    s = null_world(0, n_models=18, n_examples=300)
    both_out = {True: [], False: []}
    for t in range(18):
        capped = attack_input(s, t, reference_models(t, 18, 17), seed=0, cap=2)
        use = capped.ref_use
        assert ((use & capped.ref_keep).sum(axis=0) == 1).all() and ((use & ~capped.ref_keep).sum(axis=0) == 1).all()
        first = attack_input(s, t, reference_models(t, 18, 2), seed=0)
        for label in (True, False):
            both_out[label].append(~first.ref_keep.any(axis=0)[s.keep[t] == label])
    member, nonmember = np.concatenate(both_out[True]).mean(), np.concatenate(both_out[False]).mean()
    # both references OUT: C(9,2)/C(17,2) = 36/136 for an IN target (8 IN, 9 OUT others), 28/136 for an OUT one
    assert member == pytest.approx(36 / 136, abs=0.03) and nonmember == pytest.approx(28 / 136, abs=0.03)
    assert member - nonmember > 0.03


@pytest.fixture(scope="module")
def small_ensemble():
    return _null_aucs(4, 30, ATTACK_NAMES, capped=True)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_capped_null_auc_is_one_half_with_four_models(small_ensemble, name):
    bias, se = _bias(small_ensemble[name])
    assert abs(bias) < 3 * se and abs(bias) < 0.012, (name, small_ensemble[name].mean(), se)


def test_first_k_references_were_biased_with_four_models():
    """The test has power: the old rule's lira-online null AUC is 0.629 ± 0.003 here."""
    bias, se = _bias(_null_aucs(4, 30, ["lira-online"], capped=False)["lira-online"])
    assert bias > 0.1 and bias > 10 * se, (bias, se)


def test_capped_lira_online_is_unbiased_with_eighteen_models():
    """18 models, k = 2: the old rule 0.526 ± 0.002 (bias > 10 SE), the cap 0.501 ± 0.002."""
    names = ["lira-online", "lira-offline"]
    old, new = _null_aucs(18, 12, names, capped=False), _null_aucs(18, 12, names, capped=True)
    bias_old, se_old = _bias(old["lira-online"])
    assert bias_old > 0.015 and bias_old > 5 * se_old, (bias_old, se_old)
    for name in names:
        bias, se = _bias(new[name])
        assert abs(bias) < 3 * se and abs(bias) < 0.008, (name, bias, se)


def test_capped_attacks_still_detect_membership():
    signals, opt = gaussian_world(18, 300, 2, 400, 1.0, 1.0, seed=0)
    pooled = leave_one_out(signals, ATTACK_NAMES, {}, range(8), 17, seed=0, cap=2)
    for name in ATTACK_NAMES:
        m = summarize(pooled.scores[name], pooled.labels, groups=pooled.example, fprs=(0.01,), n_boot=200)
        assert m.auc.lo > 0.55 and m.auc.value <= opt + 0.01, (name, m.auc)


def test_cap_must_be_even_and_within_the_references():
    s = null_world(0, n_models=6, n_examples=20)
    for cap in (1, 3, 0, 6):
        with pytest.raises(UserError, match="attack.references"):
            leave_one_out(s, ["lira-online"], {}, range(6), 5, cap=cap)
    with pytest.raises(ValueError, match="even"):
        attack_input(s, 0, [1, 2, 3], cap=3)
    with pytest.raises(UserError, match="attack.references") as err:
        FinetuneMIAConfig.model_validate({"attack": {"references": 3}})
    assert "even" in str(err.value)
    assert FinetuneMIAConfig.model_validate({"attack": {"references": 2}}).attack.references == 2
