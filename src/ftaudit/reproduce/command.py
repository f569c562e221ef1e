"""``ftaudit reproduce [CLAIM ...]``: run claims, print and store the verdict table (docs/reproductions.md).

Imported by the CLI at start-up: typer and rich only, the rest when the command runs.
"""
from __future__ import annotations

from typing import Optional

import typer

from ftaudit.defaults import DEFAULT_STORE


def reproduce(
    claims: Optional[list[str]] = typer.Argument(None, metavar="[CLAIM]...", help="claims to run (default: every "
                                                 "claim of the default set, ~30 min on 2 cores; `--list` names them)"),
    all_: bool = typer.Option(False, "--all", help="also the claims outside the default set (longer runs)"),
    list_: bool = typer.Option(False, "--list", help="list the claims, their studies, presets and times; run nothing"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override a key of every claim's study config (over its "
                                   "preset), e.g. --set metrics.bootstrap=200"),
    out: str = typer.Option(DEFAULT_STORE, "--out", "-o", help="store directory (runs and models are cached there)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output (warnings and errors only)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="more detail (debug log lines)"),
) -> None:
    """Run each study's headline claim in the regime it was made in, judge it by the paired CI of the
    difference it is about, and write the verdict table (markdown + HTML in the store)."""
    from rich.table import Table

    from ftaudit.cli import _show_progress, console
    from ftaudit.errors import UserError
    from ftaudit.reproduce.claims import CLAIMS, get_claim

    chosen = [get_claim(name) for name in claims] if claims else [c for c in CLAIMS if c.default or all_]
    if claims and all_:
        raise UserError("--all", "name claims or pass --all, not both", "drop --all, or the claim names")
    if list_:
        table = Table(title="claims (ftaudit reproduce CLAIM)")
        for col in ("claim", "statement", "study --preset", "minutes on 2 cores", "default"):
            table.add_column(col, overflow="fold")
        for c in chosen if claims else CLAIMS:
            table.add_row(c.name, c.claim, c.study + (f" --preset {c.preset}" if c.preset else ""),
                          f"{c.minutes:g}" if c.minutes else "shared", "yes" if c.default else "no (--all)",
                          )
        console.print(table)
        return
    from ftaudit.reproduce.runner import run_claims
    from ftaudit.reproduce.table import rich_table, write_table

    with _show_progress(quiet, verbose):
        rows = run_claims(chosen, out, list(set_))
    console.print(rich_table(rows))
    folder = write_table(rows, out)
    console.print(f"table: {folder / 'reproductions.md'}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {folder / 'reproductions.html'}", markup=False, highlight=False, soft_wrap=True)
