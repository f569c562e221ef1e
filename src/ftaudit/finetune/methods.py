"""Fine-tuning methods: what fine-tuning trains, and what it adds to the model.

A :class:`Method` looks at a model and names the parameters fine-tuning may change; everything else
stays frozen at the base. Some methods first add parameters (LoRA through peft, bottleneck adapters
of ours); :meth:`Method.build` returns that model and :meth:`Method.init_state` maps a base
checkpoint onto it. The engine trains exactly the trainable names, and :func:`check_frozen` verifies
after training that frozen parameters are bit-identical to the base and trainable ones moved — a
method that silently trains nothing (or too much) fails loudly instead of producing a report
(cf. Opacus issue #820: LoRA under DP silently not learning).

Models describe themselves through two attributes: ``block_names`` (dotted module names of the
body's blocks, input to output) and ``head_prefixes`` (parameter-name prefixes of the task head).
The vision nets and the LM wrappers both define them, so every method works on both.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Callable

import torch
from torch import nn

from ftaudit.errors import UserError

PROJECTIONS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class MethodOptions:
    """The method knobs of ``finetune`` (one shape for every method; each uses only its own)."""

    layers: tuple[str, ...] = ()  # layers: block/parameter names to train, e.g. ("block2", "head")
    last_k: int = 1  # layers (when `layers` is empty): train the last k blocks and the head
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ()  # module names (suffixes); () = every projection in the blocks
    adapter_size: int = 16
    adapter_targets: tuple[str, ...] = ()  # module names; () = the last projection of every block
    train_head: bool = True  # bitfit / lora / adapters: the task head trains too

    @classmethod
    def from_config(cls, ft) -> "MethodOptions":
        kwargs = {}
        for f in fields(cls):
            value = getattr(ft, f.name)
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "head_prefixes", ("head.",)))


def block_names(model: nn.Module) -> list[str]:
    names = getattr(model, "block_names", None)
    if not names:
        raise ValueError(f"{type(model).__name__} does not name its blocks (block_names)")
    return list(names)


def is_head(model: nn.Module, name: str) -> bool:
    return name.startswith(head_prefixes(model))


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, PROJECTIONS) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def _in_block(module_name: str, block: str) -> bool:
    return module_name == block or module_name.startswith(block + ".")


def _matches(entry: str, name: str) -> bool:
    """A layer entry names a dotted run of components: "block1" matches "blocks.block1.0.weight"."""
    return f".{entry}." in f".{name}." or name == entry


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    select: Callable[[nn.Module, str, MethodOptions], bool]  # (model, parameter name, options) -> trainable?
    options: tuple[str, ...] = ()  # the MethodOptions fields this method reads (part of its cache key)
    prepare: Callable[[nn.Module, MethodOptions], nn.Module] | None = None  # adds parameters, in place
    validate: Callable[[nn.Module, MethodOptions], None] | None = field(default=None)

    def build(self, model: nn.Module, opts: MethodOptions | None = None, seed: int | None = None) -> nn.Module:
        """The model fine-tuning trains: a copy of ``model`` with the method's extra parameters.

        The new parameters (LoRA's A, adapters) are drawn from torch's RNG seeded with ``seed`` —
        callers pass one derived from the run seed — inside a forked RNG, so the caller's global
        RNG state is left as it was."""
        opts = opts or MethodOptions()
        if self.validate:
            self.validate(model, opts)
        if not self.prepare:
            return model
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return self.prepare(copy.deepcopy(model), opts)

    def trainable(self, model: nn.Module, opts: MethodOptions | None = None) -> list[str]:
        """Parameter names of a :meth:`build`-ed model that fine-tuning trains."""
        opts = opts or MethodOptions()
        names = [n for n, _ in model.named_parameters() if self.select(model, n, opts)]
        if not names:
            raise ValueError(f"fine-tuning method {self.name!r} selects no parameter of {type(model).__name__}")
        return names

    def spec(self, opts: MethodOptions | None = None) -> dict:
        """What identifies the method in cache keys: its name and the options it reads."""
        opts = opts or MethodOptions()
        return {"method": self.name, **{k: getattr(opts, k) for k in self.options}}


def init_state(model: nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a base checkpoint onto a built model: base tensors keep their values (peft renames a
    wrapped layer's weights to ``….base_layer.…``), the method's new parameters keep the built
    model's own initialisation. A base tensor that finds no place is an error, not silently dropped."""
    own = model.state_dict()
    out, used = {}, set()
    for key, value in own.items():
        source = key if key in base else key.replace(".base_layer.", ".")
        if source in base:
            if base[source].shape != value.shape:
                raise ValueError(f"checkpoint tensor {source} has shape {tuple(base[source].shape)}, "
                                 f"the model expects {tuple(value.shape)}")
            out[key] = base[source].clone()
            used.add(source)
        else:
            out[key] = value.detach().clone()
    unused = sorted(set(base) - used)
    if unused:
        raise ValueError(f"checkpoint tensors do not fit the model: {', '.join(unused[:5])}")
    return out


# --- the methods -------------------------------------------------------------------------------


def _layers_entries(model: nn.Module, opts: MethodOptions) -> tuple[str, ...]:
    if opts.layers:
        return opts.layers
    blocks = block_names(model)
    return tuple(blocks[-opts.last_k:]) + head_prefixes(model) if opts.last_k else head_prefixes(model)


def _select_layers(model: nn.Module, name: str, opts: MethodOptions) -> bool:
    return any(_matches(e.rstrip("."), name) or name.startswith(e) for e in _layers_entries(model, opts))


def _validate_layers(model: nn.Module, opts: MethodOptions) -> None:
    params = [n for n, _ in model.named_parameters()]
    if not opts.layers:
        n_blocks = len(block_names(model))
        if not 0 <= opts.last_k <= n_blocks:
            raise UserError("finetune.last_k", f"{opts.last_k} blocks, but the model has {n_blocks}",
                            f"choose 0..{n_blocks} (0 = head only)")
        return
    for entry in opts.layers:
        if not any(_matches(entry.rstrip("."), n) or n.startswith(entry) for n in params):
            choices = ", ".join(block_names(model) + [p.rstrip(".") for p in head_prefixes(model)])
            raise UserError("finetune.layers", f"{entry!r} names no parameter of the model", f"use block or parameter names: {choices}")


def _with_head(model: nn.Module, name: str, opts: MethodOptions) -> bool:
    return opts.train_head and is_head(model, name)


def _projections(model: nn.Module, last_only: bool) -> list[str]:
    """Projection layers inside the blocks: all of them, or the last one of each block."""
    names = [n for n, m in model.named_modules() if is_projection(m)]
    out = []
    for block in block_names(model):
        inside = [n for n in names if _in_block(n, block)]
        out += inside[-1:] if last_only else inside
    return out


def _prepare_lora(model: nn.Module, opts: MethodOptions) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(opts.lora_targets) or _projections(model, last_only=False)
    modules = dict(model.named_modules())
    # transformers' Conv1D (GPT-2) stores its weight transposed: peft must be told, per its docs.
    conv1d = any(type(m).__name__ == "Conv1D" for n, m in modules.items() if any(n == t or n.endswith("." + t) for t in targets))
    config = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                        fan_in_fan_out=conv1d)
    try:
        return inject_adapter_in_model(config, model)
    except ValueError as exc:
        raise UserError("finetune.lora_targets", str(exc).splitlines()[0], "name Linear/Conv modules of the model") from None


