"""Injection and poison schedules, the determinism switch and the checkpoint cache (ftaudit.train.inject)."""
import numpy as np
import pytest
import torch

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.models.vision import build_model
from ftaudit.store.runs import Store
from ftaudit.studies.base import Context
from ftaudit.train.schedule import steps_per_epoch
from ftaudit.train.inject import (concat, epochs_for, inject, injection_plan, model_seeds, pass_width,
                                  train_checkpointed)


def seen(schedule, model: int, row: int) -> list[int]:
    """The steps at which `model` really trains on `row` (mask 1)."""
    return [s for s in range(schedule.steps) if row in schedule.batch(s, model).tolist()]


def test_plan_states_each_examples_steps():
    rows = np.arange(100, 112)
    plan = injection_plan(rows, [1, 1, 1, 1, 3, 3, 3, 3, 8, 8, 8, 8], last_step=60, gap=6, per_step=3)
    w = pass_width(12, 3)
    assert w == 4
    for i, (steps, r) in enumerate(zip(plan.steps, [1] * 4 + [3] * 4 + [8] * 4)):
        expected = sorted(60 - (w - 1) + i % w - 6 * q for q in range(r))
        assert steps.tolist() == expected
    assert plan.repetitions.tolist() == [1] * 4 + [3] * 4 + [8] * 4
    assert (plan.last_seen <= 60).all() and (plan.last_seen >= 60 - w + 1).all()
    with pytest.raises(ValueError, match="overlap"):
        injection_plan(rows, [2] * 12, last_step=60, gap=3, per_step=3)
    with pytest.raises(ValueError, match="start at step"):
        injection_plan(rows, [8] * 12, last_step=20, gap=6, per_step=3)


def test_injected_example_is_seen_exactly_r_times_at_the_stated_steps_by_in_models_only():
    n_models, shared = 4, np.arange(40)
    injected = np.arange(40, 52)
    repeats = [1] * 4 + [2] * 4 + [4] * 4
    keep = half_keep_matrix(n_models, len(injected), 0)
    seeds = model_seeds(0, "t", n_models, deterministic=False)
    base = epochs_for([shared] * n_models, seeds, 80, 8, n_views=5)
    plan = injection_plan(injected, repeats, last_step=50, gap=8, per_step=4)
    sched = inject(base, plan, keep, seeds, n_views=5)
    assert sched.steps == 80 and sched.view is not None
    for m in range(n_models):
        for i, row in enumerate(injected):
            expected = plan.steps[i].tolist() if keep[m, i] else []
            assert seen(sched, m, int(row)) == expected
            assert len(expected) in (0, repeats[i])
        # the shared rows keep their columns and augmentation draws: the base schedule is untouched
        width = base.index.shape[2]
        assert np.array_equal(sched.index[:, m, :width], base.index[:, m])
        assert np.array_equal(sched.view[:, m, :width], base.view[:, m])
        assert (sched.mask[:, m, width:].sum(axis=1) <= 4).all()


def test_poison_phase_comes_first_and_never_again():
    n_models, shared, sensitive = 4, np.arange(30), np.arange(30, 50)
    keep = half_keep_matrix(n_models, len(sensitive), 1)
    seeds = model_seeds(0, "p", n_models, deterministic=True)
    kept = [sensitive[k] for k in keep]
    phase = 3 * steps_per_epoch(kept, 4)  # 3 epochs of the longest keep-row
    sched = concat(epochs_for(kept, seeds, phase, 4), epochs_for([shared] * n_models, seeds, 25, 8))
    assert sched.steps == phase + 25
    for m in range(n_models):
        for i, row in enumerate(sensitive):
            steps = seen(sched, m, int(row))
            assert len(steps) == (3 if keep[m, i] else 0) and all(s < phase for s in steps)
        assert set(np.concatenate([sched.batch(s, m) for s in range(phase, phase + 25)]).tolist()) == set(shared.tolist())


def test_model_seeds_shared_only_when_deterministic():
    assert len(set(model_seeds(3, "x", 6, deterministic=True))) == 1
    assert len(set(model_seeds(3, "x", 6, deterministic=False))) == 6


# ---------------------------------------------------------------------------------- training


def _job(deterministic: bool, run_seed: int = 0, n_models: int = 4):
    torch.manual_seed(0)
    x = torch.rand(60, 1, 8, 8)
    y = torch.randint(0, 10, (60,))
    cfg = ModelConfig(arch="mlp", hidden=[16])
    seeds = model_seeds(run_seed, "job", n_models, deterministic)
    inits = []
    for s in seeds:
        torch.manual_seed(s)
        inits.append({k: v.detach().clone() for k, v in build_model(cfg, 10).state_dict().items()})
    injected = np.arange(40, 60)
    keep = half_keep_matrix(n_models, 20, 0)
    keep[1] = keep[0]  # two models with the same keep-row
    base = epochs_for([np.arange(40)] * n_models, seeds, 30, 8, n_views=5)
    sched = inject(base, injection_plan(injected, [2] * 20, 15, 6, 5), keep, seeds, n_views=5)
    template = build_model(cfg, 10)
    optim = OptimConfig(lr=0.01, batch_size=8, augment=1, epochs=1)

    def measure(states):
        return {"w": torch.stack([s["head.weight"] for s in states]).numpy()}

    def run(cache_dir):
        ctx = Context(store=Store(cache_dir), engine=None)  # the study's ctx.cached, bound to a kind
        return train_checkpointed(lambda keys, compute: ctx.cached("signals", keys, compute), template, {"arch": "mlp"},
                                  inits, list(inits[0]), optim, x, y, "ab" * 32, sched, [16, 30], measure, "m1", ["w"],
                                  deterministic)
    return run


def test_determinism_switch_gives_bit_identical_runs(tmp_path):
    run = _job(deterministic=True)
    a, b = run(tmp_path / "a"), run(tmp_path / "b")  # separate caches: both really train
    assert a.trained and b.trained
    for sa, sb in zip(a.final, b.final):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(np.array_equal(p["w"], q["w"]) for p, q in zip(a.signals, b.signals))
    # shared seeds: the only difference between models is their injected rows
    assert all(torch.equal(a.final[0][k], a.final[1][k]) for k in a.final[0])
    assert not all(torch.equal(a.final[0][k], a.final[2][k]) for k in a.final[0])


def test_nondeterministic_runs_differ_by_seed(tmp_path):
    a = _job(deterministic=False, run_seed=0)(tmp_path / "a")
    b = _job(deterministic=False, run_seed=1)(tmp_path / "b")
    assert not torch.equal(a.final[0]["head.weight"], b.final[0]["head.weight"])
    # own seeds: models with the same keep-row still differ
    assert not torch.equal(a.final[0]["head.weight"], a.final[1]["head.weight"])


def test_checkpoint_signals_come_from_the_cache_on_rerun(tmp_path):
    run = _job(deterministic=True)
    first = run(tmp_path)
    again = run(tmp_path)
    assert first.trained and not again.trained and again.final is None
    assert again.key == first.key and again.steps == [16, 30]
    assert all(np.array_equal(p["w"], q["w"]) for p, q in zip(first.signals, again.signals))
    # the checkpoint after step 16 differs from the final one (it was measured mid-run)
    assert not np.array_equal(first.signals[0]["w"], first.signals[1]["w"])
    assert np.array_equal(first.signals[1]["w"], torch.stack([s["head.weight"] for s in first.final]).numpy())
