"""Command line: ``ftaudit run | studies | ls | report | config``.

User mistakes print one line naming the field and the fix, and exit with status 2 (no traceback).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ftaudit.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False, help="ftaudit: measure what a fine-tuned model leaks.",
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

DEFAULT_STORE = "ftaudit-runs"


@contextmanager
def progress_reporter(enabled: bool) -> Iterator:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        def reporter(description: str, total: int):
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)
        yield reporter


@app.command()
def run(
    study: Optional[str] = typer.Argument(None, help="study name (default: the config's, else finetune-mia)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override a key: --set finetune.epochs=10"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=f"store directory (default {DEFAULT_STORE})"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="repeat the study over N independent seeds "
                                        "(seed, seed+1, …) and report the spread across seeds"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Run a study end to end and write its report."""
    from ftaudit.config import build_config
    from ftaudit.pipeline import run_pipeline
    from ftaudit.report import render_table

    overrides = list(set_) + ([f"out={out}"] if out else [])
    cfg = build_config(study, config, overrides)
    if seeds is not None:
        cfg = build_config(study, config, overrides + [f"seeds={list(range(cfg.seed + 1, cfg.seed + seeds))}"])
    with progress_reporter(not quiet) as reporter:
        result = run_pipeline(cfg, reporter)
    render_table(result.results, console)
    for note in result.results.get("notes", []):
        console.print(f"• {note}")
    t = result.results["timings"]
    console.print(f"run [bold]{result.run_id}[/] in {t['total']:.1f}s "
                  f"({result.results['cache']['models_trained']} models trained, {result.results['cache']['models_loaded']} from cache)")
    console.print(f"report: {result.report}")


@app.command()
def studies() -> None:
    """List the studies, one line each."""
    from ftaudit.studies import all_studies

    for s in all_studies().values():
        console.print(f"[bold]{s.name}[/]  {s.description}")


@app.command("ls")
def list_runs(out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory")) -> None:
    """List the runs in the store."""
    from ftaudit.store.db import RunDB

    db_path = Path(out) / "ftaudit.sqlite"
    if not db_path.is_file():
        console.print(f"no runs in {out} yet (`ftaudit run` makes one)")
        return
    runs = RunDB(db_path).runs()
    table = Table()
    table.add_column("run", no_wrap=True, min_width=max((len(r.run_id) for r in runs), default=3))
    for name in ("study", "created", "seed", "best attack"):
        table.add_column(name)
    for r in runs:
        table.add_row(r.run_id, r.study, r.created.replace("T", " ")[:16], str(r.seed), r.best_attack or "")
    console.print(table)


@app.command()
def report(
    run_id: str = typer.Argument(..., metavar="RUN", help="run id (or a unique prefix), or a run directory"),
    out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory"),
) -> None:
    """Re-render a run's report from the store (no recomputation)."""
    from ftaudit.api import load_run
    from ftaudit.report import render_table, write_report

    result = load_run(run_id, out)
    path = write_report(result.path)
    render_table(result.results, console)
    console.print(f"report: {path}")


@app.command("config")
def show_config(
    study: Optional[str] = typer.Argument(None),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s"),
) -> None:
    """Print the resolved config as YAML (defaults < file < --set)."""
    import yaml

    from ftaudit.config import build_config

    cfg = build_config(study, config, list(set_))
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> None:
    from ftaudit.finetune.methods import FrozenParameterError
    from ftaudit.store.cache import CacheError

    try:
        app(args=argv, standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    except FrozenParameterError as exc:
        print(f"fine-tuning guardrail: {exc}; no report was written", file=sys.stderr)
        sys.exit(1)
    except CacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: finished models are cached; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror} — check the path (--out, --config)", file=sys.stderr)
        sys.exit(UserError.exit_code)
