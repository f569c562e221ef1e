import json
import os

import numpy as np
import pytest

from ftaudit.store.atomic import atomic_write
import torch

from ftaudit.store.cache import CacheError, ModelCache, content_key
from ftaudit.store.runs import Store, write_results


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def fail(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_content_key_is_canonical_and_sensitive():
    a = content_key(x=1, rows=np.arange(5), cfg={"b": 2, "a": 1})
    assert a == content_key(cfg={"a": 1, "b": 2}, rows=np.arange(5), x=1)
    assert a != content_key(x=1, rows=np.arange(1, 6), cfg={"b": 2, "a": 1})
    assert a != content_key(x=1, rows=np.arange(5).astype(np.int32), cfg={"b": 2, "a": 1})


def test_results_json_is_strict(tmp_path):
    write_results(tmp_path, {"a": float("inf"), "b": [1.0, float("nan")], "c": {"d": 2.5}})
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2.5}}


def test_partial_dirs_of_dead_runs_are_cleaned_live_ones_kept(tmp_path):
    store = Store(tmp_path)
    dead = store.runs_dir / ".partial-r1-999999999"
    dead.mkdir(parents=True)
    live = store.runs_dir / f".partial-r2-{os.getpid()}"
    live.mkdir()
    store.clean_partial()
    assert not dead.exists() and live.exists()


def test_unreadable_model_entry_names_the_file(tmp_path):
    cache = ModelCache(tmp_path)
    cache.save("ab" * 32, {"w": torch.ones(2)})
    cache.path("ab" * 32).write_bytes(b"garbage")
    with pytest.raises(CacheError, match=str(cache.path("ab" * 32))):
        cache.load("ab" * 32)
