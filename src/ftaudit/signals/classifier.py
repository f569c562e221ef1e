"""Per-example signals of classifiers, for many models at once.

For each model and query the true class's logit-scaled confidence
``phi = log p_y - log(1 - p_y) = z_y - logsumexp_{j != y} z_j`` and the loss ``-log p_y =
logsumexp_j z_j - z_y`` are computed from the logits in float64, which keeps phi finite for
confidently right or wrong predictions where the naive formula would give inf or NaN.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ftaudit.train.trainers import State


def logit_signals(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi, loss) in float64 for logits [..., n, C] and labels [n]."""
    z = logits.to(torch.float64)
    target = z.gather(-1, y.expand(z.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    lse_all = torch.logsumexp(z, dim=-1)
    others = z.scatter(-1, y.expand(z.shape[:-1]).unsqueeze(-1), float("-inf"))
    lse_others = torch.logsumexp(others, dim=-1)
    return target - lse_others, lse_all - target


# Batched (vmapped) inference stacks the models' weights and runs one forward for many models.
# benchmarks/batched_inference.py measures where it pays. On a CPU it does not: 32 models x 4,500
# inputs on one thread, stacked took 1.3-1.8x as long for MLPs (32 to 512x512 hidden) and 2-3.5x for
# CNNs (vmapped convolutions become grouped ones), docs/performance.md. On a GPU a small model's
# forward is launch-bound, so one forward for many models pays. Hence the rule: stacked on an
# accelerator for models whose weights are small, never on a CPU (which also keeps CPU signals
# bit-identical to the per-model path).
STACK_BYTES = 1 << 28  # stacked weights per forward (256 MB): larger models are queried one at a time
STACK_ROWS = 1 << 16  # models x inputs per forward, to bound activations


def _state_bytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def batched_pays(state: State, device: torch.device) -> bool:
    """The rule :func:`batched_logits` follows by default (see above): stack models on an
    accelerator when two models' weights fit in one stacked forward, never on a CPU."""
    return device.type != "cpu" and _state_bytes(state) * 2 <= STACK_BYTES


def _per_model(module: nn.Module, states: list[State], x: torch.Tensor, device: torch.device,
               input_chunk: int) -> torch.Tensor:
    out = []
    for state in states:
        state = {n: t.to(device) for n, t in state.items()}
        out.append(torch.cat([functional_call(module, state, (x[i:i + input_chunk].to(device),)).cpu()
                              for i in range(0, len(x), input_chunk)]))
    return torch.stack(out)


def _stacked(module: nn.Module, states: list[State], x: torch.Tensor, device: torch.device,
             input_chunk: int) -> torch.Tensor:
    chunk = min(input_chunk, len(x))
    per_forward = max(1, min(STACK_BYTES // max(_state_bytes(states[0]), 1), STACK_ROWS // max(chunk, 1)))
    forward = vmap(lambda p, xb: functional_call(module, p, (xb,)), in_dims=(0, None))
    out = []
    for lo in range(0, len(states), per_forward):
        group = states[lo:lo + per_forward]
        stacked = {n: torch.stack([s[n] for s in group]).to(device) for n in group[0]}
        out.append(torch.cat([forward(stacked, x[i:i + chunk].to(device)).cpu()
                              for i in range(0, len(x), chunk)], dim=1))
    return torch.cat(out)


@torch.no_grad()
def batched_logits(template: nn.Module, states: list[State], x: torch.Tensor, input_chunk: int = 8192,
                   device: torch.device | str | None = None, batched: bool | None = None) -> torch.Tensor:
    """Logits [M, n, C] (on the CPU) of every model on inputs x [n, ...], computed on ``device``
    (default: the CPU).

    ``batched`` chooses how: many models per forward (weights stacked, ``vmap`` over
    ``functional_call``) or one model at a time; None follows :func:`batched_pays`. Both give the
    same logits to float rounding (tests/devices/test_batched_inference.py)."""
    device = torch.device(device or "cpu")
    if not states:
        return torch.empty(0)
    module = copy.deepcopy(template).eval().to(device)
    if batched is None:
        batched = batched_pays(states[0], device)
    return (_stacked if batched else _per_model)(module, states, x, device, input_chunk)


def classifier_signals(template: nn.Module, states: list[State], views: torch.Tensor,
                       y: torch.Tensor, device: torch.device | str | None = None,
                       batched: bool | None = None) -> dict[str, np.ndarray]:
    """For query views [A, n, ...] with labels y [n]: conf and loss [M, n, A] float64, correct [M, n, A]
    bool; the models run on ``device`` (:func:`batched_logits`), the statistics on the CPU."""
    a, n = views.shape[:2]
    logits = batched_logits(template, states, views.reshape(a * n, *views.shape[2:]), device=device,
                            batched=batched)  # [M, A*n, C]
    logits = logits.reshape(len(states), a, n, -1)
    conf, loss = logit_signals(logits, y)
    correct = logits.argmax(-1) == y
    return {
        "conf": conf.permute(0, 2, 1).numpy(),
        "loss": loss.permute(0, 2, 1).numpy(),
        "correct": correct.permute(0, 2, 1).numpy(),
    }
