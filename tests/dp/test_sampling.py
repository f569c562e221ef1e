import numpy as np
import pytest

from ftaudit.dp.sampling import poisson_schedule, steps_for


def test_inclusion_rate_is_q_and_rows_are_the_models_own():
    rows = [np.arange(0, 200), np.arange(150, 250)]
    q, steps = 0.05, 400
    sch = poisson_schedule(rows, q, steps, [3, 4])
    for m, r in enumerate(rows):
        counts = np.zeros(300)
        for s in range(steps):
            batch = sch.batch(s, m)
            assert len(set(batch)) == len(batch) and set(batch) <= set(r)  # no repeats, own rows only
            counts[batch] += 1
        rate = counts[r] / steps
        # each row: Binomial(400, 0.05); pooled over rows the rate is within a few standard errors of q
        assert abs(rate.mean() - q) < 4 * np.sqrt(q * (1 - q) / (steps * len(r)))
        assert rate.std() == pytest.approx(np.sqrt(q * (1 - q) / steps), rel=0.25)
        sizes = sch.mask[:, m].sum(-1)
        assert sizes.var() == pytest.approx(len(r) * q * (1 - q), rel=0.3)  # Poisson, not fixed, sizes
    # padding: real rows first, mask 0 after them, width = the widest batch
    assert sch.mask.shape[-1] == sch.mask.sum(-1).max()
    assert np.all(np.diff(sch.mask, axis=-1) <= 0)


def test_deterministic_per_seed_and_independent_across_models():
    rows = [np.arange(50), np.arange(50)]
    a = poisson_schedule(rows, 0.1, 30, [1, 2])
    b = poisson_schedule(rows, 0.1, 30, [1, 2])
    assert np.array_equal(a.index, b.index) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask[:, 0], a.mask[:, 1])  # same rows, different seeds
    # a model's batches depend on its own seed only, not on who shares the schedule
    alone = poisson_schedule(rows[:1], 0.1, 30, [1])
    assert all(np.array_equal(alone.batch(s, 0), a.batch(s, 0)) for s in range(30))
    c = poisson_schedule(rows, 0.1, 30, [9, 2])
    assert not all(np.array_equal(c.batch(s, 0), a.batch(s, 0)) for s in range(30))


def test_empty_steps_views_and_steps_for():
    sch = poisson_schedule([np.arange(10)], 0.02, 200, [0])
    assert (sch.mask[:, 0].sum(-1) == 0).any()  # P(empty) = 0.98**10 ≈ 0.82
    assert sch.view is None
    views = poisson_schedule([np.arange(10)], 0.5, 20, [0], n_views=5)
    assert views.view.shape == views.index.shape and set(np.unique(views.view)) <= set(range(5))
    assert steps_for(2, 0.05) == 40 and steps_for(1, 0.3) == 3
    with pytest.raises(ValueError, match="sample_rate"):
        poisson_schedule([np.arange(10)], 0.0, 5, [0])
    with pytest.raises(ValueError, match="one seed per model"):
        poisson_schedule([np.arange(10)], 0.1, 5, [0, 1])
