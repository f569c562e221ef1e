"""The engine: trains groups of compatible models, through the content-addressed cache.

A :class:`TrainGroup` is a set of jobs that share an architecture, trainable set, optimiser and
training pool; each job has its own initial state, keep-row and seed. The engine looks every job up
in the cache by content key, trains only the missing ones (vectorized in chunks, or one by one),
checks the frozen-parameter guardrail, and saves each chunk as it finishes — so a killed run loses
at most the chunks in training. Who trains a chunk is the executor (``engine.executor``,
:mod:`ftaudit.train.executor`): this process, or Ray tasks; the engine alone claims, checks and
writes the cache.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from ftaudit import progress
from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.devices import Placement
from ftaudit.dp.per_sample import DPParams
from ftaudit.dp.spec import DPSpec
from ftaudit.finetune.methods import check_frozen
from ftaudit.errors import UserError
from ftaudit.finetune.packed_lora import packable
from ftaudit.seeding import derive_seed
from ftaudit.store.cache import BadEntry, ModelCache, Spec, content_key, state_digest, state_spec
from ftaudit.store.faults import fault_point
from ftaudit.store.locks import claim
from ftaudit.train.executor import ChunkJob, make_executor
from ftaudit.train.schedule import steps_per_epoch
from ftaudit.train.trainers import State, n_training_views
from ftaudit.wording import plural

# Reporter: called with (description, total units) and returns an "advance by n" callback.
Reporter = Callable[[str, int], Callable[[int], None]]
store_log = logging.getLogger("ftaudit.store")


@dataclass
class Job:
    init: State
    rows: np.ndarray
    seed: int
    dp: DPSpec | None = None  # this job's DP settings, when they differ from the group's (a privacy sweep)


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
    dp: DPSpec | None = None  # DP-SGD (Poisson sampling, clipping, noise) instead of plain mini-batches
    # {trainable name: {0,1} tensor of its shape}: train only the elements at 1 (the rest stay at init)
    masks: dict[str, torch.Tensor] | None = None
    keys: list[str] = field(init=False)
    per_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        self.per_epoch = steps_per_epoch([j.rows for j in self.jobs], self.optim.batch_size)
        specs = self.dp_specs
        if any(s is None for s in specs) and any(s is not None for s in specs):
            raise ValueError(f"group {self.name!r} mixes DP and non-DP jobs")
        if specs and specs[0] is not None and len({(s.sample_rate, s.steps) for s in specs}) > 1:
            raise ValueError(f"DP jobs of group {self.name!r} must share the sampling rate and the number of steps")
        self.masks = self._check_masks(specs) if self.masks else None
        self.keys = [
            content_key(arch=self.arch, init=state_digest(j.init), method=self.method, options=self.method_options,
                        trainable=sorted(self.trainable),
                        optim={k: getattr(self.optim, k) for k in OptimConfig.model_fields},  # the recipe only
                        per_epoch=self.per_epoch, data=self.data_digest, objective=self.objective,
                        rows=np.sort(j.rows).astype(np.int64), seed=j.seed,
                        **({"dp": spec.key()} if spec else {}),
                        **({"masks": state_digest(self.masks)} if self.masks is not None else {}))
            for j, spec in zip(self.jobs, specs)
        ]

    def _check_masks(self, specs: list[DPSpec | None]) -> dict[str, torch.Tensor]:
        if any(s is not None for s in specs):
            raise ValueError("masks are not supported with DP")
        masks = {}
        for name, m in self.masks.items():
            if name not in self.trainable:
                raise ValueError(f"mask for {name!r}, which is not trainable in group {self.name!r}")
            if any(tuple(m.shape) != tuple(j.init[name].shape) for j in self.jobs):
                raise ValueError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter "
                                 f"{tuple(self.jobs[0].init[name].shape)}")
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"mask for {name!r} has values other than 0 and 1")
            if not bool(m.any()):
                raise ValueError(f"mask for {name!r} is all zero: the parameter would not train")
            masks[name] = m.detach().float()  # one dtype, so the key does not depend on it
        return masks

    @property
    def dp_specs(self) -> list[DPSpec | None]:
        return [j.dp or self.dp for j in self.jobs]

    @property
    def steps(self) -> int:
        spec = self.dp_specs[0] if self.jobs else None
        return spec.steps if spec else self.optim.epochs * self.per_epoch


@dataclass
class TrainResult:
    keys: list[str]
    trained: int
    loaded: int
    cache: ModelCache
    dp: dict | None = None  # DP groups: noise multiplier, steps, accounted ε (opacus) and reference ε
    dp_jobs: list[dict] | None = None  # the same per job (they differ in a privacy sweep)
    specs: list[Spec] | None = None  # per job: the names, shapes and dtypes a cached model must have
    retrain: Callable[[list[int]], int] | None = None  # trains jobs again into the cache; returns how many
    on_retrain: Callable[[int], None] | None = None  # told how many (the Context's counts)

    def states(self, index: list[int] | None = None) -> list[State]:
        """Weights from the cache, loaded on demand: a run whose signals are cached never needs them.
        Each is verified (digest, names, shapes); a bad entry is discarded and trained again."""
        return [self._state(i) for i in (range(len(self.keys)) if index is None else index)]

    def _state(self, i: int) -> State:
        spec = self.specs[i] if self.specs else None
        try:
            return self.cache.load(self.keys[i], spec)
        except BadEntry as exc:
            if self.retrain is None:
                raise
            self.cache.discard(self.keys[i], str(exc))
        n = self.retrain([i])
        self.trained, self.loaded = self.trained + n, self.loaded - n
        if self.on_retrain:
            self.on_retrain(n)
        return self.cache.load(self.keys[i], spec)  # bad twice: BadEntry (a CacheError) ends the run


def driver_placement(cfg: EngineConfig) -> Placement:
    """``engine.device``/``engine.dtype`` in this process. With executor=ray the device names the
    workers' (they resolve it themselves, docs/scale.md): a driver without it queries on its CPU."""
    try:
        return Placement.from_engine(cfg.device, cfg.dtype)
    except UserError:
        if cfg.executor != "ray":
            raise
        progress.log.info("engine.device=%s is not on this machine: the Ray workers train there, this process "
                          "queries models on its CPU", cfg.device)
        return Placement.from_engine("cpu", cfg.dtype)


