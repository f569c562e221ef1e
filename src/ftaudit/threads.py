"""Torch's thread count for a block of work.

Tiny models and metaclassifiers are dispatch-bound: on a shared 2-core machine a second OpenMP thread
waiting for a busy core made them 5-20x slower, so those paths run on one thread.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None or 0: leave torch's setting), then restore it."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
