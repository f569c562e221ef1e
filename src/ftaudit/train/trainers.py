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
from torch import nn
from torch.func import functional_call, vmap

from ftaudit.config import OptimConfig
from ftaudit.train.objectives import get_objective
from ftaudit.train.optim import make_optimizer
from ftaudit.train.schedule import Schedule

State = dict[str, torch.Tensor]
Progress = Callable[[int], None]
# Called after each step with (steps done, a function returning every model's current state).
StepHook = Callable[[int, Callable[[], list[State]]], None]


class TrainingViews:
    """Precomputed training views: inputs [V, n, ...] and targets ([n, ...], or [V, n, ...] when
    they change with the view, as for MLM maskings). Drawing a view per (step, row) is then one
    gather, identical in both trainers."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, optim: OptimConfig, objective: str = "classification",
                 seed: int = 0):
        self.objective = get_objective(objective)
        self.x, self.y, self.per_view = self.objective.views(x, y, optim.augment, seed)

    def batch(self, view: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[view, rows], (self.y[view, rows] if self.per_view else self.y[rows])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.objective.loss(logits, targets)


class StackedModels:
    """M models' states as the vectorized trainers hold them: trainable tensors stacked to [M, ...]
    (leaf tensors the optimiser updates), frozen ones shared when every model has the same (the
    common case: one base), else stacked."""

    def __init__(self, inits: list[State], trainable: list[str]):
        self.inits, self.names = inits, list(inits[0])
        self.trainable = set(trainable)
        frozen_names = [n for n in self.names if n not in self.trainable]
        self.frozen_stacked = not all(torch.equal(inits[0][n], s[n]) for s in inits[1:] for n in frozen_names)
        self.params = {n: torch.stack([s[n] for s in inits]).detach().clone().requires_grad_(True) for n in trainable}
        self.frozen = {n: (torch.stack([s[n] for s in inits]) if self.frozen_stacked else inits[0][n]) for n in frozen_names}

    def states(self) -> list[State]:
        """Every model's current state (copies), in the order of its initial state's names."""
        return [{n: (self.params[n][m].detach().clone() if n in self.trainable else self.inits[m][n].clone())
                 for n in self.names} for m in range(len(self.inits))]


def schedule_tensors(schedule: Schedule, device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(index, mask, view) of a schedule as tensors on ``device`` (the training pool's: trainers
    follow their inputs' device); view is all 0 without augmentation."""
    index = torch.from_numpy(schedule.index).to(device)
    view = torch.from_numpy(schedule.view).to(device) if schedule.view is not None else torch.zeros_like(index)
    return index, torch.from_numpy(schedule.mask).to(device), view


def mask_gradients(params: dict[str, torch.Tensor], masks: State | None) -> None:
    """Zero the gradient of every masked-out element (a mask broadcasts over a leading model axis)."""
    for name, m in (masks or {}).items():
        if params[name].grad is not None:
            params[name].grad.mul_(m.to(params[name].grad))


def restore_masked(params: dict[str, torch.Tensor], masks: State | None, inits: State) -> None:
    """Put masked-out elements back to their initial values after a step: a zero gradient alone
    leaves them unchanged only without weight decay, so this makes them bit-identical whatever the
    optimiser."""
    with torch.no_grad():
        for name, m in (masks or {}).items():
            params[name].copy_(torch.where(m.to(params[name].device).bool(), params[name], inits[name]))


def n_training_views(optim: OptimConfig, objective: str = "classification") -> int:
    return get_objective(objective).n_views(optim.augment)


def train_vectorized(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
                     x: torch.Tensor, y: torch.Tensor, schedule: Schedule,
                     progress: Progress | None = None, objective: str = "classification", view_seed: int = 0,
                     on_step: StepHook | None = None, masks: State | None = None) -> list[State]:
    """Train len(inits) models together: trainable parameters stacked along dim 0, one vmapped
    forward/backward per step, one optimiser over the stacked tensors (elementwise ⇒ independent).
    ``masks`` ({name: {0,1} tensor of the parameter's shape}) trains only the elements at 1."""
    models = StackedModels(inits, trainable)
    params, frozen = models.params, models.frozen
    start = {n: params[n].detach().clone() for n in masks or {}}
    module = copy.deepcopy(template)

    def one_model_logits(p: State, f: State, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {**p, **f}, (xb,))

    # Only the forward pass is vmapped; the masked cross-entropy is plain batched tensor algebra.
    batched_logits = vmap(one_model_logits, in_dims=(0, 0 if models.frozen_stacked else None, 0))
    opt = make_optimizer(params.values(), optim)
    views = TrainingViews(x, y, optim, objective, view_seed)
    index, mask, view = schedule_tensors(schedule, x.device)
    counts = mask.sum(-1).clamp(min=1)  # [steps, M] real rows per model and step
    n_models = len(inits)

    for step in range(schedule.steps):
        inputs, targets = views.batch(view[step], index[step])  # [M, width, ...]
        opt.zero_grad(set_to_none=True)
        losses = views.loss(batched_logits(params, frozen, inputs), targets)  # [M, width]
        loss = ((losses * mask[step]).sum(-1) / counts[step]).sum()  # sum over models of each mean loss
        loss.backward()
        mask_gradients(params, masks)
        opt.step()
        restore_masked(params, masks, start)
        if progress:
            progress(n_models)
        if on_step:
            on_step(step + 1, models.states)
    return models.states()


def train_one(template: nn.Module, init: State, trainable: list[str], optim: OptimConfig,
              x: torch.Tensor, y: torch.Tensor, schedule: Schedule, model_index: int,
              progress: Progress | None = None, objective: str = "classification", view_seed: int = 0,
              masks: State | None = None) -> State:
    """Plain PyTorch training of one model on its column of the schedule (``masks``: as in
    :func:`train_vectorized`)."""
    module = copy.deepcopy(template)
    module.load_state_dict(init)
    trainable_set = set(trainable)
    for name, p in module.named_parameters():
        p.requires_grad_(name in trainable_set)
    params = {n: p for n, p in module.named_parameters() if n in trainable_set}
    opt = make_optimizer(params.values(), optim)
    views = TrainingViews(x, y, optim, objective, view_seed)
    for step in range(schedule.steps):
        rows = torch.from_numpy(schedule.batch(step, model_index)).to(x.device)
        chosen = torch.from_numpy(schedule.batch_views(step, model_index)).to(x.device)
        opt.zero_grad(set_to_none=True)
        if len(rows) == 0:  # a Poisson-sampled step can be empty: the vectorized path adds 0 to the loss
            opt.step()
            continue
        inputs, targets = views.batch(chosen, rows)
        views.loss(module(inputs), targets).mean().backward()
        mask_gradients(params, masks)
        opt.step()
        restore_masked(params, masks, init)
        if progress:
            progress(1)
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def train_loop(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
               x: torch.Tensor, y: torch.Tensor, schedule: Schedule,
               progress: Progress | None = None, objective: str = "classification", view_seed: int = 0,
               on_step: StepHook | None = None, masks: State | None = None) -> list[State]:
    if on_step is not None:
        raise ValueError("per-step hooks need the vectorized trainer (engine.vectorized: true)")
    return [train_one(template, init, trainable, optim, x, y, schedule, m, progress, objective, view_seed, masks)
            for m, init in enumerate(inits)]


__all__ = ["train_vectorized", "train_loop", "train_one"]
