import numpy as np
import pytest
import torch

from ftaudit.config import EngineConfig, ModelConfig, OptimConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.finetune.methods import FrozenParameterError, check_frozen, get_method
from ftaudit.models.vision import build_model
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, Job, TrainGroup
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized


def _problem(arch="mlp", n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, hidden=[16], channels=[4, 8]), 2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    return model, init, x, y


def test_schedule_same_steps_for_every_model_and_each_row_once_per_epoch():
    rows = [np.arange(0, 10), np.arange(20, 27)]
    sch = make_schedule(rows, [1, 2], epochs=3, batch_size=4)
    assert sch.steps == 3 * 3
    for m, r in enumerate(rows):
        for e in range(3):
            seen = np.concatenate([sch.batch(e * 3 + s, m) for s in range(3)])
            assert sorted(seen) == list(r)
    assert not np.array_equal(sch.batch(0, 0), make_schedule(rows, [9, 2], 3, 4).batch(0, 0))


@pytest.mark.parametrize("arch,method,optimizer,augment", [
    ("mlp", "full", "adam", 0), ("mlp", "head", "sgd", 0), ("cnn", "full", "sgd", 0), ("mlp", "full", "sgd", 1)])
def test_vectorized_equals_per_model_loop(arch, method, optimizer, augment):
    model, init, x, y = _problem(arch)
    keep = half_keep_matrix(4, len(x), 0)
    rows = [np.flatnonzero(k) for k in keep]
    sch = make_schedule(rows, [0, 1, 2, 3], epochs=2, batch_size=8, n_views=1 + 4 * augment)
    assert (sch.view is not None) == bool(augment)
    trainable = get_method(method).trainable(model)
    optim = OptimConfig(optimizer=optimizer, lr=0.05, augment=augment)
    inits = [init] * 4
    vec = train_vectorized(model, inits, trainable, optim, x, y, sch)
    loop = train_loop(model, inits, trainable, optim, x, y, sch)
    for a, b in zip(vec, loop):
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    # different keep-rows and seeds give different models
    assert not torch.equal(vec[0]["head.weight"], vec[1]["head.weight"])


def test_head_method_freezes_the_body():
    model, init, x, y = _problem()
    rows = [np.arange(len(x))]
    trainable = get_method("head").trainable(model)
    assert trainable == ["head.weight", "head.bias"]
    (state,) = train_vectorized(model, [init], trainable, OptimConfig(lr=0.05), x, y, make_schedule(rows, [0], 2, 8))
    check_frozen(init, state, trainable)
    assert torch.equal(state["blocks.block0.1.weight"], init["blocks.block0.1.weight"])


def test_guardrail_catches_changed_frozen_and_unchanged_trainable():
    model, init, _, _ = _problem()
    moved = {k: v.clone() for k, v in init.items()}
    moved["blocks.block0.1.bias"] += 1
    with pytest.raises(FrozenParameterError, match="frozen"):
        check_frozen(init, moved, ["head.weight"])
    with pytest.raises(FrozenParameterError, match="no trainable"):
        check_frozen(init, init, ["head.weight"])


