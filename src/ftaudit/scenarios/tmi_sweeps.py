"""TMI's evaluation, shared by the vision (``tmi``) and text (``tmi-text``) scenarios: cached
per-victim attack scores, and the sweep sections (shadow models, fine-tuning method, DP ε,
augmentations) built from them.

A study hands over query outputs ``[M, P, A, K]`` (:class:`Outputs`) and its keep-matrix; every
cell of every sweep is a slice of those (fewer shadows = the first models, fewer augmentations = the first
queries) or of another fine-tuning's outputs, so only the method and ε cells fine-tune anything.
Scores are cached per victim under the content of what they depend on: a victim that already had
its turn in the headline costs nothing in a sweep cell that contains the same models and queries.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ftaudit.attacks.evaluate import PooledScores
from ftaudit.attacks.tmi import (ADAPTED_LIRA, GLOBAL_THRESHOLD, TMI, MetaConfig, adapted_lira_scores, clip_rows,
                                 global_threshold_scores, tmi_attacks, tmi_scores)
from ftaudit.config import RunConfig, TMICommon
from ftaudit.scenarios.base import Context, Figure, Section, Series
from ftaudit.scenarios.evaluate import HEADLINE_FPR, summarize_pooled, tpr_at
from ftaudit.store.cache import content_key

ATTACK_NAMES = [TMI, ADAPTED_LIRA, GLOBAL_THRESHOLD]
DESCRIPTIONS = {
    TMI: "one metaclassifier per challenge point, trained on the other shadows' IN/OUT outputs (clipped "
         "logit-scaled vectors of the fine-tuned model); score = mean P(IN) over the victim's A queries",
    ADAPTED_LIRA: "Gaussian likelihood ratio (IN vs OUT shadows, Ledoit-Wolf covariance) of the victim's "
                  "logit-scaled confidence in its predicted class over the A queries",
    GLOBAL_THRESHOLD: "the victim's mean max-class logit-scaled confidence over the A queries; no shadows",
}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the metaclassifiers on one thread: their tensors are tiny, and on a shared 2-core machine a
    second thread only adds synchronisation (measured 5-10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def study_threads(cfg: RunConfig) -> Iterator[None]:
    """One torch thread for a whole TMI study unless engine.threads is set: its models are tiny, and
    on the shared 2-core machine the default two threads made the same default digits run's
    fine-tuning stage 5x slower (61 s vs 11 s) with identical results."""
    if cfg.engine.threads:
        yield
        return
    with single_thread():
        yield


def meta_config(t: TMICommon, seed: int) -> MetaConfig:
    return MetaConfig(hidden=t.meta_hidden, epochs=t.meta_epochs, seed=seed)


@dataclass
class Outputs:
    """What the attacker reads from every model, [M, P, A, K]. kind "logits": a classifier's K class
    logits (vision). kind "token-summary": a summary of the per-token logit-scaled probabilities of
    a text block (text; its first entry the mean over positions), which TMI reads rescaled by
    :func:`text_features` and the baselines through the mean alone — one confidence per query, as a
    classifier's predicted class gives them."""

    values: np.ndarray
    kind: str = "logits"

    def take(self, models: int | None = None, queries: int | None = None) -> "Outputs":
        return Outputs(self.values[:models, :, :queries], self.kind)


def text_features(phi: np.ndarray) -> np.ndarray:
    """TMI's input for text: the summary vectors divided by the 99th percentile of their norms over
    all models, points and queries, then clipped to norm 1.

    Clipping the raw vectors (as for classifier outputs) would put nearly every one on the unit sphere
    (entries of |phi| ~ 5) and erase their length, which carries most of the membership signal of a
    language model (its loss); one shared scale keeps it. The scale uses no membership labels, only
    outputs the attacker already holds."""
    norms = np.linalg.norm(phi, axis=-1)
    scale = max(float(np.quantile(norms, 0.99)), np.finfo(np.float64).tiny)
    return clip_rows(phi / scale).astype(np.float32)


