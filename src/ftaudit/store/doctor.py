"""``ftaudit doctor``: check a store and, with ``fix``, repair it.

Checks: the database (``PRAGMA integrity_check``, foreign keys), runs (half-committed rows whose
writer died, rows without a directory, directories without a row, damaged run directories, partial
directories of killed runs), temp files of interrupted writes, and every cache entry against its
digest (models, arrays, metrics). Things of a live run (its pending row, partial directory, temp
files) are never problems and never touched.

Repairs: cache entries that fail verification are deleted (they are recomputed when needed); run
directories that cannot be indexed and a damaged database are moved under ``<store>/quarantine/``
(user data is never deleted), and the index is rebuilt from the run directories.
"""
from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftaudit.errors import UserError
from ftaudit.store.atomic import pid_alive, stale_temp_files
from ftaudit.store.cache import ArrayCache, JsonCache, ModelCache
from ftaudit.store.db import RunDB, StoreError
from ftaudit.store.locks import locked_elsewhere
from ftaudit.store.runs import Store, complete_run_dir

DB_NAME = "ftaudit.sqlite"
_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Finding:
    what: str  # one line: the problem and where
    repair: Callable[[], str] | None = None  # does the repair, returns what it did
    problem: bool = True  # False: a note (e.g. a run in progress)


@dataclass
class DoctorResult:
    root: Path
    fixed: list[str] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.remaining if f.problem]

    @property
    def clean(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"fixed: {line}" for line in self.fixed]
        out += [("problem: " if f.problem else "note: ") + f.what for f in self.remaining]
        n = len(self.problems)
        if n:
            out.append(f"store {self.root}: {n} problem{'s' if n > 1 else ''}"
                       + ("" if self.fixed else " — `ftaudit doctor --fix` repairs them"))
        else:
            out.append(f"store {self.root}: clean" + (f" ({len(self.fixed)} repaired)" if self.fixed else ""))
        return out


def check_store(root: Path, fix: bool = False) -> DoctorResult:
    root = Path(root)
    if not any((root / name).exists() for name in (DB_NAME, "runs", "cache")):
        raise UserError("--out", f"{root} is not an ftaudit store (no {DB_NAME}, runs/ or cache/)",
                        "pass the directory given to `ftaudit run --out`")
    result = DoctorResult(root)
    if fix:
        for finding in _findings(root):
            if finding.repair is not None:
                result.fixed.append(finding.repair())
    result.remaining = _findings(root)
    return result


def _findings(root: Path) -> list[Finding]:
    db_findings = _database(root)
    if any(f.problem for f in db_findings):  # nothing else can be judged against a broken index
        return db_findings + _temp_files(root) + _caches(root)
    return _runs(root) + _temp_files(root) + _caches(root)


def _quarantine(root: Path, path: Path, kind: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    dest = root / "quarantine" / kind / f"{path.name}.{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.rename(dest)
    return dest


def _database(root: Path) -> list[Finding]:
    db = root / DB_NAME
    if not db.exists():
        if (root / "runs").is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in (root / "runs").iterdir()):
            return [Finding(f"{db} is missing but runs/ holds runs", lambda: _rebuild(root, None))]
        return []
    try:
        with closing(sqlite3.connect(db, timeout=30)) as con:  # read-write: a killed writer's hot journal is rolled back
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
            orphans = con.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [Finding(f"{db} is not a usable database ({exc})", lambda: _rebuild(root, db))]
    if rows != ["ok"]:
        return [Finding(f"{db} fails its integrity check ({'; '.join(rows[:3])})", lambda: _rebuild(root, db))]
    if orphans:
        tables = sorted({r[0] for r in orphans})
        return [Finding(f"{db}: {len(orphans)} metric/model rows of runs that have no run row ({', '.join(tables)})",
                        lambda: _drop_orphan_rows(db, tables))]
    try:
        RunDB(db)  # schema and migrations
    except StoreError as exc:
        return [Finding(str(exc), lambda: _rebuild(root, db))]
    return []


def _rebuild(root: Path, db: Path | None) -> str:
    moved = ""
    if db is not None:
        moved = f"moved {db} to {_quarantine(root, db, 'database')}; "
    store = Store(root)
    adopted = [name for name in sorted(store.run_dirs()) if store.adopt(name)]
    return f"{moved}rebuilt the index from {len(adopted)} run director{'y' if len(adopted) == 1 else 'ies'}"


def _drop_orphan_rows(db: Path, tables: list[str]) -> str:
    with sqlite3.connect(db) as con:
        for table in tables:
            if table in ("attack_metrics", "utility_metrics", "run_models"):
                con.execute(f"DELETE FROM {table} WHERE run_id NOT IN (SELECT run_id FROM runs)")
    return f"deleted rows of missing runs from {', '.join(tables)}"


