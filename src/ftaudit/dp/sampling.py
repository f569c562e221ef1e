"""Poisson-sampled batch schedules: what the DP accountants assume.

The privacy analysis of DP-SGD (Opacus's and dp_accounting's alike) is for Poisson sampling: at every
step every row joins the batch independently with probability q, so batch sizes vary and a batch can
be empty. Each model draws from its own seeded generator. The result is the trainers' ordinary
:class:`Schedule` (padded to the step's widest batch, mask 0 on padding), so the vectorized and the
per-model DP trainers consume the very same batches.
"""
from __future__ import annotations

import numpy as np

from ftaudit.train.schedule import Schedule


def steps_for(epochs: float, sample_rate: float) -> int:
    """Steps that make ``epochs`` expected passes over the data: round(epochs / q)."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    return max(1, round(epochs / sample_rate))


def poisson_schedule(rows: list[np.ndarray], sample_rate: float, steps: int, seeds: list[int],
                     n_views: int = 1) -> Schedule:
    """Every step, model m includes each of its ``rows[m]`` independently with probability q. With
    ``n_views > 1`` each (step, row) also draws a training view uniformly, as in ``make_schedule``."""
    if len(rows) != len(seeds):
        raise ValueError("one seed per model")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if any(len(r) == 0 for r in rows):
        raise ValueError("a model has no training rows")
    picks = [np.random.default_rng([seed, 0x9015]).random((steps, len(r))) < sample_rate
             for r, seed in zip(rows, seeds)]
    width = max(1, max(int(p.sum(1).max(initial=0)) for p in picks))
    index = np.zeros((steps, len(rows), width), dtype=np.int64)
    mask = np.zeros((steps, len(rows), width), dtype=np.float32)
    for m, (r, pick) in enumerate(zip(rows, picks)):
        step, j = np.nonzero(pick)
        slot = (np.cumsum(pick, axis=1) - 1)[step, j]  # chosen rows packed to the front, in row order
        index[step, m, slot] = np.asarray(r, dtype=np.int64)[j]
        mask[step, m, slot] = 1.0
    view = None
    if n_views > 1:
        view = np.stack([np.random.default_rng([seed, 0xA06]).integers(0, n_views, size=(steps, width))
                         for seed in seeds], axis=1)
    return Schedule(index=index, mask=mask, view=view)


__all__ = ["poisson_schedule", "steps_for"]
