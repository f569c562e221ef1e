"""Signal jobs through the executor (``ctx.query``), on the local executor: chunked by
``engine.chunk``, the same arrays as one direct call, each chunk saved as it finishes, and every
registered signal resolvable by name (what a Ray worker does with a job)."""
import numpy as np
import pytest
import torch

from ftaudit.config import EngineConfig
from ftaudit.devices import Placement
from ftaudit.signals.classifier import classifier_signals
from ftaudit.signals.jobs import SIGNALS, SignalJob, run_signal_job, signal_fn
from ftaudit.store.runs import Store
from ftaudit.studies.base import Context
from ftaudit.train.engine import Engine
from tiny_groups import tiny_mlp_world


def _models(n: int):
    x, y, model, init = tiny_mlp_world(24)
    states = [{k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(m)) for k, v in init.items()}
              for m in range(n)]
    return model, states, {"views": torch.stack([x, x.flip(-1)]), "y": y}


def _ctx(tmp_path, chunk: int) -> Context:
    store = Store(tmp_path)
    return Context(store=store, engine=Engine(store.models, EngineConfig(chunk=chunk)))


def test_every_registered_signal_resolves():
    for name in SIGNALS:
        assert callable(signal_fn(name)), name
    with pytest.raises(ValueError, match="unknown signal 'nope'"):
        signal_fn("nope")


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_query_chunks_give_the_arrays_of_one_direct_call(chunk, tmp_path):
    model, states, inputs = _models(5)
    direct = classifier_signals(model, states, inputs["views"], inputs["y"])
    built: list[list[int]] = []

    def job(idx):
        built.append(idx)
        return SignalJob("classifier", model, [states[i] for i in idx], inputs)

    ctx = _ctx(tmp_path, chunk)
    keys = [ctx.signal_key(model=f"m{m}") for m in range(5)]
    entries = ctx.query(keys, job)
    assert built == [list(range(s, min(5, s + chunk))) for s in range(0, 5, chunk)]
    for name, value in direct.items():
        assert np.array_equal(np.stack([e[name] for e in entries]), value), name
    # a second call loads every entry and builds no job
    again = ctx.query(keys, job)
    assert len(built) == -(-5 // chunk)
    assert all(np.array_equal(a["loss"], b["loss"]) for a, b in zip(entries, again))


def test_a_failing_chunk_keeps_the_chunks_before_it(tmp_path):
    """A run killed (here: failing) mid-query keeps each chunk saved as it came back."""
    model, states, inputs = _models(4)
    ctx = _ctx(tmp_path, 2)
    keys = [ctx.signal_key(model=f"m{m}") for m in range(4)]

    def failing(idx):
        if idx[0] >= 2:
            raise RuntimeError("killed")
        return SignalJob("classifier", model, [states[i] for i in idx], inputs)

    with pytest.raises(RuntimeError, match="killed"):
        ctx.query(keys, failing)
    cache = ctx.store.arrays("signals")
    assert [cache.has_entry(k) for k in keys] == [True, True, False, False]
    built = []
    ctx.query(keys, lambda idx: built.append(idx) or SignalJob("classifier", model, [states[i] for i in idx], inputs))
    assert built == [[2, 3]]  # only what was missing


def test_a_split_makes_the_entries_and_a_short_one_is_refused(tmp_path):
    model, states, inputs = _models(3)
    ctx = _ctx(tmp_path, 3)
    keys = [ctx.signal_key(model=f"m{m}") for m in range(3)]
    job = lambda idx: SignalJob("classifier", model, [states[i] for i in idx], inputs)  # noqa: E731
    entries = ctx.query(keys, job, lambda arrays: [{"mean_loss": row.mean(keepdims=True)} for row in arrays["loss"]])
    assert [list(e) for e in entries] == [["mean_loss"]] * 3
    with pytest.raises(RuntimeError, match="1 entries for 3 models"):
        ctx.query([ctx.signal_key(model=f"other{m}") for m in range(3)], job, lambda arrays: [{"x": arrays["loss"]}])


def three_rows(template, states, inputs, device):
    return {"x": np.ones((3, 1))}


def test_a_signal_without_one_row_per_model_is_refused(monkeypatch):
    model, states, inputs = _models(2)
    monkeypatch.setitem(SIGNALS, "bad", f"{__name__}:three_rows")
    with pytest.raises(RuntimeError, match="one row per model"):
        run_signal_job(SignalJob("bad", model, states, inputs), Placement())
