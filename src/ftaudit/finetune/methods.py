"""Fine-tuning methods: what is trainable.

A method looks at a model and names the parameters that fine-tuning may change; everything else is
frozen at the base. The engine trains exactly those names, and :func:`check_frozen` verifies after
training that frozen parameters are bit-identical to the base and trainable ones moved — a method
that silently trains nothing (or too much) fails loudly instead of producing a report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    select: Callable[[str], bool]  # parameter name -> trainable?

    def trainable(self, model: nn.Module) -> list[str]:
        names = [n for n, _ in model.named_parameters() if self.select(n)]
        if not names:
            raise ValueError(f"fine-tuning method {self.name!r} selects no parameter of {type(model).__name__}")
        return names


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("full", "every parameter", lambda name: True))
register(Method("head", "the last linear layer only (linear probe on frozen features)", lambda name: name.startswith("head.")))


def get_method(name: str) -> Method:
    from ftaudit.errors import UserError

    if name not in METHODS:
        raise UserError("finetune.method", f"unknown method {name!r}", f"choose one of {', '.join(METHODS)}")
    return METHODS[name]


class FrozenParameterError(RuntimeError):
    """Fine-tuning changed a frozen parameter, or left every trainable one untouched."""


def check_frozen(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], trainable: list[str]) -> None:
    trainable_set = set(trainable)
    for name, value in base.items():
        if name not in trainable_set and not torch.equal(value, tuned[name]):
            raise FrozenParameterError(f"frozen parameter {name!r} changed during fine-tuning")
    if trainable and all(torch.equal(base[n], tuned[n]) for n in trainable):
        raise FrozenParameterError(f"no trainable parameter changed during fine-tuning ({len(trainable)} trainable)")
