"""Verdicts on decay, said only where a confidence interval of the difference excludes zero.

Every checkpoint of every run is scored on the same (target, digit) rows: the keep-matrix and the
injected digits are shared by all runs, and every model takes a turn as target. So a change along
one run (last checkpoint − first) and a difference between the deterministic and nondeterministic
runs (at one checkpoint, or of their drops) are *paired*: one cluster bootstrap over digits
resamples the same rows for every score vector involved
(:func:`ftaudit.metrics.paired.paired_difference`, and its weights for the drop contrast). Should the
rows ever not align, two marginal CIs are compared instead and a difference is resolved only when
they do not overlap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.config import MetricsConfig
from ftaudit.evaluation import HEADLINE_FPR, Evaluation
from ftaudit.metrics.paired import cluster_weights, paired_difference
from ftaudit.metrics.roc import weighted_roc_stats


@dataclass(frozen=True)
class Diff:
    """A difference of AUCs with its interval (nan bounds: unpaired, judged by CI overlap)."""

    value: float
    lo: float
    hi: float
    sign: int  # +1 / -1: the difference is resolved with this sign; 0: not resolved

    def __str__(self) -> str:
        if math.isnan(self.lo):
            return f"{self.value:+.3f} (unpaired: {'CIs do not overlap' if self.sign else 'CIs overlap'})"
        return f"{self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def _sign(lo: float, hi: float) -> int:
    return 1 if lo > 0 else -1 if hi < 0 else 0


def aligned(*pooled: PooledScores) -> bool:
    """The score vectors are on the same rows (same target, digit and membership label)."""
    first = pooled[0]
    return all(p.labels.shape == first.labels.shape and np.array_equal(p.labels, first.labels)
               and np.array_equal(p.example, first.example) and np.array_equal(p.target, first.target)
               for p in pooled[1:])


def auc_difference(a: Evaluation, b: Evaluation, attack: str, metrics: MetricsConfig, seed: int) -> Diff:
    """AUC of ``b`` − AUC of ``a``: paired when the rows align, else by CI overlap."""
    if aligned(a.pooled, b.pooled):
        p = a.pooled
        d = paired_difference(p.scores[attack], b.pooled.scores[attack], p.labels, p.example, HEADLINE_FPR,
                              metrics.bootstrap, metrics.ci_level, seed)
        return Diff(d.auc_diff, d.auc_diff_lo, d.auc_diff_hi, _sign(d.auc_diff_lo, d.auc_diff_hi))
    ea, eb = a.by_name(attack).auc, b.by_name(attack).auc
    return Diff(eb.value - ea.value, math.nan, math.nan, 1 if eb.lo > ea.hi else -1 if eb.hi < ea.lo else 0)


def drop_difference(a: Sequence[Evaluation], b: Sequence[Evaluation], attack: str, metrics: MetricsConfig,
                    seed: int) -> Diff:
    """(AUC drop of ``b``) − (AUC drop of ``a``), a drop being first − last checkpoint, with a paired
    cluster-bootstrap CI (the same weights as :func:`paired_difference`). Unpaired: not resolved."""
    evals = [a[0], a[-1], b[0], b[-1]]
    if not aligned(*(e.pooled for e in evals)):
        value = (b[0].by_name(attack).auc.value - b[-1].by_name(attack).auc.value) \
            - (a[0].by_name(attack).auc.value - a[-1].by_name(attack).auc.value)
        return Diff(value, math.nan, math.nan, 0)
    p = a[0].pooled
    weights = cluster_weights(p.example, metrics.bootstrap, seed)
    a0, a1, b0, b1 = (weighted_roc_stats(e.pooled.scores[attack], p.labels, weights, [HEADLINE_FPR])[0] for e in evals)
    d = (b0 - b1) - (a0 - a1)
    reps = d[1:][~np.isnan(d[1:])]
    if not reps.size:
        return Diff(float(d[0]), math.nan, math.nan, 0)
    lo, hi = np.quantile(reps, [(1 - metrics.ci_level) / 2, (1 + metrics.ci_level) / 2], method="inverted_cdf")
    return Diff(float(d[0]), float(lo), float(hi), _sign(lo, hi))


def rule(metrics: MetricsConfig) -> str:
    return (f"How these sentences are decided: a run \"forgets\" only when the {metrics.ci_level:.0%} paired "
            "cluster-bootstrap CI (resampling injected digits; the same target-digit rows at both checkpoints) of "
            "its AUC change from the first to the last checkpoint lies below zero; one setting \"leaves the larger "
            "trace\" or \"forgets faster\" only when the paired CI of the deterministic − nondeterministic "
            "difference (the runs share the keep-matrix and the digits, so the rows align) excludes zero. "
            "Otherwise the sentence says \"not resolved\" — never \"does not forget\", which no CI can show.")


def run_verdict(label: str, evals: Sequence[Evaluation], steps: int, attack: str, metrics: MetricsConfig,
                seed: int) -> str:
    """Does the AUC change between the first and the last checkpoint, by the paired CI?"""
    a0, a1 = evals[0].by_name(attack).auc, evals[-1].by_name(attack).auc
    change = auc_difference(evals[0], evals[-1], attack, metrics, seed)
    forgot = {-1: f"it forgets (AUC change {change}, CI below zero)",
              1: f"its AUC rises (AUC change {change}, CI above zero)",
              0: f"forgetting not resolved (AUC change {change} includes zero)"}[change.sign]
    chance = "still above chance" if a1.lo > 0.5 else "not distinguishable from chance"
    return (f"{label}: AUC {a0.value:.3f} [{a0.lo:.3f}, {a0.hi:.3f}] right after the last exposure, "
            f"{a1.value:.3f} [{a1.lo:.3f}, {a1.hi:.3f}] after {steps} more steps — {forgot}; {chance}.")


def determinism_verdict(kind: str, nondet: Sequence[Evaluation], det: Sequence[Evaluation], steps: int, attack: str,
                        metrics: MetricsConfig, seed: int) -> tuple[str, dict]:
    """Deterministic against nondeterministic for one schedule: the trace at the first and last
    checkpoint and the drop between them, each a paired difference (deterministic − nondeterministic)."""
    first = auc_difference(nondet[0], det[0], attack, metrics, seed)
    last = auc_difference(nondet[-1], det[-1], attack, metrics, seed)
    drop = drop_difference(nondet, det, attack, metrics, seed)
    larger = {1: "deterministic leaves the larger trace", -1: "nondeterministic leaves the larger trace",
              0: "not resolved"}
    faster = {1: "deterministic forgets faster", -1: "nondeterministic forgets faster", 0: "not resolved"}
    text = (f"{kind}, deterministic − nondeterministic AUC: {first} right after the last exposure "
            f"({larger[first.sign]}); {last} after {steps} more steps ({larger[last.sign]}); "
            f"difference of the drops over those steps {drop}: {faster[drop.sign]}.")
    row = {"schedule": kind, "AUC det − nondet at 0": str(first), f"AUC det − nondet at {steps}": str(last),
           "drop det − drop nondet": str(drop), "verdict": faster[drop.sign]}
    return text, row
