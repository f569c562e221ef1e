"""Attack formulas recomputed independently, leave-one-out bookkeeping, degenerate references."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ftaudit.attacks import (
    ATTACKS,
    AttackInput,
    attack_input,
    gaussian_world,
    leave_one_out,
    reference_models,
    resolve_params,
    run_attack,
)
from ftaudit.attacks.base import balanced_references
from ftaudit.errors import UserError

EXPECTED = {"loss", "reference", "lira-online", "lira-online-global", "lira-offline",
            "lira-offline-global", "rmia-online", "rmia-offline",
            "rmia-paper-online", "rmia-paper-offline"}


def _input(r=8, n=5, a=3, z=7, seed=0, keep=None) -> AttackInput:
    rng = np.random.default_rng(seed)
    if keep is None:  # balanced: every example IN for exactly half the references
        keep = np.argsort(rng.random((r, n)), axis=0) < r // 2
    conf = rng.normal(size=(r + 1, n, a)) + 0.8 * np.vstack([np.zeros((1, n)), keep])[:, :, None]
    pop = rng.normal(size=(r + 1, z, a))
    loss, pop_loss = np.logaddexp(0, -conf), np.logaddexp(0, -pop)
    return AttackInput(conf[0], loss[0], conf[1:], loss[1:], keep, pop_loss[0], pop_loss[1:],
                       base_loss=np.logaddexp(0, -rng.normal(size=(n, a))))


def test_registry_names_and_params():
    assert EXPECTED | {"zlib", "min-k", "min-k++", "lm-ratio", "mlm-pll", "mlm-ratio"} <= set(ATTACKS)
    # everything else is a study's precomputed score (e.g. the LM studies' reference-model ratios)
    assert all("scores" in ATTACKS[n].needs for n in set(ATTACKS) - EXPECTED)
    assert resolve_params("rmia-offline") == {"gamma": 2.0, "offline_a": 0.3}
    assert resolve_params("rmia-online", {"gamma": 1}) == {"gamma": 1.0}
    with pytest.raises(UserError) as e:
        resolve_params("rmia-online", {"gama": 1})
    assert e.value.field == "attack.params.rmia-online.gama" and "gamma" in e.value.fix
    for bad in ({"offline_a": 1.5}, {"gamma": 0}, {"gamma": True}, {"gamma": "2"}, {"gamma": float("nan")}):
        with pytest.raises(UserError):
            resolve_params("rmia-offline", bad)
    with pytest.raises(UserError) as e:
        resolve_params("lira", {})
    assert e.value.field == "attack.names"
    with pytest.raises(UserError):
        run_attack("loss", _input(), gamma=2)


def test_simple_attacks():
    inp = _input()
    np.testing.assert_array_equal(run_attack("loss", inp), -inp.target_loss[:, 0])
    np.testing.assert_allclose(run_attack("reference", inp), -(inp.target_loss - inp.base_loss).mean(axis=1))
    no_base = AttackInput(**{**inp.__dict__, "base_loss": None})
    with pytest.raises(ValueError):
        run_attack("reference", no_base)


def _hand_fit(inp, n, a, member):
    x = inp.ref_conf[inp.ref_keep[:, n] == member, n, a]
    return x.mean(), x.var(ddof=1)


def _hand_pooled_var(inp, a, sides):
    dev, dof = 0.0, 0
    for n in range(inp.n_examples):
        for side in sides:
            x = inp.ref_conf[inp.ref_keep[:, n] == side, n, a]
            dev += ((x - x.mean()) ** 2).sum()
            dof += x.size - 1
    return dev / dof


def test_lira_matches_a_hand_computation_with_scipy():
    inp = _input()
    got = {name: run_attack(name, inp) for name in EXPECTED if name.startswith("lira")}
    for n in range(inp.n_examples):
        on, on_g, off, off_g = [], [], [], []
        for a in range(inp.target_conf.shape[1]):
            phi = inp.target_conf[n, a]
            mi, vi = _hand_fit(inp, n, a, True)
            mo, vo = _hand_fit(inp, n, a, False)
            on.append(norm.logpdf(phi, mi, np.sqrt(vi)) - norm.logpdf(phi, mo, np.sqrt(vo)))
            vg = _hand_pooled_var(inp, a, (True, False))
            on_g.append(norm.logpdf(phi, mi, np.sqrt(vg)) - norm.logpdf(phi, mo, np.sqrt(vg)))
            off.append(np.log(norm.cdf(phi, mo, np.sqrt(vo))))
            off_g.append(np.log(norm.cdf(phi, mo, np.sqrt(_hand_pooled_var(inp, a, (False,))))))
        assert got["lira-online"][n] == pytest.approx(np.mean(on), rel=1e-10)
        assert got["lira-online-global"][n] == pytest.approx(np.mean(on_g), rel=1e-10)
        assert got["lira-offline"][n] == pytest.approx(np.mean(off), rel=1e-10)
        assert got["lira-offline-global"][n] == pytest.approx(np.mean(off_g), rel=1e-10)


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_rmia_matches_brute_force(offline, gamma):
    inp = _input(r=6, n=9, a=2, z=40, seed=3)
    a_coef = 0.4
    if offline:
        name, params = "rmia-offline", {"gamma": gamma, "offline_a": a_coef}
    else:
        name, params = "rmia-online", {"gamma": gamma}
    got = run_attack(name, inp, **params)
    p_x, p_ref = np.exp(-inp.target_loss), np.exp(-inp.ref_loss)
    p_z, p_ref_z = np.exp(-inp.target_pop_loss), np.exp(-inp.ref_pop_loss)

    def marginal(values):
        m = values.mean()
        return 0.5 * ((1 + a_coef) * m + (1 - a_coef)) if offline else m

    for n in range(inp.n_examples):
        per_query = []
        for a in range(inp.target_loss.shape[1]):
            refs = ~inp.ref_keep[:, n] if offline else np.ones(inp.n_refs, bool)
            lr_x = p_x[n, a] / marginal(p_ref[refs, n, a])
            hits = sum(lr_x / (p_z[z, a] / marginal(p_ref_z[:, z, a])) >= gamma for z in range(inp.n_pop))
            per_query.append(hits / inp.n_pop)
        assert got[n] == pytest.approx(np.mean(per_query), abs=1e-12)


def test_balanced_references_without_rng_take_the_first_of_each_side():
    """The deterministic rule (TMI's shadows): the first m of each side in reference order."""
    keep = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1], [1, 1, 0, 1], [0, 1, 0, 1]], dtype=bool)
    use = balanced_references(keep)
    # column 0: 3 IN (rows 0,1,3), 2 OUT (rows 2,4) -> first 2 of each side
    np.testing.assert_array_equal(use[:, 0], [True, True, True, False, True])
    # columns 2 and 3 have one side only: keep everything
    assert use[:, 2].all() and use[:, 3].all()
    assert (keep & use).sum(0)[1] == (~keep & use).sum(0)[1] == 2


