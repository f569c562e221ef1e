"""Tensors to and from executor workers as safetensors bytes, never pickled weights.

A chunk shipped to another process (a Ray task) carries its tensors — the template's weights, the
jobs' initial states, the training pool, the masks — in safetensors blobs, and the trained states
come back the same way. A tensor met twice (the same object: a frozen base shared by every job, a
weight tied to another) is stored once and aliased, so a chunk of LoRA jobs over one base ships
the base once. The template's module structure travels as a *skeleton*: a deep copy whose
parameters and persistent buffers are meta tensors (shape and dtype, no data), which
:func:`fill_skeleton` fills from the blob, preserving tied weights. Non-persistent buffers (causal
masks, position ids: constants, not weights) stay in the skeleton.
"""
from __future__ import annotations

import copy
import json

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

State = dict[str, torch.Tensor]
ALIASES = "ftaudit_aliases"  # metadata entry: {name: the name whose tensor it is}
SHARED = "ftaudit_shared"  # metadata entry: {name: its name in the blob shipped once for all chunks}


def pack(tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None,
         shared: dict[int, str] | None = None) -> bytes:
    """One safetensors blob of named CPU tensors; a tensor object met again is stored as an alias,
    one in ``shared`` ({id: name}, the tensors of another blob the reader has) as a reference to
    it, and one sharing storage with another (a view) is copied, as safetensors requires."""
    first: dict[int, str] = {}
    storages: set[int] = set()
    data: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    elsewhere: dict[str, str] = {}
    for name, t in tensors.items():
        if shared and id(t) in shared:
            elsewhere[name] = shared[id(t)]
            continue
        if id(t) in first:
            aliases[name] = first[id(t)]
            continue
        first[id(t)] = name
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in storages or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        if ptr is not None:
            storages.add(ptr)
        data[name] = t
    return save_safetensors(data, metadata={**(meta or {}), ALIASES: json.dumps(aliases),
                                            SHARED: json.dumps(elsewhere)})


def unpack(blob: bytes, shared: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of :func:`pack`, aliases resolved to the same tensor object (references to the
    shared blob to its tensors, ``shared`` being that blob unpacked)."""
    data = load_safetensors(blob)
    info = metadata(blob)
    out = dict(data)
    for name, target in json.loads(info.get(ALIASES, "{}")).items():
        out[name] = data[target]
    for name, target in json.loads(info.get(SHARED, "{}")).items():
        out[name] = (shared or {})[target]
    return out


def metadata(blob: bytes) -> dict[str, str]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]).get("__metadata__") or {}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold exactly the same bits (unlike torch.equal: -0.0 is not 0.0, a NaN
    equals itself)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    a, b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
    return bool(torch.equal(a.view(torch.uint8), b.view(torch.uint8))) if a.numel() else True


def changes(init: State, state: State) -> State:
    """The tensors of ``state`` whose bits differ from ``init``'s (what training changed): a trained
    LoRA model ships back its adapters, not its frozen base."""
    return {n: t for n, t in state.items() if n not in init or not same_bits(init[n], t)}


def rebuild(init: State, names: list[str], changed: State) -> State:
    """A state from its names (in order), what changed, and the initial state for the rest."""
    return {n: changed[n] if n in changed else init[n] for n in names}


def prefixed(prefix: str, state: State) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": t for name, t in state.items()}


def strip(prefix: str, tensors: dict[str, torch.Tensor]) -> State:
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def _state_slots(module: nn.Module):
    """(owner module, slot dict, name, qualified name) of every parameter and persistent buffer,
    shared submodules once (a tied weight appears under each of its names)."""
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, t in mod._parameters.items():
            if t is not None:
                yield mod._parameters, name, prefix + name
        for name, t in mod._buffers.items():
            if t is not None and name not in mod._non_persistent_buffers_set:
                yield mod._buffers, name, prefix + name


def skeleton(module: nn.Module) -> tuple[nn.Module, State]:
    """The module without its weights (meta tensors in their place) and the weights by name."""
    memo: dict[int, object] = {}
    weights: State = {}
    for slots, name, qualified in _state_slots(module):
        t = slots[name]
        if id(t) in memo:
            weights[qualified] = t  # tied: an alias in the blob
            continue
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
        weights[qualified] = t
    return copy.deepcopy(module, memo), weights


def fill_skeleton(module: nn.Module, weights: State) -> nn.Module:
    """Put the weights back into a :func:`skeleton` (in place); a tied weight stays one tensor."""
    filled: dict[int, torch.Tensor] = {}
    for slots, name, qualified in _state_slots(module):
        t = slots[name]
        if not t.is_meta:
            continue
        if id(t) not in filled:
            data = weights[qualified]
            filled[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
        slots[name] = filled[id(t)]
    return module
