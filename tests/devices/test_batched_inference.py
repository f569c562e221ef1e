"""Batched inference (many models per forward, vmap over stacked weights) against the per-model path."""
import numpy as np
import pytest
import torch

from ftaudit.config import ModelConfig
from ftaudit.signals import classifier
from ftaudit.signals.classifier import batched_logits, batched_pays, classifier_signals
from ftaudit.studies.vision import fresh_state


def _models(arch: str, n: int = 5):
    cfg = ModelConfig(arch=arch, hidden=[24, 16], channels=[4, 8])
    template, _ = fresh_state(cfg, 10, seed=0)
    return template, [fresh_state(cfg, 10, seed=s)[1] for s in range(n)]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_batched_logits_agree_with_the_per_model_path(arch, monkeypatch):
    template, states = _models(arch)
    x = torch.rand(70, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    one = batched_logits(template, states, x, batched=False)
    monkeypatch.setattr(classifier, "STACK_ROWS", 2 * 32)  # 2 models per forward: the model groups are joined
    many = batched_logits(template, states, x, input_chunk=32, batched=True)  # and the input chunks too
    assert one.shape == many.shape == (5, 70, 10)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)
    views = torch.stack([x, x.flip(-1)])
    y = torch.randint(0, 10, (70,), generator=torch.Generator().manual_seed(2))
    a = classifier_signals(template, states, views, y, batched=False)
    b = classifier_signals(template, states, views, y, batched=True)
    np.testing.assert_allclose(b["conf"], a["conf"], atol=1e-4)
    assert (a["correct"] == b["correct"]).mean() > 0.99


def test_the_rule_stacks_small_models_on_an_accelerator_only():
    _, states = _models("mlp", 1)
    assert not batched_pays(states[0], torch.device("cpu"))  # CPU: bit-identical to the per-model path
    assert batched_pays(states[0], torch.device("cuda"))
    huge = {"w": torch.empty(classifier.STACK_BYTES // 4, dtype=torch.float32)}
    assert not batched_pays(huge, torch.device("cuda"))
    template, states = _models("mlp", 3)
    x = torch.rand(9, 1, 8, 8)
    assert torch.equal(batched_logits(template, states, x), batched_logits(template, states, x, batched=False))
