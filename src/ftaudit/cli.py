"""Command line: ``ftaudit run | audit | studies | ls | report | config``.

User mistakes print one line naming the field and the fix, and exit with status 2 (no traceback);
``ftaudit audit --fail-above`` exits 3 when its gate fires.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ftaudit.defaults import DEFAULT_STORE
from ftaudit.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False, help="ftaudit: measure what a fine-tuned model leaks.",
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)



def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata

        from ftaudit import __version__

        try:
            version = metadata.version("ftaudit")
        except metadata.PackageNotFoundError:  # running from a source tree that is not installed
            version = __version__
        console.print(f"ftaudit {version}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    pass


QUIET_HELP = "no progress output (warnings and errors only)"
PRESET_HELP = "a named preset of the study (`ftaudit presets`): defaults < preset < --config < --set"
VERBOSE_HELP = "more detail (debug log lines: cache hits, trainers, …)"


def _verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise UserError("--quiet", "--quiet and --verbose contradict each other", "give one of them")
    return -1 if quiet else 1 if verbose else 0


def _show_progress(quiet: bool, verbose: bool):
    """Progress on stderr (ftaudit.progress): bars on a terminal, timestamped log lines otherwise."""
    from ftaudit import progress

    return progress.output(_verbosity(quiet, verbose), console=err_console)


@app.command()
def run(
    study: Optional[str] = typer.Argument(None, help="study name (default: the config's, else finetune-mia)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override a key: --set finetune.epochs=10"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=f"store directory (default {DEFAULT_STORE})"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="repeat the study over N independent seeds "
                                        "(seed, seed+1, …) and report the spread across seeds"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run a study end to end and write its report."""
    from ftaudit.config_build import build_config
    from ftaudit.pipeline import run_pipeline
    from ftaudit.report import render_table

    overrides = list(set_) + ([f"out={out}"] if out is not None else [])
    cfg = build_config(study, config, overrides, preset=preset)
    if seeds is not None:
        cfg = build_config(study, config, overrides + [f"seeds={list(range(cfg.seed + 1, cfg.seed + seeds))}"],
                           preset=preset)
    with _show_progress(quiet, verbose):
        result = run_pipeline(cfg)
    render_table(result.results, console)
    for note in result.results.get("notes", []):
        console.print(f"• {note}", markup=False, highlight=False)
    t = result.results["timings"]
    console.print(f"run [bold]{escape(result.run_id)}[/] in {t['total']:.1f}s "
                  f"({result.results['cache']['models_trained']} models trained, {result.results['cache']['models_loaded']} from cache)")
    console.print(f"report: {result.report}", markup=False, highlight=False)
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
    device: Optional[str] = typer.Option(None, "--device", help="sets engine.device: auto | cpu | cuda | cuda:N | mps"),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Audit your own fine-tuned model: does it leak its fine-tuning records? Exit 3 when --fail-above fires."""
    from ftaudit.config_build import build_config
    from ftaudit.pipeline import run_pipeline
    from ftaudit.report import render_table

    flags = {"model": model, "members": members, "nonmembers": nonmembers, "base": base, "task": task,
             "tokenizer": tokenizer, "max_records": max_records, "max_length": max_length, "batch_size": batch_size,
             "fail_above": fail_above, "manifest": manifest, "accounted_epsilon": accounted_epsilon,
             "regurgitation": regurgitation, "references": references, "recipe": recipe, "population": population}
    settings = {f"audit__{k}": v for k, v in flags.items() if v is not None}
    settings.update({f"audit__{k}": True for k, v in (("reveal", reveal), ("demo", demo), ("online", online)) if v})
    settings.update({k: v for k, v in (("out", out), ("seed", seed), ("engine__device", device)) if v is not None})
    cfg = build_config("audit", config, list(set_), **settings)
    if cfg.audit.demo and not quiet:
        err_console.print(f"demo: a tiny GPT-2 fine-tuned on 150 Shakespeare paragraphs, saved under {cfg.out}/demo",
                          markup=False, highlight=False)
    with _show_progress(quiet, verbose):
        result = run_pipeline(cfg)
    res = result.results
    render_table(res, console)
    for note in res.get("notes", []):
        console.print(f"• {note}", markup=False, highlight=False)
    console.print(f"run [bold]{escape(result.run_id)}[/] in {res['timings']['total']:.1f}s")
    console.print(f"records: {result.path / 'records.csv'}", markup=False, highlight=False)
    console.print(f"report: {result.report}", markup=False, highlight=False)
    _gate_exit(res)


@app.command()
def studies() -> None:
    """List the studies, one line each."""
    from ftaudit.listing import studies_table  # imports no study module: they import torch (seconds)

    console.print(studies_table())


app.command("scenarios", hidden=True, help="alias of `studies`")(studies)


@app.command()
def presets(study: Optional[str] = typer.Argument(None, help="only this study's presets")) -> None:
    """List the named presets: study, name, what each changes (`ftaudit run STUDY --preset NAME`)."""
    import yaml
    from rich.table import Table

    from ftaudit.presets import PRESETS, presets_of

    if study is not None:
        from ftaudit.catalog import STUDIES

        if study not in STUDIES:
            from ftaudit.studies import get_study

            get_study(study)  # the usual "unknown study" error, with "did you mean"
    table = Table(title="presets (ftaudit run STUDY --preset NAME)", show_lines=False)
    for column in ("study", "preset", "what it changes", "overrides"):
        table.add_column(column, overflow="fold")
    for p in (presets_of(study) if study else PRESETS):
        table.add_row(p.study, p.name, p.summary, escape(", ".join(
            f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"
            for k, v in p.overrides.items())))
    console.print(table)


# --- reproductions (docs/reproductions.md): `reproduce`, defined in ftaudit.reproduce.command ------------
from ftaudit.reproduce.command import reproduce  # noqa: E402  (typer + rich only; the rest is lazy)

app.command()(reproduce)


@app.command("ls")
def list_runs(out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory")) -> None:
    """List the runs: study, date, best attack and its TPR at 1 % FPR."""
    from ftaudit.listing import runs_table

    db_path = Path(out) / "ftaudit.sqlite"
    table = runs_table(db_path, console.width) if db_path.is_file() else None
    if table is None:
        console.print(f"no runs in {out} yet (`ftaudit run` makes one)", markup=False, highlight=False)
        return
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
    console.print(f"report: {path}", markup=False, highlight=False)


@app.command("config")
def show_config(
    study: Optional[str] = typer.Argument(None),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
) -> None:
    """Print the study's config as commented YAML (defaults < preset < file < --set), for `ftaudit run -c`."""
    from ftaudit.config_build import build_config
    from ftaudit.config_doc import commented_yaml

    cfg = build_config(study, config, list(set_), preset=preset)
    header = (f"ftaudit {cfg.study}: every key of the study's config, with its value (defaults < preset < --config "
              "file < --set). "
              f"Save it and run it with: ftaudit run -c FILE")
    sys.stdout.write(commented_yaml(cfg, header))  # not through rich: it would wrap long lines and break the YAML


