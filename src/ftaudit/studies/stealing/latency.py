"""Architecture identification from latency, as an API user measures it.

A profile is the median wall time of a call for every (batch size, input length) cell; deeper or
wider encoders are slower in a pattern over the cells. The attacker measures the profiles of the
candidate architectures on its own copies and picks the closest (mean absolute difference of log
latencies). A profile costs Σ_cells batch × (repeats + 1) query rows.

The attacker's clock runs around the public call (:func:`timed_call`), so a measurement holds
everything an answer costs (input checks, the model, the softmax), as a client sees it. The channel
is still idealised: victim and attacker run in one process on one machine, with no network, queue
or batching between them, and the attacker's copies on the same hardware (as the paper's GPU timing
assumed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencyGrid:
    lengths: tuple[int, ...]
    batches: tuple[int, ...]
    repeats: int
    vocab: int
    seed: int = 0

    @property
    def rows(self) -> int:
        return len(self.lengths) * sum(b * (self.repeats + 1) for b in self.batches)


def timed_call(query: Callable[[np.ndarray], np.ndarray], ids: np.ndarray) -> tuple[np.ndarray, float]:
    """(answers, seconds): the attacker's wall clock around one public call."""
    start = time.perf_counter()
    answers = query(ids)
    return answers, time.perf_counter() - start


def clock(query: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], float]:
    """The call :func:`latency_profile` times: seconds of one public call of ``query``."""
    return lambda ids: timed_call(query, ids)[1]


def latency_profile(call: Callable[[np.ndarray], float], grid: LatencyGrid) -> np.ndarray:
    """[len(batches), len(lengths)] median seconds; one warm-up per cell, then the repeats visit the
    cells round-robin so that drifts in machine load hit all cells alike."""
    rng = np.random.default_rng([grid.seed, 0x1A7])
    cells = [(i, j) for i in range(len(grid.batches)) for j in range(len(grid.lengths))]
    inputs = {(i, j): rng.integers(5, grid.vocab, size=(grid.batches[i], grid.lengths[j])).astype(np.int64)
              for i, j in cells}
    for cell in cells:
        call(inputs[cell])
    times = np.zeros((grid.repeats, len(grid.batches), len(grid.lengths)))
    for r in range(grid.repeats):
        for i, j in cells:
            times[r, i, j] = call(inputs[(i, j)])
    return np.median(times, axis=0)


def identify_architecture(victim: np.ndarray, candidates: dict[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """(closest architecture, every distance): mean |log victim − log candidate| over the cells."""
    dists = {name: float(np.mean(np.abs(np.log(victim) - np.log(p)))) for name, p in candidates.items()}
    return min(dists, key=dists.get), dists
