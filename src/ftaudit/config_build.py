"""Building a run's config: the study's defaults < preset < YAML file < ``--set`` overrides < keyword
arguments, validated strictly against the study's own config class (:mod:`ftaudit.config`); and the
table of every key (README and docs/configuration.md are generated from it)."""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ftaudit.config import DEFAULT_STUDY, StudyConfig
from ftaudit.config_input import did_you_mean, first_error, parse_override, read_config_file, set_path
from ftaudit.errors import UserError, brief

def study_config_class(name: str) -> type[StudyConfig]:
    from ftaudit.studies import get_study

    return get_study(name).Config


def _plain(value: Any) -> Any:
    """API values as YAML gives them: paths as strings, tuples as lists, numpy scalars as numbers."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, int, float, complex)):
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def build_config(study: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None, preset: str | None = None, **kwargs: Any) -> StudyConfig:
    """Merge the study's defaults < preset < file < overrides < keyword arguments (``finetune__epochs=5``
    or ``epochs=5`` shortcuts), then validate against the study's own config class, strictly (no
    ``true`` for a number, no ``3.5`` for a count). The study is the ``study`` argument, else the
    merged tree's ``study`` key, else the default study; the preset the argument, else the tree's key."""
    if study is not None and not isinstance(study, str):
        raise UserError("study", f"must be a study name, got {type(study).__name__} {brief(study)}", "see `ftaudit studies`")
    if overrides is not None and (isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple))):
        raise UserError("overrides", f"must be a list of 'key=value' strings, got {type(overrides).__name__}",
                        "e.g. overrides=['finetune.epochs=10']")
    tree: dict = read_config_file(config_file) if config_file is not None else {}
    for text in overrides or []:
        path, value = parse_override(text)
        set_path(tree, path, value)
    if study is not None:
        tree["study"] = study
    name = tree.get("study", DEFAULT_STUDY)
    if not isinstance(name, str):
        raise UserError("study", f"must be a study name, got {brief(name)}", "see `ftaudit studies`")
    config_class = study_config_class(name)
    for key, value in kwargs.items():
        set_path(tree, _kwarg_path(config_class, key), _plain(value))
    if preset is not None or isinstance(tree.get("preset"), str):  # checked there, with "did you mean"
        from ftaudit.presets import apply_preset

        tree = apply_preset(tree, name, preset if preset is not None else tree["preset"])
    try:
        return config_class.model_validate(tree, strict=True)
    except ValidationError as exc:
        raise first_error(exc, config_class) from None


def _kwarg_path(config_class: type[StudyConfig], key: str) -> list[str]:
    """API shortcut: ``finetune__epochs`` → finetune.epochs; a bare key is looked up across the
    study's sections (the fine-tuning section wins when several have it)."""
    if "__" in key:
        return key.split("__")
    if key in config_class.model_fields:
        return [key]
    owners = [name for name, f in config_class.model_fields.items()
              if isinstance(f.default, BaseModel) and key in type(f.default).model_fields]
    if len(owners) == 1:
        return [owners[0], key]
    if "finetune" in owners:  # ftaudit.run(..., epochs=30) means the fine-tuning's epochs
        return ["finetune", key]
    if not owners:
        known = list(config_class.model_fields) + [k for f in config_class.model_fields.values()
                                                   if isinstance(f.default, BaseModel)
                                                   for k in type(f.default).model_fields]
        raise UserError(key, "unknown config key", f"{did_you_mean(key, known)}use section__key, e.g. finetune__epochs=10")
    raise UserError(key, f"ambiguous: it exists in {', '.join(owners)}", f"use e.g. {owners[-1]}__{key}")


def config_keys(study: str = DEFAULT_STUDY) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf of a study's config: the README and
    docs/configuration.md tables are generated from this."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                walk(type(value), value, f"{prefix}{name}.")
            else:
                rows.append((prefix + name, repr(value) if not isinstance(value, str) else value, field.description or ""))

    config_class = study_config_class(study)
    walk(config_class, config_class(), "")
    return rows