def _random_keep(r, n, seed):
    return np.random.default_rng(seed).random((r, n)) < np.linspace(0.0, 1.0, n)  # every IN share


def test_balanced_references_use_m_of_each_side():
    keep = _random_keep(9, 400, seed=1)
    keep[:, :3] = [[True, False, True]] * 9  # columns 0 and 1: one side only
    keep[0, 2] = False  # column 2: one OUT, eight IN
    n_in = keep.sum(axis=0)
    m = np.minimum(n_in, 9 - n_in)
    for rng in (None, np.random.default_rng(0)):
        use = balanced_references(keep, rng)
        assert use.shape == keep.shape and use.dtype == np.bool_
        both = m > 0
        np.testing.assert_array_equal((keep & use).sum(axis=0)[both], m[both])
        np.testing.assert_array_equal((~keep & use).sum(axis=0)[both], m[both])
        assert use[:, ~both].all()  # an example lacking one side keeps all its references
        assert use[0, 2] and use[:, 2].sum() == 2  # 1 OUT (row 0), 8 IN: m = 1
    assert balanced_references(np.zeros((0, 4), dtype=bool), np.random.default_rng(0)).shape == (0, 4)


def test_balanced_references_are_seeded():
    keep = _random_keep(10, 50, seed=2)
    draw = lambda seed: balanced_references(keep, np.random.default_rng(seed))  # noqa: E731
    np.testing.assert_array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))
    # an AttackInput carries its seed: every attack on it sees the same draw, and it varies by seed
    inp = _input(r=10, n=50, keep=keep)
    np.testing.assert_array_equal(inp.ref_use, inp.ref_use)
    np.testing.assert_array_equal(inp.ref_use, balanced_references(keep, np.random.default_rng(inp.ref_seed)))
    other = AttackInput(**{**inp.__dict__, "ref_seed": inp.ref_seed + 1})
    assert not np.array_equal(inp.ref_use, other.ref_use)
    assert not np.array_equal(run_attack("lira-online", inp), run_attack("lira-online", other))


