"""The two trainers: M models at once with torch.func, or one model at a time.

Both take the same inputs — a module template, each model's initial state, the trainable names,
the optimiser config, the training pool and a :class:`Schedule` — and return each model's final
state. The per-model path is the reference the vectorized path is tested against, and the fallback
for what vmap cannot take.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ftaudit.config import OptimConfig
from ftaudit.data.augment import query_views
from ftaudit.train.optim import make_optimizer
from ftaudit.train.schedule import Schedule

State = dict[str, torch.Tensor]
Progress = Callable[[int], None]


def training_views(x: torch.Tensor, optim: OptimConfig) -> torch.Tensor:
    """[V, n, ...] precomputed training views of x (V = 1 without augmentation): drawing a random
    shift per (step, row) is then one gather, identical in both trainers."""
    if optim.augment and x.dim() != 4:
        raise ValueError("pixel-shift augmentation needs image inputs [n, C, H, W]")
    return query_views(x, optim.augment) if optim.augment else x.unsqueeze(0)


def n_training_views(optim: OptimConfig) -> int:
    return 1 + 4 * optim.augment


def train_vectorized(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
                     x: torch.Tensor, y: torch.Tensor, schedule: Schedule,
                     progress: Progress | None = None) -> list[State]:
    """Train len(inits) models together: trainable parameters stacked along dim 0, one vmapped
    forward/backward per step, one optimiser over the stacked tensors (elementwise ⇒ independent)."""
    n_models = len(inits)
    names = list(inits[0])
    trainable_set = set(trainable)
    frozen_names = [n for n in names if n not in trainable_set]
    # Frozen tensors are shared when every model has the same ones (the common case); else stacked.
    shared_frozen = all(torch.equal(inits[0][n], s[n]) for s in inits[1:] for n in frozen_names)
    stacked = {n: torch.stack([s[n] for s in inits]).detach().clone() for n in names}
    params = {n: stacked[n].requires_grad_(True) for n in trainable}
    frozen = {n: (inits[0][n] if shared_frozen else stacked[n]) for n in frozen_names}
    module = copy.deepcopy(template)

    def one_model_logits(p: State, f: State, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {**p, **f}, (xb,))

    # Only the forward pass is vmapped; the masked cross-entropy is plain batched tensor algebra.
    batched_logits = vmap(one_model_logits, in_dims=(0, None if shared_frozen else 0, 0))
    opt = make_optimizer(params.values(), optim)
    views = training_views(x, optim)
    index = torch.from_numpy(schedule.index)
    mask = torch.from_numpy(schedule.mask)
    counts = mask.sum(-1)  # [steps, M] real rows per model and step
    view = torch.from_numpy(schedule.view) if schedule.view is not None else torch.zeros_like(index)
    for step in range(schedule.steps):
        idx = index[step]  # [M, width]
        opt.zero_grad(set_to_none=True)
        logits = batched_logits(params, frozen, views[view[step], idx])  # [M, width, C]
        losses = -torch.log_softmax(logits, -1).gather(-1, y[idx].unsqueeze(-1)).squeeze(-1)
        loss = ((losses * mask[step]).sum(-1) / counts[step]).sum()  # sum over models of each mean loss
        loss.backward()
        opt.step()
        if progress:
            progress(n_models)
    out = []
    for m in range(n_models):
        state = {n: stacked[n][m].detach().clone() for n in trainable}
        state.update({n: inits[m][n].clone() for n in frozen_names})
        out.append({n: state[n] for n in names})
    return out


def train_one(template: nn.Module, init: State, trainable: list[str], optim: OptimConfig,
              x: torch.Tensor, y: torch.Tensor, schedule: Schedule, model_index: int,
              progress: Progress | None = None) -> State:
    """Plain PyTorch training of one model on its column of the schedule."""
    module = copy.deepcopy(template)
    module.load_state_dict(init)
    trainable_set = set(trainable)
    for name, p in module.named_parameters():
        p.requires_grad_(name in trainable_set)
    opt = make_optimizer([p for n, p in module.named_parameters() if n in trainable_set], optim)
    views = training_views(x, optim)
    for step in range(schedule.steps):
        rows = torch.from_numpy(schedule.batch(step, model_index))
        chosen = torch.from_numpy(schedule.batch_views(step, model_index))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(module(views[chosen, rows]), y[rows]).backward()
        opt.step()
        if progress:
            progress(1)
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def train_loop(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
               x: torch.Tensor, y: torch.Tensor, schedule: Schedule,
               progress: Progress | None = None) -> list[State]:
    return [train_one(template, init, trainable, optim, x, y, schedule, m, progress) for m, init in enumerate(inits)]


__all__ = ["train_vectorized", "train_loop", "train_one"]
