"""Blocks of a study's report beyond the headline attacks, stored as data (results.json) and drawn
by the report: text, tables, and figures as series of points. A report can be redrawn without
the run."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Series:
    """One line or point set of a figure; lo/hi (optional) draw a confidence band or error bars."""

    label: str
    x: list[float]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None
    style: str = "line"  # line | points | frontier

    def to_dict(self) -> dict:
        def floats(values):  # JSON has no NaN: missing points are stored as null
            return None if values is None else [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]

        return {"label": self.label, "x": floats(self.x), "y": floats(self.y), "lo": floats(self.lo),
                "hi": floats(self.hi), "style": self.style}


@dataclass
class Figure:
    """A figure as data: the report draws it from what is stored, so it can be redrawn without the run."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xlog: bool = False
    ylog: bool = False
    caption: str = ""

    def to_dict(self) -> dict:
        return {"title": self.title, "xlabel": self.xlabel, "ylabel": self.ylabel, "xlog": self.xlog,
                "ylog": self.ylog, "caption": self.caption, "series": [s.to_dict() for s in self.series]}


@dataclass
class ReportSection:
    """A block of a study's report beyond the headline attacks: text, a table, figures."""

    title: str
    text: list[str] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)  # rows with the same keys; values str or numbers
    figures: list[Figure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"title": self.title, "text": list(self.text), "table": [dict(r) for r in self.table],
                "figures": [f.to_dict() for f in self.figures]}
