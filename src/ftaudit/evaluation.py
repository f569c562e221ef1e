"""Scoring as a building block: an evaluation request → pooled scores → typed, cached metrics.

The pipeline scores a study's headline with it; sweep studies (methods, DP, forgetting) score each
cell of the sweep with the very same code, so every number in a report is computed one way.
Attack metrics stay typed (:class:`AttackResult`) until they are written to JSON.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ftaudit.attacks.evaluators import EvaluationRequest, leave_one_out_request
from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import MetricsConfig
from ftaudit.metrics import AttackMetrics, Estimate, RateEstimate, summarize
from ftaudit.metrics.paired import PairedDifference, cross_difference, paired_difference
from ftaudit.signals.arrays import SignalSet
from ftaudit.store.cache import JsonCache, content_key

HEADLINE_FPR = 0.01


@dataclass(frozen=True)
class AttackResult:
    """One attack's metrics with what it means in this study."""

    name: str
    description: str
    metrics: AttackMetrics

    @property
    def auc(self) -> Estimate:
        return self.metrics.auc

    def tpr_at(self, fpr: float = HEADLINE_FPR) -> RateEstimate:
        return self.metrics.tpr_at(fpr)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, **self.metrics.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "AttackResult":
        return cls(d["name"], d.get("description", ""), AttackMetrics.from_dict(d))


@dataclass
class Evaluation:
    pooled: PooledScores
    attacks: list[AttackResult]
    metrics: MetricsConfig
    seed: int

    def by_name(self, name: str) -> AttackResult:
        return next(a for a in self.attacks if a.name == name)

    @property
    def best(self) -> AttackResult | None:
        name = best_attack(self.attacks)
        return self.by_name(name) if name else None

    def compare(self, a: str, b: str, fpr: float = HEADLINE_FPR) -> PairedDifference:
        """b against a on the same rows, with paired bootstrap CIs (cluster = audit example)."""
        p = self.pooled
        return paired_difference(p.scores[a], p.scores[b], p.labels, p.example, fpr, self.metrics.bootstrap,
                                 self.metrics.ci_level, self.seed, names=(a, b))


def cell_difference(a: Evaluation, b: Evaluation, attack: str, fpr: float = HEADLINE_FPR) -> dict:
    """TPR@fpr of ``attack`` in cell a minus cell b (two ensembles audited on the same examples),
    {"value", "lo", "hi"} from a bootstrap that resamples audit examples jointly for both."""
    pa, pb = a.pooled, b.pooled
    return cross_difference(pb.scores[attack], pb.labels, pb.example, pa.scores[attack], pa.labels, pa.example, fpr,
                            a.metrics.bootstrap, a.metrics.ci_level, a.seed)


def summarize_cached(cache: JsonCache, scores: np.ndarray, pooled: PooledScores, metrics: MetricsConfig, seed: int) -> AttackMetrics:
    """Bootstrap summary of one attack's scores; the bootstrap is deterministic given its inputs,
    so it is cached under their content key."""
    key = content_key(kind="attack-metrics", scores=scores, labels=pooled.labels, groups=pooled.example,
                      fprs=list(metrics.fprs), n_boot=metrics.bootstrap, level=metrics.ci_level, seed=seed)
    cached = cache.get(key, check=AttackMetrics.from_dict)  # an entry of the wrong shape is discarded
    if cached is None:
        cached = summarize(scores, pooled.labels, groups=pooled.example, fprs=tuple(metrics.fprs),
                           n_boot=metrics.bootstrap, level=metrics.ci_level, seed=seed).to_dict()
        cache.put(key, cached)
    return AttackMetrics.from_dict(cached)


def summarize_pooled(cache: JsonCache, pooled: PooledScores, metrics: MetricsConfig, seed: int,
                     descriptions: dict[str, str] | None = None) -> list[AttackResult]:
    descriptions = descriptions or {}
    return [AttackResult(name, descriptions.get(name) or (ATTACKS[name].description if name in ATTACKS else ""),
                         summarize_cached(cache, scores, pooled, metrics, seed))
            for name, scores in pooled.scores.items()]


def evaluate(cache: JsonCache, request: EvaluationRequest, metrics: MetricsConfig, seed: int) -> Evaluation:
    pooled = request.scores()
    return Evaluation(pooled, summarize_pooled(cache, pooled, metrics, seed, request.descriptions), metrics, seed)


def evaluate_signals(cache: JsonCache, signals: SignalSet, names: Sequence[str], params: dict | None,
                     references: int, metrics: MetricsConfig, seed: int, targets: int = 0) -> Evaluation:
    """Every attack against each target (all models when ``targets`` is 0), leave-one-out."""
    return evaluate(cache, leave_one_out_request(signals, names, params, references, targets, seed), metrics, seed)


def best_attack(attacks: list[AttackResult]) -> str | None:
    """The attack with the highest TPR at the headline FPR (1 %), ties broken by AUC. Picked after
    the fact among k attacks, so its own CI is optimistic: reports say so beside it."""
    if not attacks:
        return None
    return max(attacks, key=lambda a: (a.tpr_at().value, a.auc.value)).name
