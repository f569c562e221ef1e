"""Query augmentations for images: small pixel shifts (zero-filled), the original first."""
from __future__ import annotations

import torch


def shift_offsets(max_shift: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets: the original, then +-1..max_shift along each axis."""
    offsets = [(0, 0)]
    for k in range(1, max_shift + 1):
        offsets += [(0, k), (0, -k), (k, 0), (-k, 0)]
    return offsets


def shift_images(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift [..., H, W] images by (dy, dx) pixels, filling with zeros (the digits' background)."""
    if dy == 0 and dx == 0:
        return x
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def query_views(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """[A, n, ...] views of x: index 0 is x itself."""
    return torch.stack([shift_images(x, dy, dx) for dy, dx in shift_offsets(max_shift)])