def _runs(root: Path) -> list[Finding]:
    store = Store(root)
    out: list[Finding] = []
    for p in store.dead_partials():
        out.append(Finding(f"{p}: partial directory of a killed run",
                           lambda p=p: (shutil.rmtree(p, ignore_errors=True), f"removed {p}")[1]))
    dirs = store.run_dirs()
    pending = {r.run_id: r for r in store.db.pending()}
    for run_id, row in sorted(pending.items()):
        if row.writer_pid is not None and pid_alive(row.writer_pid):
            out.append(Finding(f"run {run_id} is being written (pid {row.writer_pid})", problem=False))
        else:
            done = run_id in dirs and complete_run_dir(store.runs_dir / run_id) is not None
            state = "its directory is in place" if done else "its directory never arrived"
            out.append(Finding(f"run {run_id}: half-committed by a run that died ({state})",
                               lambda run_id=run_id, done=done: _finish_pending(store, run_id, done)))
    complete = {r.run_id for r in store.db.runs()}
    for run_id in sorted(complete - dirs):
        out.append(Finding(f"run {run_id}: row without a directory ({store.runs_dir / run_id})",
                           lambda run_id=run_id: (store.db.delete_run(run_id), f"deleted the row of run {run_id}")[1]))
    for run_id in sorted(complete & dirs):
        path = store.runs_dir / run_id
        if complete_run_dir(path) is None:
            out.append(Finding(f"run {run_id}: {path} has no readable results.json naming it",
                               lambda run_id=run_id, path=path: _quarantine_run(store, run_id, path)))
    for name in sorted(dirs - complete - set(pending)):
        path = store.runs_dir / name
        if complete_run_dir(path) is not None:
            out.append(Finding(f"{path}: a complete run directory without a row",
                               lambda name=name: f"indexed run {name}" if store.adopt(name) else f"could not index {name}"))
        else:
            out.append(Finding(f"{path}: a directory in runs/ that is not a complete run",
                               lambda path=path: f"moved {path} to {_quarantine(root, path, 'runs')}"))
    return out


def _finish_pending(store: Store, run_id: str, done: bool) -> str:
    if done:
        store.db.mark_complete(run_id)
        return f"marked run {run_id} complete"
    store.db.delete_run(run_id)
    return f"deleted the pending row of run {run_id}"


def _quarantine_run(store: Store, run_id: str, path: Path) -> str:
    dest = _quarantine(store.root, path, "runs")
    store.db.delete_run(run_id)
    return f"moved {path} to {dest} and deleted its row"


def _temp_files(root: Path) -> list[Finding]:
    out = []
    for p in list(stale_temp_files(root / "cache")) + list(stale_temp_files(root / "runs")):
        out.append(Finding(f"{p}: temp file of an interrupted write",
                           lambda p=p: (p.unlink(missing_ok=True), f"removed {p}")[1]))
    return out


def _caches(root: Path) -> list[Finding]:
    cache = root / "cache"
    if not cache.is_dir():
        return []
    out: list[Finding] = []
    models = ModelCache(cache)
    for path in sorted((cache / "models").glob("*/*.safetensors")):
        reason = models.verify(path.stem) if _KEY.match(path.stem) else "not named by a content key"
        if reason:
            out.append(Finding(f"{path}: {reason}", lambda p=path: (p.unlink(missing_ok=True), f"removed {p}")[1]))
    for path in sorted((cache / "models").glob("*/*.lock")):
        if not locked_elsewhere(path):
            out.append(Finding(f"{path}: claim file left by a killed run (harmless)",
                               lambda p=path: (p.unlink(missing_ok=True), f"removed {p}")[1], problem=False))
    metrics = JsonCache(cache, "metrics")
    for path in sorted((cache / "metrics").glob("*/*.json")):
        reason = metrics.verify(path.stem) if _KEY.match(path.stem) else None
        if reason:
            out.append(Finding(f"{path}: {reason}", lambda p=path: (p.unlink(missing_ok=True), f"removed {p}")[1]))
    for kind_dir in sorted(p for p in cache.iterdir() if p.is_dir() and p.name not in ("models", "metrics")):
        arrays = ArrayCache(cache, kind_dir.name)
        for entry in sorted(kind_dir.glob("*/*")):
            if not (entry.is_dir() and _KEY.match(entry.name) and entry.parent.name == entry.name[:2]):
                continue  # not an array entry (e.g. cache/tokenizers)
            if not (entry / ArrayCache.MANIFEST).is_file():
                if not any(entry.glob(".*.tmp")):
                    out.append(Finding(f"{entry}: incomplete entry (no manifest; a miss, rewritten when needed)",
                                       lambda e=entry: (shutil.rmtree(e, ignore_errors=True), f"removed {e}")[1],
                                       problem=False))
                continue
            reason = arrays.verify(entry.name)
            if reason:
                out.append(Finding(f"{entry}: {reason}",
                                   lambda e=entry: (shutil.rmtree(e, ignore_errors=True), f"removed {e}")[1]))
    return out
