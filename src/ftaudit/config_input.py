"""Reading what the user typed, with limits: YAML files and ``--set`` values (bounded size and
depth, no anchors or aliases), and pydantic's validation errors turned into one-line
:class:`~ftaudit.errors.UserError` s that name the exact field (with a "did you mean" for a
misspelt key). ``ftaudit.config`` builds configs from these."""
from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ftaudit.errors import UserError, brief

MAX_CONFIG_BYTES = 1 << 20     # a YAML config file (a real one is a few KiB)
MAX_OVERRIDE_CHARS = 64 << 10  # one --set key=value
MAX_YAML_DEPTH = 32            # nested lists / mappings in YAML


class YAMLLimit(yaml.YAMLError):
    """YAML this loader refuses outright: anchors, aliases, deep nesting."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases (a few hundred bytes of them expand to
    gigabytes: "billion laughs") and with a nesting limit (deep nesting exhausts Python's stack)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise YAMLLimit("uses a YAML alias (*name); write the value out instead")
        if getattr(self.peek_event(), "anchor", None) is not None:
            raise YAMLLimit("uses a YAML anchor (&name); write the values out instead")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YAMLLimit(f"nests lists / mappings more than {MAX_YAML_DEPTH} deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 reads 1e-3 (no dot) as a string; a config means the number (YAML 1.2 does too)
BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML with the limits above; YAMLLimit or yaml.YAMLError (syntax) or ValueError (a number
    too long to convert) on bad input."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _dotted(loc: tuple) -> str:
    """("attack", "names", 1) → ``attack.names[1]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _section_class(config_class: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config class holding the last key of ``loc`` (None when ``loc`` leaves the models)."""
    cls: type[BaseModel] = config_class
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def closest(name: object, choices: Any) -> str | None:
    """The choice closest to a misspelt ``name`` (difflib), or None."""
    close = difflib.get_close_matches(str(name)[:200], [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: object, choices: Any, show: Any = None) -> str:
    """``did you mean 'x'? `` for the closest of ``choices`` (shown as ``show(x)``), or ''."""
    match = closest(name, choices)
    return f"did you mean {(show(match) if show else match)!r}? " if match else ""


def first_error(exc: ValidationError, config_class: type[BaseModel] | None = None) -> UserError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = _dotted(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        section = _section_class(config_class, loc) if config_class is not None and loc else None
        hint = did_you_mean(loc[-1], list(section.model_fields), lambda m: _dotted(loc[:-1] + (m,))) \
            if section is not None else ""
        return UserError(field, "unknown key", f"{hint}remove it or check its spelling (`ftaudit config` prints every key)")
    value = err.get("input")
    if kind == "literal_error":
        return UserError(field, f"got {brief(value)}", err["msg"].lower())
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    # a section-level (cross-field) error would quote the whole section: name the key, not its dict
    got = f" (got {brief(value)})" if loc and not isinstance(value, (dict, BaseModel)) else ""
    return UserError(field, msg + got, "set a valid value in the config file or with --set")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``finetune.epochs=10`` → (["finetune", "epochs"], 10). Values are parsed as YAML scalars/lists."""
    if not isinstance(text, str):
        raise UserError("--set", f"an override must be a 'key=value' string, got {type(text).__name__} {brief(text)}",
                        "write e.g. finetune.epochs=10")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise UserError("--set", f"an override of {len(text)} characters (at most {MAX_OVERRIDE_CHARS})",
                        "put long values in a YAML file (--config)")
    if "=" not in text:
        raise UserError("--set", f"{brief(text)} has no '='", "write --set key=value, e.g. --set finetune.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.strip() for part in key.split(".")):
        raise UserError("--set", f"{brief(text)} has an empty key", "write --set section.key=value")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except YAMLLimit as exc:
        raise UserError(key, f"the value {exc}", "give a plain value, list or mapping") from None
    except ValueError as exc:
        raise UserError(key, f"cannot read the value: {exc}", "give a plain value, list or mapping") from None
    except yaml.YAMLError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(".".join(path), f"{part!r} is a value, not a section", "set the section's keys instead")
        node = child
    node[path[-1]] = value


def read_config_file(path: str | Path) -> dict:
    """A YAML config file (``--config``): see :func:`read_yaml_file`."""
    return read_yaml_file(path, "--config")


def read_yaml_file(path: str | Path, field: str) -> dict:
    """A user's YAML file of settings: a regular file of at most MAX_CONFIG_BYTES (checked before
    reading, so a device or a FIFO never blocks), parsed by :func:`load_yaml`, holding a mapping.
    Every problem is a UserError naming ``field``."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(field, f"must be the path of a YAML file, got {type(path).__name__} {brief(path)}",
                        "pass a str or pathlib.Path (or None for the defaults)")
    p = Path(path)
    try:
        info = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(field, f"file not found: {p}", "give the path of an existing YAML file") from None
    except (OSError, ValueError) as exc:
        raise UserError(field, f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}",
                        "give a readable YAML file") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(field, f"{p} is a directory", "give the path of a YAML file in it")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(field, f"{p} is not a regular file (a device, FIFO or socket)",
                        "give the path of a YAML file (save the config to a file first)")
    if info.st_size > MAX_CONFIG_BYTES:
        raise UserError(field, f"{p} has {info.st_size} bytes, more than a config needs "
                        f"(at most {MAX_CONFIG_BYTES})", "give the YAML config file, not a data file")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat
                raise UserError(field, f"{p} is not a regular file", "give the path of a YAML file")
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(field, f"cannot read {p}: {exc.strerror or exc}", "check the file's permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(field, f"{p} has more than {MAX_CONFIG_BYTES} bytes", "give the YAML config file")
    try:
        data = load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(field, f"{p} is not a text file", "give a UTF-8 YAML file") from None
    except YAMLLimit as exc:
        raise UserError(field, f"{p} {exc}", "write the config without anchors, aliases or deep nesting") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(field, f"{p} is not valid YAML{where}", "fix the YAML syntax") from None
    except ValueError as exc:
        raise UserError(field, f"{p}: {exc}", "fix the value") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(field, f"{p} must hold a mapping of sections, not {type(data).__name__}", "see the config keys in the README")
    return data
