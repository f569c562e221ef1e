"""Attack evaluation as a building block: signals → pooled leave-one-out scores → cached metrics.

The pipeline evaluates a study's headline signals with it; sweep studies (methods, DP, forgetting)
evaluate each cell of the sweep with the very same code, so every number in a report is computed one way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ftaudit.attacks.evaluate import PooledScores, leave_one_out
from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import MetricsConfig
from ftaudit.metrics import summarize
from ftaudit.signals.arrays import SignalSet
from ftaudit.store.cache import JsonCache, content_key

HEADLINE_FPR = 0.01


@dataclass
class Evaluation:
    pooled: PooledScores
    attacks: list[dict]  # {"name", "description", **AttackMetrics.to_dict()}

    def by_name(self, name: str) -> dict:
        return next(a for a in self.attacks if a["name"] == name)

    @property
    def best(self) -> dict | None:
        name = best_attack(self.attacks)
        return self.by_name(name) if name else None


def summarize_cached(cache: JsonCache, scores: np.ndarray, pooled: PooledScores, metrics: MetricsConfig, seed: int) -> dict:
    """Bootstrap summary of one attack's scores; the bootstrap is deterministic given its inputs,
    so it is cached under their content key."""
    key = content_key(kind="attack-metrics", scores=scores, labels=pooled.labels, groups=pooled.example,
                      fprs=list(metrics.fprs), n_boot=metrics.bootstrap, level=metrics.ci_level, seed=seed)
    cached = cache.get(key)
    if cached is None:
        cached = summarize(scores, pooled.labels, groups=pooled.example, fprs=tuple(metrics.fprs),
                           n_boot=metrics.bootstrap, level=metrics.ci_level, seed=seed).to_dict()
        cache.put(key, cached)
    return cached


def summarize_pooled(cache: JsonCache, pooled: PooledScores, metrics: MetricsConfig, seed: int,
                     descriptions: dict[str, str] | None = None) -> list[dict]:
    descriptions = descriptions or {}
    return [{"name": name, "description": descriptions.get(name) or (ATTACKS[name].description if name in ATTACKS else ""),
             **summarize_cached(cache, scores, pooled, metrics, seed)}
            for name, scores in pooled.scores.items()]


def evaluate_signals(cache: JsonCache, signals: SignalSet, names: Sequence[str], params: dict | None,
                     references: int, metrics: MetricsConfig, seed: int, targets: int = 0) -> Evaluation:
    """Every attack against each target (all models when ``targets`` is 0) with its cyclic references."""
    chosen = list(range(targets or signals.n_models))
    pooled = leave_one_out(signals, names, params, chosen, references)
    return Evaluation(pooled=pooled, attacks=summarize_pooled(cache, pooled, metrics, seed))


def tpr_at(attack: dict, fpr: float = HEADLINE_FPR) -> float:
    return min(attack["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - fpr))["value"]


def best_attack(attacks: list[dict]) -> str | None:
    """The attack with the highest TPR at the headline FPR (1 %), ties broken by AUC."""
    if not attacks:
        return None
    return max(attacks, key=lambda a: (tpr_at(a), a["auc"]["value"]))["name"]
