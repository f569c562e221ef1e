"""What a scenario is: a small function from a config to a :class:`StudyOutput`.

A scenario chooses data, jobs and signals; it never trains by hand (the engine does), never scores
(the attacks do) and never renders (the report does). The shared pipeline takes its output through
attacks → metrics → store → report.
"""
from __future__ import annotations

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
class StudyOutput:
    title: str
    signals: SignalSet
    references: int  # references per target in the leave-one-out evaluation
    utility: list[dict]  # {"name", "value", "lo", "hi", "note"}
    audit_arrays: dict[str, np.ndarray]  # audit_x (images) and audit_y, shown in the report
    models: list[tuple[str, int, str, int]]  # (role, index, model key, seed)
    seeds: dict
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[RunConfig, Context], StudyOutput]
