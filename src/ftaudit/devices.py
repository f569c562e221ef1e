"""Where models train and are queried: ``engine.device`` and ``engine.dtype`` resolved once.

A :class:`Placement` moves a chunk's inputs (template, initial states, training pool, masks) to
the device, runs the trainer under bfloat16 autocast when asked (master weights stay float32, so a
cached model's dtype never depends on it), and brings the final states back to the CPU: the cache,
the store and every attack see CPU float32 tensors whatever trained them. Trainers follow their
inputs' device; they never choose one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ftaudit.errors import UserError

State = dict[str, torch.Tensor]


def resolve_device(name: str = "auto") -> torch.device:
    """``engine.device`` as a torch device: auto = cuda when available, else cpu. A device this
    machine does not have is a user error naming the field."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError("engine.device", f"unknown device {name!r}", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("engine.device", f"{name!r}, but torch sees no CUDA device here",
                            "set engine.device=auto or cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError("engine.device", f"{name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)",
                            f"choose cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("engine.device", "'mps', but torch sees no Apple GPU here", "set engine.device=auto or cpu")
    return device


def module_device(module: nn.Module) -> torch.device:
    """Where a model lives: its first parameter's device (the CPU for a module without parameters).
    Queries follow it: inputs go there, results come back to the CPU."""
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32  # the compute dtype of autocast; weights stay float32

    @classmethod
    def from_engine(cls, device: str = "auto", dtype: str = "float32") -> "Placement":
        return cls(resolve_device(device), DTYPES[dtype])

    def key(self) -> dict:
        """What a model's cache key adds: nothing on CPU float32 (keys from before devices existed
        stay valid), else the device type and compute dtype (results agree across them only to
        float tolerance, like the trainers)."""
        out = {}
        if self.device.type != "cpu":
            out["device"] = self.device.type
        if self.dtype != torch.float32:
            out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    def query_key(self) -> dict:
        """What a signal's cache key adds: the device type when not the CPU (signals computed on
        another device agree only to float rounding, so one is never served for the other).
        Queries run in float32 whatever ``dtype``, so it does not enter."""
        return {} if self.device.type == "cpu" else {"device": self.device.type}

    def tensor(self, t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(self.device)

    def state(self, s: State | None) -> State | None:
        return None if s is None else {n: t.to(self.device) for n, t in s.items()}

    def module(self, m: nn.Module) -> nn.Module:
        return m.to(self.device)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype == torch.float32:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    @staticmethod
    def to_cpu(s: State) -> State:
        return {n: t.detach().to("cpu") for n, t in s.items()}
