"""Per-token signals of language models, for many models (states) one at a time.

Each model is run once over the blocks and everything the LM attacks need is kept as float64
arrays, so the caller can cache them per (model, block set) and the attacks (``ftaudit.attacks.lm``)
never touch a model again. Positions that are not real tokens (document-mode padding) are NaN.

Causal LM, per block and position t = 1..T-1 (what position t-1 predicts):
  logp   log p(x_t | x_<t)
  mu     E_z[log p(z | x_<t)] under the model's own next-token distribution
  sigma  its standard deviation — the Min-K %++ normalisation (Zhang et al. 2024)
Masked LM:
  pll       [T] log p(x_t | the block with x_t masked), each position masked in turn
  mlm_loss  mean masked-LM loss over K seeded random 15 % maskings (every picked token -> [MASK])

Models run through ``functional_call(template, state, ...)`` so states come straight from the
engine's cache, in chunks of about ``budget`` logits to bound memory whatever the vocabulary, on
``device`` (the engine's placement; default the CPU); the arrays come back as CPU numpy.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch.func import functional_call

from ftaudit.data.tokenizer import MASK_ID
from ftaudit.models.lm import LMWrapper
from ftaudit.train.mlm import MASK_RATE, mask_tokens
from ftaudit.train.objectives import token_loss
from ftaudit.train.trainers import State

CAUSAL_SIGNALS = ["logp", "mu", "sigma"]
MASKED_SIGNALS = ["pll", "mlm_loss"]
BUDGET = 1 << 24  # logits per forward chunk (64 MB in float32)


def _inputs(ids, valid) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    ok = torch.ones_like(x, dtype=torch.bool) if valid is None else torch.as_tensor(np.asarray(valid), dtype=torch.bool)
    if x.dim() != 2 or ok.shape != x.shape:
        raise ValueError(f"ids must be [n, T] with valid of the same shape, got {tuple(x.shape)} and {tuple(ok.shape)}")
    return x, ok


def _on(template: LMWrapper, device) -> tuple[LMWrapper, torch.device]:
    device = torch.device(device or "cpu")
    return copy.deepcopy(template).eval().to(device), device


def _placed(state: State, device: torch.device) -> State:
    return {n: t.to(device) for n, t in state.items()}


def _rows(template: LMWrapper, width: int, budget: int) -> int:
    return max(1, budget // (width * template.vocab_size))


STATS_DTYPE = torch.float32  # the softmax statistics' dtype; float64 is the reference path (tests)


def next_token_stats(logits: torch.Tensor, targets: torch.Tensor,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """(logp, mu, sigma) as float64 from next-token logits [..., V] and the tokens that came [...].

    The distribution over the vocabulary (log-softmax, p log p, the variance) is computed in
    ``dtype`` (default :data:`STATS_DTYPE`, float32: half the time of float64 on a CPU, and the
    model's own precision); the per-position results are returned as float64 so that sums over
    tokens and models downstream reduce in float64. float32 moves logp, mu and sigma by ~1e-6
    relative (tests/lm/test_signal_precision.py states the tolerance).
    """
    logq = torch.log_softmax(logits.to(dtype or STATS_DTYPE), dim=-1)
    p = logq.exp()
    logp = logq.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mu = torch.where(p > 0, p * logq, 0.0).sum(-1)
    sigma = torch.where(p > 0, p * (logq - mu.unsqueeze(-1)) ** 2, 0.0).sum(-1).sqrt()
    return logp.double(), mu.double(), sigma.double()


@torch.no_grad()
def causal_lm_signals(template: LMWrapper, states: list[State], ids, valid=None, budget: int = BUDGET,
                      dtype: torch.dtype | None = None, device=None) -> dict[str, np.ndarray]:
    """logp, mu, sigma: float64 [M, n, T-1] for blocks ids [n, T] (valid: bool [n, T], default all);
    ``dtype``: the softmax statistics' precision (:func:`next_token_stats`)."""
    x, ok = _inputs(ids, valid)
    n, t = x.shape
    module, device = _on(template, device)
    step = _rows(template, t, budget)
    out = {name: np.full((len(states), n, t - 1), np.nan) for name in CAUSAL_SIGNALS}
    for m, state in enumerate(states):
        state = _placed(state, device)
        for start in range(0, n, step):
            xb = x[start:start + step].to(device)
            stats = next_token_stats(functional_call(module, state, (xb,))[:, :-1], xb[:, 1:], dtype)
            for name, value in zip(CAUSAL_SIGNALS, stats):
                out[name][m, start:start + step] = value.cpu().numpy()
    for arr in out.values():
        arr[:, ~ok[:, 1:].numpy()] = np.nan
    return out


@torch.no_grad()
def pseudo_log_likelihood(template: LMWrapper, states: list[State], ids, valid=None, mask_id: int = MASK_ID,
                          budget: int = BUDGET, device=None) -> np.ndarray:
    """pll: float64 [M, n, T]. Every (block, real position) pair becomes one input row with that
    position masked; rows of all blocks are batched together, so one forward covers many blocks."""
    x, ok = _inputs(ids, valid)
    n, t = x.shape
    block, pos = torch.nonzero(ok, as_tuple=True)  # the pairs to score
    module, device = _on(template, device)
    step = _rows(template, t, budget)
    out = np.full((len(states), n, t), np.nan)
    for m, state in enumerate(states):
        state = _placed(state, device)
        for start in range(0, len(block), step):
            b, p = block[start:start + step], pos[start:start + step]
            rows = x[b].clone()
            rows[torch.arange(len(b)), p] = mask_id
            logits = functional_call(module, state, (rows.to(device),))  # [r, T, V]
            logits = logits[torch.arange(len(b), device=device), p.to(device)].cpu()  # [r, V] at the masked slot
            logp = torch.log_softmax(logits.to(torch.float64), -1).gather(-1, x[b, p].unsqueeze(-1)).squeeze(-1)
            out[m, b.numpy(), p.numpy()] = logp.numpy()
    return out


@torch.no_grad()
def masked_lm_loss(template: LMWrapper, states: list[State], ids, valid=None, mask_id: int = MASK_ID,
                   maskings: int = 8, seed: int = 0, rate: float = MASK_RATE, budget: int = BUDGET,
                   device=None) -> np.ndarray:
    """mlm_loss: float64 [M, n], each block's masked-token cross-entropy averaged over ``maskings``
    seeded random maskings (the same maskings for every model)."""
    x, ok = _inputs(ids, valid)
    n, t = x.shape
    inputs, targets = mask_tokens(x, ok, maskings, seed, mask_id, rate, mask_share=1.0, random_share=0.0)
    inputs, targets = inputs.reshape(maskings * n, t), targets.reshape(maskings * n, t)
    module, device = _on(template, device)
    step = _rows(template, t, budget)
    out = np.empty((len(states), maskings * n))
    for m, state in enumerate(states):
        state = _placed(state, device)
        for start in range(0, len(inputs), step):
            logits = functional_call(module, state, (inputs[start:start + step].to(device),)).to(torch.float64)
            out[m, start:start + step] = token_loss(logits, targets[start:start + step].to(device)).cpu().numpy()
    return out.reshape(len(states), maskings, n).mean(1)


def masked_lm_signals(template: LMWrapper, states: list[State], ids, valid=None, mask_id: int = MASK_ID,
                      maskings: int = 8, seed: int = 0, budget: int = BUDGET, device=None) -> dict[str, np.ndarray]:
    """pll [M, n, T] and mlm_loss [M, n], as above."""
    return {"pll": pseudo_log_likelihood(template, states, ids, valid, mask_id, budget, device),
            "mlm_loss": masked_lm_loss(template, states, ids, valid, mask_id, maskings, seed, budget=budget,
                                       device=device)}
