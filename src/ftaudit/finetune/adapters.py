"""Bottleneck adapters (Houlsby et al. 2019), ours: peft has no bottleneck adapter for arbitrary models.

An adapter is added to an existing layer as a child module plus a forward hook, ``y ← y + up(relu(down(y)))``,
so the base layer's parameter names stay exactly those of the pretrained checkpoint (only
``<layer>.adapter.*`` names are new). ``up`` starts at zero: a freshly adapted model computes the
same function as its base. Convolutions get 1×1-conv adapters over channels; linear layers
(including transformers' Conv1D) get linear adapters over the last dimension.
"""
from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, width: int, size: int, conv: bool):
        super().__init__()
        make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.down = make(width, size)
        self.up = make(size, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(torch.relu(self.down(y)))


def _adapter_hook(module: nn.Module, inputs, output):
    return module.adapter(output)


def output_width(layer: nn.Module) -> tuple[int, bool]:
    """(width of the layer's output features, is it a 2-D convolution)."""
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels, True
    if isinstance(layer, nn.Linear):
        return layer.out_features, False
    if type(layer).__name__ == "Conv1D" and hasattr(layer, "nf"):  # transformers' GPT-2 projection
        return int(layer.nf), False
    raise ValueError(f"cannot attach an adapter to {type(layer).__name__}: use a Linear, Conv1D or Conv2d layer")


def add_adapters(model: nn.Module, targets: list[str], size: int) -> nn.Module:
    """Attach an adapter after each module named in ``targets`` (full dotted module names), in place."""
    modules = dict(model.named_modules())
    for name in targets:
        layer = modules[name]
        if hasattr(layer, "adapter"):
            raise ValueError(f"{name} already has an adapter")
        width, conv = output_width(layer)
        layer.adapter = Bottleneck(width, size, conv)
        layer.register_forward_hook(_adapter_hook)
    return model
