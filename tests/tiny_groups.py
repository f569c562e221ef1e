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


def tiny_mlp_group(rows: int = 48, epochs: int = 2):
    """Four full fine-tunes of the tiny MLP on halves of ``rows`` examples (a half keep-matrix)."""
    import numpy as np

    from ftaudit.config import OptimConfig
    from ftaudit.data.keep import half_keep_matrix
    from ftaudit.finetune.methods import get_method
    from ftaudit.train.engine import Job, TrainGroup

    x, y, model, init = tiny_mlp_world(rows)
    keep = half_keep_matrix(4, len(x), 0)
    return TrainGroup(name="t", template=model, arch={"a": 1}, method="full", trainable=get_method("full").trainable(model),
                      optim=OptimConfig(epochs=epochs, batch_size=8, lr=0.01), x=x, y=y, data_digest="d",
                      jobs=[Job(init=init, rows=np.flatnonzero(k), seed=s) for s, k in enumerate(keep)])
