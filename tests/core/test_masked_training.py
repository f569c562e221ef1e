import numpy as np
import pytest
import torch

from ftaudit.config import EngineConfig, ModelConfig, OptimConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.finetune.methods import get_method
from ftaudit.finetune.packed_lora import NotPackable, train_packed_lora
from ftaudit.models.vision import build_model
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, Job, TrainGroup
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized


def _problem(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="mlp", hidden=[16]), 2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    return model, init, x, y


def _masks(init, trainable, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.rand(init[n].shape, generator=g) < p).float() for n in trainable}


@pytest.mark.parametrize("optim", [OptimConfig(optimizer="adam", lr=0.05),
                                   OptimConfig(optimizer="adam", lr=0.05, weight_decay=0.1),
                                   OptimConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.1)])
def test_masked_elements_stay_bit_identical_and_vectorized_equals_loop(optim):
    model, init, x, y = _problem()
    trainable = get_method("full").trainable(model)
    masks = _masks(init, trainable[:-1])  # the last trainable tensor trains in full
    rows = [np.flatnonzero(k) for k in half_keep_matrix(4, len(x), 0)[:3]]
    sch = make_schedule(rows, [0, 1, 2], epochs=2, batch_size=8)
    vec = train_vectorized(model, [init] * 3, trainable, optim, x, y, sch, masks=masks)
    loop = train_loop(model, [init] * 3, trainable, optim, x, y, sch, masks=masks)
    for state in vec + loop:
        for name, m in masks.items():
            frozen = ~m.bool()
            assert torch.equal(state[name][frozen], init[name][frozen]), name
            assert not torch.equal(state[name][~frozen], init[name][~frozen]), name
        assert not torch.equal(state[trainable[-1]], init[trainable[-1]])
    for a, b in zip(vec, loop):
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


def test_packed_lora_refuses_masks():
    model, init, x, y = _problem()
    trainable = get_method("full").trainable(model)
    sch = make_schedule([np.arange(8)], [0], 1, 8)
    with pytest.raises(NotPackable):
        train_packed_lora(model, [init], trainable, OptimConfig(), x, y, sch, masks=_masks(init, trainable))


def test_engine_masks_key_cache_and_validation(tmp_path):
    model, init, x, y = _problem()
    trainable = get_method("full").trainable(model)

    def group(masks, **kw):
        return TrainGroup(name="m", template=model, arch={"a": 1}, method="full", trainable=trainable,
                          optim=OptimConfig(lr=0.05, epochs=1, batch_size=8), x=x, y=y, data_digest="d",
                          jobs=[Job(init=init, rows=np.arange(32), seed=s) for s in (0, 1)], masks=masks, **kw)

    masks = _masks(init, trainable[:2])
    plain, masked = group(None), group(masks)
    assert plain.keys != masked.keys and group({}).keys == plain.keys
    assert group({n: m.bool() for n, m in masks.items()}).keys == masked.keys  # dtype-independent
    assert group(_masks(init, trainable[:2], seed=1)).keys != masked.keys
    engine = Engine(ModelCache(tmp_path), EngineConfig(chunk=2, packed_lora=True))
    first = engine.train(masked)
    assert (first.trained, first.loaded) == (2, 0)
    again = engine.train(group({n: m.clone() for n, m in masks.items()}))
    assert (again.trained, again.loaded) == (0, 2)
    for state in first.states():
        for name, m in masks.items():
            assert torch.equal(state[name][~m.bool()], init[name][~m.bool()])

    name = trainable[0]
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*shape"):
        group({name: torch.ones(3, 3)})
    with pytest.raises(ValueError, match="nope"):
        group({"nope": torch.ones(1)})
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*all zero"):
        group({name: torch.zeros_like(init[name])})
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*0 and 1"):
        group({name: torch.full_like(init[name], 0.5)})
    from ftaudit.dp.spec import DPSpec
    dp = DPSpec(epsilon=1.0, delta=1e-5, clip=1.0, accountant="rdp", sample_rate=0.25, epochs=1)
    with pytest.raises(ValueError, match="not supported with DP"):
        group(masks, dp=dp)
