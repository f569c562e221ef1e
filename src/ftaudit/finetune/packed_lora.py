"""Packed LoRA: M LoRA fine-tunes of one frozen base, trained in one forward pass.

LoRA fine-tunes of one base share every frozen weight; only their small A/B matrices (and, by
default, the head) differ. So instead of M forwards (sequentially, or vmapped over stacked copies
of the whole model), the M models' mini-batches are concatenated into one batch of M·b rows that
goes through the base once; each wrapped projection adds its adapter's low-rank update to its rows
with two batched matmuls over the stacked matrices::

    y[m] = base(x[m]) + scaling · (x[m] A[m]ᵀ) B[m]ᵀ        A: [M, r, d_in], B: [M, d_out, r]

(rows grouped by adapter: rows m·b … (m+1)·b − 1 belong to model m). A trainable ``nn.Linear``
(the LM head) becomes M full copies applied the same way. The base needs no vmap and no copies.

:func:`train_packed_lora` is a trainer with the engine's signature: it takes a group as the engine
holds it — the peft-built template (``get_method("lora").build``), each job's initial state in
peft's parameter names, the trainable names, a schedule — and returns states in the same names,
so packed and per-model training write the same cache entries. Its loss and optimiser are exactly
``train_vectorized``'s (the sum over models of each model's masked mean loss; one fused optimiser
over the stacked tensors, elementwise and so M independent ones), hence it matches peft trained one
model at a time to float rounding (tests/extraction/test_packed_lora.py).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ftaudit.config import OptimConfig
from ftaudit.train.optim import make_optimizer
from ftaudit.train.schedule import Schedule
from ftaudit.train.trainers import Progress, StackedModels, State, TrainingViews, schedule_tensors


class NotPackable(ValueError):
    """The group is not M LoRA fine-tunes of one shared base (use another trainer)."""


class Window:
    """Which of the M models a packed forward runs (a slice shared by every packed layer)."""

    def __init__(self) -> None:
        self.models = slice(None)


class PackedLoRA(nn.Module):
    """A frozen projection (``nn.Linear`` or GPT-2's ``Conv1D``) plus M low-rank updates, one per row
    group; runs the models of ``window`` (their rows, in order)."""

    def __init__(self, base: nn.Module, a: torch.Tensor, b: torch.Tensor, scaling: float, window: Window):
        super().__init__()
        self.base = base
        # plain attributes: the trainer owns the tensors
        self.a, self.b, self.scaling, self.window = a, b, float(scaling), window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        a, b = self.a[self.window.models], self.b[self.window.models]
        m = a.shape[0]
        xa = torch.bmm(x.reshape(m, -1, x.shape[-1]), a.transpose(1, 2))  # [m, rows·positions, r]
        # out + scaling · (x Aᵀ) Bᵀ in one fused kernel
        return torch.baddbmm(out.reshape(m, -1, out.shape[-1]), xa, b.transpose(1, 2), alpha=self.scaling).reshape(out.shape)


class PackedLinear(nn.Module):
    """M copies of a linear layer; weight [M, out, in], bias [M, out], [out] (shared) or None."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, window: Window):
        super().__init__()
        self.weight, self.bias, self.window = weight, bias, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[self.window.models]
        m = weight.shape[0]
        out = torch.bmm(x.reshape(m, -1, x.shape[-1]), weight.transpose(1, 2))
        if self.bias is not None:
            out = out + (self.bias[self.window.models][:, None] if self.bias.dim() == 2 else self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _lora_layers(module: nn.Module) -> dict[str, nn.Module]:
    """peft LoRA layers by module name (they hold ``base_layer``, ``lora_A``, ``lora_B``, ``scaling``)."""
    return {n: m for n, m in module.named_modules()
            if hasattr(m, "base_layer") and isinstance(getattr(m, "lora_A", None), nn.ModuleDict)}


def _check_vanilla(name: str, layer: nn.Module) -> str:
    """The one active adapter of a plain LoRA layer (no dropout, DoRA or other variant)."""
    adapters = list(layer.active_adapters)
    if len(adapters) != 1 or getattr(layer, "merged", False):
        raise NotPackable(f"{name}: packing needs one active, unmerged adapter, found {adapters}")
    adapter = adapters[0]
    if getattr(layer, "lora_variant", {}).get(adapter) is not None or getattr(layer, "use_dora", {}).get(adapter):
        raise NotPackable(f"{name}: LoRA variants (DoRA, …) are not packed")
    dropout = layer.lora_dropout[adapter]
    if not isinstance(dropout, nn.Identity) and getattr(dropout, "p", 0.0) != 0.0:
        raise NotPackable(f"{name}: LoRA dropout is not packed")
    if not isinstance(layer.base_layer, nn.Linear) and type(layer.base_layer).__name__ != "Conv1D":
        raise NotPackable(f"{name}: base layer {type(layer.base_layer).__name__} is not nn.Linear or Conv1D")
    return adapter


class PackedModel:
    """The template with its LoRA layers and trainable Linears swapped for packed ones over the
    stacked trainable tensors of M models (``StackedModels``); the base is shared, frozen."""

    def __init__(self, template: nn.Module, inits: list[State], trainable: list[str]):
        self.stack = StackedModels(inits, trainable)
        if self.stack.frozen_stacked:
            raise NotPackable("the models do not share their frozen weights (one base)")
        module = copy.deepcopy(template)
        module.load_state_dict(inits[0])
        for p in module.parameters():
            p.requires_grad_(False)
        params, covered, self.window = self.stack.params, set(), Window()
        for name, layer in _lora_layers(module).items():
            adapter = _check_vanilla(name, layer)
            a, b = f"{name}.lora_A.{adapter}.weight", f"{name}.lora_B.{adapter}.weight"
            if a not in params or b not in params:
                continue  # a LoRA layer that does not train stays as it is (frozen)
            self._swap(module, name, PackedLoRA(layer.base_layer, params[a], params[b], layer.scaling[adapter], self.window))
            covered |= {a, b}
        for name, layer in list(module.named_modules()):
            names = [f"{name}.weight", f"{name}.bias"]
            if isinstance(layer, nn.Linear) and any(n in params for n in names):
                if names[0] not in params:
                    raise NotPackable(f"{name}: only its bias trains; packing trains a Linear's weight (and bias)")
                bias = params.get(names[1], layer.bias.detach() if layer.bias is not None else None)
                self._swap(module, name, PackedLinear(params[names[0]], bias, self.window))
                covered |= {n for n in names if n in params}
        rest = sorted(set(trainable) - covered)
        if rest:
            raise NotPackable(f"packed LoRA trains LoRA matrices and Linear layers only, not {', '.join(rest[:3])}")
        self.module = module

    @staticmethod
    def _swap(module: nn.Module, name: str, new: nn.Module) -> None:
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, attr, new)

    @property
    def n_models(self) -> int:
        return len(self.stack.inits)

    def __call__(self, inputs: torch.Tensor, models: slice = slice(None)) -> torch.Tensor:
        """inputs [m, b, ...] -> outputs [m, b, ...]: each model's output on its own rows, for the
        models ``models`` of the pack (all by default)."""
        m, b = inputs.shape[:2]
        expected = len(range(self.n_models)[models])
        if m != expected:
            raise ValueError(f"inputs hold {m} models' rows, the pack runs {expected}")
        self.window.models = models
        try:
            out = self.module(inputs.reshape(m * b, *inputs.shape[2:]))
        finally:
            self.window.models = slice(None)
        return out.reshape(m, b, *out.shape[1:])

    def states(self) -> list[State]:
        return self.stack.states()


def packable(template: nn.Module, inits: list[State], trainable: list[str]) -> bool:
    """Whether :func:`train_packed_lora` can train this group (LoRA/Linear trainables, one base)."""
    try:
        PackedModel(template, inits[:2], trainable)
    except NotPackable:
        return False
    return True


def chunks(n_models: int, rows_per_model: int, pack_rows: int | None) -> list[slice]:
    """Consecutive model groups of at most ``pack_rows`` rows per forward (at least one model each)."""
    size = n_models if not pack_rows else max(1, min(n_models, pack_rows // max(rows_per_model, 1)))
    return [slice(lo, min(lo + size, n_models)) for lo in range(0, n_models, size)]


def train_packed_lora(template: nn.Module, inits: list[State], trainable: list[str], optim: OptimConfig,
                      x: torch.Tensor, y: torch.Tensor, schedule: Schedule, progress: Progress | None = None,
                      objective: str = "causal-lm", view_seed: int = 0, on_step=None,
                      pack_rows: int | None = None, masks: State | None = None) -> list[State]:
    """Train len(inits) LoRA fine-tunes of one base together: one base forward per step for all of
    them (see the module docstring), or, with ``pack_rows``, one per group of models holding at most
    that many rows (gradients accumulate over the groups; one optimiser step: the same update). On a
    CPU, activations that outgrow the cache make one huge forward slower than a few cache-sized ones
    (docs/performance.md). Same signature and result as ``train_vectorized``; element masks are
    not packed (:class:`NotPackable`)."""
    if masks:
        raise NotPackable("element masks are not packed")
    packed = PackedModel(template, inits, trainable)
    opt = make_optimizer(packed.stack.params.values(), optim)
    views = TrainingViews(x, y, optim, objective, view_seed)
    index, mask, view = schedule_tensors(schedule, x.device)
    counts = mask.sum(-1).clamp(min=1)  # [steps, M] real rows per model and step
    groups = chunks(packed.n_models, index.shape[-1], pack_rows)
    for step in range(schedule.steps):
        inputs, targets = views.batch(view[step], index[step])  # [M, width, ...]
        opt.zero_grad(set_to_none=True)
        for models in groups:
            # The loss model by model (unbind: one gradient buffer in backward): the same numbers, but
            # each log-softmax stays cache-sized, twice as fast on CPU as one over all models' logits.
            logits = packed(inputs[models], models).unbind(0)
            losses = torch.stack([views.loss(lg, tg) for lg, tg in zip(logits, targets[models].unbind(0))])
            ((losses * mask[step, models]).sum(-1) / counts[step, models]).sum().backward()
        opt.step()
        if progress:
            progress(packed.n_models)
        if on_step:
            on_step(step + 1, packed.states)
    return packed.states()
