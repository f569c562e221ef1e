"""Mini-batch schedules, shared by the vectorized and the per-model trainers.

Models train on keep-rows of different lengths, but a vectorized step needs every model to take a
step at once. So every model gets the same number of steps per epoch, S = ceil(max_rows / batch):
each epoch a model shuffles its own rows (its own seed) and splits them into S near-equal batches.
Batches are padded to a common width with a mask. The per-model trainer consumes the very same
batches unpadded, so both paths compute the same function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    index: np.ndarray  # int64 [steps, models, width] rows of the training pool (padding: 0)
    mask: np.ndarray  # float32 [steps, models, width] 1 for real rows
    view: np.ndarray | None = None  # int64 [steps, models, width] training augmentation (0 = original)

    @property
    def steps(self) -> int:
        return self.index.shape[0]

    def batch(self, step: int, model: int) -> np.ndarray:
        """The real (unpadded) rows model `model` trains on at `step`."""
        return self.index[step, model][self.mask[step, model] > 0]

    def batch_views(self, step: int, model: int) -> np.ndarray:
        """The augmentation drawn for each of those rows (all 0 without augmentation)."""
        if self.view is None:
            return np.zeros(int(self.mask[step, model].sum()), dtype=np.int64)
        return self.view[step, model][self.mask[step, model] > 0]


def steps_per_epoch(rows: list[np.ndarray], batch_size: int) -> int:
    return math.ceil(max(len(r) for r in rows) / batch_size)


def make_schedule(rows: list[np.ndarray], seeds: list[int], epochs: int, batch_size: int,
                  per_epoch: int | None = None, n_views: int = 1) -> Schedule:
    """``per_epoch`` fixes the steps per epoch (it is part of a model's cache key, so that a model
    trains identically whichever group it is trained in); by default it is set by the longest row.
    With ``n_views > 1`` every (step, row) also draws one of ``n_views`` augmented views, uniformly,
    from the model's own generator."""
    if len(rows) != len(seeds):
        raise ValueError("one seed per model")
    if any(len(r) == 0 for r in rows):
        raise ValueError("a model has no training rows")
    per_epoch = per_epoch or steps_per_epoch(rows, batch_size)
    if any(len(r) < per_epoch for r in rows):
        raise ValueError(f"every model needs at least {per_epoch} rows (one per step of an epoch)")
    width = max(math.ceil(len(r) / per_epoch) for r in rows)
    steps = epochs * per_epoch
    index = np.zeros((steps, len(rows), width), dtype=np.int64)
    mask = np.zeros((steps, len(rows), width), dtype=np.float32)
    view = np.zeros((steps, len(rows), width), dtype=np.int64) if n_views > 1 else None
    for m, (r, seed) in enumerate(zip(rows, seeds)):
        rng = np.random.default_rng([seed, 0x5C4ED])
        for e in range(epochs):
            for s, chunk in enumerate(np.array_split(rng.permutation(r), per_epoch)):
                index[e * per_epoch + s, m, : len(chunk)] = chunk
                mask[e * per_epoch + s, m, : len(chunk)] = 1.0
        if view is not None:
            view[:, m] = np.random.default_rng([seed, 0xA06]).integers(0, n_views, size=(steps, width))
    return Schedule(index=index, mask=mask, view=view)