def victim_scores(out: Outputs, keep: np.ndarray, victim: int, meta: MetaConfig, balance: bool) -> dict[str, np.ndarray]:
    if out.kind == "logits":
        return tmi_attacks(out.values, keep, [victim], meta, balance).scores
    if out.kind != "token-summary":
        raise ValueError(f"unknown output kind {out.kind!r}")
    values = np.asarray(out.values, dtype=np.float64)
    mean = values[..., :1]
    parts = [tmi_scores(text_features(values), keep, [victim], meta, balance),
             adapted_lira_scores(mean, keep, [victim], balance), global_threshold_scores(mean, keep, [victim])]
    return {k: v for p in parts for k, v in p.scores.items()}


def attack_cell(ctx: Context, cfg: RunConfig, t: TMICommon, out: Outputs, keep: np.ndarray,
                victims: list[int]) -> PooledScores:
    """Every TMI attack against each victim (the other models its shadows), pooled victim-major.

    One victim at a time (:func:`victim_scores`); the attacks seed their randomness per victim, so a
    victim's scores depend only on (outputs, keep, victim, config): that is their cache key.
    """
    meta = meta_config(t, cfg.seed)
    base = content_key(kind="tmi-scores-v2", outputs=np.ascontiguousarray(out.values, dtype=np.float32),
                       output_kind=out.kind, keep=keep, meta=vars(meta), balance=t.balance)
    cache = ctx.store.signals
    per_victim = []
    for v in victims:
        key = content_key(cell=base, victim=int(v))
        if not cache.has(key, ATTACK_NAMES):
            with single_thread():
                scores = victim_scores(out, keep, int(v), meta, t.balance)
            cache.save(key, scores)
        per_victim.append(cache.load(key, ATTACK_NAMES))
    v = np.asarray(victims, dtype=np.int64)
    n = keep.shape[1]
    return PooledScores(scores={a: np.concatenate([s[a] for s in per_victim]) for a in ATTACK_NAMES},
                        labels=keep[v].reshape(-1).copy(), example=np.tile(np.arange(n, dtype=np.int64), v.size),
                        target=np.repeat(v, n))


def restrict(pooled: PooledScores, examples: np.ndarray) -> PooledScores:
    """The rows of the given challenge points only (e.g. the mislabelled ones)."""
    rows = np.isin(pooled.example, examples)
    return PooledScores(scores={a: s[rows] for a, s in pooled.scores.items()}, labels=pooled.labels[rows],
                        example=pooled.example[rows], target=pooled.target[rows])


def summarize(ctx: Context, cfg: RunConfig, pooled: PooledScores) -> dict[str, dict]:
    """Attack name -> AUC and TPRs with bootstrap CIs (cluster bootstrap over challenge points)."""
    return {a["name"]: a for a in summarize_pooled(ctx.store.metrics, pooled, cfg.metrics, cfg.seed, DESCRIPTIONS)}


def fmt(est: dict, pct: bool) -> str:
    if pct:
        return f"{est['value']:.1%} [{est['lo']:.1%}, {est['hi']:.1%}]"
    return f"{est['value']:.3f} [{est['lo']:.3f}, {est['hi']:.3f}]"


