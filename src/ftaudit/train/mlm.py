"""The masked-LM objective: BERT's masking as training views.

Each block gets ``MLM_VIEWS`` fixed random maskings (BERT's static masking: the original BERT data
duplicated every sequence 10 times with different masks). A masking picks round(15 %) of the block's
real tokens (at least one) and, BERT's 80/10/10 rule, replaces each picked token by ``[MASK]`` with
probability 0.8, by a random token with probability 0.1, and leaves it with probability 0.1; the
targets are the original tokens at the picked positions and IGNORE elsewhere. The trainers draw one
masking per (step, row) from the schedule, so the vectorized and per-model paths see the same
inputs. Random replacements are drawn from the training pool's own tokens (its unigram
distribution) rather than uniformly over the vocabulary, which the objective does not know.
"""
from __future__ import annotations

import numpy as np
import torch

from ftaudit.data.tokenizer import MASK_ID
from ftaudit.train.objectives import IGNORE, OBJECTIVES, Objective, register_objective, token_loss

MLM_VIEWS = 10
MASK_RATE = 0.15


def mask_tokens(x: torch.Tensor, counted: torch.Tensor, n_views: int, seed: int, mask_id: int,
                rate: float = MASK_RATE, mask_share: float = 0.8,
                random_share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_views`` seeded maskings of blocks x [n, T] (``counted`` [n, T] bool: real tokens):
    inputs and targets, both int64 [n_views, n, T] on x's device (drawn on the CPU with numpy,
    so the maskings do not depend on the device)."""
    rng = np.random.default_rng([seed, 0x4D4C4D])
    xs, ok = x.cpu().numpy(), counted.cpu().numpy().astype(bool)
    shape = (n_views, *xs.shape)
    n_real = ok.sum(-1)
    n_pick = np.where(n_real > 0, np.maximum(1, np.rint(rate * n_real)), 0).astype(np.int64)  # [n]
    noise = np.where(ok, rng.random(shape), 2.0)  # padding sorts last and is never picked
    rank = np.argsort(np.argsort(noise, axis=-1, kind="stable"), axis=-1, kind="stable")
    picked = (rank < n_pick[:, None]) & ok
    action = rng.random(shape)
    pool = xs[ok]
    replacement = pool[rng.integers(0, len(pool), size=shape)] if len(pool) else np.full(shape, mask_id)
    inputs = np.where(picked & (action < mask_share), mask_id, xs)
    inputs = np.where(picked & (action >= mask_share) & (action < mask_share + random_share), replacement, inputs)
    targets = np.where(picked, xs, IGNORE)
    return (torch.from_numpy(inputs.astype(np.int64)).to(x.device),
            torch.from_numpy(targets.astype(np.int64)).to(x.device))


def _views_for(mask_id: int):
    def mlm_views(x: torch.Tensor, y: torch.Tensor, augment: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """x: token ids [n, T]; y: the same ids with IGNORE at padding. ``augment`` does not apply."""
        inputs, targets = mask_tokens(x, y != IGNORE, MLM_VIEWS, seed, mask_id)
        return inputs, targets, True

    return mlm_views


def masked_lm_objective(mask_id: int = MASK_ID) -> str:
    """The name of the masked-LM objective for a tokenizer whose ``[MASK]`` has id ``mask_id``:
    ``masked-lm`` for ftaudit's own tokenizers, ``masked-lm[mask=<id>]`` (registered on first use)
    for others. The name is part of every model's cache key, so the mask id is too."""
    name = "masked-lm" if mask_id == MASK_ID else f"masked-lm[mask={mask_id}]"
    if name not in OBJECTIVES:
        register_objective(Objective(name, token_loss, _views_for(mask_id), lambda augment: MLM_VIEWS))
    return name


masked_lm_objective(MASK_ID)
