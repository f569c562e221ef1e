"""Training objectives: what a model's outputs are scored against, and which views it trains on.

An objective turns logits and targets into one loss per batch row (``[..., width]``); the trainers
average it over each model's real rows. It also builds the training views: ``[V, n, ...]`` inputs
(and, when the targets depend on the view, ``[V, n, ...]`` targets) from which every (step, row)
draws one, so the vectorized and per-model trainers see the very same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ftaudit.data.augment import query_views

IGNORE = -100  # target value of positions that do not count (padding, unmasked MLM tokens)


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: bfloat16/float16 ones (a model under ``engine.dtype=bfloat16`` autocast,
    which on a CPU leaves log-softmax in bfloat16) in float32, others unchanged."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row: logits [..., C], integer targets [...] -> [...]."""
    return -torch.log_softmax(_wide(logits), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to probability rows (a teacher's soft labels): logits [..., C], float targets
    [..., C] -> [...]; the KL divergence to the teacher up to its entropy (a constant)."""
    return -(targets * torch.log_softmax(_wide(logits), -1)).sum(-1)


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the counted tokens of each row: logits [..., T, V], targets [..., T]
    with IGNORE where a token does not count -> [...]."""
    counted = targets != IGNORE
    safe = torch.where(counted, targets, torch.zeros_like(targets))
    nll = -torch.log_softmax(_wide(logits), -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (nll * counted).sum(-1) / counted.sum(-1).clamp(min=1)


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts token t+1 (targets are the input ids)."""
    return token_loss(logits[..., :-1, :], targets[..., 1:])


# Views: (x [n, ...], y [n, ...], augment, seed) -> (x views [V, n, ...], y or y views [V, n, ...], per_view)
ViewFn = Callable[[torch.Tensor, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor, bool]]


def shift_views(x: torch.Tensor, y: torch.Tensor, augment: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Images: the original plus pixel shifts of up to ``augment`` pixels (labels do not change)."""
    if augment and x.dim() != 4:
        raise ValueError("pixel-shift augmentation needs image inputs [n, C, H, W]")
    return (query_views(x, augment) if augment else x.unsqueeze(0)), y, False


def identity_views(x: torch.Tensor, y: torch.Tensor, augment: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    return x.unsqueeze(0), y, False


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    views: ViewFn
    n_views: Callable[[int], int]  # augment -> V


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    if objective.name in OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} registered twice")
    OBJECTIVES[objective.name] = objective
    return objective


register_objective(Objective("classification", classification_loss, shift_views, lambda augment: 1 + 4 * augment))
register_objective(Objective("causal-lm", causal_lm_loss, identity_views, lambda augment: 1))
register_objective(Objective("distillation", soft_cross_entropy, identity_views, lambda augment: 1))


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


import ftaudit.train.mlm  # noqa: E402,F401  (registers masked-lm)
