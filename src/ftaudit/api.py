"""The typed Python API: ``ftaudit.run(...)`` and ``ftaudit.load_run(...)``, for notebooks and scripts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ftaudit.config_build import build_config
from ftaudit.defaults import DEFAULT_STORE
from ftaudit.errors import UserError
from ftaudit.pipeline import RunResult, run_pipeline
from ftaudit.store.db import RunDB
from ftaudit.store.runs import read_results
from ftaudit.train.engine import Reporter


def run(study: str = "finetune-mia", *, config: str | Path | None = None, overrides: list[str] | None = None,
        reporter: Reporter | None = None, preset: str | None = None, **settings: Any) -> RunResult:
    """Run a study. ``preset``: a named preset of the study (``ftaudit presets``), under the config
    file and the overrides. ``settings`` override config keys: ``section__key=value`` or a bare key
    (``epochs=30`` sets finetune.epochs; ``out="dir"`` the store)."""
    _check_reporter(reporter)
    cfg = build_config(study, config, overrides, preset=preset, **settings)
    return run_pipeline(cfg, reporter)


def _check_reporter(reporter: Any) -> None:
    if reporter is not None and not callable(reporter):
        raise UserError("reporter", f"must be a callable (description, total) -> advance, got {type(reporter).__name__}",
                        "pass None for no progress")


def audit(model: Any = None, members: Any = None, nonmembers: Any = None, *, base: Any = None, tokenizer: Any = None,
          task: str | None = None, out: str | Path = DEFAULT_STORE, config: str | Path | None = None,
          overrides: list[str] | None = None, reporter: Reporter | None = None, **settings: Any) -> RunResult:
    """Audit a fine-tuned model: the ``audit`` study, returning the same result as :func:`run`.

    ``model`` / ``base``: a directory, a hub id, or an in-memory transformers / peft model (then pass
    ``tokenizer``, an object or a directory). ``members`` / ``nonmembers``: a file path, a list of
    strings, a list of dicts with ``text`` (+ ``label``), or ``ftaudit.data.records.Records``.
    ``settings`` set other keys: ``fail_above="tpr@0.01=0.05"``, ``max_records=500``, ``reveal=True``,
    ``demo=True``, ``seed=1``, ``metrics__bootstrap=2000``. The gate's outcome is in
    ``result.results["audit"]["gate"]`` (the CLI exits 3 when it fires)."""
    from ftaudit.studies.audit.config import forget, remember

    _check_reporter(reporter)
    if not isinstance(out, (str, Path)):
        raise UserError("out", f"must be a directory path, got {type(out).__name__}", "pass a str or pathlib.Path")
    given = {"model": model, "members": members, "nonmembers": nonmembers, "base": base, "tokenizer": tokenizer}
    named = {k: (v if v is None or isinstance(v, str) else str(v) if isinstance(v, Path) else remember(v))
             for k, v in given.items()}
    try:
        kwargs = {f"audit__{k}": v for k, v in {**named, "task": task}.items() if v is not None}
        cfg = build_config("audit", config, overrides, **kwargs, out=str(out), **settings)
        return run_pipeline(cfg, reporter)
    finally:
        forget(*named.values())


def load_run(run: str | Path, out: str | Path = DEFAULT_STORE) -> RunResult:
    """A finished run, by its directory or by its id (or a unique prefix) in the store ``out``."""
    if not str(run).strip():
        raise UserError("RUN", "is empty", "pass a run id (see `ftaudit ls`) or a run directory")
    for name, value in (("run", run), ("out", out)):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise UserError(name, f"must be a run id or a directory path, got {type(value).__name__} {str(value)[:80]!r}",
                            "pass a str or pathlib.Path (`ftaudit ls` lists run ids)")
    path = Path(run)
    if not (path / "results.json").is_file():
        db = Path(out) / "ftaudit.sqlite"
        row = RunDB(db).find(str(run)) if db.is_file() else None  # literal prefix; only complete runs
        if row is None:
            raise UserError("RUN", f"no run {str(run)!r} in store {out}", "see `ftaudit ls` for run ids, or pass --out for another store")
        path = Path(row.path)
    results = read_results(path)
    return RunResult(run_id=results["run_id"], path=path, results=results)


def export_mlflow(run: str | Path | RunResult, uri: str | None = None, *, out: str | Path = DEFAULT_STORE,
                  experiment: str = "ftaudit") -> str:
    """Log a finished run to MLflow (the ``mlflow`` extra; docs/exports.md): its config as params,
    every metric with its CI bounds, its directory as artifacts. Returns the MLflow run id (the
    existing one when the run was exported before)."""
    from ftaudit.export.mlflow import export_run
    from ftaudit.export.model import locate

    result, store = locate(run.path if isinstance(run, RunResult) else run, out)
    return export_run(result.path, result.results, store, uri, experiment).mlflow_run_id


def export_model(run: str | Path | RunResult, model: str, dest: str | Path, *, out: str | Path = DEFAULT_STORE) -> dict:
    """Write the run's model ``model`` (``role:idx``, e.g. ``pretrain:0``) into ``dest``: a save_pretrained
    directory, a peft adapter directory, or safetensors (docs/exports.md). Returns its manifest."""
    from ftaudit.export.model import export_model as write_model
    from ftaudit.export.model import locate

    result, store = locate(run.path if isinstance(run, RunResult) else run, out)
    return write_model(result.path, result.results, store, model, Path(dest))
