"""The attack table for the terminal, and the number formatting the HTML report shares with it.

Everything is read from ``results.json`` as stored; a missing or null field shows as a dash,
never as an error, because a half-finished run is exactly when someone wants to look at it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

DASH = "—"
BEST_MARK = "★"
# The operating points the table shows, as fractions: TPR at 0.1 %, 1 % and 10 % FPR.
TPR_POINTS = (0.001, 0.01, 0.1)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def fmt_number(v: Any, spec: str = ".3g") -> str:
    """A number in ``spec``, infinities as ±∞, anything else (None, NaN, text) as a dash."""
    if not _is_number(v):
        return DASH
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return format(v, spec)


def fmt_ci(ci: Mapping[str, Any] | None, fmt: Callable[[float], str]) -> str:
    """``"value [lo, hi]"``; just the value when a bound is missing; a dash without a value."""
    if not ci or not _is_number(ci.get("value")):
        return DASH
    text = fmt(ci["value"])
    lo, hi = ci.get("lo"), ci.get("hi")
    if _is_number(lo) and _is_number(hi):
        text += f" [{fmt(lo)}, {fmt(hi)}]"
    return text


def fmt_auc(ci: Mapping[str, Any] | None) -> str:
    return fmt_ci(ci, lambda v: f"{v:.3f}")


def fmt_tpr(ci: Mapping[str, Any] | None) -> str:
    """TPR in percent; two decimals below 10 % (where TPR at low FPR lives), one above."""
    if not ci or not _is_number(ci.get("value")):
        return DASH
    decimals = 2 if abs(ci["value"]) < 0.1 else 1
    return fmt_ci(ci, lambda v: f"{v * 100:.{decimals}f}%")


def fpr_label(fpr: float) -> str:
    """0.001 -> "0.1%"."""
    return f"{fpr * 100:g}%"


def tpr_at(attack: Mapping[str, Any], fpr: float) -> Mapping[str, Any] | None:
    """The stored TPR entry of ``attack`` at ``fpr`` (matched with a float tolerance), or None."""
    for entry in attack.get("tpr_at_fpr") or []:
        if _is_number(entry.get("fpr")) and math.isclose(entry["fpr"], fpr, rel_tol=1e-6):
            return entry
    return None


def fmt_count(v: Any) -> str:
    return f"{int(v):,}" if _is_number(v) and not math.isinf(v) else DASH


def fmt_utility(item: Mapping[str, Any]) -> str:
    """``"name: value [lo, hi] (note)"`` for one utility metric."""
    text = f"{item.get('name') or '?'}: {fmt_ci(item, lambda v: f'{v:.4g}')}"
    return f"{text} ({item['note']})" if item.get("note") else text


def attacks_of(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in results.get("attacks") or [] if isinstance(a, Mapping)]


def _caption(results: Mapping[str, Any]) -> str | None:
    lines = [f"utility — {fmt_utility(u)}" for u in results.get("utility") or []]
    skipped = results.get("skipped_attacks") or {}
    lines += [f"skipped — {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) or None


def render_table(results: Mapping[str, Any], console: Console | None = None) -> Table:
    """One row per attack (AUC and TPR at low FPR, each with its CI), best attack highlighted.

    Utility metrics and skipped attacks go in the caption beneath. Printed when ``console`` is given.
    """
    level = results.get("ci_level")
    ci_text = f"{level:.0%} CI" if _is_number(level) else "CI"
    table = Table(
        title=results.get("title") or results.get("run_id") or "membership inference",
        caption=_caption(results),
        caption_justify="left",
        header_style="bold",
    )
    table.add_column("attack", no_wrap=True)
    table.add_column(f"AUC [{ci_text}]", justify="right")
    for fpr in TPR_POINTS:
        table.add_column(f"TPR@{fpr_label(fpr)} FPR", justify="right")
    table.add_column("members / non", justify="right")
    best = results.get("best_attack")
    for attack in attacks_of(results):
        is_best = best is not None and attack.get("name") == best
        name = str(attack.get("name") or "?")
        table.add_row(
            f"{BEST_MARK} {name}" if is_best else f"  {name}",
            fmt_auc(attack.get("auc")),
            *(fmt_tpr(tpr_at(attack, fpr)) for fpr in TPR_POINTS),
            f"{fmt_count(attack.get('n_members'))} / {fmt_count(attack.get('n_nonmembers'))}",
            style="bold green" if is_best else None,
        )
    if console is not None:
        console.print(table)
    return table
