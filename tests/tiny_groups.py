"""A tiny two-class MLP world shared by the engine tests of devices and executors: 8x8 inputs whose
label is which half of the pixels is brighter, and a seeded MLP with its initial state."""
from __future__ import annotations

import torch

from ftaudit.config import ModelConfig
from ftaudit.models.vision import build_model


def tiny_mlp_world(rows: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, dict[str, torch.Tensor]]:
    """(x [rows, 1, 8, 8], y [rows], model, its initial state), the same on every call."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", hidden=[16]), 2)
    return x, y, model, {k: v.clone() for k, v in model.state_dict().items()}