def test_balanced_references_choose_uniformly():
    """Over many seeds every reference of a side is used equally often, and each m-subset of the
    larger side equally often (no positional bias)."""
    keep = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 0], [1, 0]], dtype=bool)
    # column 0: IN rows 0, 2, 3, 5 and OUT rows 1, 4 -> 2 of the 4 IN rows, both OUT rows
    # column 1: IN rows 1, 2 and OUT rows 0, 3, 4, 5 -> both IN rows, 2 of the 4 OUT rows
    draws = 3000
    uses = np.stack([balanced_references(keep, np.random.default_rng([seed, 7])) for seed in range(draws)])
    freq = uses.mean(axis=0)
    np.testing.assert_array_equal(freq[keep[:, 0] == 0, 0], 1.0)
    np.testing.assert_array_equal(freq[keep[:, 1] == 1, 1], 1.0)
    tol = 4 * np.sqrt(0.25 / draws)  # 4 standard errors of a frequency with p = 1/2
    assert np.abs(freq[keep[:, 0], 0] - 0.5).max() < tol, freq
    assert np.abs(freq[~keep[:, 1], 1] - 0.5).max() < tol, freq
    for col, side in ((0, keep[:, 0]), (1, ~keep[:, 1])):
        pattern = uses[:, side, col] @ (1 << np.arange(side.sum()))
        values, counts = np.unique(pattern, return_counts=True)
        assert values.size == 6  # C(4, 2) subsets, each with probability 1/6
        tol = 4 * np.sqrt(1 / 6 * 5 / 6 / draws)
        assert np.abs(counts / draws - 1 / 6).max() < tol, counts


def test_degenerate_references_never_give_nan():
    r, n = 4, 5
    keep = np.zeros((r, n), dtype=bool)
    keep[:, 0] = True  # example 0: all references IN
    keep[:2, 2] = True  # example 2: balanced; example 1 and 3, 4: all OUT
    keep[:2, 4] = True
    inp = _input(r=r, n=n, keep=keep)
    conf = inp.ref_conf.copy()
    conf[:, 2, :] = 1.5  # zero variance on both sides
    conf[:, 4, :] = -40.0  # saturated and identical
    loss = np.logaddexp(0, -conf)
    inp = AttackInput(**{**inp.__dict__, "ref_conf": conf, "ref_loss": loss})
    one_ref = AttackInput(**{**inp.__dict__, "ref_conf": conf[:1], "ref_loss": loss[:1], "ref_keep": keep[:1],
                             "ref_pop_loss": inp.ref_pop_loss[:1]})
    no_in = AttackInput(**{**inp.__dict__, "ref_keep": np.zeros_like(keep)})
    for case in (inp, one_ref, no_in):
        for name in EXPECTED:
            s = run_attack(name, case)
            assert s.dtype == np.float64 and s.shape == (n,) and np.isfinite(s).all(), name


def test_reference_models_are_cyclic_and_exclude_the_target():
    np.testing.assert_array_equal(reference_models(3, 5, 2), [4, 0])
    np.testing.assert_array_equal(reference_models(3, 5, 4), [4, 0, 1, 2])
    for bad in (0, 5):
        with pytest.raises(UserError) as e:
            reference_models(3, 5, bad)
        assert e.value.field == "finetune.references"


def test_leave_one_out_pools_targets():
    signals, _ = gaussian_world(6, 10, 2, 12, 1.0, 1.0, seed=4, with_base=False)
    names = ["loss", "reference", "rmia-offline"]
    pooled = leave_one_out(signals, names, {"rmia-offline": {"gamma": 1.5}}, [4, 1], n_refs=3)
    assert set(pooled.scores) == {"loss", "rmia-offline"}
    assert "base" in pooled.skipped["reference"]
    np.testing.assert_array_equal(pooled.target, np.repeat([4, 1], 10))
    np.testing.assert_array_equal(pooled.example, np.tile(np.arange(10), 2))
    np.testing.assert_array_equal(pooled.labels, np.concatenate([signals.keep[4], signals.keep[1]]))
    for i, t in enumerate([4, 1]):
        inp = attack_input(signals, t, reference_models(t, 6, 3))
        np.testing.assert_array_equal(inp.ref_keep, signals.keep[[(t + 1) % 6, (t + 2) % 6, (t + 3) % 6]])
        rows = slice(i * 10, (i + 1) * 10)
        np.testing.assert_array_equal(pooled.scores["rmia-offline"][rows], run_attack("rmia-offline", inp, gamma=1.5))
    # the seed draws which references are dropped: same seed, same scores; another seed, others
    again = leave_one_out(signals, names, {"rmia-offline": {"gamma": 1.5}}, [4, 1], n_refs=3)
    reseeded = leave_one_out(signals, ["lira-online"], {}, [4, 1], n_refs=3, seed=9)
    np.testing.assert_array_equal(again.scores["rmia-offline"], pooled.scores["rmia-offline"])
    assert not np.array_equal(reseeded.scores["lira-online"],
                              leave_one_out(signals, ["lira-online"], {}, [4, 1], n_refs=3).scores["lira-online"])
    np.testing.assert_array_equal(reseeded.scores["lira-online"][10:],
                                  run_attack("lira-online", attack_input(signals, 1, reference_models(1, 6, 3), seed=9)))
    with pytest.raises(UserError):
        leave_one_out(signals, names, {}, [0], n_refs=6)
    with pytest.raises(UserError):
        leave_one_out(signals, names, {"lira-online": {}}, [0], n_refs=2)
    with pytest.raises(UserError):
        leave_one_out(signals, names, {}, [0, 0], n_refs=2)
