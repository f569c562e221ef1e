"""Scenario registry: one small module per study."""
from __future__ import annotations

from ftaudit.errors import UserError
from ftaudit.scenarios.base import Context, Scenario, StudyOutput
from ftaudit.scenarios import finetune_mia

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [finetune_mia.SCENARIO]}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UserError("scenario", f"unknown scenario {name!r}", f"choose one of: {', '.join(SCENARIOS)} (`ftaudit scenarios` lists them)")
    return SCENARIOS[name]


__all__ = ["SCENARIOS", "Context", "Scenario", "StudyOutput", "get_scenario"]
