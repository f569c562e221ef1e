"""DP-SGD trainers: M models at once with torch.func, or one model at a time with Opacus.

Both consume the same Poisson :class:`Schedule` (``ftaudit.dp.sampling``) and the same
:class:`DPParams`, and return each model's final state. The vectorized path puts the noisy clipped
gradient of :func:`ftaudit.dp.per_sample.dp_gradient` in each stacked parameter's ``.grad`` and steps
one fused optimizer; the reference path is Opacus itself (``GradSampleModule`` + ``DPOptimizer``)
fed the schedule's batches instead of its own DataLoader, so the two can be compared step for step —
noise included, since each model's noise generator is seeded the same way in both.
"""
from __future__ import annotations

import copy

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from ftaudit.config import OptimConfig
from ftaudit.dp.per_sample import DPParams, dp_gradient
from ftaudit.train.optim import make_optimizer
from ftaudit.train.schedule import Schedule
from ftaudit.train.trainers import Progress, StackedModels, State, StepHook, TrainingViews, schedule_tensors


def _check(inits: list[State], schedule: Schedule, dp: DPParams) -> None:
    if len(dp.noise_seeds) != len(inits) or schedule.index.shape[1] != len(inits):
        raise ValueError(f"{len(inits)} models but {schedule.index.shape[1]} schedule columns and "
                         f"{len(dp.noise_seeds)} DP noise seeds")


def train_dp_vectorized(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
                        x: torch.Tensor, y: torch.Tensor, schedule: Schedule, dp: DPParams,
                        progress: Progress | None = None, objective: str = "classification", view_seed: int = 0,
                        on_step: StepHook | None = None) -> list[State]:
    """DP-SGD for len(inits) models together; model m trains on schedule column m with noise from
    ``dp.noise_seeds[m]``. Frozen parameters never receive a gradient."""
    _check(inits, schedule, dp)
    models = StackedModels(inits, trainable)
    params, frozen = models.params, models.frozen
    module = copy.deepcopy(template)
    opt = make_optimizer(params.values(), optim)
    views = TrainingViews(x, y, optim, objective, view_seed)
    generators = dp.generators(x.device)
    index, mask, view = schedule_tensors(schedule, x.device)
    widths = mask.sum(-1).amax(-1).long().clamp(min=1)  # [steps]: the step's widest real batch
    n_models = len(inits)

    for step in range(schedule.steps):
        w = int(widths[step])
        inputs, targets = views.batch(view[step, :, :w], index[step, :, :w])  # [M, w, ...]
        grads = dp_gradient(module, views.loss, params, frozen, inputs, targets, mask[step, :, :w], dp,
                            generators, models.frozen_stacked)
        for n, p in params.items():
            p.grad = grads[n]
        opt.step()
        if progress:
            progress(n_models)
        if on_step:
            on_step(step + 1, models.states)
    return models.states()


def train_dp_opacus_one(template: nn.Module, init: State, trainable: list[str], optim: OptimConfig,
                        x: torch.Tensor, y: torch.Tensor, schedule: Schedule, model_index: int, dp: DPParams,
                        progress: Progress | None = None, objective: str = "classification",
                        view_seed: int = 0) -> State:
    """Opacus's DP-SGD for one model on its schedule column: GradSampleModule + DPOptimizer."""
    module = copy.deepcopy(template)
    module.load_state_dict(init)
    trainable_set = set(trainable)
    for name, p in module.named_parameters():
        p.requires_grad_(name in trainable_set)
    by_name = dict(module.named_parameters())
    gsm = GradSampleModule(module, batch_first=True, loss_reduction="mean")
    opt = DPOptimizer(make_optimizer([by_name[n] for n in trainable], optim),
                      noise_multiplier=dp.sigmas[model_index], max_grad_norm=dp.clips[model_index],
                      expected_batch_size=dp.expected_batch_size[model_index], loss_reduction="mean",
                      generator=torch.Generator(x.device).manual_seed(dp.noise_seeds[model_index]))
    views = TrainingViews(x, y, optim, objective, view_seed)
    for step in range(schedule.steps):
        rows = torch.from_numpy(schedule.batch(step, model_index)).to(x.device)
        chosen = torch.from_numpy(schedule.batch_views(step, model_index)).to(x.device)
        inputs, targets = views.batch(chosen, rows)
        opt.zero_grad(set_to_none=True)
        # An empty Poisson batch still steps: its mean loss is nan but has no per-sample gradient,
        # so DPOptimizer adds pure noise — as it does for the empty batches of its own DataLoader.
        views.loss(gsm(inputs), targets).mean().backward()
        # Under bfloat16 autocast (engine.dtype) the per-sample gradients come out in bfloat16; Opacus
        # clips, noises and steps in the parameters' float32, as the vectorized trainer does.
        for p in by_name.values():
            if isinstance(getattr(p, "grad_sample", None), torch.Tensor) and p.grad_sample.dtype != p.dtype:
                p.grad_sample = p.grad_sample.to(p.dtype)
        with torch.autocast(x.device.type, enabled=False):
            opt.step()
        if progress:
            progress(1)
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def train_dp_opacus(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
                    x: torch.Tensor, y: torch.Tensor, schedule: Schedule, dp: DPParams,
                    progress: Progress | None = None, objective: str = "classification", view_seed: int = 0,
                    on_step: StepHook | None = None) -> list[State]:
    """The per-model reference for :func:`train_dp_vectorized`, one Opacus run per model."""
    if on_step is not None:
        raise ValueError("per-step hooks need the vectorized DP trainer")
    _check(inits, schedule, dp)
    return [train_dp_opacus_one(template, init, trainable, optim, x, y, schedule, m, dp, progress, objective,
                                view_seed) for m, init in enumerate(inits)]


__all__ = ["train_dp_vectorized", "train_dp_opacus", "train_dp_opacus_one"]
