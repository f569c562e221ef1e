"""Shared by the Ray tests: a local 2-CPU Ray per test file, a tiny finetune-mia, and the reaper of
the fault tests (it continues or kills Ray workers stopped at a fault point)."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ftaudit.store.cache import ModelCache

# 6 models (pretrain, scratch, 4 fine-tunes in 2 chunks), a few seconds
TINY = ["data.audit_size=40", "data.population_size=20", "pretrain.epochs=1", "finetune.epochs=2",
        "finetune.references=2", "metrics.bootstrap=20", "model.arch=mlp", "model.hidden=[8]", "pretrain.augment=0",
        "finetune.augment=0", "attack.shifts=0", "engine.chunk=2", "engine.threads=1"]
N_MODELS = 6
RAY = ["engine.executor=ray"]


@contextmanager
def local_ray(env: dict[str, str] | None = None):
    """A local Ray with 2 CPUs for the block; ``env`` is set before it starts, so its workers
    inherit it (and restored after)."""
    import ray

    before = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, object_store_memory=200 * 2**20)
        yield ray
    finally:
        ray.shutdown()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cached_models(store: Path) -> dict[str, dict[str, torch.Tensor]]:
    cache = ModelCache(store / "cache")
    return {p.stem: cache.load(p.stem) for p in sorted((store / "cache" / "models").glob("*/*.safetensors"))}


def assert_same_models(a: Path, b: Path) -> None:
    """The same cache entries, tensor for tensor, bit for bit."""
    ma, mb = cached_models(a), cached_models(b)
    assert ma.keys() == mb.keys() and len(ma) == N_MODELS
    for key, state in ma.items():
        assert state.keys() == mb[key].keys()
        for name, t in state.items():
            assert torch.equal(t, mb[key][name]), (key, name)


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process below ``pid`` (the local Ray's raylet and its workers)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[0]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


class Reaper(threading.Thread):
    """Continues every stopped Ray worker; SIGKILLs the next one instead when ``kill_next`` is set."""

    def __init__(self):
        super().__init__(daemon=True)
        self.kill_next = False
        self.killed: list[int] = []
        self.continued: set[int] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pid, state in _descendants(os.getpid()):
                if state != "T" or pid in self.killed:
                    continue
                if self.kill_next:
                    self.kill_next = False
                    self.killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
                else:
                    self.continued.add(pid)
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