@app.command()
def doctor(
    fix: bool = typer.Option(False, "--fix", help="repair: finish or remove half-committed runs, remove what killed "
                             "runs left and cache entries that fail verification, move a damaged database aside"),
    out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory"),
) -> None:
    """Check the store (database, runs, temp files, cache entries); exit 0 when clean, 1 when problems remain."""
    from ftaudit.store.doctor import check_store

    if not Path(out).is_dir():
        raise UserError("--out", f"{out} is not a directory", f"pass the store directory (default {DEFAULT_STORE})")
    result = check_store(Path(out), fix=fix)
    for line in result.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if result.clean else 1)


class Interrupted(BaseException):
    """Ctrl-C, raised by main's SIGINT handler. Not a KeyboardInterrupt, which typer turns into a
    silent exit 130 before main could say anything."""


def _interrupt(signum, frame) -> None:
    raise Interrupted()


# --- exports (docs/exports.md): `export` and `export-model`, defined in ftaudit.export.commands ---------
from ftaudit.export.commands import export, export_model  # noqa: E402  (typer + rich only; the rest is lazy)

app.command()(export)
app.command("export-model")(export_model)


def main(argv: list[str] | None = None) -> None:
    """Run the app; map errors to one line and an exit code: 2 a user mistake, 1 a fault (the
    guardrail, an unreadable cache or database, a full disk), 130 Ctrl-C. Imports nothing heavy
    (``ftaudit studies`` stays torch-free): exceptions of modules never imported cannot occur."""
    import errno
    import signal
    import threading

    disk_full = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # = store.atomic.DISK_FULL (not imported: numpy)
    # only where Ctrl-C would raise KeyboardInterrupt anyway (not when SIGINT is ignored, not off the main thread)
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if ours:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        app(args=argv, standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    except (Interrupted, KeyboardInterrupt):
        cache = sys.modules.get("ftaudit.store.cache")
        n = cache.ModelCache.saved_in_process if cache else 0
        print(f"interrupted; {n} model{'s' if n != 1 else ''} kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        if exc.errno in disk_full:
            print(f"error: {_disk_full_line(exc)}", file=sys.stderr)
            sys.exit(1)
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror} — check the path (--out, --config)", file=sys.stderr)
        sys.exit(UserError.exit_code)
    except Exception as exc:
        line = _fault_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(1)
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _fault_line(exc: Exception) -> str | None:
    """The one line for a fault that is not the user's mistake (exit 1), or None for a bug."""
    def raised(module: str, name: str) -> bool:
        return module in sys.modules and isinstance(exc, getattr(sys.modules[module], name))

    if raised("ftaudit.finetune.methods", "FrozenParameterError"):
        return f"fine-tuning guardrail: {exc}; no report was written"
    if raised("ftaudit.store.cache", "CacheError") or raised("ftaudit.store.db", "StoreError"):
        return f"error: {exc}"
    return None


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def _disk_full_line(exc: OSError) -> str:
    """Names the store (the directory holding ftaudit.sqlite above the file) and the space needed."""
    file = Path(exc.filename) if exc.filename else None
    store = next((p for p in (file.parents if file else []) if (p / "ftaudit.sqlite").is_file()), None)
    needed = getattr(exc, "needed", None)
    space = f"; this write alone needed {_size(needed)}" if needed else ""
    where = f"the store {store}" if store else (f"{file.parent}" if file else "the store")
    what = f" writing {file}" if file else ""
    return (f"no space left for {where}{what} ({exc.strerror}){space} — free space there or pass --out on another "
            f"disk, then rerun the same command to resume (finished models are kept; no partial run was left)")
