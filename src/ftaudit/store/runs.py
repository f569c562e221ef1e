"""Store layout and the life of a run directory.

    <store>/ftaudit.sqlite          rows: runs, metrics, models (RunDB)
    <store>/cache/models/…          trained weights, content-addressed (ModelCache)
    <store>/cache/signals/…         per-model signal arrays, content-addressed (ArrayCache)
    <store>/cache/metrics/…         bootstrap summaries keyed by the scores they summarise (JsonCache)
    <store>/runs/<run_id>/          results.json, config.yaml, arrays/*.npy, report.html

A run is assembled in ``runs/.partial-<run_id>`` and renamed into place only when complete; then
its rows are committed. Leftover partial directories from killed runs are removed on the next start.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ftaudit.errors import UserError
from ftaudit.store.atomic import atomic_save_npy, atomic_write_text
from ftaudit.store.cache import ArrayCache, JsonCache, ModelCache
from ftaudit.store.db import RunDB

RESULTS_NAME = "results.json"


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.models = ModelCache(self.root / "cache")
        self.signals = ArrayCache(self.root / "cache", "signals")
        self.metrics = JsonCache(self.root / "cache", "metrics")
        self.db = RunDB(self.root / "ftaudit.sqlite")

    def arrays(self, kind: str) -> ArrayCache:
        """The content-addressed array cache of one kind (signals, samples, features, …)."""
        if not kind.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"cache kind must be a plain name, got {kind!r}")
        return ArrayCache(self.root / "cache", kind)

    def clean_partial(self) -> None:
        """Remove run directories left by killed runs (their process is gone), not by live ones."""
        if self.runs_dir.is_dir():
            for p in self.runs_dir.glob(".partial-*"):
                pid = p.name.rsplit("-", 1)[-1]
                if not (pid.isdigit() and _alive(int(pid))):
                    shutil.rmtree(p, ignore_errors=True)

    def new_run_dir(self, run_id: str) -> Path:
        path = self.runs_dir / f".partial-{run_id}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        (path / "arrays").mkdir(parents=True)
        return path

    def finish_run_dir(self, partial: Path, run_id: str) -> Path:
        final = self.runs_dir / run_id
        partial.rename(final)
        return final


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_arrays(run_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        atomic_save_npy(run_dir / "arrays" / f"{name}.npy", arr)


def finite_json(obj):
    """Strict JSON has no NaN/inf: store them as null (e.g. an unbounded score)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_results(run_dir: Path, results: dict) -> None:
    atomic_write_text(run_dir / RESULTS_NAME, json.dumps(finite_json(results), indent=2, allow_nan=False))


def read_results(run_dir: str | Path) -> dict:
    """``results.json`` of a run directory; a missing or unreadable file is the user's to fix."""
    path = Path(run_dir) / RESULTS_NAME
    if not path.is_file():
        raise UserError("RUN", f"{run_dir} has no {RESULTS_NAME}", "pass the directory of a finished run")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(str(path), f"not valid JSON ({exc})", "re-run the pipeline to rewrite it") from exc
    if not isinstance(results, dict):
        raise UserError(str(path), "must hold a JSON object", "re-run the pipeline to rewrite it")
    return results
