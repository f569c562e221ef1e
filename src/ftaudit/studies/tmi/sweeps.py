"""The sweep sections shared by the TMI studies (``tmi``, ``tmi-text``): shadow models, fine-tuning
method, DP ε and augmentations.

A study hands over query outputs ``[M, P, A, K]`` (:class:`~ftaudit.studies.tmi.scoring.Outputs`)
and its keep-matrix; every cell of every sweep is a slice of those (fewer shadows = the first
models, fewer augmentations = the first queries) or of another fine-tuning's outputs, so only the
method and ε cells fine-tune anything. Each cell is scored by the same evaluator as the headline
(:class:`~ftaudit.studies.tmi.scoring.Scorer`), with per-victim scores cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ftaudit.attacks.tmi import ADAPTED_LIRA, ATTACK_NAMES, TMI
from ftaudit.evaluation import HEADLINE_FPR, Evaluation
from ftaudit.metrics.paired import paired_difference
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.studies.tmi.scoring import Outputs, Scorer, difference, metric_cells, take_rows


@dataclass
class Point:
    """One sweep point: its x value, a label, extra table columns and the attacks' metrics."""

    x: float
    label: str
    columns: dict
    ev: Evaluation


@dataclass
class Tuned:
    """One fine-tuning of all shadows: its query outputs and what it cost in utility."""

    outputs: Outputs
    columns: dict  # extra table columns: the utility, the DP record
    utility: dict  # downstream utility {"value", "lo", "hi"} (mean over shadows, CI over shadows)
    utility_label: str  # what it is, e.g. "downstream test accuracy"


Tune = Callable[[str, float | None], Tuned]


def metric_figures(title: str, xlabel: str, points: list[Point], xlog: bool, caption: str,
                   ref: Point | None = None) -> list[Figure]:
    """AUC and TPR @ 1 % FPR against x, one line (with CI band) per attack; ``ref``, when given, is a
    flat reference line per attack (e.g. no DP)."""
    out = []
    for which, ylabel in (("auc", "AUC"), (HEADLINE_FPR, f"TPR @ {HEADLINE_FPR:.0%} FPR")):
        def est(ev: Evaluation, name: str):
            a = ev.by_name(name)
            return a.auc if which == "auc" else a.tpr_at(which)

        series = []
        for name in ATTACK_NAMES:
            e = [est(p.ev, name) for p in points]
            series.append(Series(name, [p.x for p in points], [v.value for v in e],
                                 lo=[v.lo for v in e], hi=[v.hi for v in e]))
            if ref is not None:  # spans the swept range (a factor 2 either side of a single point)
                r = est(ref.ev, name)
                lo, hi = points[0].x, points[-1].x
                span = [lo, hi] if hi > lo else [lo / 2, lo * 2]
                series.append(Series(f"{name}, {ref.label}", span, [r.value] * 2))
        out.append(Figure(f"{title}: {ylabel}", xlabel, ylabel, series, xlog=xlog, caption=caption))
    return out


def sweep_section(scorer: Scorer, title: str, text: list[str], xlabel: str, points: list[Point], xlog: bool,
                  ref: Point | None = None) -> ReportSection:
    rows = [{**p.columns, **metric_cells(p.ev, scorer.low_fprs)} for p in ([ref] if ref else []) + points]
    caption = f"bands: {scorer.cfg.metrics.ci_level:.0%} bootstrap CI over challenge points"
    return ReportSection(title, text, rows, metric_figures(title, xlabel, points, xlog, caption, ref))


def paired(scorer: Scorer, attack: str, a: Point, b: Point) -> str:
    """``attack``'s AUC in cell b minus cell a on the (victim, point) rows both hold (the victims they
    share; both pool victim-major), paired by challenge point: the difference, its CI and the verdict."""
    shared = np.intersect1d(a.ev.pooled.target, b.ev.pooled.target)
    pa, pb = (take_rows(p.ev.pooled, np.isin(p.ev.pooled.target, shared)) for p in (a, b))
    if not (np.array_equal(pa.labels, pb.labels) and np.array_equal(pa.example, pb.example)):
        raise ValueError("paired cells must hold the same (victim, point) rows")
    m = scorer.cfg.metrics
    d = paired_difference(pa.scores[attack], pb.scores[attack], pa.labels, pa.example, HEADLINE_FPR, m.bootstrap,
                          m.ci_level, scorer.cfg.seed, names=(a.label, b.label))
    every = max(np.unique(p.ev.pooled.target).size for p in (a, b))
    fewer = "" if shared.size == every else f" (on the {shared.size} victims both have)"
    return f"{b.label} minus {a.label}: {difference(d, 'auc')}{fewer}"


def paired_text(scorer: Scorer, pairs: list[tuple[Point, Point]], attacks: tuple[str, ...] = (TMI,)) -> str:
    """One sentence per attack: its AUC differences between the paired cells, with verdicts."""
    level = f"{scorer.cfg.metrics.ci_level:.0%}"
    return " ".join(f"{name} AUC, paired differences ({level} paired bootstrap CIs over challenge points; a verdict "
                    "only where the CI excludes zero): " + "; ".join(paired(scorer, name, a, b) for a, b in pairs) + "."
                    for name in attacks)


def against_last(scorer: Scorer, points: list[Point]) -> list[str]:
    """TMI's and adapted LiRA's paired differences of each point against the largest setting."""
    if len(points) < 2:
        return []
    return [paired_text(scorer, [(points[-1], p) for p in points[:-1]], (TMI, ADAPTED_LIRA))]


