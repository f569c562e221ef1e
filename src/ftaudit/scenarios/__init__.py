"""Scenario registry: one small module per study, each exposing ``SCENARIO``."""
from __future__ import annotations

import importlib

from ftaudit.errors import UserError
from ftaudit.scenarios.base import Context, Scenario, StudyOutput

# One line per study module (ftaudit.scenarios.<name>); the order is the order `ftaudit scenarios` lists.
_MODULES = [
    "finetune_mia",
    "methods",
    "dp_finetune",
    "forgetting",
    "tmi",
    "tmi_text",
    "lm_mia",
    "mlm_ratio",
    "lm_methods",
    "lm_extraction",
    "stealing",
]

SCENARIOS: dict[str, Scenario] = {}
for _name in _MODULES:
    _scenario = importlib.import_module(f"ftaudit.scenarios.{_name}").SCENARIO
    SCENARIOS[_scenario.name] = _scenario


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UserError("scenario", f"unknown scenario {name!r}", f"choose one of: {', '.join(SCENARIOS)} (`ftaudit scenarios` lists them)")
    return SCENARIOS[name]


__all__ = ["SCENARIOS", "Context", "Scenario", "StudyOutput", "get_scenario"]
