"""Every fine-tuning method on both vision nets: what trains, what stays, and that the vectorized
engine trains it exactly as the per-model loop does."""
import numpy as np
import pytest
import torch
from torch.func import functional_call

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.config_build import build_config
from ftaudit.data.keep import half_keep_matrix
from ftaudit.errors import UserError
from ftaudit.finetune.methods import METHODS, FrozenParameterError, MethodOptions, check_frozen, get_method, init_state
from ftaudit.models.vision import build_model
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized


def _base(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, hidden=[16, 8], channels=[4, 8]), 2)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return x, (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_only_its_parameters_and_vectorized_equals_loop(arch, name):
    base, base_state = _base(arch)
    method, opts = get_method(name), MethodOptions()
    model = method.build(base, opts)
    trainable = method.trainable(model, opts)
    init = init_state(model, base_state)
    x, y = _data()
    # a freshly built model computes its base's function (LoRA B and adapter up-projections start at 0)
    torch.testing.assert_close(functional_call(model, init, (x,)), base(x))
    rows = [np.flatnonzero(k) for k in half_keep_matrix(2, len(x), 0)]
    sch = make_schedule(rows, [0, 1], epochs=2, batch_size=8)
    optim = OptimConfig(optimizer="adam", lr=0.01)
    vec = train_vectorized(model, [init] * 2, trainable, optim, x, y, sch)
    loop = train_loop(model, [init] * 2, trainable, optim, x, y, sch)
    for a, b in zip(vec, loop):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=5e-5, rtol=1e-4)
    check_frozen(init, vec[0], trainable)  # frozen bit-identical, something trained
    moved = {k for k in trainable if not torch.equal(init[k], vec[0][k])}
    assert moved, name


def test_what_each_method_selects():
    base, _ = _base("cnn")
    sel = {name: get_method(name).trainable(get_method(name).build(base, MethodOptions()), MethodOptions())
           for name in METHODS}
    n_all = len(list(base.parameters()))
    assert len(sel["full"]) == n_all
    assert sel["head"] == ["head.weight", "head.bias"]
    assert sel["layers"] == ["blocks.block2.1.weight", "blocks.block2.1.bias", "head.weight", "head.bias"]
    assert all(n.endswith("bias") or n.startswith("head.") for n in sel["bitfit"])
    assert {n for n in sel["lora"] if "lora_" in n} and all("lora_" in n or n.startswith("head.") for n in sel["lora"])
    assert all(".adapter." in n or n.startswith("head.") for n in sel["adapters"])
    # named layers, last-k, and no head
    opts = MethodOptions(layers=("block0", "head"))
    assert get_method("layers").trainable(base, opts) == ["blocks.block0.0.weight", "blocks.block0.0.bias", "head.weight", "head.bias"]
    assert len(get_method("layers").trainable(base, MethodOptions(last_k=2))) == 6
    no_head = MethodOptions(train_head=False)
    assert not any(n.startswith("head.") for n in get_method("lora").trainable(get_method("lora").build(base, no_head), no_head))


def test_bad_layer_names_are_user_errors():
    base, _ = _base("mlp")
    with pytest.raises(UserError, match="finetune.layers"):
        get_method("layers").build(base, MethodOptions(layers=("block9",)))
    with pytest.raises(UserError, match="finetune.last_k"):
        get_method("layers").build(base, MethodOptions(last_k=5))
    with pytest.raises(UserError, match="finetune.adapter_targets"):
        get_method("adapters").build(base, MethodOptions(adapter_targets=("nope",)))
    with pytest.raises(UserError, match="finetune.method"):
        build_config(overrides=["finetune.method=prefix-tuning"])


def test_checkpoint_that_does_not_fit_is_refused():
    base, state = _base("mlp")
    other, _ = _base("cnn")
    with pytest.raises(ValueError, match="shape|do not fit"):
        init_state(get_method("lora").build(base, MethodOptions()), {**state, "head.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="do not fit"):
        init_state(base, {**state, "extra.weight": torch.zeros(1)})


def test_guardrail_catches_a_method_that_trains_nothing_or_too_much():
    base, state = _base("mlp")
    method = get_method("lora")
    model = method.build(base, MethodOptions())
    trainable = method.trainable(model, MethodOptions())
    init = init_state(model, state)
    with pytest.raises(FrozenParameterError, match="no trainable parameter changed"):
        check_frozen(init, {k: v.clone() for k, v in init.items()}, trainable)
    leaked = {k: v.clone() for k, v in init.items()}
    leaked["blocks.block0.1.base_layer.weight"] += 1e-3
    with pytest.raises(FrozenParameterError, match="frozen parameter"):
        check_frozen(init, leaked, trainable)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_every_method_builds_on_hf_language_models(kind):
    from ftaudit.models.lm import tiny_bert, tiny_gpt2

    base = (tiny_gpt2 if kind == "gpt2" else tiny_bert)(64, 16, seed=0)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    x = torch.randint(5, 64, (3, 16))
    head = "lm.lm_head." if kind == "gpt2" else "lm.cls."
    for name in METHODS:
        method = get_method(name)
        model = method.build(base, MethodOptions())
        trainable = method.trainable(model, MethodOptions())
        torch.testing.assert_close(functional_call(model, init_state(model, state), (x,)), base(x), atol=1e-5, rtol=1e-4)
        if name == "head":
            assert all(n.startswith(head) for n in trainable)
        if name in ("lora", "adapters"):
            assert any(".lora_" in n or ".adapter." in n for n in trainable)
            assert any(n.startswith(head) for n in trainable)