def _prepare_adapters(model: nn.Module, opts: MethodOptions) -> nn.Module:
    from ftaudit.finetune.adapters import add_adapters

    targets = list(opts.adapter_targets) or _projections(model, last_only=True)
    known = dict(model.named_modules())
    for t in targets:
        if t not in known:
            raise UserError("finetune.adapter_targets", f"{t!r} is not a module of the model", "give full dotted module names")
    return add_adapters(model, targets, opts.adapter_size)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("full", "every parameter", lambda model, name, opts: True))
register(Method("head", "the last layer only (linear probe on frozen features)", lambda model, name, opts: is_head(model, name)))
register(Method("layers", "named blocks/parameters (finetune.layers), or the last k blocks and the head (finetune.last_k)",
                _select_layers, options=("layers", "last_k"), validate=_validate_layers))
register(Method("bitfit", "every bias (BitFit), plus the head", lambda model, name, opts: name.endswith("bias") or _with_head(model, name, opts),
                options=("train_head",)))
register(Method("lora", "low-rank updates of the body's projections (peft LoRA), plus the head",
                lambda model, name, opts: ".lora_" in name or _with_head(model, name, opts),
                options=("lora_rank", "lora_alpha", "lora_targets", "train_head"), prepare=_prepare_lora))
register(Method("adapters", "bottleneck adapters after each block's last projection, plus the head",
                lambda model, name, opts: ".adapter." in name or _with_head(model, name, opts),
                options=("adapter_size", "adapter_targets", "train_head"), prepare=_prepare_adapters))


def get_method(name: str) -> Method:
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
