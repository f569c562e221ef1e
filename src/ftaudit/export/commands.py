"""The CLI commands ``ftaudit export`` and ``ftaudit export-model`` (registered on the app in cli.py).

Only typer and rich are imported here; mlflow, torch and transformers load when a command runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from ftaudit.defaults import DEFAULT_STORE
from ftaudit.errors import UserError


def _print(line: str) -> None:
    from ftaudit.cli import console

    console.print(line, markup=False, highlight=False, soft_wrap=True)


def export(
    run_id: str = typer.Argument(..., metavar="RUN", help="run id (or a unique prefix), or a run directory"),
    uri: Optional[str] = typer.Argument(None, metavar="[URI]", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                        "else sqlite:///<store>/mlflow.db)"),
    mlflow: bool = typer.Option(False, "--mlflow", help="export to MLflow: config as params, metrics with CI bounds, "
                                "the run directory as artifacts"),
    experiment: str = typer.Option("ftaudit", "--experiment", help="MLflow experiment name"),
    out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory"),
) -> None:
    """Export a run to an experiment tracker: ftaudit export RUN --mlflow [URI]."""
    from ftaudit.export.mlflow import export_run
    from ftaudit.export.model import locate

    if not mlflow:
        raise UserError("export", "no target given", "add --mlflow (optionally with a tracking URI)")
    result, store = locate(run_id, out)
    done = export_run(result.path, result.results, store, uri, experiment)
    verb = "already exported as" if done.already else "exported as"
    _print(f"run {result.run_id} {verb} MLflow run {done.mlflow_run_id} (experiment {done.experiment!r}, "
           f"tracking URI {done.uri})")
    if done.uri.startswith("sqlite:"):
        _print(f"browse it: mlflow ui --backend-store-uri {done.uri}  (needs the full mlflow package)")


def export_model(
    run_id: str = typer.Argument(..., metavar="RUN", help="run id (or a unique prefix), or a run directory"),
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="role:idx as listed by --list, e.g. pretrain:0, "
                                          "finetune:3 (a unique prefix of the role)"),
    dest: Optional[Path] = typer.Argument(None, metavar="DIR", help="new (or empty) directory to write"),
    list_: bool = typer.Option(False, "--list", "-l", help="list the run's models and how each would be exported"),
    out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory"),
) -> None:
    """Write a run's cached model as a save_pretrained directory (LMs, with tokenizer), a peft adapter
    directory (LoRA), or safetensors + JSON (other models)."""
    from ftaudit.cli import console
    from ftaudit.export.model import export_model as write_model
    from ftaudit.export.model import listing, locate

    result, store = locate(run_id, out)
    if list_:
        table = Table(box=box.SIMPLE)
        columns = ("model", "method", "export", "key")
        for name in columns:
            table.add_column(name, no_wrap=True)
        for row in listing(result.results, store):
            table.add_row(*(str(row[c]) for c in columns))
        console.print(table)
        return
    if model is None or dest is None:
        raise UserError("MODEL", "give the model and a directory: ftaudit export-model RUN MODEL DIR",
                        "see the run's models with --list")
    manifest = write_model(result.path, result.results, store, model, dest)
    _print(f"{manifest['model']} ({manifest['method']}) → {dest} as {manifest['format']}")
    _print(f"load: {manifest['load']}" if manifest.get("load") else manifest["note"])
