"""The verdict rule of ``ftaudit reproduce``: a claim is judged by the CI of the difference it is about.

A *directional* claim ("b beats a", "the gap is positive") names a difference and the side it says
the difference lies on, relative to a bound (0 unless the claim names a level, e.g. "agreement above
94 %"):

* **reproduced** — the CI excludes the bound on the claimed side;
* **reversed** — the CI excludes the bound on the other side;
* **not reproduced** — the CI contains the bound (this data cannot tell).

An *invariant* ("empirical ε ≤ accounted ε") is a bound that must never be crossed: it is
**reproduced** (holds) unless the CI lies entirely on the forbidden side, then **reversed**
(violated). Absence of evidence is all an invariant can show, so it has no "not reproduced".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

REPRODUCED, NOT_REPRODUCED, REVERSED = "reproduced", "not reproduced", "reversed"
Direction = Literal["greater", "less"]


@dataclass(frozen=True)
class Interval:
    """A measured difference with its confidence interval (``lo`` may be -inf, ``hi`` +inf for
    one-sided bounds)."""

    value: float
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if any(math.isnan(v) for v in (self.value, self.lo, self.hi)):
            raise ValueError(f"an interval needs numbers, got {self}")
        if self.lo > self.hi:
            raise ValueError(f"lower bound {self.lo} above upper bound {self.hi}")


def verdict(diff: Interval, direction: Direction, bound: float = 0.0, invariant: bool = False) -> str:
    """reproduced / not reproduced / reversed for a claim that ``diff`` lies on side ``direction``
    of ``bound`` (see the module docstring; ``invariant``: a bound that must hold)."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', not {direction!r}")
    above, below = diff.lo > bound, diff.hi < bound
    claimed, other = (above, below) if direction == "greater" else (below, above)
    if invariant:
        return REVERSED if other else REPRODUCED
    if claimed:
        return REPRODUCED
    if other:
        return REVERSED
    return NOT_REPRODUCED


def paired_interval(diff: dict | object, metric: str = "tpr") -> Interval:
    """An :class:`Interval` from a ``metrics.paired.PairedDifference`` (``metric`` tpr or auc) or a
    ``cross_difference`` / ``mean_difference`` dict ({"value", "lo", "hi"})."""
    if isinstance(diff, dict):
        return Interval(float(diff["value"]), float(diff["lo"]), float(diff["hi"]))
    name = {"tpr": "tpr_diff", "auc": "auc_diff"}[metric]
    return Interval(float(getattr(diff, name)), float(getattr(diff, f"{name}_lo")), float(getattr(diff, f"{name}_hi")))
