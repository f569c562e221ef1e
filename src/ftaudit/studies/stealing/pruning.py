"""Weight-extraction pruning: estimate only the weights fine-tuning changed most.

A fine-tuned victim differs from its base in few places that matter. After distilling the head on
top of the frozen base, the attacker scores every encoder element from the gradients of the
distillation loss at that point, over batches of its queries, and trains only the top fraction p of
elements, keeping the rest at the base (element masks in the engine). Two scores:

* ``fisher`` — the empirical Fisher information, Σ_b g_b²: how much the loss reacts to the element;
* ``snr`` — |Σ_b g_b| / √(Σ_b g_b²): how consistently the batches push it one way. Adam, which
  fine-tuned the victims, moves an element by about lr × (mean gradient / RMS gradient) per step,
  whatever the gradient's scale, so the elements that fine-tuning moved far are those with
  consistent gradients, not those with large ones. :func:`change_recall` checks the selection against the truth the attacker
never sees: the share of the victim's p most-changed elements (|θ_victim − θ_base|) it picked.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ftaudit.train.objectives import get_objective


SCORES = ("snr", "fisher")


def gradient_scores(model: nn.Module, state: dict, names: list[str], x: torch.Tensor, y: torch.Tensor,
                    objective: str, batch: int = 16) -> dict[str, dict[str, torch.Tensor]]:
    """{"fisher": Σ_b g_b², "snr": |Σ_b g_b| / √Σ_b g_b²} per element of ``names``, g_b the gradient
    of the mean loss on query batch b (elements with no gradient score 0 under both)."""
    loss_fn = get_objective(objective).loss
    params = {n: state[n].clone().requires_grad_(True) for n in names}
    rest = {n: v for n, v in state.items() if n not in params}
    total = {n: torch.zeros_like(v) for n, v in params.items()}
    squares = {n: torch.zeros_like(v) for n, v in params.items()}
    for lo in range(0, len(x), batch):
        logits = functional_call(model, {**rest, **params}, (x[lo:lo + batch],))
        grads = torch.autograd.grad(loss_fn(logits, y[lo:lo + batch]).mean(), list(params.values()))
        for n, g in zip(params, grads):
            total[n] += g.detach()
            squares[n] += g.detach() ** 2
    snr = {n: torch.where(squares[n] > 0, total[n].abs() / squares[n].clamp(min=1e-300).sqrt(), 0.0) for n in names}
    return {"fisher": squares, "snr": snr}


def top_fraction_masks(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """{name: 0/1 float mask} selecting the ``fraction`` highest-scoring elements over all tensors
    (at least one; never an element of score 0, which the queries give no gradient and so could not
    move); tensors with no selected element are left out."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = min(max(1, int(round(fraction * flat.numel()))), max(1, int((flat > 0).sum())))
    order = torch.argsort(flat, descending=True, stable=True)[:k]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order] = True
    masks, lo = {}, 0
    for name, s in scores.items():
        part = chosen[lo:lo + s.numel()].reshape(s.shape)
        lo += s.numel()
        if part.any():
            masks[name] = part.float()
    return masks


def change_recall(masks: dict[str, torch.Tensor], base: dict, victim: dict, names: list[str]) -> float:
    """Share of the victim's most-changed elements (as many as the masks select) that they select."""
    delta = torch.cat([(victim[n] - base[n]).abs().flatten() for n in names])
    picked = torch.cat([masks.get(n, torch.zeros_like(base[n])).flatten() for n in names]).bool()
    k = int(picked.sum())
    if k == 0:
        return float("nan")
    truth = torch.zeros_like(picked)
    truth[torch.argsort(delta, descending=True, stable=True)[:k]] = True
    return float((truth & picked).sum()) / k


def relative_distance(state: dict, victim: dict, names: list[str]) -> float:
    """‖θ − θ_victim‖ / ‖θ_victim‖ over ``names`` (the encoder)."""
    num = sum(float(((state[n] - victim[n]) ** 2).sum()) for n in names)
    den = sum(float((victim[n] ** 2).sum()) for n in names)
    return float(np.sqrt(num / den))
