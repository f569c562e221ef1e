"""The engine: trains groups of compatible models, through the content-addressed cache.

A :class:`TrainGroup` is a set of jobs that share an architecture, trainable set, optimiser and
training pool; each job has its own initial state, keep-row and seed. The engine looks every job up
in the cache by content key, trains only the missing ones (vectorized in chunks, or one by one),
checks the frozen-parameter guardrail, and saves each finished chunk before starting the next —
so a killed run loses at most one chunk of work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.finetune.methods import check_frozen
from ftaudit.store.cache import ModelCache, content_key, state_digest
from ftaudit.train.schedule import make_schedule, steps_per_epoch
from ftaudit.train.trainers import State, n_training_views, train_loop, train_vectorized

# Reporter: called with (description, total units) and returns an "advance by n" callback.
Reporter = Callable[[str, int], Callable[[int], None]]


@dataclass
class Job:
    init: State
    rows: np.ndarray
    seed: int


@dataclass
class TrainGroup:
    name: str
    template: nn.Module
    arch: dict
    method: str
    trainable: list[str]
    optim: OptimConfig
    x: torch.Tensor
    y: torch.Tensor
    data_digest: str
    jobs: list[Job]
    objective: str = "classification"  # see ftaudit.train.objectives
    method_options: dict = field(default_factory=dict)  # the method's knobs (rank, layers, …), part of the key
    keys: list[str] = field(init=False)
    per_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        self.per_epoch = steps_per_epoch([j.rows for j in self.jobs], self.optim.batch_size)
        self.keys = [
            content_key(arch=self.arch, init=state_digest(j.init), method=self.method, options=self.method_options,
                        trainable=sorted(self.trainable),
                        optim={k: getattr(self.optim, k) for k in OptimConfig.model_fields},  # the recipe only
                        per_epoch=self.per_epoch, data=self.data_digest, objective=self.objective,
                        rows=np.sort(j.rows).astype(np.int64), seed=j.seed)
            for j in self.jobs
        ]


@dataclass
class TrainResult:
    keys: list[str]
    trained: int
    loaded: int
    cache: ModelCache

    def states(self, index: list[int] | None = None) -> list[State]:
        """Weights from the cache, loaded on demand: a run whose signals are cached never needs them."""
        keys = self.keys if index is None else [self.keys[i] for i in index]
        return [self.cache.load(k) for k in keys]


class Engine:
    def __init__(self, cache: ModelCache, cfg: EngineConfig, reporter: Reporter | None = None):
        self.cache = cache
        self.cfg = cfg
        self.reporter = reporter

    def train(self, group: TrainGroup) -> TrainResult:
        missing = [i for i, key in enumerate(group.keys) if not self.cache.has(key)]
        if missing:
            self._train_missing(group, missing)
        return TrainResult(keys=group.keys, trained=len(missing), loaded=len(group.keys) - len(missing), cache=self.cache)

    def _train_missing(self, group: TrainGroup, missing: list[int]) -> None:
        epochs, bs = group.optim.epochs, group.optim.batch_size
        advance = None
        if self.reporter:
            advance = self.reporter(f"training {group.name} ({len(missing)} models)", len(missing) * epochs * group.per_epoch)
        for start in range(0, len(missing), self.cfg.chunk):
            chunk = missing[start:start + self.cfg.chunk]
            jobs = [group.jobs[i] for i in chunk]
            schedule = make_schedule([j.rows for j in jobs], [j.seed for j in jobs], epochs, bs, per_epoch=group.per_epoch,
                                     n_views=n_training_views(group.optim, group.objective))
            trainer = train_vectorized if self.cfg.vectorized else train_loop
            states = trainer(group.template, [j.init for j in jobs], group.trainable, group.optim,
                             group.x, group.y, schedule, progress=advance, objective=group.objective,
                             view_seed=int(group.data_digest[:8], 16))
            for i, job, state in zip(chunk, jobs, states):
                check_frozen(job.init, state, group.trainable)
                self.cache.save(group.keys[i], state, meta={"group": group.name, "method": group.method, "seed": str(job.seed)})
