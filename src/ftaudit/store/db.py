"""The run store: one SQLite file (stdlib sqlite3) indexing runs, their metrics and their models.

Arrays and reports live in each run's directory; the database holds the rows. A run's rows are
written in one transaction after its directory is complete, so a run killed before that leaves no
row at all, and one killed after it is complete.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, scenario TEXT NOT NULL, created TEXT NOT NULL, seed INTEGER NOT NULL,
  best_attack TEXT, path TEXT NOT NULL, config_json TEXT NOT NULL, versions_json TEXT NOT NULL,
  timings_json TEXT NOT NULL
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


@dataclass(frozen=True)
class RunRow:
    run_id: str
    study: str  # stored in the column `scenario` (the schema predates the name)
    created: str
    seed: int
    best_attack: str | None
    path: str


class RunDB:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as con:
            con.execute("PRAGMA foreign_keys = ON")
            with con:  # one transaction: commit on success, roll back on any exception
                yield con

    def record_run(self, results: dict, run_dir: Path, models: list[tuple[str, int, str, int]]) -> None:
        """Insert a finished run with all its rows. ``models``: (role, idx, model_key, seed)."""
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                (results["run_id"], results["study"], results["created"], results["seeds"]["run"],
                 results.get("best_attack"), str(run_dir), json.dumps(results["config"]),
                 json.dumps(results["versions"]), json.dumps(results["timings"])))
            for att in results["attacks"]:
                rows = [("auc", att["auc"])] + [(f"tpr@{t['fpr']:g}", t) for t in att["tpr_at_fpr"]]
                con.executemany("INSERT INTO attack_metrics VALUES (?,?,?,?,?,?)",
                                [(results["run_id"], att["name"], m, v["value"], v["lo"], v["hi"]) for m, v in rows])
            con.executemany("INSERT INTO utility_metrics VALUES (?,?,?,?,?)",
                            [(results["run_id"], u["name"], u["value"], u.get("lo"), u.get("hi")) for u in results["utility"]])
            con.executemany("INSERT INTO run_models VALUES (?,?,?,?,?)",
                            [(results["run_id"], role, idx, key, seed) for role, idx, key, seed in models])

    def runs(self) -> list[RunRow]:
        with self._connect() as con:
            rows = con.execute("SELECT run_id, scenario, created, seed, best_attack, path FROM runs ORDER BY created").fetchall()
        return [RunRow(*r) for r in rows]

    def find(self, run_id: str) -> RunRow | None:
        """Exact id, or a unique prefix of one."""
        with self._connect() as con:
            rows = con.execute("SELECT run_id, scenario, created, seed, best_attack, path FROM runs WHERE run_id LIKE ? || '%'",
                               (run_id,)).fetchall()
        exact = [r for r in rows if r[0] == run_id]
        if exact:
            return RunRow(*exact[0])
        return RunRow(*rows[0]) if len(rows) == 1 else None

    def attack_metrics(self, run_id: str) -> list[tuple[str, str, float, float, float]]:
        with self._connect() as con:
            return con.execute("SELECT attack, metric, value, lo, hi FROM attack_metrics WHERE run_id = ? ORDER BY attack, metric",
                               (run_id,)).fetchall()
