"""The study registry: one module (or small folder) per study, each exposing ``STUDY``.

A study's module is imported when the study is first asked for, so running one study does not
import the others (nor their dependencies). ``ftaudit studies`` lists them in this order. Tests
and plugins add their own with :func:`register_study`.
"""
from __future__ import annotations

import importlib

from ftaudit.errors import UserError
from ftaudit.studies.base import Context, Study, StudyOutput

# study name -> the module that defines its STUDY (ftaudit.studies.<module>)
BUILTIN = {
    "finetune-mia": "digits.finetune_mia",
    "methods": "digits.methods",
    "dp-finetune": "digits.dp_finetune",
    "forgetting": "forgetting.study",
    "tmi": "tmi.digits",
    "tmi-text": "tmi.text",
    "lm-mia": "lm.mia",
    "mlm-ratio": "lm.mlm_ratio",
    "lm-methods": "lm.methods",
    "lm-extraction": "lm.extraction",
    "stealing": "stealing.study",
    "audit": "audit.study",
}

_REGISTERED: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Add a study to the registry (refusing a second study of the same name); returns it."""
    known = _REGISTERED.get(study.name)
    if known is not None and known is not study:
        raise ValueError(f"a study named {study.name!r} is already registered")
    _REGISTERED[study.name] = study
    return study


def names() -> list[str]:
    return list(BUILTIN) + [n for n in _REGISTERED if n not in BUILTIN]


def get_study(name: str) -> Study:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        import difflib

        close = difflib.get_close_matches(str(name)[:200], names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError("study", f"unknown study {name!r}",
                        f"{hint}choose one of: {', '.join(names())} (`ftaudit studies` lists them)")
    study = importlib.import_module(f"ftaudit.studies.{BUILTIN[name]}").STUDY
    if study.name != name:
        raise RuntimeError(f"module ftaudit.studies.{BUILTIN[name]} defines study {study.name!r}, not {name!r}")
    return register_study(study)


def all_studies() -> dict[str, Study]:
    """Every study, built-in and registered, in listing order (imports every study module)."""
    return {n: get_study(n) for n in names()}


__all__ = ["BUILTIN", "Context", "Study", "StudyOutput", "all_studies", "get_study", "names", "register_study"]
