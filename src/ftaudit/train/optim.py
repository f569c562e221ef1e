"""Optimisers from the config. Adam and SGD are elementwise, so one torch.optim optimiser over
stacked [M, ...] parameters is exactly M independent optimisers — the vectorized path relies on it."""
from __future__ import annotations

from typing import Iterable

import torch

from ftaudit.config import OptimConfig


def make_optimizer(params: Iterable[torch.Tensor], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
