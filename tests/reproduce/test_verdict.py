"""The verdict rule of `ftaudit reproduce` on synthetic differences with a known answer."""
import math

import numpy as np
import pytest

from ftaudit.metrics.paired import mean_difference, paired_difference
from ftaudit.reproduce.verdict import (NOT_REPRODUCED, REPRODUCED, REVERSED, Interval, paired_interval, verdict)


def _world(effect_a: float, effect_b: float, n: int = 2000, seed: int = 0):
    """Two attacks scored on the same rows: each row's score is its membership times the attack's effect
    plus independent noise (so a pure-noise attack has AUC 0.5)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    a = effect_a * labels + rng.normal(size=n)
    b = effect_b * labels + rng.normal(size=n)
    return a, b, labels, np.arange(n)


def _judge(effect_a, effect_b, direction="greater"):
    a, b, labels, groups = _world(effect_a, effect_b)
    d = paired_difference(a, b, labels, groups, 0.01, n_boot=400, seed=1)
    return verdict(paired_interval(d, "auc"), direction), d


def test_a_known_positive_is_reproduced():
    v, d = _judge(0.0, 1.0)  # b detects members, a is noise: b − a > 0
    assert d.auc_diff_lo > 0.2 and v == REPRODUCED


def test_a_known_null_is_not_reproduced():
    v, d = _judge(0.5, 0.5)  # the same effect: the CI of b − a contains zero
    assert d.auc_diff_lo < 0 < d.auc_diff_hi and v == NOT_REPRODUCED


def test_a_known_reversal_is_reversed():
    v, d = _judge(1.0, 0.0)  # the claim says b > a; in truth a > b
    assert d.auc_diff_hi < -0.2 and v == REVERSED
    assert _judge(1.0, 0.0, direction="less")[0] == REPRODUCED  # the same data, the opposite claim


def test_the_rule_on_intervals_bounds_and_invariants():
    assert verdict(Interval(0.3, 0.1, 0.5), "greater") == REPRODUCED
    assert verdict(Interval(0.3, 0.1, 0.5), "less") == REVERSED
    assert verdict(Interval(0.0, -0.1, 0.1), "less") == NOT_REPRODUCED
    # a level: agreement 0.80 [0.75, 0.85] against a claimed "above 94 %" is below it, resolved
    assert verdict(Interval(0.80, 0.75, 0.85), "greater", bound=0.94) == REVERSED
    assert verdict(Interval(0.93, 0.90, 0.96), "greater", bound=0.94) == NOT_REPRODUCED
    # an invariant (empirical ε − accounted ε ≤ 0): holds unless the one-sided interval is wholly above 0
    assert verdict(Interval(-1.5, -1.5, math.inf), "less", invariant=True) == REPRODUCED
    assert verdict(Interval(0.2, 0.2, math.inf), "less", invariant=True) == REVERSED
    assert verdict(Interval(0.0, 0.0, math.inf), "less", invariant=True) == REPRODUCED  # touching is not crossing


def test_intervals_and_directions_are_checked():
    with pytest.raises(ValueError):
        Interval(0.0, 0.1, -0.1)
    with pytest.raises(ValueError):
        Interval(float("nan"), 0.0, 1.0)
    with pytest.raises(ValueError):
        verdict(Interval(0, 0, 0), "more")


def test_mean_difference_is_a_paired_bootstrap_of_per_example_values():
    rng = np.random.default_rng(3)
    shared = rng.random(400) < 0.7           # most of the correctness is shared by both models
    a = shared | (rng.random(400) < 0.2)     # a fixes some of the shared errors: a is better
    d = mean_difference(a, shared, n_boot=500, seed=0)
    assert d["value"] == pytest.approx(a.mean() - shared.mean())
    assert 0 < d["lo"] <= d["value"] <= d["hi"]
    # paired: far narrower than the two marginal CIs would allow (each ±4.5 % at n = 400)
    assert d["hi"] - d["lo"] < 0.08
    assert verdict(paired_interval(d), "greater") == REPRODUCED
    with pytest.raises(ValueError):
        mean_difference(a, shared[:10])
