import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.data.tokenizer import PAD_ID
from ftaudit.errors import UserError
from ftaudit.finetune.methods import check_frozen
from ftaudit.models.lm import initial_state, lm_arch_spec, load_pretrained, tiny_bert, tiny_gpt2
from ftaudit.store.cache import ModelCache, content_key
from ftaudit.train.engine import Engine, Job, TrainGroup
from ftaudit.train.objectives import IGNORE
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized

V, T = 97, 16


def _ids(n, seed, pad_from=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, V, (n, T), generator=g)  # ids 0..4 are the special tokens
    y = x.clone()
    if pad_from is not None:  # document-mode padding on every other row
        x[::2, pad_from:] = PAD_ID
        y[::2, pad_from:] = IGNORE
    return x, y


def test_gpt2_head_is_its_own_parameter():
    model = tiny_gpt2(V, T, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert "lm.lm_head.weight" in names and "lm.transformer.wte.weight" in names
    assert names == list(model.state_dict())  # no aliases: states carry each parameter once
    assert model.lm.lm_head.weight.data_ptr() != model.lm.transformer.wte.weight.data_ptr()
    model(_ids(3, 0)[0]).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())  # every parameter trains
    tied = tiny_gpt2(V, T, untie_head=False, seed=0)
    assert "lm.lm_head.weight" not in dict(tied.named_parameters())


def test_bert_has_no_unread_parameter_and_ignores_padding():
    model = tiny_bert(V, T, seed=0)
    assert "lm.cls.predictions.bias" not in model.state_dict()  # read only through the tie: removed
    assert list(model.state_dict()) == [n for n, _ in model.named_parameters()]
    x, _ = _ids(4, 1)
    model(x).logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    padded = torch.cat([x[:, :10], torch.full((4, 6), PAD_ID)], 1)
    torch.testing.assert_close(model(padded)[:, :10], model(x[:, :10]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tiny_bert(V, T, pad_id=None, seed=0)(padded)[:, :10], model(x[:, :10]), atol=1e-3)


def test_seeded_builds_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = tiny_gpt2(V, T, seed=7), tiny_gpt2(V, T, seed=7)
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(tiny_gpt2(V, T, seed=8).lm.lm_head.weight, a.lm.lm_head.weight)


@pytest.mark.parametrize("kind", ["causal-lm", "masked-lm"])
def test_vectorized_training_equals_the_per_model_loop(kind):
    model = tiny_gpt2(V, T, seed=0) if kind == "causal-lm" else tiny_bert(V, T, seed=0)
    x, y = _ids(24, 2, pad_from=11)
    init = initial_state(model)
    rows = [np.arange(0, 12), np.arange(8, 24)]
    schedule = make_schedule(rows, [0, 1], epochs=2, batch_size=6,
                             n_views=1 if kind == "causal-lm" else 10)
    trainable = [n for n, _ in model.named_parameters()]
    optim = OptimConfig(optimizer="adam", lr=3e-3)
    vec = train_vectorized(model, [init, init], trainable, optim, x, y, schedule, objective=kind, view_seed=5)
    loop = train_loop(model, [init, init], trainable, optim, x, y, schedule, objective=kind, view_seed=5)
    for a, b in zip(vec, loop):
        assert set(a) == set(init)
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4)
    assert not torch.equal(vec[0]["lm.lm_head.weight" if kind == "causal-lm" else "lm.cls.predictions.decoder.weight"],
                           vec[1]["lm.lm_head.weight" if kind == "causal-lm" else "lm.cls.predictions.decoder.weight"])


def test_tied_models_cannot_be_trained_by_the_engine():
    model = tiny_gpt2(V, T, untie_head=False, seed=0)
    x, y = _ids(8, 3)
    schedule = make_schedule([np.arange(8)], [0], epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="tied"):
        train_vectorized(model, [initial_state(model)], [n for n, _ in model.named_parameters()], OptimConfig(),
                         x, y, schedule, objective="causal-lm")


