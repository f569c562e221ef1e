"""Packed LoRA against peft: the same numbers as peft's LoRA trained one model at a time."""
import numpy as np
import pytest
import torch

from ftaudit.config import OptimConfig
from ftaudit.finetune.methods import MethodOptions, check_frozen, get_method, init_state
from ftaudit.finetune import packed_lora
from ftaudit.finetune.packed_lora import NotPackable, PackedModel, chunks, packable, train_packed_lora
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.models.vision import mlp
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop

LORA = get_method("lora")


def lora_world(n_models: int, seed: int = 0):
    """A tiny GPT-2 (Conv1D projections) with peft LoRA; every model starts with its own random B
    (peft's B is zero, which would make the update invisible to a forward test)."""
    base = tiny_gpt2(97, 16, n_layer=2, n_embd=32, n_head=2, seed=seed)
    opts = MethodOptions(lora_rank=4, lora_alpha=8.0)
    torch.manual_seed(seed)
    template = LORA.build(base, opts)
    trainable = LORA.trainable(template, opts)
    start = init_state(template, initial_state(base))
    g = torch.Generator().manual_seed(seed + 1)
    inits = []
    for _ in range(n_models):
        state = {k: v.clone() for k, v in start.items()}
        for k in state:
            if ".lora_" in k:
                state[k] = torch.randn(state[k].shape, generator=g) * 0.1
        inits.append(state)
    return template, inits, trainable


@pytest.mark.parametrize("n_models", [1, 3])
def test_forward_matches_peft_per_model(n_models):
    template, inits, trainable = lora_world(n_models)
    ids = torch.randint(0, 97, (n_models, 5, 16), generator=torch.Generator().manual_seed(0))
    packed = PackedModel(template, inits, trainable)
    with torch.no_grad():
        got = packed(ids)
        for m in range(n_models):
            template.load_state_dict(inits[m])
            assert torch.allclose(got[m], template(ids[m]), atol=1e-5)
        base = tiny_gpt2(97, 16, n_layer=2, n_embd=32, n_head=2, seed=0)  # the same base without the updates
        assert (got[0] - base(ids[0])).abs().max() > 1e-2


@pytest.mark.parametrize("n_models,pack_rows", [(1, None), (3, None), (3, 8), (3, 4)])
def test_training_matches_peft_trained_one_at_a_time(n_models, pack_rows):
    """All models in one forward, or in groups of whole models (8 rows: 2 + 1 models; 4 rows: one
    model per forward): the same models as peft trained one at a time."""
    template, inits, trainable = lora_world(n_models, seed=1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 97, size=(24, 16)))
    rows = [np.sort(rng.choice(24, size=12, replace=False)) for _ in range(n_models)]
    optim = OptimConfig(optimizer="adam", lr=1e-2, epochs=2, batch_size=4)
    schedule = make_schedule(rows, list(range(n_models)), optim.epochs, optim.batch_size)
    packed = train_packed_lora(template, inits, trainable, optim, x, x, schedule, objective="causal-lm",
                               pack_rows=pack_rows)
    peft = train_loop(template, inits, trainable, optim, x, x, schedule, objective="causal-lm")
    for m in range(n_models):
        check_frozen(inits[m], packed[m], trainable)  # frozen bit-identical, every trainable moved
        assert packed[m].keys() == peft[m].keys()
        for name in trainable:
            assert torch.allclose(packed[m][name], peft[m][name], atol=1e-5), name
        moved = max((packed[m][n] - inits[m][n]).abs().max().item() for n in trainable)
        assert moved > 1e-3  # six Adam steps at 1e-2 really moved the weights


def test_linear_layers_and_the_classification_objective():
    """nn.Linear projections (the vision MLP) pack too, head included."""
    torch.manual_seed(0)
    base = mlp([32, 16], 10)
    template = LORA.build(base, MethodOptions(lora_rank=2))
    trainable = LORA.trainable(template, MethodOptions(lora_rank=2))
    inits = [init_state(template, {k: v.detach() for k, v in base.state_dict().items()})] * 2
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((20, 1, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 20))
    rows = [np.arange(0, 12), np.arange(8, 20)]
    optim = OptimConfig(optimizer="adam", lr=1e-2, epochs=2, batch_size=5)
    schedule = make_schedule(rows, [3, 4], optim.epochs, optim.batch_size)
    packed = train_packed_lora(template, inits, trainable, optim, x, y, schedule, objective="classification")
    ref = train_loop(template, inits, trainable, optim, x, y, schedule, objective="classification")
    for m in range(2):
        for name in trainable:
            assert torch.allclose(packed[m][name], ref[m][name], atol=1e-5), name


def test_groups_that_are_not_lora_on_one_base_are_refused():
    template, inits, trainable = lora_world(2)
    assert packable(template, inits, trainable)
    full = get_method("full").trainable(template)
    assert not packable(template, inits, full)
    with pytest.raises(NotPackable, match="LoRA matrices and Linear layers only"):
        PackedModel(template, inits, full)
    other = dict(inits[1])
    other["lm.transformer.wte.weight"] = other["lm.transformer.wte.weight"] + 1
    with pytest.raises(NotPackable, match="one base"):
        PackedModel(template, [inits[0], other], trainable)


def test_chunks_hold_whole_models_within_the_row_budget():
    assert chunks(5, 4, None) == [slice(0, 5)]
    assert chunks(5, 4, 8) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert chunks(3, 16, 8) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # one model even above the budget


def test_engine_trains_lora_groups_packed_when_asked(tmp_path, monkeypatch):
    """engine.packed_lora routes a LoRA group through the packed trainer (same models as the loop);
    a group it cannot pack (full fine-tuning) falls back to the configured trainer."""
    from ftaudit.config import EngineConfig
    from ftaudit.store.cache import ModelCache
    from ftaudit.train.engine import Engine, Job, TrainGroup

    template, inits, trainable = lora_world(2, seed=2)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 97, size=(16, 16)))
    optim = OptimConfig(optimizer="adam", lr=1e-2, epochs=1, batch_size=4)
    calls = []
    real = packed_lora.train_packed_lora
    monkeypatch.setattr("ftaudit.train.executor.train_packed_lora",
                        lambda *a, **k: calls.append(k["pack_rows"]) or real(*a, **k))

    def group(names):
        return TrainGroup(name="g", template=template, arch={"t": "gpt2"}, method="lora", method_options={},
                          trainable=names, optim=optim, x=x, y=x, data_digest="0" * 16, objective="causal-lm",
                          jobs=[Job(init=i, rows=np.arange(8 * m, 8 * m + 8), seed=m) for m, i in enumerate(inits)])

    packed = Engine(ModelCache(tmp_path / "p"), EngineConfig(packed_lora=True, pack_rows=4)).train(group(trainable))
    loop = Engine(ModelCache(tmp_path / "l"), EngineConfig(vectorized=False)).train(group(trainable))
    assert calls == [4]
    assert not set(packed.keys) & set(loop.keys)  # the trainer is part of the key: equal to tolerance, not bit for bit
    for a, b in zip(packed.states(), loop.states()):
        for name in trainable:
            assert torch.allclose(a[name], b[name], atol=1e-5), name
    Engine(ModelCache(tmp_path / "f"), EngineConfig(packed_lora=True, vectorized=False)).train(
        group(get_method("full").trainable(template)))
    assert calls == [4]  # not packable: trained by the loop