def sweep_victims(scorer: Scorer, n_models: int) -> list[int]:
    return list(range(min(scorer.cfg.tmi.sweep_victims, n_models)))


def shadow_sweep(scorer: Scorer, out: Outputs, keep: np.ndarray) -> ReportSection:
    points = []
    for m in sorted(set(scorer.cfg.tmi.shadow_counts)):
        ev = scorer.cell(out.take(models=m), keep[:m], sweep_victims(scorer, m))
        points.append(Point(float(m), f"m = {m}", {"shadow models (incl. victim)": m}, ev))
    return sweep_section(scorer, "Sweep: number of shadow models", [
        f"The first m of the {keep.shape[0]} trained models form the world; each of the first "
        f"{scorer.cfg.tmi.sweep_victims} is the victim in turn, the other m - 1 its shadows (so with balancing a "
        "point's metaclassifier sees about (m - 1) / 2 IN and as many OUT models). Nothing is retrained.",
        *against_last(scorer, points)], "shadow models m", points, xlog=False)


def augmentation_sweep(scorer: Scorer, out: Outputs, keep: np.ndarray) -> ReportSection:
    points = []
    victims = sweep_victims(scorer, keep.shape[0])
    for a in sorted(set(scorer.cfg.tmi.augmentation_counts)):
        points.append(Point(float(a), f"A = {a}", {"queries A": a}, scorer.cell(out.take(queries=a), keep, victims)))
    return sweep_section(scorer, "Sweep: number of augmented queries", [
        "The first A queries of each challenge point (query 0 is the original input): more queries give each "
        f"metaclassifier A training rows per shadow and average its P(IN) over A victim outputs. "
        f"{len(victims)} victims per point.", *against_last(scorer, points)], "queries per point A", points, xlog=False)


def method_sweep(scorer: Scorer, keep: np.ndarray, tune: Tune) -> ReportSection:
    points, acc_series, xlabel = [], [], ""
    victims = sweep_victims(scorer, keep.shape[0])
    for method in scorer.cfg.tmi.methods:
        tuned = tune(method, None)
        ev = scorer.cell(tuned.outputs, keep, victims)
        points.append(Point(float(len(points)), method, {"method": method, **tuned.columns}, ev))
        a = ev.by_name(TMI).auc
        acc_series.append(Series(method, [tuned.utility["value"]], [a.value], lo=[a.lo], hi=[a.hi], style="points"))
        xlabel = tuned.utility_label
    rows = [{**p.columns, **metric_cells(p.ev, scorer.low_fprs)} for p in points]
    figures = [Figure(f"TMI AUC against {xlabel}, by fine-tuning method", xlabel, "TMI AUC", acc_series,
                      caption="error bars: bootstrap CI of the AUC")]
    text = ["Every shadow's pretrained checkpoint is fine-tuned again with each method (same downstream data, "
            "same new head init, the method's own learning rate from tmi.lrs); pretraining is shared (cached). "
            "head = linear probe; full = every parameter; lora = low-rank updates of the body plus the head. "
            f"{len(victims)} victims per method."]
    if len(points) > 1:
        text.append(paired_text(scorer, [(points[0], p) for p in points[1:]]))
    return ReportSection("Sweep: fine-tuning method", text, rows, figures)


def dp_sweep(scorer: Scorer, keep: np.ndarray, tune: Tune, headline: Outputs) -> ReportSection:
    """TMI against DP fine-tuning of ``tmi.method`` at each ε; ``headline`` are the same method's
    outputs without DP, scored on the same victims as the reference."""
    t = scorer.cfg.tmi
    points = []
    victims = sweep_victims(scorer, keep.shape[0])
    for eps in sorted(t.epsilons):
        tuned = tune(t.method, eps)
        points.append(Point(eps, f"ε = {eps:g}", {"ε": f"{eps:g}", **tuned.columns},
                            scorer.cell(tuned.outputs, keep, victims)))
    ref = Point(float("inf"), "no DP", {"ε": "∞ (no DP)"}, scorer.cell(headline, keep, victims))
    return sweep_section(scorer, "Sweep: DP fine-tuning", [
        f"The shadows are fine-tuned ({t.method}) with DP-SGD at each target ε (δ, clipping and accountant from "
        "finetune.dp). DP bounds what the fine-tuned model reveals about the FINE-TUNING data; the challenge "
        "points here are PRETRAINING data, which DP fine-tuning does not cover — whatever it changes comes "
        "from the noise it adds to the head the attacker queries through. The flat lines are the same method "
        f"without DP on the same {len(victims)} victims.", paired_text(scorer, [(ref, p) for p in points])],
        "target ε of the fine-tuning", points, xlog=True, ref=ref)


def all_sweeps(scorer: Scorer, tmi, headline: Outputs, keep: np.ndarray, tune: Tune) -> list[ReportSection]:
    """The sweeps both TMI studies run (each only when its list in the ``tmi`` section is non-empty):
    shadows, fine-tuning method, DP ε, queries per point."""
    sections = []
    if tmi.shadow_counts:
        sections.append(shadow_sweep(scorer, headline, keep))
    if tmi.methods:
        sections.append(method_sweep(scorer, keep, tune))
    if tmi.epsilons:
        sections.append(dp_sweep(scorer, keep, tune, headline))
    if tmi.augmentation_counts:
        sections.append(augmentation_sweep(scorer, headline, keep))
    return sections
