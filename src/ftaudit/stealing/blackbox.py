"""The victim served as an API: token ids in, class probabilities (or the top-1 label) out, timed.

The attacks of this package use only this public surface: ``query``, ``timed_query``,
``queries_used``, ``n_classes`` and ``top1``. The model lives in a closure made in ``__init__`` and
the class has ``__slots__``, so no attribute of an instance holds it. (Python cannot truly hide an
object in the same process; the wrapper is a contract, and the tests check that it keeps it.)
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn


class QueryBudgetExceeded(RuntimeError):
    """The API's query budget is spent."""


class BlackBox:
    __slots__ = ("_answer", "_used", "_budget", "_max_batch", "_vocab", "_n_classes", "_top1")

    def __init__(self, model: nn.Module, top1: bool = False, max_batch: int = 1024, budget: int | None = None,
                 vocab_size: int | None = None):
        model.eval()

        @torch.no_grad()
        def answer(ids: np.ndarray) -> tuple[np.ndarray, float]:
            x = torch.from_numpy(ids)
            start = time.perf_counter()
            logits = model(x)
            seconds = time.perf_counter() - start
            return logits.double().numpy(), seconds

        self._answer: Callable[[np.ndarray], tuple[np.ndarray, float]] = answer
        self._used, self._budget, self._max_batch, self._vocab, self._top1 = 0, budget, max_batch, vocab_size, bool(top1)
        self._n_classes = int(answer(np.zeros((1, 1), dtype=np.int64))[0].shape[-1])  # the documented label set

    @property
    def queries_used(self) -> int:
        return self._used

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def top1(self) -> bool:
        return self._top1

    def _check(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"queries must be a 2-D array of integer token ids [batch, length], got {ids.dtype} {ids.shape}")
        if len(ids) > self._max_batch:
            raise ValueError(f"batch of {len(ids)} rows exceeds the API's maximum of {self._max_batch}")
        if len(ids) and (ids.min() < 0 or (self._vocab is not None and ids.max() >= self._vocab)):
            raise ValueError(f"token ids must lie in [0, {self._vocab}), got [{ids.min()}, {ids.max()}]")
        if self._budget is not None and self._used + len(ids) > self._budget:
            raise QueryBudgetExceeded(f"{self._used} of {self._budget} queries used; {len(ids)} more asked")
        return ids.astype(np.int64)

    def timed_query(self, ids) -> tuple[np.ndarray, float]:
        """(answers, seconds of the model call): probabilities [b, K] or top-1 labels [b]."""
        ids = self._check(ids)
        logits, seconds = self._answer(ids)
        self._used += len(ids)
        if self._top1:
            return logits.argmax(-1).astype(np.int64), seconds
        z = logits - logits.max(-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(-1, keepdims=True), seconds

    def query(self, ids) -> np.ndarray:
        return self.timed_query(ids)[0]
