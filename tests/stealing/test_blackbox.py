"""The victim's API: it exposes what an API would (answers, a query count) and nothing else; the
attacker times its own calls."""
import numpy as np
import pytest
import torch
from torch import nn

from ftaudit.models.lm import bert_classifier, tiny_bert
from ftaudit.studies.stealing.blackbox import BlackBox, QueryBudgetExceeded
from ftaudit.studies.stealing.latency import timed_call

PUBLIC = {"query", "queries_used", "n_classes", "top1"}


@pytest.fixture(scope="module")
def victim():
    base = tiny_bert(60, 16, n_layer=1, n_embd=16, seed=0)
    model, init = bert_classifier(base, 3, seed=1)
    init["lm.classifier.weight"] = init["lm.classifier.weight"] * 10  # answers that differ between inputs
    model.load_state_dict(init)
    return model.eval()


def ids(n, length=16, seed=0):
    return np.random.default_rng(seed).integers(1, 60, size=(n, length))


def test_public_surface_is_only_the_api(victim):
    bb = BlackBox(victim)
    assert {name for name in dir(bb) if not name.startswith("_")} == PUBLIC
    with pytest.raises(TypeError):
        vars(bb)  # __slots__: no instance dict to hold the model
    with pytest.raises(AttributeError):
        bb.model = victim  # nor can one be attached
    held = [getattr(bb, slot) for slot in type(bb).__slots__]
    assert not any(isinstance(v, (nn.Module, torch.Tensor, dict)) for v in held)


def test_probabilities_are_the_models_softmax_and_top1_its_argmax(victim):
    x = ids(12)
    with torch.no_grad():
        expected = torch.softmax(victim(torch.from_numpy(x)).double(), -1).numpy()
    probs = BlackBox(victim).query(x)
    assert isinstance(probs, np.ndarray) and probs.shape == (12, 3)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert len(set(probs.argmax(1))) > 1  # the fixture's answers vary, so the comparison means something
    labels = BlackBox(victim, top1=True).query(x)
    assert labels.shape == (12,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected.argmax(1))
    assert BlackBox(victim).n_classes == 3 and BlackBox(victim, top1=True).top1


def test_queries_are_counted_and_a_budget_is_enforced(victim):
    bb = BlackBox(victim, budget=10)
    assert bb.queries_used == 0
    bb.query(ids(4))
    answers, seconds = timed_call(bb.query, ids(6))
    assert bb.queries_used == 10 and seconds > 0 and answers.shape == (6, 3)
    with pytest.raises(QueryBudgetExceeded):
        bb.query(ids(1))
    assert bb.queries_used == 10  # a refused query is not charged


@pytest.mark.parametrize("bad,match", [
    (np.zeros(16, dtype=np.int64), "2-D"),
    (np.zeros((2, 16), dtype=np.float32), "integer"),
    (np.full((2, 16), 99), r"\[0, 60\)"),
    (np.full((2, 16), -1), r"\[0, 60\)"),
    (np.zeros((9, 16), dtype=np.int64), "maximum of 8"),
])
def test_bad_queries_are_refused_and_not_charged(victim, bad, match):
    bb = BlackBox(victim, max_batch=8, vocab_size=60)
    with pytest.raises(ValueError, match=match):
        bb.query(bad)
    assert bb.queries_used == 0


def test_queries_leave_the_model_unchanged_and_carry_no_graph(victim):
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    out = BlackBox(victim).query(ids(5))
    assert not isinstance(out, torch.Tensor)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert not victim.training