def tpr_est(attack: dict, fpr: float) -> dict:
    return min(attack["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - fpr))


def metric_cells(attacks: dict[str, dict], fprs: list[float]) -> dict:
    """Table cells of one sweep point: each attack's AUC and its TPR at the low FPRs, with CIs."""
    row = {}
    for name in ATTACK_NAMES:
        a = attacks[name]
        row[f"{name} AUC"] = fmt(a["auc"], False)
        for f in fprs:
            row[f"{name} TPR@{f:.1%}".replace(".0%", "%")] = fmt(tpr_est(a, f), True)
    return row


def low_fprs(cfg: RunConfig) -> list[float]:
    return [f for f in cfg.metrics.fprs if f <= HEADLINE_FPR] or [min(cfg.metrics.fprs)]


@dataclass
class Point:
    """One sweep point: its x value, a label, extra table columns and the attacks' metrics."""

    x: float
    label: str
    columns: dict
    attacks: dict[str, dict]


def metric_figures(title: str, xlabel: str, points: list[Point], xlog: bool, caption: str,
                   ref: Point | None = None) -> list[Figure]:
    """AUC and TPR @ 1 % FPR against x, one line (with CI band) per attack; ``ref``, when given, is a
    flat reference line per attack (e.g. no DP)."""
    out = []
    for which, ylabel in (("auc", "AUC"), (HEADLINE_FPR, f"TPR @ {HEADLINE_FPR:.0%} FPR")):
        def est(a: dict) -> dict:
            return a["auc"] if which == "auc" else tpr_est(a, which)

        series = []
        for name in ATTACK_NAMES:
            e = [est(p.attacks[name]) for p in points]
            series.append(Series(name, [p.x for p in points], [v["value"] for v in e],
                                 lo=[v["lo"] for v in e], hi=[v["hi"] for v in e]))
            if ref is not None:  # spans the swept range (a factor 2 either side of a single point)
                r = est(ref.attacks[name])
                lo, hi = points[0].x, points[-1].x
                span = [lo, hi] if hi > lo else [lo / 2, lo * 2]
                series.append(Series(f"{name}, {ref.label}", span, [r["value"]] * 2))
        out.append(Figure(f"{title}: {ylabel}", xlabel, ylabel, series, xlog=xlog, caption=caption))
    return out


def sweep_section(cfg: RunConfig, title: str, text: list[str], xlabel: str, points: list[Point], xlog: bool,
                  ref: Point | None = None) -> Section:
    rows = [{**p.columns, **metric_cells(p.attacks, low_fprs(cfg))} for p in ([ref] if ref else []) + points]
    caption = f"bands: {cfg.metrics.ci_level:.0%} bootstrap CI over challenge points"
    return Section(title, text, rows, metric_figures(title, xlabel, points, xlog, caption, ref))


def verdict(attacks: dict[str, dict]) -> str:
    """Is TMI above chance, and does it beat each baseline — by whether the AUC intervals separate."""
    t = attacks[TMI]
    chance = "above chance" if t["auc"]["lo"] > 0.5 else "not distinguishable from chance"
    parts = [f"TMI is {chance}: AUC {fmt(t['auc'], False)}, TPR@1% {fmt(tpr_est(t, HEADLINE_FPR), True)}."]
    for name in (ADAPTED_LIRA, GLOBAL_THRESHOLD):
        b = attacks[name]
        if t["auc"]["lo"] > b["auc"]["hi"]:
            word = "TMI beats it"
        elif t["auc"]["hi"] < b["auc"]["lo"]:
            word = "TMI loses to it"
        else:
            word = "the AUC intervals overlap"
        parts.append(f"Against {name} (AUC {fmt(b['auc'], False)}, TPR@1% {tpr_at(b):.1%}): {word}.")
    return " ".join(parts)


# ------------------------------------------------------------------------------ the sweeps


@dataclass
class Tuned:
    """One fine-tuning of all shadows: its query outputs and what it cost in utility."""

    outputs: Outputs
    columns: dict  # extra table columns: the utility, the DP record
    utility: dict  # downstream utility {"value", "lo", "hi"} (mean over shadows, CI over shadows)
    utility_label: str  # what it is, e.g. "downstream test accuracy"


def sweep_victims(t: TMICommon, n_models: int) -> list[int]:
    return list(range(min(t.sweep_victims, n_models)))


def shadow_sweep(ctx: Context, cfg: RunConfig, t: TMICommon, out: Outputs, keep: np.ndarray) -> Section:
    points = []
    for m in sorted(set(t.shadow_counts)):
        attacks = summarize(ctx, cfg, attack_cell(ctx, cfg, t, out.take(models=m), keep[:m], sweep_victims(t, m)))
        points.append(Point(float(m), str(m), {"shadow models (incl. victim)": m}, attacks))
    return sweep_section(cfg, "Sweep: number of shadow models", [
        f"The first m of the {keep.shape[0]} trained models form the world; each of the first "
        f"{t.sweep_victims} is the victim in turn, the other m - 1 its shadows (so with balancing a point's "
        "metaclassifier sees about (m - 1) / 2 IN and as many OUT models). Nothing is retrained."],
        "shadow models m", points, xlog=False)


def augmentation_sweep(ctx: Context, cfg: RunConfig, t: TMICommon, out: Outputs, keep: np.ndarray) -> Section:
    points = []
    for a in sorted(set(t.augmentation_counts)):
        attacks = summarize(ctx, cfg, attack_cell(ctx, cfg, t, out.take(queries=a), keep, sweep_victims(t, keep.shape[0])))
        points.append(Point(float(a), str(a), {"queries A": a}, attacks))
    return sweep_section(cfg, "Sweep: number of augmented queries", [
        "The first A queries of each challenge point (query 0 is the original input): more queries give each "
        f"metaclassifier A training rows per shadow and average its P(IN) over A victim outputs. "
        f"{min(t.sweep_victims, keep.shape[0])} victims per point."], "queries per point A", points, xlog=False)


def method_sweep(ctx: Context, cfg: RunConfig, t: TMICommon, keep: np.ndarray,
                 tune: Callable[[str, float | None], Tuned]) -> Section:
    points, acc_series, xlabel = [], [], ""
    for method in t.methods:
        tuned = tune(method, None)
        attacks = summarize(ctx, cfg, attack_cell(ctx, cfg, t, tuned.outputs, keep, sweep_victims(t, keep.shape[0])))
        points.append(Point(float(len(points)), method, {"method": method, **tuned.columns}, attacks))
        a = attacks[TMI]["auc"]
        acc_series.append(Series(method, [tuned.utility["value"]], [a["value"]], lo=[a["lo"]], hi=[a["hi"]], style="points"))
        xlabel = tuned.utility_label
    rows = [{**p.columns, **metric_cells(p.attacks, low_fprs(cfg))} for p in points]
    figures = [Figure(f"TMI AUC against {xlabel}, by fine-tuning method", xlabel, "TMI AUC", acc_series,
                      caption="error bars: bootstrap CI of the AUC")]
    return Section("Sweep: fine-tuning method", [
        "Every shadow's pretrained checkpoint is fine-tuned again with each method (same downstream data, "
        "same new head init, the method's own learning rate from tmi.lrs); pretraining is shared (cached). "
        "head = linear probe; full = every parameter; lora = low-rank updates of the body plus the head. "
        f"{min(t.sweep_victims, keep.shape[0])} victims per method."], rows, figures)


def dp_sweep(ctx: Context, cfg: RunConfig, t: TMICommon, keep: np.ndarray, tune: Callable[[str, float | None], Tuned],
             headline: Outputs) -> Section:
    """TMI against DP fine-tuning of ``t.method`` at each ε; ``headline`` are the same method's outputs
    without DP, scored on the same victims as the reference."""
    points = []
    victims = sweep_victims(t, keep.shape[0])
    for eps in sorted(t.epsilons):
        tuned = tune(t.method, eps)
        attacks = summarize(ctx, cfg, attack_cell(ctx, cfg, t, tuned.outputs, keep, victims))
        points.append(Point(eps, f"ε = {eps:g}", {"ε": f"{eps:g}", **tuned.columns}, attacks))
    ref = Point(float("inf"), "no DP", {"ε": "∞ (no DP)"}, summarize(ctx, cfg, attack_cell(ctx, cfg, t, headline, keep, victims)))
    return sweep_section(cfg, "Sweep: DP fine-tuning", [
        f"The shadows are fine-tuned ({t.method}) with DP-SGD at each target ε (δ, clipping and accountant from "
        "finetune.dp). DP bounds what the fine-tuned model reveals about the FINE-TUNING data; the challenge "
        "points here are PRETRAINING data, which DP fine-tuning does not cover — whatever it changes comes "
        "from the noise it adds to the head the attacker queries through. The flat lines are the same method "
        f"without DP on the same {min(t.sweep_victims, keep.shape[0])} victims."],
        "target ε of the fine-tuning", points, xlog=True, ref=ref)
