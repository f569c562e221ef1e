"""The victim served as an API: token ids in, class probabilities (or the top-1 label) out.

The attacks of this study use only this public surface: ``query``, ``queries_used``, ``n_classes``
and ``top1``. The API reports no timing: the attacker times its own calls (``latency.timed_call``). The model lives in a closure made in ``__init__`` and
the class has ``__slots__``, so no attribute of an instance holds it. (Python cannot truly hide an
object in the same process; the wrapper is a contract, and the tests check that it keeps it.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ftaudit.devices import module_device


class QueryBudgetExceeded(RuntimeError):
    """The API's query budget is spent."""


class BlackBox:
    __slots__ = ("_answer", "_used", "_budget", "_max_batch", "_vocab", "_n_classes", "_top1")

    def __init__(self, model: nn.Module, top1: bool = False, max_batch: int = 1024, budget: int | None = None,
                 vocab_size: int | None = None):
        model.eval()
        device = module_device(model)  # served where it lives (engine.device)

        @torch.no_grad()
        def answer(ids: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(ids).to(device)).double().cpu().numpy()

        self._answer: Callable[[np.ndarray], np.ndarray] = answer
        self._used, self._budget, self._max_batch, self._vocab, self._top1 = 0, budget, max_batch, vocab_size, bool(top1)
        self._n_classes = int(answer(np.zeros((1, 1), dtype=np.int64)).shape[-1])  # the documented label set

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

    def query(self, ids) -> np.ndarray:
        """The answers: probabilities [b, K], or top-1 labels [b]."""
        ids = self._check(ids)
        logits = self._answer(ids)
        self._used += len(ids)
        if self._top1:
            return logits.argmax(-1).astype(np.int64)
        z = logits - logits.max(-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(-1, keepdims=True)
