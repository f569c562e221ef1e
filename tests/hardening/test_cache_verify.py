"""Cache entries are verified when read: a bad one is discarded with a warning and recomputed, never used."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from faultlib import N_MODELS, assert_doctor_clean, complete_runs, copy_store, run_inprocess
from ftaudit.config import EngineConfig, ModelConfig, OptimConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.finetune.methods import get_method
from ftaudit.models.vision import build_model
from ftaudit.store.cache import ArrayCache, BadEntry, JsonCache, ModelCache, state_spec
from ftaudit.store.db import RunDB
from ftaudit.train.engine import Engine, Job, TrainGroup

KEY = "ab" * 32


def _state():
    return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last tensor byte: the header still parses
    path.write_bytes(bytes(data))


def scale_weights(path):
    header = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file({k: v * 1.5 for k, v in header.items()}, str(path), metadata=meta)  # the old digest kept


def unrelated_file(path):
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(path))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def other_models_file(path):
    """A sound entry of another key copied over this one: its own digest matches, its key does not."""
    other = ModelCache(path.parents[2])
    other.save("cd" * 32, {k: v + 1 for k, v in load_file(str(path)).items()})
    path.write_bytes(other.path("cd" * 32).read_bytes())


CORRUPTIONS = {"flipped byte": flip_byte, "scaled weights": scale_weights, "unrelated file": unrelated_file,
               "truncated": truncate, "another model's file": other_models_file}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_bad_model_entry_is_never_loaded(corrupt, tmp_path):
    cache = ModelCache(tmp_path)
    cache.save(KEY, _state())
    assert cache.usable(KEY, state_spec(_state()))
    corrupt(cache.path(KEY))
    with pytest.raises(BadEntry, match=str(cache.path(KEY))):
        cache.load(KEY, state_spec(_state()))


def test_model_keys_and_shapes_are_checked_against_the_template(tmp_path, caplog):
    cache = ModelCache(tmp_path)
    cache.save(KEY, _state())
    spec = state_spec(_state())
    for wrong in ({**spec, "extra": ((1,), torch.float32)}, {"w": spec["w"]}, {**spec, "b": ((3,), torch.float32)},
                  {**spec, "b": ((2,), torch.float64)}):
        with pytest.raises(BadEntry):
            cache.load(KEY, wrong)
    with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
        assert not cache.usable(KEY, {"w": spec["w"]})  # an unexpected tensor: discarded, never a silent fallback
    assert not cache.path(KEY).exists()
    assert any(r.name == "ftaudit.store" and "discarding model cache entry" in r.getMessage() for r in caplog.records)


def test_an_entry_without_a_digest_is_not_trusted(tmp_path):
    cache = ModelCache(tmp_path)
    cache.path(KEY).parent.mkdir(parents=True)
    save_file(_state(), str(cache.path(KEY)))  # as an older ftaudit wrote them
    assert not cache.usable(KEY, state_spec(_state())) and not cache.path(KEY).exists()


def _group(x, y, model, init):
    keep = half_keep_matrix(2, len(x), 0)
    return TrainGroup(name="t", template=model, arch={"a": 1}, method="full", trainable=get_method("full").trainable(model),
                      optim=OptimConfig(lr=0.05, epochs=2, batch_size=8), x=x, y=y, data_digest="d",
                      jobs=[Job(init=init, rows=np.flatnonzero(k), seed=s) for k, s in zip(keep, [0, 1])])


@pytest.mark.parametrize("corrupt", [flip_byte, unrelated_file], ids=["flipped byte (found on load)",
                                                                     "unrelated file (found before training)"])
def test_the_engine_retrains_a_bad_model_to_the_same_weights(corrupt, tmp_path, caplog):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 2, (32,), generator=g)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", hidden=[8]), 2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    engine = Engine(ModelCache(tmp_path), EngineConfig())
    first = engine.train(_group(x, y, model, init))
    good = first.states()
    corrupt(engine.cache.path(first.keys[1]))
    with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
        again = engine.train(_group(x, y, model, init))
        states = again.states()
    assert (again.trained, again.loaded) == (1, 1)
    for a, b in zip(states, good):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(r.name == "ftaudit.store" for r in caplog.records)


def test_bad_array_entries_are_discarded(tmp_path, caplog):
    cache = ArrayCache(tmp_path, "signals")
    arrays = {"conf": np.arange(12.0).reshape(3, 4), "loss": np.ones(3)}
    for key, spoil in (("a" * 64, lambda d: (d / "conf.npy").write_bytes((d / "conf.npy").read_bytes()[:-5])),
                       ("b" * 64, lambda d: np.save(d / "conf.npy", np.zeros((4, 3)))),
                       ("c" * 64, lambda d: np.save(d / "loss.npy", np.ones(3) * 2)),
                       ("d" * 64, lambda d: (d / "_names.json").write_text(json.dumps(["conf", "loss"])))):
        cache.save_entry(key, arrays)
        assert cache.has_entry(key)
        assert all(np.array_equal(cache.load_entry(key)[n], arrays[n]) for n in arrays)
        spoil(cache.entry_dir(key))
        with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
            assert not cache.has_entry(key)
        assert not cache.entry_dir(key).exists()
    assert sum("discarding cache entry" in r.getMessage() for r in caplog.records) == 4


def test_bad_metrics_entries_are_discarded(tmp_path, caplog):
    from ftaudit.metrics import AttackMetrics

    cache = JsonCache(tmp_path, "metrics")
    good = {"auc": {"value": 0.5, "lo": 0.4, "hi": 0.6}, "tpr_at_fpr": [], "n_members": 3, "n_nonmembers": 3}
    cache.put(KEY, good)
    assert cache.get(KEY, check=AttackMetrics.from_dict) == good
    path = cache._path(KEY)
    for bad in ("{}", json.dumps(good), json.dumps({"sha256": "0" * 64, "value": good}), "{trunc",
                json.dumps({"sha256": __import__("ftaudit.store.cache", fromlist=["x"]).json_digest({"a": 1}),
                            "value": {"a": 1}})):
        path.write_text(bad)
        with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
            assert cache.get(KEY, check=AttackMetrics.from_dict) is None
        assert not path.exists()


# Whole runs: a corrupted entry of each kind in a finished store, then a rerun with the same metrics.

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("reference") / "store"
    return store, run_inprocess(store).results["attacks"]


def _base_key(store) -> str:
    (row,) = complete_runs(store)
    import sqlite3

    with sqlite3.connect(store / "ftaudit.sqlite") as con:
        (key,) = con.execute("SELECT model_key FROM run_models WHERE run_id = ? AND role = 'pretrain'",
                             (row.run_id,)).fetchone()
    return key


# each kind of damage is detected in the unit tests above; whole runs for the two ways it is found:
# on load (the data's digest) and before training (the header)
@pytest.mark.parametrize("corrupt", [flip_byte, unrelated_file], ids=["flipped byte", "unrelated file"])
def test_a_corrupted_base_is_retrained_not_fine_tuned_from(corrupt, reference, tmp_path, caplog):
    store = copy_store(reference[0], tmp_path / "store")
    path = ModelCache(store / "cache").path(_base_key(store))
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
        res = run_inprocess(store)
    assert res.results["cache"] == {"models_trained": 1, "models_loaded": N_MODELS - 1}  # only the base
    assert res.results["attacks"] == reference[1]
    assert any(r.name == "ftaudit.store" and str(path) in r.getMessage() for r in caplog.records)
    assert_doctor_clean(store)


def test_corrupted_signals_and_metrics_entries_are_recomputed(reference, tmp_path, caplog):
    store = copy_store(reference[0], tmp_path / "store")
    entries = sorted((store / "cache" / "signals").glob("*/*/_names.json"))
    (first, second) = entries[0].parent, entries[1].parent
    npy = sorted(first.glob("*.npy"))[0]
    npy.write_bytes(npy.read_bytes()[:-9])  # truncated
    npy = sorted(second.glob("*.npy"))[0]
    np.save(npy, np.zeros((2, 2)))  # misshapen
    metrics = sorted((store / "cache" / "metrics").glob("*/*.json"))
    metrics[0].write_text("{}")
    metrics[1].write_text(json.dumps({"auc": 1}))
    with caplog.at_level(logging.WARNING, logger="ftaudit.store"):
        res = run_inprocess(store)
    assert res.results["attacks"] == reference[1]
    assert res.results["cache"]["models_trained"] == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.name == "ftaudit.store")
    assert str(first) in warned and str(second) in warned and str(metrics[0]) in warned and str(metrics[1]) in warned
    assert len(RunDB(store / "ftaudit.sqlite").runs()) == 2
    assert_doctor_clean(store)
