"""Who trains and queries a chunk of models: this process (``local``) or a Ray cluster (``ray``).

The engine decides *what* to train (the missing models of a group, in chunks, under claims) and
keeps the cache; an executor only turns :class:`ChunkJob`\\ s into trained states. A chunk job holds
everything a trainer needs and nothing of the engine, so it can run in another process: the
template, each job's initial state, the training pool and masks (CPU tensors), and the schedule's
inputs (rows, seeds, epochs, DP sampling), from which :func:`run_chunk` builds the schedule where it
trains. The placement (``engine.device``/``engine.dtype``) is applied where the chunk runs. The
same executor runs the studies' signal jobs (:class:`~ftaudit.signals.jobs.SignalJob`: a chunk of
models to query), for which :class:`~ftaudit.studies.base.Context` keeps the signal cache.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.devices import Placement
from ftaudit.dp.per_sample import DPParams
from ftaudit.dp.sampling import poisson_schedule
from ftaudit.finetune.packed_lora import train_packed_lora
from ftaudit.signals.jobs import Arrays, SignalJob, run_signal_job
from ftaudit.train.dp_trainers import train_dp_opacus, train_dp_vectorized
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import State, train_loop, train_vectorized

Progress = Callable[[int], None]


@dataclass
class ChunkJob:
    """One chunk of a :class:`~ftaudit.train.engine.TrainGroup`, self-contained."""

    group: str
    trainer: str  # vectorized | loop | packed-lora | dp-vectorized | dp-opacus
    template: nn.Module
    inits: list[State]
    trainable: list[str]
    optim: OptimConfig
    x: torch.Tensor
    y: torch.Tensor
    masks: State | None
    objective: str
    view_seed: int
    rows: list[np.ndarray]
    seeds: list[int]
    per_epoch: int
    steps: int  # training steps of every job (DP: the accountant's)
    n_views: int
    dp: DPParams | None = None  # DP groups: noise, clipping, expected batch size, noise seeds
    sample_rate: float | None = None  # DP groups: the Poisson sampling rate
    pack_rows: int | None = None  # packed LoRA: rows per forward (None = all)


def run_chunk(job: ChunkJob, place: Placement, progress: Progress | None = None) -> list[State]:
    """Train the chunk's models on ``place`` and return their final states on the CPU."""
    template = job.template if place.device.type == "cpu" else place.module(copy.deepcopy(job.template))
    inits = [place.state(s) for s in job.inits]
    x, y, masks = place.tensor(job.x), place.tensor(job.y), place.state(job.masks)
    common = dict(progress=progress, objective=job.objective, view_seed=job.view_seed)
    if job.dp is not None:
        schedule = poisson_schedule(job.rows, job.sample_rate, job.steps, job.seeds, n_views=job.n_views)
        trainer = train_dp_vectorized if job.trainer == "dp-vectorized" else train_dp_opacus
        with place.autocast():
            states = trainer(template, inits, job.trainable, job.optim, x, y, schedule, job.dp, **common)
    else:
        schedule = make_schedule(job.rows, job.seeds, job.optim.epochs, job.optim.batch_size, per_epoch=job.per_epoch,
                                 n_views=job.n_views)
        trainer = {"vectorized": train_vectorized, "loop": train_loop,
                   "packed-lora": partial(train_packed_lora, pack_rows=job.pack_rows)}[job.trainer]
        with place.autocast():
            states = trainer(template, inits, job.trainable, job.optim, x, y, schedule, masks=masks, **common)
    return [Placement.to_cpu(s) for s in states]


class Executor(Protocol):
    """Trains chunk jobs. ``window`` is how many chunks the engine claims and hands over at once
    (1: chunk by chunk; more: they may run in parallel)."""

    window: int

    def placement(self) -> Placement:
        """Where chunks train (its ``key()`` is part of every model's cache key)."""

    def run(self, jobs: list[ChunkJob], progress: Progress) -> Iterator[tuple[int, list[State]]]:
        """Train ``jobs``; yield (index in ``jobs``, CPU states) as each finishes. ``progress`` is
        advanced by training steps × models (as they run, or when a chunk finishes)."""

    def run_signals(self, jobs: list[SignalJob]) -> Iterator[tuple[int, Arrays]]:
        """Compute signal jobs (all over one template and query set); yield (index in ``jobs``,
        arrays) as each finishes, on :meth:`placement`'s device."""


class LocalExecutor:
    """In this process, one chunk after another (the engine's own path)."""

    window = 1

    def __init__(self, placement: Placement):
        self._placement = placement

    def placement(self) -> Placement:
        return self._placement

    def run(self, jobs: Iterable[ChunkJob], progress: Progress) -> Iterator[tuple[int, list[State]]]:
        for i, job in enumerate(jobs):
            yield i, run_chunk(job, self._placement, progress)

    def run_signals(self, jobs: Iterable[SignalJob]) -> Iterator[tuple[int, Arrays]]:
        for i, job in enumerate(jobs):
            yield i, run_signal_job(job, self._placement)


def check_executor(cfg: EngineConfig) -> None:
    """Refuse, before anything is written, an executor this machine cannot run: Ray chosen but not
    installed, a device Ray does not schedule (mps), or a cluster address nothing answers on."""
    if cfg.executor == "ray":
        from ftaudit.train.ray_executor import check_reachable, import_ray, task_device

        import_ray()
        task_device(cfg.device, 1)
        check_reachable(cfg.ray_address)


def make_executor(cfg: EngineConfig, placement: Placement) -> Executor:
    """``engine.executor``: local, or ray (Ray is imported only here, when chosen)."""
    if cfg.executor == "ray":
        from ftaudit.train.ray_executor import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor(placement)