class Engine:
    def __init__(self, cache: ModelCache, cfg: EngineConfig, reporter: Reporter | None = None):
        self.cache = cache
        self.cfg = cfg
        self.reporter = reporter
        self.placement = driver_placement(cfg)  # where this process places models (queries; local training)
        self.executor = make_executor(cfg, self.placement)

    def trainer(self, group: TrainGroup, vectorized: bool | None = None) -> str:
        """Which trainer trains the group: engine.vectorized when set, else the study's preference
        (``vectorized``, default True); packed LoRA where asked for and the group allows it."""
        vec = self.cfg.vectorized if self.cfg.vectorized is not None else (True if vectorized is None else vectorized)
        if group.dp_specs and group.dp_specs[0] is not None:
            return "dp-vectorized" if vec else "dp-opacus"
        if self.cfg.packed_lora and group.masks is None and packable(group.template, [j.init for j in group.jobs],
                                                                      group.trainable):
            return "packed-lora"
        return "vectorized" if vec else "loop"

    def train(self, group: TrainGroup, vectorized: bool | None = None) -> TrainResult:
        """Train what the cache lacks. A model's key is the group's content key plus the trainer:
        the trainers agree to float tolerance, not bit for bit, so a model from one is never
        served for another."""
        trainer = self.trainer(group, vectorized)
        keys = [content_key(job=k, trainer=trainer, **self.executor.placement().key()) for k in group.keys]
        specs = [state_spec(j.init) for j in group.jobs]
        missing = [i for i, key in enumerate(keys) if not self.cache.usable(key, specs[i])]
        progress.log.debug("group %s: %d of %d models cached, trainer %s", group.name, len(keys) - len(missing),
                           len(keys), trainer)
        # Accounting is deterministic, so it is redone (cheaply) for cached groups too.
        resolved = {spec: spec.resolve() for spec in dict.fromkeys(group.dp_specs) if spec is not None}
        dp_jobs = [resolved[spec] for spec in group.dp_specs] if resolved else None
        trained = self._train_missing(group, keys, missing, dp_jobs, trainer, specs) if missing else 0
        return TrainResult(keys=keys, trained=trained, loaded=len(keys) - trained, cache=self.cache,
                           dp=dp_jobs[0] if dp_jobs else None, dp_jobs=dp_jobs, specs=specs,
                           retrain=partial(self._train_missing, group, keys, dp_jobs=dp_jobs, trainer_name=trainer,
                                           specs=specs))

    def _train_missing(self, group: TrainGroup, keys: list[str], missing: list[int], dp_jobs: list[dict] | None,
                       trainer_name: str, specs: list[Spec]) -> int:
        """Train ``missing`` jobs chunk by chunk through the executor; returns how many this process
        trained. The chunks of a window (one for the local executor, many for Ray) are claimed first
        (store/locks.py, one sorted claim: no deadlock), then looked up again: models another run on
        the same store trained meanwhile are loaded, not trained twice. Each chunk is saved as it
        comes back, by this process only (the cache and the store keep one writer)."""
        trained = 0
        # a bar on a terminal, log lines otherwise (ftaudit.progress), and the caller's reporter if any
        description = f"training {group.name} ({plural(len(missing), 'model')})"
        advance = progress.reporter_with(self.reporter)(description, len(missing) * group.steps)
        n_views = n_training_views(group.optim, group.objective)
        chunks = [missing[start:start + self.cfg.chunk] for start in range(0, len(missing), self.cfg.chunk)]
        window = max(1, self.executor.window)
        for first in range(0, len(chunks), window):
            batch = chunks[first:first + window]
            with claim([self.cache.lock_path(keys[i]) for chunk in batch for i in chunk],
                       on_wait=lambda: store_log.info("waiting for another run training models of %s", group.name)):
                todo = []
                for chunk in batch:
                    done = [i for i in chunk if self.cache.usable(keys[i], specs[i])]  # trained meanwhile elsewhere
                    if done:
                        advance(len(done) * group.steps)
                    if len(done) < len(chunk):
                        todo.append([i for i in chunk if i not in done])
                if not todo:
                    continue
                fault_point("training", group.name)
                jobs = [self._chunk_job(group, chunk, dp_jobs, trainer_name, n_views) for chunk in todo]
                for j, states in self.executor.run(jobs, advance):
                    self._save_chunk(group, keys, todo[j], trainer_name, states)
                    trained += len(todo[j])
        return trained

    def _chunk_job(self, group: TrainGroup, chunk: list[int], dp_jobs: list[dict] | None, trainer_name: str,
                   n_views: int) -> ChunkJob:
        """What training ``chunk`` needs, and nothing of the engine (it may run in another process)."""
        jobs = [group.jobs[i] for i in chunk]
        seeds = [j.seed for j in jobs]
        dp = sample_rate = None
        if dp_jobs:
            specs = [group.dp_specs[i] for i in chunk]
            sample_rate = specs[0].sample_rate
            ebs = DPParams.for_rows(1.0, 1.0, sample_rate, [j.rows for j in jobs], seeds).expected_batch_size
            dp = DPParams(tuple(dp_jobs[i]["noise_multiplier"] for i in chunk), tuple(s.clip for s in specs), ebs,
                          tuple(derive_seed(s, "dp-noise") for s in seeds))
        return ChunkJob(group=group.name, trainer=trainer_name, template=group.template, inits=[j.init for j in jobs],
                        trainable=group.trainable, optim=group.optim, x=group.x, y=group.y, masks=group.masks,
                        objective=group.objective, view_seed=int(group.data_digest[:8], 16),
                        rows=[j.rows for j in jobs], seeds=seeds, per_epoch=group.per_epoch, steps=group.steps,
                        n_views=n_views, dp=dp, sample_rate=sample_rate, pack_rows=self.cfg.pack_rows or None)

    def _save_chunk(self, group: TrainGroup, keys: list[str], chunk: list[int], trainer_name: str,
                    states: list[State]) -> None:
        """The frozen-parameter guardrail, then one cache entry per model."""
        if len(states) != len(chunk):
            raise RuntimeError(f"group {group.name}: the executor returned {len(states)} models for {len(chunk)}")
        for i, state in zip(chunk, states):
            job = group.jobs[i]
            check_frozen(job.init, state, group.trainable)
            self.cache.save(keys[i], state, meta={"group": group.name, "method": group.method, "seed": str(job.seed),
                                                  "trainer": trainer_name})
