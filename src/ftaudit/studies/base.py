"""What a study is, and the two tools every study gets.

A study is ``Study(name, description, Config, run)``: its own pydantic config class (a
:class:`~ftaudit.config.StudyConfig` composed of shared sections and its own) and a function
``run(cfg, ctx) -> StudyOutput``. A study chooses data, jobs and signals. It never writes a training
loop (``ctx.train`` hands groups to the engine), never scores its headline (it names a registered
evaluator and hands it arrays: ``StudyOutput.evaluation``) and never renders (the report does).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, overload

import numpy as np
import torch

from ftaudit import progress
from ftaudit.attacks.evaluators import EvaluationRequest
from ftaudit.config import StudyConfig
from ftaudit.devices import Placement
from ftaudit.report.blocks import ReportSection
from ftaudit.signals.jobs import SignalJob, per_model
from ftaudit.store.cache import content_key
from ftaudit.store.runs import Store
from ftaudit.threads import auto_threads
from ftaudit.train.engine import Engine, Reporter, TrainGroup, TrainResult

Arrays = dict[str, np.ndarray]


@dataclass
class Context:
    """What a study may use: the engine (``train``), its executor for signals (``query``), the
    content-addressed array cache (``cached``), stages (announced and timed), and the store for its
    other caches. ``reporter`` opens a counted task for work outside the engine
    (``ftaudit.progress`` unless one is given)."""

    store: Store
    engine: Engine
    reporter: Reporter | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # engine.threads 0: each stage takes the cores free as it starts (ftaudit.threads.auto_threads)
    adapt_threads: bool = False
    threads_used: set[int] = field(default_factory=set)
    models_trained: int = 0
    models_loaded: int = 0

    def __post_init__(self) -> None:
        self.reporter = progress.reporter_with(self.reporter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.adapt_threads:
            torch.set_num_threads(auto_threads())
        self.threads_used.add(torch.get_num_threads())
        start = time.perf_counter()
        try:
            with progress.stage(name):
                yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def train(self, group: TrainGroup, *, vectorized: bool | None = None) -> TrainResult:
        """Train the group's missing models through the engine (cached ones are loaded) and count
        both. ``vectorized`` is the study's preference, used when ``engine.vectorized`` is unset."""
        result = self.engine.train(group, vectorized=vectorized)
        self.models_trained += result.trained
        self.models_loaded += result.loaded
        result.on_retrain = self._retrained  # a cached model that fails verification on load is trained again
        return result

    def _retrained(self, n: int) -> None:
        self.models_trained += n
        self.models_loaded -= n

    @property
    def query_placement(self) -> Placement:
        """Where :meth:`query` computes signals: the executor's placement (this process, or the Ray
        workers' device)."""
        return self.engine.executor.placement()

    def signal_key(self, **parts) -> str:
        """The cache key of one model's signals: ``parts`` (model key, architecture, query set,
        signal version) and the device the signals are computed on, when not the CPU."""
        return content_key(**parts, **self.query_placement.query_key())

    def query(self, keys: Sequence[str], job: Callable[[list[int]], SignalJob],
              split: Callable[[Arrays], list[Arrays]] = per_model) -> list[Arrays]:
        """The signals of models by cache key (:meth:`signal_key`), one dict per key.

        Missing ones are computed as signal jobs of up to ``engine.chunk`` models: ``job(indices)``
        builds one (loading only those models' states), the executor runs it (this process, or a
        Ray task), ``split`` turns its arrays into one entry per model (default: row j is model
        j), and each chunk is saved as it comes back, so a killed run keeps its finished chunks.
        """
        cache = self.store.arrays("signals")
        keys = list(keys)
        missing = _missing(cache, "signals", keys)
        if missing:
            executor, size = self.engine.executor, self.engine.cfg.chunk
            chunks = [missing[s:s + size] for s in range(0, len(missing), size)]
            cached = len(keys) - len(missing)
            with progress.task("computing signals" + (f" ({cached} cached)" if cached else ""), len(missing),
                               "entries") as task:
                for first in range(0, len(chunks), max(1, executor.window)):
                    window = chunks[first:first + max(1, executor.window)]
                    for j, arrays in executor.run_signals([job(chunk) for chunk in window]):
                        entries = split(arrays)
                        if len(entries) != len(window[j]):
                            raise RuntimeError(f"signals: a job returned {len(entries)} entries for {len(window[j])} "
                                               "models")
                        for i, entry in zip(window[j], entries):
                            cache.save_entry(keys[i], entry)
                        task.advance(len(entries))
        return [cache.load_entry(k) for k in keys]

    @overload
    def cached(self, kind: str, key: str, compute: Callable[[], Arrays]) -> Arrays: ...

    @overload
    def cached(self, kind: str, key: Sequence[str], compute: Callable[[list[int]], list[Arrays]]) -> list[Arrays]: ...

    def cached(self, kind, key, compute):
        """Named arrays by content key: compute what is missing, store it, load it.

        With one key, ``compute()`` returns the arrays. With a list of keys, ``compute(missing)``
        gets the indices of the missing keys and returns one dict per index, so a batch of models
        is queried in one call and only for what no earlier run stored.
        """
        cache = self.store.arrays(kind)
        if isinstance(key, str):
            if not cache.has_entry(key):
                with progress.task(f"computing {kind}", 1, "entry") as task:
                    cache.save_entry(key, compute())
                    task.complete()
            return cache.load_entry(key)
        keys = list(key)
        missing = _missing(cache, kind, keys)
        if missing:
            cached = len(keys) - len(missing)
            with progress.task(f"computing {kind}" + (f" ({cached} cached)" if cached else ""), len(missing),
                               "entries") as task:
                fresh = compute(missing)
                task.complete()
            if len(fresh) != len(missing):
                raise ValueError(f"cache {kind!r}: compute returned {len(fresh)} entries for {len(missing)} missing keys")
            for i, arrays in zip(missing, fresh):
                cache.save_entry(keys[i], arrays)
        return [cache.load_entry(k) for k in keys]


def _missing(cache, kind: str, keys: list[str]) -> list[int]:
    """Indices of the keys without a (verified) entry in ``cache``."""
    missing = [i for i, k in enumerate(keys) if not cache.has_entry(k)]
    progress.log.debug("%s: %d of %d entries cached", kind, len(keys) - len(missing), len(keys))
    return missing


@dataclass
class StudyOutput:
    """What a study hands the pipeline.

    ``evaluation`` names a registered evaluator (leave-one-out over signals, TMI metaclassifiers, …)
    and carries its inputs; the pipeline scores it, summarises every attack with bootstrap CIs and
    stores the result. ``member_rate`` is the share of models each audit example was a member of.
    """

    title: str
    evaluation: EvaluationRequest
    member_rate: np.ndarray  # [N]
    utility: list[dict]  # {"name", "value", "lo", "hi", "note"}
    audit_arrays: dict[str, np.ndarray]  # e.g. audit_x (images) and audit_y, shown in the report
    models: list[tuple[str, int, str, int]]  # (role, index, model key, seed)
    seeds: dict
    notes: list[str] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # extra files of the run directory, e.g. records.csv
    extra: dict = field(default_factory=dict)  # study-specific entries of results.json (e.g. an audit's verdict)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    Config: type[StudyConfig]
    run: Callable[[StudyConfig, Context], StudyOutput]
