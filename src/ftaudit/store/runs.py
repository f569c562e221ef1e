"""Store layout and the life of a run directory.

    <store>/ftaudit.sqlite          rows: runs, metrics, models (RunDB)
    <store>/cache/models/…          trained weights, content-addressed (ModelCache)
    <store>/cache/signals/…         per-model signal arrays, content-addressed (ArrayCache)
    <store>/cache/metrics/…         bootstrap summaries keyed by the scores they summarise (JsonCache)
    <store>/runs/<run_id>/          results.json, config.yaml, arrays/*.npy, report.html

A run is assembled in ``runs/.partial-<run_id>-<pid>``; when it is complete its rows are inserted as
``pending``, the directory is renamed into place, and the rows are marked ``complete``
(:meth:`Store.commit_run`). At the next start :meth:`Store.clean_partial` removes what killed
runs left (partial directories, temp files) and :meth:`Store.recover` finishes or removes a run
whose writer died between those steps, so a run is either fully there or not at all.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ftaudit.errors import UserError
from ftaudit.store.atomic import atomic_save_npy, atomic_write_text, pid_alive, stale_temp_files
from ftaudit.store.cache import ArrayCache, JsonCache, ModelCache
from ftaudit.store.db import RunDB
from ftaudit.store.faults import fault_point

log = logging.getLogger("ftaudit.store")

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

    def clean_partial(self) -> list[str]:
        """At the start of a run: remove what killed runs left (partial run directories, temp files
        of interrupted writes) — never a live run's, so concurrent runs on one store are safe — and
        finish or remove half-committed runs (:meth:`recover`). Returns what was done."""
        done = []
        for p in self.dead_partials():
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p} (left by a killed run)")
        for p in list(stale_temp_files(self.root / "cache")) + list(stale_temp_files(self.runs_dir)):
            p.unlink(missing_ok=True)
            done.append(f"removed {p} (an interrupted write)")
        done += self.recover()
        for line in done:
            log.info("store: %s", line)
        return done

    def dead_partials(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return [p for p in self.runs_dir.glob(".partial-*")
                if not ((pid := p.name.rsplit("-", 1)[-1]).isdigit() and pid_alive(int(pid)))]

    def run_dirs(self) -> set[str]:
        """Names of the run directories in place (not partial ones)."""
        if not self.runs_dir.is_dir():
            return set()
        return {p.name for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}

    def recover(self) -> list[str]:
        """Finish or remove runs whose writer died during :meth:`commit_run`: a pending row whose
        directory is in place is marked complete, one without a directory is deleted; a complete
        run directory without a row (left by versions that renamed before committing) is adopted
        from its results.json. Rows of live writers are left alone."""
        dirs = self.run_dirs()  # listed before the rows: a directory appears only after its row exists
        done = []
        for row in self.db.pending():
            if row.writer_pid is not None and pid_alive(row.writer_pid):
                continue
            if row.run_id in dirs and complete_run_dir(self.runs_dir / row.run_id):
                self.db.mark_complete(row.run_id)
                done.append(f"completed run {row.run_id} (its writer died after renaming it into place)")
            else:
                self.db.delete_run(row.run_id)
                done.append(f"removed the row of run {row.run_id} (its writer died before renaming it into place)")
        for name in sorted(dirs - self.db.run_ids()):
            if self.adopt(name):
                done.append(f"indexed run {name} (a complete directory without a row)")
        return done

    def adopt(self, name: str) -> bool:
        """Index a complete run directory that has no row (its model rows are unknown); False if
        it is not a complete run."""
        import sqlite3

        results = complete_run_dir(self.runs_dir / name)
        if results is None:
            return False
        try:
            self.db.record_run(results, None, [])
        except (sqlite3.IntegrityError, KeyError, TypeError, ValueError):
            return False
        return True

    def commit_run(self, partial: Path, run_id: str, results: dict, models: list[tuple[str, int, str, int]]) -> Path:
        """Put a complete partial directory in place with its rows, all or nothing: rows inserted as
        pending, directory renamed, rows marked complete. Any failure undoes what was done (what a
        kill leaves, :meth:`recover` finishes at the next start)."""
        final = self.runs_dir / run_id
        self.db.record_run(results, final, models, status="pending")
        fault_point("after-row", run_id)
        renamed = False
        try:
            partial.rename(final)
            renamed = True
            fault_point("after-rename", run_id)
            self.db.mark_complete(run_id)
        except BaseException:
            if renamed:
                shutil.rmtree(final, ignore_errors=True)
            try:
                self.db.delete_run(run_id)
            except Exception:  # e.g. the disk is still full: the row is pending, recover() removes it
                pass
            raise
        return final

    def new_run_dir(self, run_id: str) -> Path:
        path = self.runs_dir / f".partial-{run_id}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        (path / "arrays").mkdir(parents=True)
        return path



def complete_run_dir(path: Path) -> dict | None:
    """The results of a complete run directory (results.json readable, naming this run), or None."""
    try:
        results = json.loads((path / RESULTS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("run_id") == path.name else None


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
