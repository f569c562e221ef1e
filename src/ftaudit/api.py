"""The typed Python API: ``ftaudit.run(...)`` and ``ftaudit.load_run(...)``, for notebooks and scripts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ftaudit.config import build_config
from ftaudit.errors import UserError
from ftaudit.pipeline import RunResult, run_pipeline
from ftaudit.store.runs import Store, read_results
from ftaudit.train.engine import Reporter


def run(study: str = "finetune-mia", *, config: str | Path | None = None, overrides: list[str] | None = None,
        reporter: Reporter | None = None, **settings: Any) -> RunResult:
    """Run a study. ``settings`` override config keys: ``section__key=value`` or a bare key
    (``epochs=30`` sets finetune.epochs; ``out="dir"`` the store)."""
    cfg = build_config(study, config, overrides, **settings)
    return run_pipeline(cfg, reporter)


def load_run(run: str | Path, out: str | Path = "ftaudit-runs") -> RunResult:
    """A finished run, by its directory or by its id (or a unique prefix) in the store ``out``."""
    path = Path(run)
    if not (path / "results.json").is_file():
        row = Store(out).db.find(str(run)) if Path(out).is_dir() else None
        if row is None:
            raise UserError("RUN", f"no run {str(run)!r} in store {out}", "see `ftaudit ls` for run ids, or pass --out for another store")
        path = Path(row.path)
    results = read_results(path)
    return RunResult(run_id=results["run_id"], path=path, results=results)
