"""Command line: ``ftaudit run | audit | studies | ls | report | config``.

User mistakes print one line naming the field and the fix, and exit with status 2 (no traceback);
``ftaudit audit --fail-above`` exits 3 when its gate fires.
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
    _gate_exit(result.results)


GATE_EXIT = 3  # an audit's gate (`--fail-above`) fired: the model leaks more than the threshold


def _gate_exit(results: dict) -> None:
    gate = (results.get("audit") or {}).get("gate")
    if gate and gate["fired"]:
        print(gate["message"], file=sys.stderr)
        raise typer.Exit(GATE_EXIT)


@app.command()
def audit(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="the fine-tuned model: save_pretrained directory, "
                                        "PEFT adapter directory or hub id"),
    members: Optional[str] = typer.Option(None, "--members", help="records it was fine-tuned on (.txt one per line, "
                                          ".jsonl/.csv with text [+ label], .npz, datasets dir)"),
    nonmembers: Optional[str] = typer.Option(None, "--nonmembers", help="records of the same kind it never saw"),
    base: Optional[str] = typer.Option(None, "--base", help="the pretrained model it was fine-tuned from (adds the "
                                       "base-ratio attack)"),
    task: Optional[str] = typer.Option(None, "--task", help="auto | causal-lm | masked-lm | classification | "
                                       "image-classification"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer directory, when the model's has none"),
    max_records: Optional[int] = typer.Option(None, "--max-records", help="records audited per set (random subset)"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="tokens per record (default: the model's context)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="records per forward pass"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    fail_above: Optional[str] = typer.Option(None, "--fail-above", help="gate, e.g. tpr@0.01=0.05 or auc=0.6: exit 3 "
                                             "when any attack's CI lower bound is above it"),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="canary manifest from ftaudit.inject: adds "
                                           "canary exposure and the one-run epsilon lower bound"),
    accounted_epsilon: Optional[float] = typer.Option(None, "--accounted-epsilon", help="the epsilon your DP "
                                                      "accountant reported (checked against the one-run bound)"),
    regurgitation: Optional[bool] = typer.Option(None, "--regurgitation/--no-regurgitation", help="prompt with each "
                                                 "record's first tokens and match the continuations (default: causal "
                                                 "LMs; tune with --set audit.prefix_tokens=32 etc.)"),
    references: Optional[int] = typer.Option(None, "--references", help="fine-tuning-aware references: N models (even) "
                                             "fine-tuned from --base with --recipe on --population, for LiRA and RMIA"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="YAML of your fine-tuning recipe (method, lora_rank, "
                                         "lr, epochs, batch_size, max_length)"),
    population: Optional[str] = typer.Option(None, "--population", help="records of the same kind the model never saw "
                                             "(the references train on random halves)"),
    online: bool = typer.Option(False, "--online", help="references also train on the audited records (adds LiRA "
                                "online)"),
    reveal: bool = typer.Option(False, "--reveal", help="write record text into records.csv"),
    demo: bool = typer.Option(False, "--demo", help="build, fine-tune and audit a tiny GPT-2 offline (files under "
                              "OUT/demo)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override a key: --set metrics.bootstrap=2000"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=f"store directory (default {DEFAULT_STORE})"),
    seed: Optional[int] = typer.Option(None, "--seed", help="run seed (record sampling, maskings, bootstrap)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    """Audit your own fine-tuned model: does it leak its fine-tuning records? Exit 3 when --fail-above fires."""
    from ftaudit.config import build_config
    from ftaudit.pipeline import run_pipeline
    from ftaudit.report import render_table

    flags = {"model": model, "members": members, "nonmembers": nonmembers, "base": base, "task": task,
             "tokenizer": tokenizer, "max_records": max_records, "max_length": max_length, "batch_size": batch_size,
             "device": device, "fail_above": fail_above, "manifest": manifest, "accounted_epsilon": accounted_epsilon,
             "regurgitation": regurgitation, "references": references, "recipe": recipe, "population": population}
    settings = {f"audit__{k}": v for k, v in flags.items() if v is not None}
    settings.update({f"audit__{k}": True for k, v in (("reveal", reveal), ("demo", demo), ("online", online)) if v})
    settings.update({k: v for k, v in (("out", out), ("seed", seed)) if v is not None})
    cfg = build_config("audit", config, list(set_), **settings)
    if cfg.audit.demo and not quiet:
        err_console.print(f"demo: a tiny GPT-2 fine-tuned on 150 Shakespeare paragraphs, saved under {cfg.out}/demo")
    result = run_pipeline(cfg, None)
    res = result.results
    render_table(res, console)
    for note in res.get("notes", []):
        console.print(f"• {note}", markup=False, highlight=False)
    console.print(f"run [bold]{result.run_id}[/] in {res['timings']['total']:.1f}s")
    console.print(f"records: {result.path / 'records.csv'}", markup=False, highlight=False)
    console.print(f"report: {result.report}", markup=False, highlight=False)
    _gate_exit(res)


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
