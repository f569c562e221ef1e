"""The attack table for the terminal, and the number formatting the HTML report shares with it.

Everything is read from ``results.json`` as stored; a missing or null field shows as a dash,
never as an error, because a half-finished run is exactly when someone wants to look at it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from ftaudit.report.resolution import entry_resolved, resolution_text

DASH = "—"
NOT_RESOLVED = "not resolved"
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


def _exact(v: float) -> bool:
    return v == 0.0 or v == 1.0


def fmt_pct(v: Any, decimals: int | None = None, exact: bool = True) -> str:
    """A rate in percent: two decimals below 10 % (where TPR at low FPR lives), one above (or
    ``decimals``); with ``exact``, exactly 0 and 1 as "0%" and "100%"."""
    if not _is_number(v):
        return DASH
    if exact and _exact(v):
        return f"{v * 100:.0f}%"
    decimals = (2 if abs(v) < 0.1 else 1) if decimals is None else decimals
    return f"{v * 100:.{decimals}f}%"


def fmt_rate(ci: Mapping[str, Any] | None, n: Any = None) -> str:
    """A rate with its CI in percent: ``"8.98% [6.10%, 12.4%]"``. A value of exactly 0 or 1 gets
    its exact fraction when the count ``n`` behind it is known (``"100% (300/300) [...]"``), and a
    CI that is the value itself is not repeated (``"100% (all)"``)."""
    if not ci or not _is_number(ci.get("value")):
        return DASH
    v, lo, hi = ci["value"], ci.get("lo"), ci.get("hi")
    decimals = 2 if abs(v) < 0.1 else 1
    text = fmt_pct(v, decimals)
    degenerate = _is_number(lo) and _is_number(hi) and lo == v == hi
    if _exact(v):
        count = int(n) if _is_number(n) and not math.isinf(n) and n > 0 else None
        if count is not None:
            text += f" ({round(v * count)}/{count})"
        elif degenerate:
            text += " (all)" if v == 1.0 else " (none)"
    if _is_number(lo) and _is_number(hi) and not degenerate:
        text += f" [{fmt_pct(lo, decimals, exact=False)}, {fmt_pct(hi, decimals, exact=False)}]"
    return text


def fmt_tpr(ci: Mapping[str, Any] | None, n_members: Any = None) -> str:
    """TPR in percent with its CI (see :func:`fmt_rate`; ``n_members`` gives 0 and 1 their fraction)."""
    return fmt_rate(ci, n_members)


_RATE_WORDS = re.compile(r"accuracy|\brate\b|precision|recall|\btpr\b|\bfpr\b", re.IGNORECASE)


def is_rate(name: Any) -> bool:
    """Whether a utility metric (by its name) is a rate, shown in percent."""
    return bool(_RATE_WORDS.search(str(name or "")))


def fmt_utility_value(item: Mapping[str, Any]) -> str:
    """A utility value with its CI: rates (accuracies) in percent, anything else in 4 digits."""
    if is_rate(item.get("name")):
        return fmt_rate(item, item.get("n"))
    return fmt_ci(item, lambda v: f"{v:.4g}")


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


def tpr_cell(attack: Mapping[str, Any], fpr: float) -> tuple[str, bool | None]:
    """The formatted TPR of ``attack`` at ``fpr`` and whether the sample resolves it (None: unknown)."""
    entry = tpr_at(attack, fpr)
    return fmt_tpr(entry, attack.get("n_members")), entry_resolved(attack, entry)


def unresolved_note(results: Mapping[str, Any]) -> str:
    """The resolution rule for the attacks' non-member count, when some reported TPR is not resolved."""
    counts = {a.get("n_nonmembers") for a in attacks_of(results)
              if any(tpr_cell(a, f)[1] is False for f in TPR_POINTS)}
    return "; ".join(t for t in (resolution_text(n) for n in sorted(counts, key=str)) if t)


def fmt_utility(item: Mapping[str, Any]) -> str:
    """``"name: value [lo, hi] (note)"`` for one utility metric."""
    text = f"{item.get('name') or '?'}: {fmt_utility_value(item)}"
    return f"{text} ({item['note']})" if item.get("note") else text


def attacks_of(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in results.get("attacks") or [] if isinstance(a, Mapping)]


def _caption(results: Mapping[str, Any]) -> str | None:
    lines = [f"utility — {fmt_utility(u)}" for u in results.get("utility") or []]
    skipped = results.get("skipped_attacks") or {}
    lines += [f"skipped — {name}: {why}" for name, why in skipped.items()]
    note = unresolved_note(results)
    if note:
        lines.append(note)
    return "\n".join(lines) or None


def _terminal_tpr(attack: Mapping[str, Any], fpr: float) -> str:
    text, resolved = tpr_cell(attack, fpr)
    return NOT_RESOLVED if resolved is False and text != DASH else text


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
            *(_terminal_tpr(attack, fpr) for fpr in TPR_POINTS),
            f"{fmt_count(attack.get('n_members'))} / {fmt_count(attack.get('n_nonmembers'))}",
            style="bold green" if is_best else None,
        )
    if console is not None:
        console.print(table)
    return table