def test_engine_caches_by_content_and_trains_only_missing(tmp_path):
    model, init, x, y = _problem()
    keep = half_keep_matrix(4, len(x), 0)

    def group(seeds):
        return TrainGroup(name="t", template=model, arch={"a": 1}, method="full", trainable=get_method("full").trainable(model),
                          optim=OptimConfig(lr=0.05, epochs=2, batch_size=8), x=x, y=y, data_digest="d",
                          jobs=[Job(init=init, rows=np.flatnonzero(k), seed=s) for k, s in zip(keep, seeds)])

    engine = Engine(ModelCache(tmp_path), EngineConfig(chunk=2))
    first = engine.train(group([0, 1, 2, 3]))
    assert (first.trained, first.loaded) == (4, 0)
    again = engine.train(group([0, 1, 2, 3]))
    assert (again.trained, again.loaded) == (0, 4)
    changed = engine.train(group([0, 1, 2, 99]))
    assert (changed.trained, changed.loaded) == (1, 3)
    # a model trained alone, by the per-model path, equals the one trained in a vectorized group to
    # float tolerance — not bit for bit, so the trainer is part of the key and nothing is shared
    in_group = first.states([3])[0]
    alone = Engine(ModelCache(tmp_path), EngineConfig(chunk=1, vectorized=False)).train(group([0, 1, 2, 3]))
    assert alone.trained == 4 and not set(alone.keys) & set(first.keys)
    assert Engine(ModelCache(tmp_path), EngineConfig(vectorized=False)).train(group([0, 1, 2, 3])).loaded == 4
    # the study's preference decides only while engine.vectorized is unset
    assert Engine(ModelCache(tmp_path), EngineConfig()).train(group([0, 1, 2, 3]), vectorized=False).keys == alone.keys
    assert Engine(ModelCache(tmp_path), EngineConfig(vectorized=True)).train(group([0, 1, 2, 3]), vectorized=False).keys == first.keys
    for name, t in alone.states([3])[0].items():
        torch.testing.assert_close(t, in_group[name], atol=1e-5, rtol=1e-4)
    assert not list(tmp_path.rglob("*.tmp"))


def test_engine_trains_dp_groups_with_calibrated_noise_and_records_the_accounting(tmp_path):
    from ftaudit.dp.spec import DPSpec

    model, init, x, y = _problem()
    trainable = get_method("full").trainable(model)
    optim = OptimConfig(optimizer="adam", lr=0.01, epochs=2)
    specs = [DPSpec(epsilon=e, delta=1e-5, clip=c, accountant="rdp", sample_rate=0.25, epochs=2)
             for e, c in ((1.0, 1.0), (4.0, 0.5), (float("inf"), 1.0))]
    rows = np.arange(len(x))
    group = TrainGroup(name="dp", template=model, arch={"a": 1}, method="full", trainable=trainable, optim=optim,
                       x=x, y=y, data_digest="d", jobs=[Job(init=init, rows=rows, seed=1, dp=s) for s in specs])
    engine = Engine(ModelCache(tmp_path), EngineConfig())
    result = engine.train(group)
    assert result.trained == 3 and len(set(group.keys)) == 3
    eps = [r["epsilon"] for r in result.dp_jobs]
    assert eps[0] <= 1.0 and eps[0] > 0.99 and eps[1] <= 4.0 and eps[2] == float("inf")
    assert result.dp_jobs[2]["noise_multiplier"] == 0.0 and result.dp_jobs[0]["noise_multiplier"] > result.dp_jobs[1]["noise_multiplier"]
    states = result.states()
    assert not torch.equal(states[0]["head.weight"], states[1]["head.weight"])
    assert engine.train(group).trained == 0  # cached, and the accounting is still reported
    with pytest.raises(ValueError, match="mixes DP"):
        TrainGroup(name="mixed", template=model, arch={"a": 1}, method="full", trainable=trainable, optim=optim,
                   x=x, y=y, data_digest="d", jobs=[Job(init=init, rows=rows, seed=1, dp=specs[0]), Job(init=init, rows=rows, seed=2)])


def test_dp_record_holds_the_accounted_epsilon_not_the_target():
    from ftaudit.dp.accounting import accounted_epsilon
    from ftaudit.dp.spec import DPSpec

    record = DPSpec(epsilon=2.0, delta=1e-5, clip=1.0, accountant="rdp", sample_rate=0.1, epochs=3).resolve()
    assert record["target_epsilon"] == 2.0
    assert record["epsilon"] == accounted_epsilon(record["noise_multiplier"], 0.1, record["steps"], 1e-5)
    assert record["epsilon"] != 2.0 and 0.99 * 2.0 < record["epsilon"] <= 2.0
