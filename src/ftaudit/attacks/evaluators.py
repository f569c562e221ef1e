"""Evaluators: how a study's headline turns into pooled membership scores, registered by name.

A study does not score its headline itself: it returns an :class:`EvaluationRequest` naming a
registered evaluator and carrying that evaluator's inputs (arrays), and the pipeline scores it.
``leave-one-out`` (every model a target in turn, the others its references, the registered
attacks) serves most studies; TMI's metaclassifiers, base identification and extraction register
their own. Every evaluator returns :class:`PooledScores` (higher score = member).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ftaudit.attacks.leave_one_out import PooledScores, leave_one_out
from ftaudit.signals.arrays import SignalSet


@dataclass(frozen=True)
class Evaluator:
    name: str
    description: str
    score: Callable[[Any], PooledScores]


EVALUATORS: dict[str, Evaluator] = {}


def register_evaluator(name: str, description: str) -> Callable[[Callable[[Any], PooledScores]], Callable]:
    def wrap(fn: Callable[[Any], PooledScores]) -> Callable[[Any], PooledScores]:
        if name in EVALUATORS and EVALUATORS[name].score is not fn:
            raise ValueError(f"an evaluator named {name!r} is already registered")
        EVALUATORS[name] = Evaluator(name, description, fn)
        return fn
    return wrap


@dataclass(eq=False)
class EvaluationRequest:
    """A registered evaluator and its inputs. ``scores()`` runs it once and keeps the result, so a
    study that needs its headline scores for a report section and the pipeline share one run."""

    evaluator: str
    inputs: Any
    descriptions: dict[str, str] = field(default_factory=dict)  # attack -> what it means in this study
    _pooled: PooledScores | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"unknown evaluator {self.evaluator!r}; registered: {', '.join(EVALUATORS)}")

    def scores(self) -> PooledScores:
        if self._pooled is None:
            self._pooled = EVALUATORS[self.evaluator].score(self.inputs)
        return self._pooled


def precomputed(pooled: PooledScores, descriptions: Mapping[str, str] | None = None) -> EvaluationRequest:
    """A request whose scores were computed by another evaluator (e.g. one cell of a sweep)."""
    return EvaluationRequest("pooled", pooled, dict(descriptions or {}))


@register_evaluator("pooled", "scores already pooled by an evaluator (a sweep's headline cell)")
def _pooled(pooled: PooledScores) -> PooledScores:
    return pooled


@dataclass(frozen=True)
class LeaveOneOut:
    """Inputs of the leave-one-out evaluator."""

    signals: SignalSet
    names: Sequence[str]
    params: Mapping[str, Mapping[str, float]] | None
    references: int  # references per target
    targets: int = 0  # models that take a turn as target (the first ones); 0 = all
    seed: int = 0  # which references are dropped to balance IN and OUT, per (target, example)
    cap: int | None = None  # references each example uses (half IN, half OUT) of the target's; None = all

    @property
    def target_models(self) -> list[int]:
        return list(range(self.targets or self.signals.n_models))


@register_evaluator("leave-one-out", "every model in turn is the target, the next `references` models its references; "
                                     "the registered attacks")
def _leave_one_out(inp: LeaveOneOut) -> PooledScores:
    return leave_one_out(inp.signals, inp.names, inp.params, inp.target_models, inp.references, seed=inp.seed,
                         cap=inp.cap)


def leave_one_out_request(signals: SignalSet, names: Sequence[str], params, references: int, targets: int = 0,
                          seed: int = 0, descriptions: Mapping[str, str] | None = None,
                          cap: int | None = None) -> EvaluationRequest:
    return EvaluationRequest("leave-one-out", LeaveOneOut(signals, list(names), params, references, targets, seed, cap),
                             dict(descriptions or {}))


def member_rate(request: EvaluationRequest) -> np.ndarray | None:
    """Share of models each example was a member of, where the inputs say (leave-one-out)."""
    inp = request.inputs
    return inp.signals.keep.mean(axis=0) if isinstance(inp, LeaveOneOut) else None