def test_engine_trains_the_head_alone_and_caches_by_content(tmp_path):
    model = tiny_gpt2(V, T, seed=0)
    x, y = _ids(16, 4)
    init = initial_state(model)
    engine = Engine(ModelCache(tmp_path), EngineConfig(vectorized=True, chunk=2))

    def group():
        return TrainGroup(name="lm-head", template=model, arch=lm_arch_spec(model), method="lm-head",
                          trainable=["lm.lm_head.weight"], optim=OptimConfig(lr=1e-2, epochs=2, batch_size=4),
                          x=x, y=y, data_digest=content_key(x=x.numpy()), objective="causal-lm",
                          jobs=[Job(init=init, rows=np.arange(0, 8), seed=0), Job(init=init, rows=np.arange(8, 16), seed=1)])

    first = engine.train(group())
    assert (first.trained, first.loaded) == (2, 0)
    states = first.states()
    for state in states:
        check_frozen(init, state, ["lm.lm_head.weight"])  # only the head moved; embeddings stay tied to nothing
        assert torch.equal(state["lm.transformer.wte.weight"], init["lm.transformer.wte.weight"])
    again = engine.train(group())
    assert (again.trained, again.loaded) == (0, 2)


@pytest.mark.parametrize("build", [lambda: tiny_gpt2(V, T, seed=1), lambda: tiny_bert(V, T, seed=1),
                                   lambda: tiny_gpt2(V, T, untie_head=False, seed=1)])
def test_save_pretrained_and_reload(tmp_path, build):
    model = build()
    model.lm.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.kind == model.kind and loaded.pad_id == model.pad_id
    x, _ = _ids(3, 5, pad_from=9)
    torch.testing.assert_close(loaded(x), model(x))
    assert list(loaded.state_dict()) == [n for n, _ in loaded.named_parameters()]  # untied, nothing unread
    if "lm.lm_head.weight" in dict(model.named_parameters()):  # an untied model reloads to the same key
        assert content_key(a=lm_arch_spec(loaded)) == content_key(a=lm_arch_spec(model))
        assert set(loaded.state_dict()) == set(model.state_dict())


def test_load_pretrained_rejects_missing_and_incomplete_models(tmp_path):
    with pytest.raises(UserError, match="cannot load model"):
        load_pretrained(tmp_path / "nope", local_files_only=True)
    model = tiny_gpt2(V, T, seed=2)
    model.lm.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["transformer.h.0.mlp.c_fc.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="no weights for transformer.h.0.mlp.c_fc.weight"):
        load_pretrained(tmp_path)
    with pytest.raises(UserError, match="unknown model kind"):
        load_pretrained(tmp_path, kind="seq2seq")


def test_mean_pooled_bert_classifier_reads_the_mean_hidden_state_and_keys_apart():
    """pooling='mean': the pooler (same parameters as HF's) sees the mean of the last hidden states,
    computed here independently; its cache key differs from the [CLS] classifier's, its encoder is the base's."""
    from ftaudit.models.lm import bert_classifier

    base = tiny_bert(V, T, n_layer=1, n_embd=16, seed=0)
    cls_model, cls_init = bert_classifier(base, 3, seed=1)
    mean_model, mean_init = bert_classifier(base, 3, seed=1, pooling="mean")
    assert set(cls_init) == set(mean_init) and all(torch.equal(cls_init[k], mean_init[k]) for k in cls_init)
    mean_model.load_state_dict(mean_init)
    ids = _ids(4, 0)[0]
    with torch.no_grad():
        hidden = mean_model.lm.bert(input_ids=ids).last_hidden_state
        pooled = torch.tanh(hidden.mean(1) @ mean_init["lm.bert.pooler.dense.weight"].T + mean_init["lm.bert.pooler.dense.bias"])
        expected = pooled @ mean_init["lm.classifier.weight"].T + mean_init["lm.classifier.bias"]
        torch.testing.assert_close(mean_model(ids), expected)
        cls_model.load_state_dict(cls_init)
        assert not torch.allclose(cls_model(ids), expected)
    assert content_key(arch=lm_arch_spec(cls_model)) != content_key(arch=lm_arch_spec(mean_model))
    assert "pooling" not in lm_arch_spec(cls_model)  # HF's own classifier keeps its earlier key
    with pytest.raises(ValueError, match="pooling"):
        bert_classifier(base, 3, seed=1, pooling="max")
