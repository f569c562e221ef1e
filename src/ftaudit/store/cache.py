"""Content-addressed caches: trained models (safetensors) and per-model signal arrays (.npy).

A model's key is the hash of everything that determines its weights (see :func:`content_key`), so
an identical job is never trained twice and a killed run resumes from the models it finished.
Files are written atomically; a file that does not exist is simply a miss.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ftaudit.store.atomic import atomic_save_npy, atomic_write, load_npy

ENGINE_VERSION = "1"  # bump when training semantics change: old cache entries stop matching


def content_key(**parts) -> str:
    """sha256 of the canonical JSON of ``parts`` (numbers, strings, lists, dicts)."""
    blob = json.dumps({"engine": ENGINE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(obj).tobytes() + str(obj.dtype).encode()).hexdigest()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot hash {type(obj).__name__}")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class CacheError(RuntimeError):
    """A cache entry exists but cannot be read (e.g. a disk error); the message names the file."""


class ModelCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "models" / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> Path:
        tensors = {n: t.detach().cpu().contiguous() for n, t in state.items()}
        return atomic_write(self.path(key), lambda p: save_file(tensors, str(p), metadata=meta or {}))

    def load(self, key: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(self.path(key)))
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"model cache entry {self.path(key)} is unreadable ({exc}); delete it and rerun") from exc


class ArrayCache:
    """Named float arrays per key, e.g. one model's signals on one audit set."""

    def __init__(self, root: str | Path, kind: str):
        self.root = Path(root) / kind

    def _path(self, key: str, name: str) -> Path:
        return self.root / key[:2] / key / f"{name}.npy"

    def has(self, key: str, names: list[str]) -> bool:
        return all(self._path(key, n).is_file() for n in names)

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in arrays.items():
            atomic_save_npy(self._path(key, name), arr)

    def load(self, key: str, names: list[str]) -> dict[str, np.ndarray]:
        return {n: load_npy(self._path(key, n)) for n in names}

    # Whole entries: the arrays, then a manifest naming them, written last, so an entry whose
    # manifest exists is complete (a run killed mid-save leaves a miss, never half an entry).
    def _manifest(self, key: str) -> Path:
        return self.root / key[:2] / key / "_names.json"

    def has_entry(self, key: str) -> bool:
        return self._manifest(key).is_file()

    def save_entry(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if not arrays or any(not n or "/" in n or n.startswith("_") for n in arrays):
            raise ValueError(f"array names must be non-empty plain names, got {list(arrays)}")
        self.save(key, {n: np.asarray(a) for n, a in arrays.items()})
        atomic_write(self._manifest(key), lambda p: p.write_text(json.dumps(sorted(arrays))))

    def load_entry(self, key: str) -> dict[str, np.ndarray]:
        try:
            names = json.loads(self._manifest(key).read_text())
            return self.load(key, names)
        except (OSError, ValueError) as exc:
            raise CacheError(f"cache entry {self.root / key[:2] / key} is unreadable ({exc}); delete it and rerun") from exc


class JsonCache:
    """Small JSON results by content key, e.g. an attack's bootstrap summary for given scores."""

    def __init__(self, root: str | Path, kind: str):
        self.root = Path(root) / kind

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        from ftaudit.store.atomic import atomic_write_text

        atomic_write_text(self._path(key), json.dumps(value))
