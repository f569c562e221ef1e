"""What the forgetting study trains: injection and poison schedules, determinism, checkpointed runs.

Jagielski et al. (2022) measure how the exposure of an example fades after it was last seen. That
needs three things the engine does not do by itself:

* schedules in which chosen examples appear at exactly known steps and nowhere else — built here as
  ordinary :class:`Schedule` objects, so the engine's trainers consume them unchanged;
* a determinism switch under which IN and OUT models differ *only* by those examples (one shared
  seed for init, data order and augmentation draws; deterministic kernels);
* signals at many checkpoints without saving any weights: measured inside the vectorized run
  through its step hook, and cached per checkpoint by content key (through the study's
  ``ctx.cached``), so a rerun trains nothing.
"""
from __future__ import annotations

import copy
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ftaudit.config import OptimConfig
from ftaudit.devices import Placement
from ftaudit.finetune.methods import check_frozen
from ftaudit.seeding import derive_seed
from ftaudit.store.cache import content_key, state_digest
from ftaudit.train.schedule import Schedule, make_schedule, steps_per_epoch
from ftaudit.train.trainers import Progress, State, train_vectorized

# --------------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Injection:
    """Where injected examples enter training; the same for every model (OUT models mask them).

    rows  : int64 [K] rows of the training pool
    steps : per example, the sorted 0-based steps whose batch holds it (for models that keep it)
    """

    rows: np.ndarray
    steps: tuple[np.ndarray, ...]

    @property
    def last_seen(self) -> np.ndarray:
        return np.array([s[-1] for s in self.steps], dtype=np.int64)

    @property
    def repetitions(self) -> np.ndarray:
        return np.array([len(s) for s in self.steps], dtype=np.int64)


def pass_width(n_examples: int, per_step: int) -> int:
    """Steps one injection pass spans when it places at most ``per_step`` examples in a step."""
    return math.ceil(n_examples / per_step)


def injection_plan(rows: np.ndarray, repeats: Sequence[int], last_step: int, gap: int, per_step: int) -> Injection:
    """Example i is seen ``repeats[i]`` times, in passes counted back from the last one.

    A pass spans w = ceil(K / per_step) steps; pass q (q = 0 is the last) covers steps
    last_step - q*gap - (w-1) ... last_step - q*gap, and example i always takes offset i mod w in
    it. So every example, whatever its repetition count, is last seen within the same w steps, and
    examples of one count spread evenly over them (their blocks are contiguous, w <= block size).
    """
    rows = np.asarray(rows, dtype=np.int64)
    repeats = np.asarray(repeats, dtype=np.int64)
    if rows.shape != repeats.shape or rows.size == 0:
        raise ValueError("one repetition count per injected row, at least one row")
    if (repeats < 1).any() or per_step < 1:
        raise ValueError("repetitions and per_step must be positive")
    w = pass_width(rows.size, per_step)
    if repeats.max() > 1 and gap < w:
        raise ValueError(f"passes overlap: gap {gap} < pass width {w}")
    first = last_step - (int(repeats.max()) - 1) * gap - (w - 1)
    if first < 0:
        raise ValueError(f"the first pass would start at step {first}")
    steps = tuple(np.sort(last_step - (w - 1) + (i % w) - gap * np.arange(r)).astype(np.int64)
                  for i, r in enumerate(repeats))
    return Injection(rows=rows, steps=steps)


