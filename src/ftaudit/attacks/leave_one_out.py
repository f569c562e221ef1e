"""Leave-one-out evaluation: each target model takes a turn, the others serve as its references.

Pooling the targets' (example, membership) rows gives many more labelled rows than one target
alone; rows of the same example are correlated, which is why ``PooledScores.example`` exists
(pass it as ``groups`` to :func:`ftaudit.metrics.summarize` for a cluster bootstrap).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ftaudit.attacks.base import attack_input
from ftaudit.attacks.registry import ATTACKS, resolve_request, run_attack
from ftaudit.errors import UserError
from ftaudit.signals.arrays import SignalSet

REFS_FIELD = "finetune.references"
TARGETS_FIELD = "attack.targets"
CAP_FIELD = "attack.references"


@dataclass(frozen=True)
class PooledScores:
    """Scores of every attack over all (target, example) rows, target-major: row = t_i * N + n.

    scores  : {attack name: float64 [T*N]}
    labels  : bool [T*N], the target trained on the example
    example : int64 [T*N], audit example index
    target  : int64 [T*N], target model index
    skipped : {attack name: reason} for attacks that could not run on these signals
    """

    scores: dict[str, np.ndarray]
    labels: np.ndarray
    example: np.ndarray
    target: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


def reference_models(target: int, n_models: int, n_refs: int) -> np.ndarray:
    """The ``n_refs`` models cyclically after ``target`` (never the target itself)."""
    if not 1 <= n_refs <= n_models - 1:
        raise UserError(REFS_FIELD, f"{n_refs} references per target, but only {n_models - 1} other models exist",
                        f"use between 1 and {n_models - 1} references, or train more models")
    return (target + 1 + np.arange(n_refs)) % n_models


def _missing(name: str, signals: SignalSet) -> str | None:
    needs = ATTACKS[name].needs
    if "base" in needs and signals.base_loss is None:
        return "no pretrained base signals (base_loss is None)"
    if "population" in needs and signals.pop_loss.shape[1] == 0:
        return "no population examples"
    if "scores" in needs and name not in signals.scores:
        return "this study does not compute its scores"
    return None


def leave_one_out(
    signals: SignalSet,
    attack_names: Sequence[str],
    params: Mapping[str, Mapping[str, float]] | None,
    targets: Sequence[int],
    n_refs: int,
    seed: int = 0,
    cap: int | None = None,
) -> PooledScores:
    """Run every attack against each target in ``targets`` with its cyclic references, and pool.
    ``seed`` draws which references are left out to balance IN and OUT per (target, example);
    ``cap`` (even, None = all) is how many of the ``n_refs`` each example uses: cap/2 IN and cap/2
    OUT, drawn per (target, example), so few-reference audits stay balanced (see
    :func:`ftaudit.attacks.base.balanced_references`)."""
    m, n = signals.n_models, signals.n_examples
    resolved = resolve_request(attack_names, params)  # fail fast
    reference_models(0, m, n_refs)  # validates n_refs before any work
    if cap is not None and not (2 <= cap <= n_refs and cap % 2 == 0):
        raise UserError(CAP_FIELD, f"{cap} references per example: must be even (half IN, half OUT), between 2 "
                        f"and the {n_refs} references per target",
                        f"use an even number from 2 to {n_refs - n_refs % 2}")
    targets = np.asarray(list(targets), dtype=np.int64)
    if targets.size == 0 or (targets < 0).any() or (targets >= m).any() or np.unique(targets).size != targets.size:
        raise UserError(TARGETS_FIELD, f"targets must be distinct model indices in [0, {m}), got {targets.tolist()}")
    skipped = {name: why for name in attack_names if (why := _missing(name, signals))}
    run = [name for name in attack_names if name not in skipped]
    scores = {name: np.empty(targets.size * n) for name in run}
    for i, t in enumerate(targets):
        inp = attack_input(signals, int(t), reference_models(int(t), m, n_refs), seed, cap)
        for name in run:
            scores[name][i * n:(i + 1) * n] = run_attack(name, inp, **resolved[name])
    return PooledScores(
        scores=scores,
        labels=signals.keep[targets].reshape(-1).copy(),
        example=np.tile(np.arange(n, dtype=np.int64), targets.size),
        target=np.repeat(targets, n),
        skipped=skipped,
    )
