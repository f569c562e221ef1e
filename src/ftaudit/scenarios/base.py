"""What a scenario is: a small function from a config to a :class:`StudyOutput`.

A scenario chooses data, jobs and signals; it never trains by hand (the engine does), never scores
(the attacks do) and never renders (the report does). The shared pipeline takes its output through
attacks → metrics → store → report.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ftaudit.config import RunConfig
from ftaudit.signals.arrays import SignalSet
from ftaudit.store.runs import Store
from ftaudit.train.engine import Engine, Reporter


@dataclass
class Context:
    """What a scenario may use: the store (caches), the engine, a progress reporter, stage timers."""

    store: Store
    engine: Engine
    reporter: Reporter | None = None
    timings: dict[str, float] = field(default_factory=dict)
    models_trained: int = 0
    models_loaded: int = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


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
class Section:
    """A block of a study's report beyond the headline attacks: text, a table, figures."""

    title: str
    text: list[str] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)  # rows with the same keys; values str or numbers
    figures: list[Figure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"title": self.title, "text": list(self.text), "table": [dict(r) for r in self.table],
                "figures": [f.to_dict() for f in self.figures]}


@dataclass
class StudyOutput:
    """What a scenario hands the pipeline.

    ``signals`` feed the registered attacks (leave-one-out over its models). A study whose attack
    is not a registered signal attack (e.g. TMI's metaclassifiers) passes ``pooled`` scores instead,
    with a description per attack; the pipeline then only summarises them.
    """

    title: str
    signals: SignalSet | None
    references: int  # references per target in the leave-one-out evaluation
    utility: list[dict]  # {"name", "value", "lo", "hi", "note"}
    audit_arrays: dict[str, np.ndarray]  # audit_x (images) and audit_y, shown in the report
    models: list[tuple[str, int, str, int]]  # (role, index, model key, seed)
    seeds: dict
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    pooled: object | None = None  # ftaudit.attacks.evaluate.PooledScores
    descriptions: dict[str, str] = field(default_factory=dict)  # attack -> description, for pooled scores
    member_rate: np.ndarray | None = None  # [N] share of models each example was a member of (pooled studies)

    def __post_init__(self) -> None:
        if (self.signals is None) == (self.pooled is None):
            raise ValueError("a study gives either signals (for the registered attacks) or pooled scores")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[RunConfig, Context], StudyOutput]
