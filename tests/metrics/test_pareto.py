import numpy as np
import pytest

from ftaudit.metrics.pareto import matched, pareto_front


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        u, l = rng.random(15), rng.random(15)
        front = set(pareto_front(u, l).tolist())
        for i in range(15):
            dominated = any(u[j] >= u[i] and l[j] <= l[i] and (u[j] > u[i] or l[j] < l[i]) for j in range(15))
            assert (i in front) == (not dominated)
    assert pareto_front([0.9, 0.8, 0.95], [0.1, 0.2, 0.3]).tolist() == [0, 2]
    with pytest.raises(ValueError):
        pareto_front([1, 2], [1])


def test_matched_picks_least_leaking_point_above_the_common_utility():
    u = [0.90, 0.95, 0.80, 0.85, 0.93]
    l = [0.10, 0.30, 0.05, 0.02, 0.20]
    g = ["a", "a", "b", "b", "c"]
    target, chosen = matched(u, l, g)
    assert target == pytest.approx(0.85)  # b reaches at most 0.85
    assert chosen == {"a": 0, "b": 3, "c": 4}
    target, chosen = matched(u, l, g, tolerance=0.06)
    assert chosen["b"] == 3 and chosen["a"] == 0
