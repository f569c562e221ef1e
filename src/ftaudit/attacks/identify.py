"""Base identification as a detection task: which candidate base was a black-box victim fine-tuned
from? Every (victim, candidate) pair is a row, a member when the candidate is the victim's base.

The study measures, per pair, how well the candidate's features explain the victim's answers (a
cross-fitted probe, ``studies/stealing/identify.py``) and how far the victim's latency profile is
from the candidate architecture's (``studies/stealing/latency.py``); this evaluator turns those
arrays into pooled scores (higher = this candidate is the base). Rows are clustered by victim, so
the bootstrap CIs resample victims: the victims are the independent units, the candidates a fixed
list every victim is compared with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.evaluators import register_evaluator
from ftaudit.attacks.leave_one_out import PooledScores

DESCRIPTIONS = {
    "probe-fit": "cross-fitted log-likelihood of the victim's answers under a linear probe on the candidate's features; "
                 "higher = this candidate is the base",
    "latency": "minus the distance between the victim's latency profile and the candidate's architecture's",
    "latency+probe": "probe-fit among the candidates of the architecture latency identified (the others last)",
}


@dataclass(frozen=True)
class BaseIdentification:
    """Inputs of the ``base-identification`` evaluator, [victims, candidates] each."""

    probe: np.ndarray  # float: probe fit of the victim's answers on the candidate's features
    latency: np.ndarray  # float: distance of the victim's latency profile to the candidate architecture's
    same_arch: np.ndarray  # bool: the candidate has the architecture latency identified for the victim
    base: np.ndarray  # int [victims]: index of the victim's true base among the candidates

    def __post_init__(self) -> None:
        shape = np.shape(self.probe)
        if len(shape) != 2 or np.shape(self.latency) != shape or np.shape(self.same_arch) != shape:
            raise ValueError(f"probe, latency and same_arch must be [victims, candidates] alike, got "
                             f"{np.shape(self.probe)}, {np.shape(self.latency)}, {np.shape(self.same_arch)}")
        if np.shape(self.base) != shape[:1]:
            raise ValueError(f"base must hold one candidate index per victim ({shape[0]}), got {np.shape(self.base)}")


@register_evaluator("base-identification", "(victim, candidate) pairs, a member when the candidate is the victim's "
                                           "base; probe fit, latency, and the probe among the latency-identified "
                                           "architecture; clustered by victim")
def base_identification(inp: BaseIdentification) -> PooledScores:
    probe = np.asarray(inp.probe, dtype=np.float64)
    n_victims, n_cands = probe.shape
    labels = (np.arange(n_cands)[None, :] == np.asarray(inp.base)[:, None]).ravel()
    victim = np.repeat(np.arange(n_victims, dtype=np.int64), n_cands)
    # the probe among the identified architecture's candidates: every other candidate ranks below all of them
    combined = np.where(inp.same_arch, probe, probe - (float(np.ptp(probe)) + 1.0))
    scores = {"probe-fit": probe.ravel(), "latency": -np.asarray(inp.latency, dtype=np.float64).ravel(),
              "latency+probe": combined.ravel()}
    return PooledScores(scores=scores, labels=labels, example=victim, target=victim.copy())


def member_rate(pooled: PooledScores) -> np.ndarray:
    """Per cluster (victim): the share of its rows that are members (1 / candidates here)."""
    rows = np.bincount(pooled.example)
    return np.bincount(pooled.example, weights=pooled.labels.astype(np.float64), minlength=len(rows)) / np.maximum(rows, 1)
