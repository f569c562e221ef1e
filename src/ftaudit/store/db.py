"""The run store: one SQLite file (stdlib sqlite3) indexing runs, their metrics and their models.

Arrays and reports live in each run's directory; the database holds the rows. A run is either
fully there (directory, results and its rows, status ``complete``) or not at all: its rows are
inserted as ``pending`` (with the writer's pid) before its directory is renamed into place, and
marked ``complete`` after; ``Store.recover`` finishes or removes a run whose writer died in
between. Only complete runs are listed or found.

Run paths are not trusted from the row: a run lives at ``<store>/runs/<run_id>``, resolved against
the store's own location, so a store moved or opened from another working directory still works.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftaudit.store.faults import fault_point

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, scenario TEXT NOT NULL, created TEXT NOT NULL, seed INTEGER NOT NULL,
  best_attack TEXT, path TEXT NOT NULL, config_json TEXT NOT NULL, versions_json TEXT NOT NULL,
  timings_json TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'complete', writer_pid INTEGER
);
CREATE TABLE IF NOT EXISTS attack_metrics (
  run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, attack TEXT NOT NULL,
  metric TEXT NOT NULL, value REAL, lo REAL, hi REAL, PRIMARY KEY (run_id, attack, metric)
);
CREATE TABLE IF NOT EXISTS utility_metrics (
  run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, name TEXT NOT NULL,
  value REAL, lo REAL, hi REAL, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS run_models (
  run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, role TEXT NOT NULL,
  idx INTEGER NOT NULL, model_key TEXT NOT NULL, seed INTEGER NOT NULL, PRIMARY KEY (run_id, role, idx)
);
"""
# Stores made before runs had a status: their rows were written after the directory, so complete.
MIGRATIONS = {"status": "ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'",
              "writer_pid": "ALTER TABLE runs ADD COLUMN writer_pid INTEGER"}
COLUMNS = "run_id, scenario, created, seed, best_attack, path"


class StoreError(RuntimeError):
    """The store's database cannot be used (not a database, damaged, locked); the message names
    the file and what to do. The file is never modified or removed by the code that raises this."""


@dataclass(frozen=True)
class RunRow:
    run_id: str
    study: str  # stored in the column `scenario` (the schema predates the name)
    created: str
    seed: int
    best_attack: str | None
    path: str  # absolute: <store>/runs/<run_id>


@dataclass(frozen=True)
class PendingRow:
    run_id: str
    writer_pid: int | None


class RunDB:
    def __init__(self, path: str | Path):
        self.path = Path(os.path.abspath(path))  # absolute and normalized: run paths are resolved against it
        self.root = self.path.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(SCHEMA)
            have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            for column, sql in MIGRATIONS.items():
                if column not in have:
                    con.execute(sql)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as con:
                con.execute("PRAGMA foreign_keys = ON")
                with con:  # one transaction: commit on success, roll back on any exception
                    yield con
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.OperationalError as exc:
            if "disk is full" in str(exc) or "disk I/O error" in str(exc) and _no_space(self.path):
                raise OSError(errno.ENOSPC, f"No space left on device ({exc})", str(self.path)) from exc
            if "disk I/O error" in str(exc) and _size_limit_hit(self.path):
                raise OSError(errno.EFBIG, f"File too large: the file-size limit was reached ({exc})",
                              str(self.path)) from exc
            raise StoreError(f"{self.path}: {exc} — another program may hold it; if this persists, run "
                             f"`ftaudit doctor --out {self.root}`") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable ftaudit database ({exc}); it was left untouched — "
                             f"`ftaudit doctor --fix --out {self.root}` moves it aside and rebuilds the index "
                             f"from the run directories") from exc

    def _run_path(self, run_id: str) -> str:
        return str(self.root / "runs" / run_id)

    def record_run(self, results: dict, run_dir: Path | None, models: list[tuple[str, int, str, int]],
                   status: str = "complete") -> None:
        """Insert a run with all its rows. ``models``: (role, idx, model_key, seed). The stored path
        is relative to the store (``runs/<id>``); ``run_dir`` is accepted for compatibility only."""
        run_id = results["run_id"]
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs (run_id, scenario, created, seed, best_attack, path, config_json, versions_json, "
                "timings_json, status, writer_pid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, results["study"], results["created"], results["seeds"]["run"],
                 results.get("best_attack"), f"runs/{run_id}", json.dumps(results["config"]),
                 json.dumps(results["versions"]), json.dumps(results["timings"]), status,
                 os.getpid() if status == "pending" else None))
            for att in results["attacks"]:
                rows = [("auc", att["auc"])] + [(f"tpr@{t['fpr']:g}", t) for t in att["tpr_at_fpr"]]
                con.executemany("INSERT INTO attack_metrics VALUES (?,?,?,?,?,?)",
                                [(run_id, att["name"], m, v["value"], v["lo"], v["hi"]) for m, v in rows])
            con.executemany("INSERT INTO utility_metrics VALUES (?,?,?,?,?)",
                            [(run_id, u["name"], u["value"], u.get("lo"), u.get("hi")) for u in results["utility"]])
            con.executemany("INSERT INTO run_models VALUES (?,?,?,?,?)",
                            [(run_id, role, idx, key, seed) for role, idx, key, seed in models])
            if status == "pending":
                fault_point("at-commit", run_id)

    def mark_complete(self, run_id: str) -> None:
        with self._connect() as con:
            con.execute("UPDATE runs SET status = 'complete', writer_pid = NULL WHERE run_id = ?", (run_id,))
            fault_point("at-complete", run_id)

    def delete_run(self, run_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def runs(self) -> list[RunRow]:
        """Complete runs, oldest first."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {COLUMNS} FROM runs WHERE status = 'complete' ORDER BY created").fetchall()
        return [self._row(r) for r in rows]

    def pending(self) -> list[PendingRow]:
        with self._connect() as con:
            rows = con.execute("SELECT run_id, writer_pid FROM runs WHERE status != 'complete'").fetchall()
        return [PendingRow(*r) for r in rows]

    def run_ids(self) -> set[str]:
        """Every row, complete or not."""
        with self._connect() as con:
            return {r[0] for r in con.execute("SELECT run_id FROM runs")}

    def find(self, run_id: str) -> RunRow | None:
        """A complete run by exact id, or by a unique prefix of one (matched literally: no wildcards)."""
        if not run_id:
            return None
        with self._connect() as con:
            rows = con.execute(f"SELECT {COLUMNS} FROM runs WHERE status = 'complete' AND substr(run_id, 1, ?) = ?",
                               (len(run_id), run_id)).fetchall()
        exact = [r for r in rows if r[0] == run_id]
        if exact:
            return self._row(exact[0])
        return self._row(rows[0]) if len(rows) == 1 else None

    def _row(self, r: tuple) -> RunRow:
        return RunRow(*r[:5], path=self._run_path(r[0]))

    def attack_metrics(self, run_id: str) -> list[tuple[str, str, float, float, float]]:
        with self._connect() as con:
            return con.execute("SELECT attack, metric, value, lo, hi FROM attack_metrics WHERE run_id = ? ORDER BY attack, metric",
                               (run_id,)).fetchall()


def _no_space(path: Path) -> bool:
    """SQLite reports some failed writes only as an I/O error: was the disk (nearly) full?"""
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


def _size_limit_hit(path: Path) -> bool:
    """…or did the database reach this process's file-size limit (RLIMIT_FSIZE, which SQLite
    sees as a failed write)?"""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        return soft != resource.RLIM_INFINITY and path.stat().st_size + (1 << 20) >= soft
    except OSError:
        return False
