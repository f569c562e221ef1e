"""Which TPR-at-FPR values the sample can resolve.

A TPR at FPR ``f`` is read off the threshold that lets ``f · n`` of the ``n`` non-members through.
Below about ten such false positives the threshold rests on a handful of scores and the TPR is
mostly noise (at ``f < 1/n`` it is the TPR at zero false positives). So a TPR at an FPR below
``MIN_FALSE_POSITIVES / n`` is reported as *not resolved at this sample size*, never as a bare
number. ``n`` is the number of non-member rows the FPR is counted over (``n_nonmembers`` in
results.json: pooled rows, one per target model and audit example).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MIN_FALSE_POSITIVES = 10


def _count(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else None


def min_resolved_fpr(n_nonmembers: Any) -> float | None:
    """The smallest FPR the sample resolves, ``MIN_FALSE_POSITIVES / n`` (None without a count)."""
    n = _count(n_nonmembers)
    return None if n is None else MIN_FALSE_POSITIVES / n


def is_resolved(fpr: Any, n_nonmembers: Any) -> bool | None:
    """True when ``fpr · n`` is at least MIN_FALSE_POSITIVES; None when either is unknown."""
    n = _count(n_nonmembers)
    if n is None or not isinstance(fpr, (int, float)) or isinstance(fpr, bool) or not math.isfinite(fpr):
        return None
    return fpr * n >= MIN_FALSE_POSITIVES - 1e-9


def entry_resolved(attack: Mapping[str, Any], entry: Mapping[str, Any] | None) -> bool | None:
    """The stored flag of a tpr_at_fpr entry, else computed from the attack's non-member count."""
    if not entry:
        return None
    flag = entry.get("resolved")
    if isinstance(flag, bool):
        return flag
    return is_resolved(entry.get("fpr"), attack.get("n_nonmembers"))


def mark_resolution(attack: dict) -> dict:
    """Add ``resolved`` to every tpr_at_fpr entry of an attack's results.json dict (in place; the
    existing keys stay as they are) and return it."""
    for entry in attack.get("tpr_at_fpr") or []:
        flag = is_resolved(entry.get("fpr"), attack.get("n_nonmembers"))
        if flag is not None:
            entry["resolved"] = flag
    return attack


def resolution_text(n_nonmembers: Any) -> str:
    """One sentence on the rule, for table footnotes."""
    n = _count(n_nonmembers)
    if n is None:
        return ""
    floor = MIN_FALSE_POSITIVES / n
    return (f"not resolved: with {n:,} non-members an FPR below {floor * 100:.3g}% lets fewer than "
            f"{MIN_FALSE_POSITIVES} false positives through, too few to read a TPR from")
