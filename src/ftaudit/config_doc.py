"""A study's config as YAML with each key's description as a comment (``ftaudit config STUDY``).

The text parses back (``yaml.safe_load``) to exactly ``cfg.model_dump(mode="json")``: only comments
are added. Descriptions are the pydantic ``Field(description=...)`` of each key; a section without
one is described by its class's docstring.
"""
from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

WIDTH = 100  # comment lines are wrapped to this width


def commented_yaml(cfg: BaseModel, header: str | None = None) -> str:
    lines = [f"# {line}" for line in textwrap.wrap(header, WIDTH - 2)] if header else []
    lines += _lines(cfg, cfg.model_dump(mode="json"), 0)
    return "\n".join(lines) + "\n"


def description(model: BaseModel, key: str) -> str | None:
    """The key's field description (a subclass that pins a default without one, as each study does
    with ``study``, inherits its parent's), else (for a section) its class's own docstring."""
    for cls in type(model).__mro__:
        field = getattr(cls, "model_fields", {}).get(key)
        if field is not None and field.description:
            return field.description
    value = getattr(model, key, None)
    if isinstance(value, BaseModel):
        doc = type(value).__dict__.get("__doc__")
        if doc:
            return " ".join(doc.strip().split("\n\n")[0].split())
    return None


def missing_descriptions(cfg: BaseModel, prefix: str = "") -> list[str]:
    """Dotted keys without a description (sections are described by their docstring)."""
    out = []
    for key in cfg.model_dump(mode="json"):
        value = getattr(cfg, key, None)
        if description(cfg, key) is None:
            out.append(prefix + key)
        if isinstance(value, BaseModel):
            out += missing_descriptions(value, f"{prefix}{key}.")
    return out


def _comment(text: str | None, pad: str) -> list[str]:
    if not text:
        return []
    return [f"{pad}# {line}" for line in textwrap.wrap(" ".join(text.split()), max(40, WIDTH - len(pad) - 2))]


def _lines(model: BaseModel, data: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for key, value in data.items():
        sub = getattr(model, key, None)
        out += _comment(description(model, key), pad)
        if isinstance(sub, BaseModel) and isinstance(value, dict) and value:
            out.append(f"{pad}{_scalar(key)}:")
            out += _lines(sub, value, depth + 1)
        elif isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value):
            out.append(f"{pad}{_scalar(key)}: {_dump(value, flow=True)}")  # a list of scalars on one line
        else:
            out += [pad + line for line in _dump({key: value}, flow=False).split("\n")]
    return out


def _dump(value: Any, flow: bool) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=10**6).rstrip("\n")


def _scalar(key: str) -> str:
    return yaml.safe_dump(key, allow_unicode=True).split("\n")[0]