def inject(base: Schedule, plan: Injection, keep: np.ndarray, seeds: Sequence[int], n_views: int = 1) -> Schedule:
    """The base schedule plus injected examples appended to the batches of their steps.

    Every (example, step) gets one extra column, the same in every model: models that keep the
    example (``keep`` [M, K]) see it (mask 1), the others do not (mask 0). The base rows keep their
    columns and augmentation draws, so with shared seeds an IN and an OUT model see identical batches
    but for the injected rows. Injected rows draw their views from each model's own generator.
    """
    n_models = base.index.shape[1]
    if keep.shape != (n_models, plan.rows.size):
        raise ValueError(f"keep must be [{n_models}, {plan.rows.size}], got {list(keep.shape)}")
    if len(seeds) != n_models:
        raise ValueError("one seed per model")
    cols: dict[int, int] = {}
    slots = []  # (step, column, example)
    for i, steps in enumerate(plan.steps):
        if steps.size and (steps[0] < 0 or steps[-1] >= base.steps):
            raise ValueError(f"injection step outside the schedule's {base.steps} steps")
        for s in steps.tolist():
            slots.append((s, cols.get(s, 0), i))
            cols[s] = cols.get(s, 0) + 1
    extra = max(cols.values(), default=0)
    shape = (base.steps, n_models, extra)
    index = np.zeros(shape, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.float32)
    for s, c, i in slots:
        index[s, :, c] = plan.rows[i]
        mask[s, :, c] = keep[:, i]
    view = None
    if base.view is not None or n_views > 1:
        view = np.zeros(shape, dtype=np.int64)
        if n_views > 1:
            for m, seed in enumerate(seeds):
                view[:, m] = np.random.default_rng([seed, 0x1A7EC7]).integers(0, n_views, size=(base.steps, extra))
    base_view = base.view if base.view is not None else (np.zeros_like(base.index) if view is not None else None)
    return Schedule(index=np.concatenate([base.index, index], axis=2), mask=np.concatenate([base.mask, mask], axis=2),
                    view=None if view is None else np.concatenate([base_view, view], axis=2))


def take(schedule: Schedule, steps: int) -> Schedule:
    """The first ``steps`` steps of a schedule."""
    if not 0 < steps <= schedule.steps:
        raise ValueError(f"cannot take {steps} of {schedule.steps} steps")
    return Schedule(index=schedule.index[:steps], mask=schedule.mask[:steps],
                    view=None if schedule.view is None else schedule.view[:steps])


def concat(first: Schedule, then: Schedule) -> Schedule:
    """``first``'s steps, then ``then``'s (phases, e.g. a sensitive set before the other data);
    batches are padded to the wider of the two."""
    width = max(first.index.shape[2], then.index.shape[2])

    def pad(a: np.ndarray | None, like: np.ndarray) -> np.ndarray:
        a = np.zeros_like(like) if a is None else a
        return np.pad(a, ((0, 0), (0, 0), (0, width - a.shape[2])))

    view = None
    if first.view is not None or then.view is not None:
        view = np.concatenate([pad(first.view, first.index), pad(then.view, then.index)])
    return Schedule(index=np.concatenate([pad(first.index, first.index), pad(then.index, then.index)]),
                    mask=np.concatenate([pad(first.mask, first.mask), pad(then.mask, then.mask)]), view=view)


def epochs_for(rows: list[np.ndarray], seeds: Sequence[int], steps: int, batch_size: int, n_views: int = 1) -> Schedule:
    """The engine's epoch schedule over ``rows``, cut to exactly ``steps`` steps."""
    per_epoch = steps_per_epoch(rows, batch_size)
    full = make_schedule(rows, list(seeds), math.ceil(steps / per_epoch), batch_size, n_views=n_views)
    return take(full, steps)


# -------------------------------------------------------------------------------- determinism


def model_seeds(run_seed: int, label: str, n_models: int, deterministic: bool) -> list[int]:
    """Deterministic: every model shares one seed (init, data order, augmentation draws), so IN and
    OUT models differ only by the injected examples. Otherwise each model has its own randomness."""
    if deterministic:
        return [derive_seed(run_seed, label, "shared")] * n_models
    return [derive_seed(run_seed, label, m) for m in range(n_models)]


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the block, restored afterwards. On CUDA, cuBLAS
    is deterministic only with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, set here unless the
    user set it)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


# ------------------------------------------------------------------------- checkpointed runs

