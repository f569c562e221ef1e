"""The DP-SGD gradient, exactly as Opacus's ``DPOptimizer`` forms it, for M stacked models at once.

Opacus (``loss_reduction="mean"``, flat clipping, Poisson sampling) does, per model and step:

1. per-sample gradients g_i of each row's own loss (GradSampleModule undoes the batch mean);
2. one L2 norm per sample over *all* trainable parameters jointly — computed as the norm of the
   per-parameter norms — and clip factor ``(C / (norm + 1e-6)).clamp(max=1)``;
3. the clipped sum Σ_i factor_i · g_i over the rows actually drawn;
4. Gaussian noise of std ``σ·C`` per coordinate, drawn parameter by parameter, in optimizer order,
   from the optimizer's generator (none at all when σ·C = 0);
5. division by ``expected_batch_size`` — a constant, not the drawn batch's size (Poisson batches
   vary; dividing by the real size would leak it). ``PrivacyEngine.make_private`` sets it to
   ``int(n · q)``, truncated: :func:`expected_batch_size` does the same.

Here step 1 is ``vmap(grad(...))`` over rows, vmapped again over models; padding rows get factor 0.
Noise comes from one generator per model, in the same order as Opacus draws it, so a model's
noise — and its whole training run — does not depend on which other models share its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

State = dict[str, torch.Tensor]
RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets) -> per-row loss
CLIP_EPS = 1e-6  # Opacus's DPOptimizer.clip_and_accumulate


def expected_batch_size(n_rows: int, sample_rate: float) -> int:
    """Opacus's averaging denominator: ``int(n · q)`` (``PrivacyEngine.make_private``), without the
    float artefact that makes e.g. 100 · 0.29 truncate to 28."""
    size = math.floor(n_rows * sample_rate + 1e-9)
    if size < 1:
        raise ValueError(f"expected batch size of {n_rows} rows at q={sample_rate} is below 1")
    return size


@dataclass(frozen=True)
class DPParams:
    """DP-SGD settings for M models: σ and C (shared, or one per model — a privacy sweep trains
    every ε and clipping norm of a grid in one vectorized group); per model the averaging
    denominator and the seed of its noise generator."""

    noise_multiplier: float | tuple[float, ...]  # σ
    max_grad_norm: float | tuple[float, ...]  # C
    expected_batch_size: tuple[float, ...]
    noise_seeds: tuple[int, ...]

    def __post_init__(self):
        n = len(self.noise_seeds)
        for name in ("noise_multiplier", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != n:
                raise ValueError(f"{name}: one value per model ({n}), got {len(value)}")
        if min(self.sigmas, default=0) < 0 or not min(self.clips, default=1) > 0:
            raise ValueError("noise_multiplier must be >= 0 and max_grad_norm > 0")
        if len(self.expected_batch_size) != len(self.noise_seeds):
            raise ValueError("one expected batch size and one noise seed per model")

    @property
    def sigmas(self) -> tuple[float, ...]:
        v = self.noise_multiplier
        return v if isinstance(v, tuple) else (float(v),) * len(self.noise_seeds)

    @property
    def clips(self) -> tuple[float, ...]:
        v = self.max_grad_norm
        return v if isinstance(v, tuple) else (float(v),) * len(self.noise_seeds)
        if any(not b > 0 for b in self.expected_batch_size):
            raise ValueError("expected batch sizes must be positive")

    @classmethod
    def for_rows(cls, noise_multiplier: float, max_grad_norm: float, sample_rate: float,
                 rows: Sequence[np.ndarray], noise_seeds: Sequence[int]) -> "DPParams":
        return cls(noise_multiplier, max_grad_norm, tuple(expected_batch_size(len(r), sample_rate) for r in rows),
                   tuple(int(s) for s in noise_seeds))

    @property
    def noise_std(self) -> tuple[float, ...]:
        """σ·C per model."""
        return tuple(s * c for s, c in zip(self.sigmas, self.clips))

    def generators(self, device: torch.device | str = "cpu") -> list[torch.Generator]:
        """One seeded noise generator per model, on the device the noise is drawn on (as Opacus
        draws it: a CUDA run's noise comes from CUDA generators, so it differs from a CPU run's)."""
        return [torch.Generator(device).manual_seed(s) for s in self.noise_seeds]

    def select(self, models: Sequence[int]) -> "DPParams":
        return DPParams(tuple(self.sigmas[m] for m in models), tuple(self.clips[m] for m in models),
                        tuple(self.expected_batch_size[m] for m in models), tuple(self.noise_seeds[m] for m in models))


def per_sample_grads(module: nn.Module, loss: RowLoss, params: State, frozen: State, inputs: torch.Tensor,
                     targets: torch.Tensor, frozen_stacked: bool = False) -> State:
    """Each row's own loss gradient: params [M, ...], inputs [M, W, ...] -> {name: [M, W, ...]}."""

    def row_loss(p: State, f: State, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(module, {**p, **f}, (x.unsqueeze(0),))
        return loss(logits, y.unsqueeze(0)).squeeze(0)

    over_rows = vmap(grad(row_loss), in_dims=(None, None, 0, 0))
    over_models = vmap(over_rows, in_dims=(0, 0 if frozen_stacked else None, 0, 0))
    return over_models({n: p.detach() for n, p in params.items()}, frozen, inputs, targets)


def clipped_sum(grads: State, mask: torch.Tensor, max_grad_norm: float | Sequence[float]) -> State:
    """Flat clipping as Opacus does it, summed over the real rows: {name: [M, W, ...]}, mask [M, W]
    -> {name: [M, ...]}; ``max_grad_norm`` is shared or one per model."""
    norms = torch.stack([torch.linalg.vector_norm(g, dim=tuple(range(2, g.dim()))) for g in grads.values()],
                        dim=-1).norm(2, dim=-1)
    clip = torch.as_tensor(max_grad_norm, dtype=norms.dtype, device=norms.device).reshape(-1, 1) if not isinstance(max_grad_norm, (int, float)) \
        else max_grad_norm
    factor = (clip / (norms + CLIP_EPS)).clamp(max=1.0) * mask  # [M, W]
    return {n: torch.einsum("mw,mw...->m...", factor, g) for n, g in grads.items()}


def add_noise(summed: State, names: Sequence[str], std: float | Sequence[float],
              generators: Sequence[torch.Generator]) -> State:
    """N(0, std²) per coordinate (std shared or one per model), model by model, parameter by
    parameter in ``names`` order — the draws ``DPOptimizer.add_noise`` makes with the same generator
    (none at all for a model whose std is 0)."""
    stds = [float(std)] * len(generators) if isinstance(std, (int, float)) else [float(v) for v in std]
    if not any(stds):
        return summed
    noise = {n: torch.zeros_like(summed[n]) for n in names}
    for m, (gen, sd) in enumerate(zip(generators, stds)):
        if sd == 0:
            continue
        for n in names:
            ref = summed[n][m]
            noise[n][m] = torch.normal(mean=0, std=sd, size=ref.shape, generator=gen, dtype=ref.dtype, device=ref.device)
    return {n: summed[n] + noise[n] for n in names}


def dp_gradient(module: nn.Module, loss: RowLoss, params: State, frozen: State, inputs: torch.Tensor,
                targets: torch.Tensor, mask: torch.Tensor, dp: DPParams, generators: Sequence[torch.Generator],
                frozen_stacked: bool = False) -> State:
    """The noisy, clipped, averaged gradient Opacus would put in ``.grad``, for each stacked model:
    params {name: [M, ...]} (their order is the noise order), inputs [M, W, ...], mask [M, W], one
    generator per model."""
    if len(generators) != len(dp.noise_seeds):
        raise ValueError(f"{len(dp.noise_seeds)} models in DPParams but {len(generators)} generators")
    grads = per_sample_grads(module, loss, params, frozen, inputs, targets, frozen_stacked)
    # Under bfloat16 autocast (engine.dtype) only the forward and backward run in bfloat16: clipping,
    # noise and averaging stay in the parameters' float32, as Opacus's optimizer does them.
    with torch.autocast(mask.device.type, enabled=False):
        noisy = add_noise(clipped_sum(grads, mask, dp.clips), list(params), dp.noise_std, generators)
        return {n: g / torch.tensor(dp.expected_batch_size, dtype=g.dtype, device=g.device).view(-1, *([1] * (g.dim() - 1)))
                for n, g in noisy.items()}


__all__ = ["DPParams", "expected_batch_size", "per_sample_grads", "clipped_sum", "add_noise", "dp_gradient"]
