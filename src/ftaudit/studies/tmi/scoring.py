"""Scoring the cells of the TMI studies (``tmi``, ``tmi-text``): query outputs → a request to the
registered ``tmi-metaclassifiers`` evaluator (per-victim scores cached by content) → typed metrics,
and the table cells and verdicts built from them.

A victim's scores depend only on (outputs, keep, victim, metaclassifier recipe), so that is their
cache key: a victim that already had its turn in the headline costs nothing in a sweep cell that
contains the same models and queries.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ftaudit.attacks.evaluators import EvaluationRequest, precomputed
from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.attacks.tmi import (ADAPTED_LIRA, ATTACK_NAMES, GLOBAL_THRESHOLD, TMI, MetaclassifierInputs, MetaConfig,
                                 single_thread)
from ftaudit.evaluation import HEADLINE_FPR, Evaluation, evaluate
from ftaudit.metrics.paired import PairedDifference
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context
from ftaudit.studies.tmi.config import TMIStudyConfig, TMITextStudyConfig

Config = TMIStudyConfig | TMITextStudyConfig
DESCRIPTIONS = {
    TMI: "one metaclassifier per challenge point, trained on the other shadows' IN/OUT outputs (clipped "
         "logit-scaled vectors of the fine-tuned model); score = mean P(IN) over the victim's A queries",
    ADAPTED_LIRA: "Gaussian likelihood ratio (IN vs OUT shadows, Ledoit-Wolf covariance) of the victim's "
                  "logit-scaled confidence in its predicted class over the A queries",
    GLOBAL_THRESHOLD: "the victim's mean max-class logit-scaled confidence over the A queries; no shadows",
}


@contextmanager
def study_threads(cfg: Config) -> Iterator[None]:
    """One torch thread for a whole TMI study unless engine.threads is set: its models are tiny, and
    on the shared 2-core machine the default two threads made the same default digits run's
    fine-tuning stage 5x slower (61 s vs 11 s) with identical results."""
    if cfg.engine.threads:
        yield
        return
    with single_thread():
        yield


@dataclass
class Outputs:
    """What the attacker reads from every model, [M, P, A, K]: a classifier's K class logits (kind
    "logits") or a summary of a text block's per-token logit-scaled probabilities ("token-summary");
    see :func:`ftaudit.attacks.tmi.victim_scores`."""

    values: np.ndarray
    kind: str = "logits"

    def take(self, models: int | None = None, queries: int | None = None) -> "Outputs":
        return Outputs(self.values[:models, :, :queries], self.kind)


def meta_config(cfg: Config) -> MetaConfig:
    return MetaConfig(hidden=cfg.tmi.meta_hidden, epochs=cfg.tmi.meta_epochs, seed=cfg.seed)


@dataclass
class Scorer:
    """Turns a cell's outputs into an evaluation request and its typed metrics."""

    ctx: Context
    cfg: Config
    descriptions: dict[str, str]

    def request(self, out: Outputs, keep: np.ndarray, victims: Sequence[int]) -> EvaluationRequest:
        """Every TMI attack against each victim (the other models its shadows), pooled victim-major."""
        meta, balance = meta_config(self.cfg), self.cfg.tmi.balance
        place = self.ctx.engine.placement
        base = content_key(kind="tmi-scores-v3", outputs=np.ascontiguousarray(out.values, dtype=np.float32),
                           output_kind=out.kind, keep=keep, meta=vars(meta), balance=balance, **place.query_key())

        def memo(victims: list[int], compute):
            return self.ctx.cached("tmi-scores", [content_key(cell=base, victim=int(v)) for v in victims], compute)

        inputs = MetaclassifierInputs(out.values, keep, list(victims), meta, balance, out.kind, memo,
                                      str(place.device))
        return EvaluationRequest("tmi-metaclassifiers", inputs, self.descriptions)

    def evaluate(self, request: EvaluationRequest) -> Evaluation:
        return evaluate(self.ctx.store.metrics, request, self.cfg.metrics, self.cfg.seed)

    def cell(self, out: Outputs, keep: np.ndarray, victims: Sequence[int]) -> Evaluation:
        return self.evaluate(self.request(out, keep, victims))

    def rows(self, ev: Evaluation, examples: np.ndarray) -> Evaluation:
        """The same scores on the rows of the given challenge points only (e.g. the mislabelled ones)."""
        rows = take_rows(ev.pooled, np.isin(ev.pooled.example, examples))
        return self.evaluate(precomputed(rows, self.descriptions))

    @property
    def low_fprs(self) -> list[float]:
        fprs = self.cfg.metrics.fprs
        return [f for f in fprs if f <= HEADLINE_FPR] or [min(fprs)]


def take_rows(pooled: PooledScores, rows: np.ndarray) -> PooledScores:
    """The pooled rows selected by a boolean mask."""
    return PooledScores(scores={a: s[rows] for a, s in pooled.scores.items()}, labels=pooled.labels[rows],
                        example=pooled.example[rows], target=pooled.target[rows])


def fmt(est, pct: bool = False) -> str:
    """"value [lo, hi]" of an estimate (a metric or a {"value", "lo", "hi"} dict)."""
    value, lo, hi = (est["value"], est["lo"], est["hi"]) if isinstance(est, dict) else (est.value, est.lo, est.hi)
    if pct:
        return f"{value:.1%} [{lo:.1%}, {hi:.1%}]"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def metric_cells(ev: Evaluation, fprs: list[float]) -> dict:
    """Table cells of one cell: each attack's AUC and its TPR at the low FPRs, with CIs."""
    row = {}
    for name in ATTACK_NAMES:
        a = ev.by_name(name)
        row[f"{name} AUC"] = fmt(a.auc)
        for f in fprs:
            row[f"{name} TPR@{f:.1%}".replace(".0%", "%")] = fmt(a.tpr_at(f), True)
    return row


def difference(d: PairedDifference, metric: str) -> str:
    """A paired difference b − a with its CI and verdict, e.g. "+0.031 [+0.012, +0.050]: tmi beats adapted-lira"."""
    if metric == "auc":
        text = f"{d.auc_diff:+.3f} [{d.auc_diff_lo:+.3f}, {d.auc_diff_hi:+.3f}]"
    else:
        text = f"{d.tpr_diff:+.1%} [{d.tpr_diff_lo:+.1%}, {d.tpr_diff_hi:+.1%}]"
    return f"{text}: {d.verdict(metric)}"


def verdict(ev: Evaluation) -> str:
    """Is TMI above chance, and does it beat each baseline — said only where the paired bootstrap CI
    of the difference (same victims and points, resampling challenge points) excludes zero."""
    t = ev.by_name(TMI)
    chance = "above chance" if t.auc.lo > 0.5 else "not distinguishable from chance"
    level = f"{ev.metrics.ci_level:.0%}"
    parts = [f"TMI is {chance}: AUC {fmt(t.auc)}, TPR@1% {fmt(t.tpr_at(HEADLINE_FPR), True)}."]
    for name in (ADAPTED_LIRA, GLOBAL_THRESHOLD):
        b = ev.by_name(name)
        d = ev.compare(name, TMI, HEADLINE_FPR)
        parts.append(f"Against {name} (AUC {fmt(b.auc)}, TPR@1% {fmt(b.tpr_at(HEADLINE_FPR), True)}), TMI minus "
                     f"{name}: AUC {difference(d, 'auc')}; TPR@1% {difference(d, 'tpr')} ({level} paired bootstrap "
                     "CIs over challenge points).")
    return " ".join(parts)