Measure = Callable[[list[State]], dict[str, np.ndarray]]  # states -> named arrays with a leading model axis


@dataclass
class Checkpointed:
    key: str  # content key of the whole run (recorded as the models' key)
    steps: list[int]  # checkpoints, in steps done
    signals: list[dict[str, np.ndarray]]  # per checkpoint, the measured arrays
    trained: bool  # False when every checkpoint came from the cache
    final: list[State] | None = None  # the final weights, when trained (never cached)


def run_key(arch: dict, inits: list[State], trainable: list[str], optim: OptimConfig, data_digest: str,
            schedule: Schedule, measure_key: str, deterministic: bool, placement: dict | None = None) -> str:
    """Everything that determines the checkpoints' signals (``placement``: ``Placement.key()``,
    empty on CPU float32)."""
    return content_key(kind="checkpointed-run", arch=arch, inits=[state_digest(s) for s in inits],
                       trainable=sorted(trainable), optim={k: getattr(optim, k) for k in OptimConfig.model_fields},
                       data=data_digest, index=schedule.index, mask=schedule.mask,
                       view="none" if schedule.view is None else schedule.view,
                       measure=measure_key, deterministic=deterministic, **(placement or {}))


Arrays = dict[str, np.ndarray]
# ``ctx.cached`` bound to a cache kind: (keys, compute(missing indices) -> arrays per index) -> arrays per key
Cached = Callable[[Sequence[str], Callable[[list[int]], list[Arrays]]], list[Arrays]]


def train_checkpointed(cached: Cached, template: nn.Module, arch: dict, inits: list[State], trainable: list[str],
                       optim: OptimConfig, x: torch.Tensor, y: torch.Tensor, data_digest: str, schedule: Schedule,
                       checkpoints: Sequence[int], measure: Measure, measure_key: str, names: list[str],
                       deterministic: bool, progress: Progress | None = None,
                       placement: Placement | None = None) -> Checkpointed:
    """Train every model on ``schedule`` with the engine's vectorized trainer, measuring the models
    after each checkpoint's step. The checkpoints' arrays go through ``cached`` (one entry per
    checkpoint, keyed by the run's content key and the step): the run trains only when one of
    them is missing, and then measures them all in that one pass. With a ``placement`` the run
    trains on its device (under its autocast) and ``measure`` receives states on that device; the
    final states come back to the CPU."""
    place = placement or Placement()
    steps = sorted(set(int(c) for c in checkpoints))
    if not steps or steps[0] < 1 or steps[-1] > schedule.steps:
        raise ValueError(f"checkpoints must lie in [1, {schedule.steps}], got {list(checkpoints)}")
    key = run_key(arch, inits, trainable, optim, data_digest, schedule, measure_key, deterministic, place.key())
    final: list[State] = []

    def compute(missing: list[int]) -> list[Arrays]:
        measured: dict[int, Arrays] = {}

        def hook(done: int, current: Callable[[], list[State]]) -> None:
            if done in steps:
                with torch.autocast(place.device.type, enabled=False):  # signals in float32 whatever engine.dtype
                    measured[done] = measure(current())

        module = template if place.device.type == "cpu" else place.module(copy.deepcopy(template))
        with deterministic_algorithms(deterministic), place.autocast():
            states = train_vectorized(module, [place.state(s) for s in inits], trainable, optim, place.tensor(x),
                                      place.tensor(y), schedule, progress=progress, view_seed=int(data_digest[:8], 16),
                                      on_step=hook)
        states = [Placement.to_cpu(s) for s in states]
        for init, state in zip(inits, states):
            check_frozen(init, state, trainable)
        final.extend(states)
        return [{n: measured[steps[i]][n] for n in names} for i in missing]

    signals = cached([content_key(run=key, step=c) for c in steps], compute)
    return Checkpointed(key, steps, signals, trained=bool(final), final=final or None)
