"""Small vision networks for 8×8 digits, built so every layer has a stable name.

Both nets are ``blocks`` (named ``block0``, ``block1``, …) followed by a linear ``head``; fine-tuning
methods select parameters by these names. No batch-norm or dropout: models must be pure functions
of their parameters so that torch.func can train many of them at once.
"""
from __future__ import annotations

import torch
from torch import nn

from ftaudit.config import ModelConfig


class BlockNet(nn.Module):
    head_prefixes = ("head.",)  # how fine-tuning methods find the task head (ftaudit.finetune.methods)

    def __init__(self, blocks: list[nn.Module], head_in: int, n_classes: int):
        super().__init__()
        self.blocks = nn.ModuleDict({f"block{i}": b for i, b in enumerate(blocks)})
        self.head = nn.Linear(head_in, n_classes)

    @property
    def block_names(self) -> list[str]:
        """Dotted module names of the body's blocks, input to output."""
        return [f"blocks.{name}" for name in self.blocks]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mlp(hidden: list[int], n_classes: int, in_shape: tuple[int, ...] = (1, 8, 8)) -> BlockNet:
    width = int(torch.tensor(in_shape).prod())
    blocks: list[nn.Module] = []
    for i, h in enumerate(hidden):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        blocks.append(nn.Sequential(*layers, nn.Linear(width, h), nn.ReLU()))
        width = h
    return BlockNet(blocks, width, n_classes)


def cnn(channels: list[int], n_classes: int, in_shape: tuple[int, ...] = (1, 8, 8), fc: int = 64) -> BlockNet:
    """3×3 convolutions with ReLU; a 2×2 max-pool after the last one; then one hidden linear block."""
    c, h, w = in_shape
    blocks: list[nn.Module] = []
    for i, out in enumerate(channels):
        layers: list[nn.Module] = [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
        if i == len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        blocks.append(nn.Sequential(*layers))
        c = out
    blocks.append(nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, fc), nn.ReLU()))
    return BlockNet(blocks, fc, n_classes)


def build_model(cfg: ModelConfig, n_classes: int) -> BlockNet:
    if cfg.arch == "mlp":
        return mlp(cfg.hidden, n_classes)
    if cfg.arch == "cnn":
        return cnn(cfg.channels, n_classes)
    raise ValueError(f"unknown arch {cfg.arch!r}")


def arch_spec(cfg: ModelConfig, n_classes: int) -> dict:
    """What identifies the architecture in cache keys."""
    widths = cfg.hidden if cfg.arch == "mlp" else cfg.channels
    return {"arch": cfg.arch, "widths": list(widths), "n_classes": n_classes}


def fresh_state(cfg: ModelConfig, n_classes: int, seed: int) -> tuple[BlockNet, dict[str, torch.Tensor]]:
    """A randomly initialised model (PyTorch's default init, drawn from ``seed`` in a forked RNG,
    so the caller's global RNG is untouched) and a copy of its state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, n_classes)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}
