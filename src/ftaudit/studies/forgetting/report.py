"""The forgetting study's report: decay curves (one attack at every checkpoint), tables, verdicts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.evaluation import AttackResult, Evaluation, evaluate_signals
from ftaudit.metrics import mean_ci
from ftaudit.metrics.roc import Estimate, RateEstimate
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.signals.arrays import SignalSet
from ftaudit.studies.base import Context
from ftaudit.studies.forgetting.compare import determinism_verdict, rule, run_verdict
from ftaudit.studies.forgetting.config import ForgettingStudyConfig
from ftaudit.train.inject import Checkpointed, pass_width

WRONG = {True: " (each with a random wrong label)", False: ""}


@dataclass
class Run:
    """One trained configuration: a schedule (inject | poison) under one determinism setting."""

    kind: str
    deterministic: bool
    seeds: list[int]
    start: int  # steps done when the injected set was last seen (checkpoint 0)
    result: Checkpointed

    @property
    def label(self) -> str:
        return f"{self.kind} · {'deterministic' if self.deterministic else 'nondeterministic'}"

    @property
    def since(self) -> list[int]:
        return [c - self.start for c in self.result.steps]


def signal_set(arrays: dict[str, np.ndarray], keep: np.ndarray, idx: np.ndarray | None = None) -> SignalSet:
    idx = np.arange(keep.shape[1]) if idx is None else idx
    return SignalSet(conf=arrays["conf"][:, idx], loss=arrays["loss"][:, idx], keep=keep[:, idx],
                     pop_conf=arrays["pop_conf"], pop_loss=arrays["pop_loss"])


@dataclass
class Curve:
    label: str
    x: list[int]
    evals: list[Evaluation]  # the attack, leave-one-out, at each checkpoint
    attack: str

    @property
    def points(self) -> list[AttackResult]:
        return [e.by_name(self.attack) for e in self.evals]


def curve(cfg: ForgettingStudyConfig, ctx: Context, run: Run, keep: np.ndarray, idx: np.ndarray, label: str) -> Curve:
    f = cfg.forgetting
    params = {f.attack: cfg.attack.params[f.attack]} if f.attack in cfg.attack.params else None
    evals = [evaluate_signals(ctx.store.metrics, signal_set(arrays, keep, idx), [f.attack], params, f.models - 1,
                              cfg.metrics, cfg.seed) for arrays in run.result.signals]
    return Curve(label, run.since, evals, f.attack)


def metric(point: AttackResult, which: str | float) -> Estimate | RateEstimate:
    """The AUC (``"auc"``) or the TPR at FPR ``which``, with its CI."""
    return point.auc if which == "auc" else point.tpr_at(which)


def name_of(which: str | float) -> str:
    return "AUC" if which == "auc" else f"TPR @ {which:.1%} FPR".replace(".0%", "%")


def fmt(est: Estimate | RateEstimate, pct: bool) -> str:
    if pct:
        return f"{est.value:.1%} [{est.lo:.1%}, {est.hi:.1%}]"
    return f"{est.value:.3f} [{est.lo:.3f}, {est.hi:.3f}]"


def figure(title: str, curves: list[Curve], which: str | float, caption: str = "") -> Figure:
    series = []
    for c in curves:
        est = [metric(p, which) for p in c.points]
        series.append(Series(c.label, [float(v) for v in c.x], [e.value for e in est],
                             lo=[e.lo for e in est], hi=[e.hi for e in est]))
    return Figure(title, "steps since last seen", name_of(which), series, caption=caption)


def table(rows: list[tuple[str, str, Curve]], metrics: list[str | float]) -> list[dict]:
    """One row per curve: each metric right after the last exposure and at the end."""
    out = []
    for run_label, group, c in rows:
        row = {"run": run_label, "examples": group}
        for which in metrics:
            pct = which != "auc"
            row[f"{name_of(which)} at 0"] = fmt(metric(c.points[0], which), pct)
            row[f"{name_of(which)} at {c.x[-1]}"] = fmt(metric(c.points[-1], which), pct)
        out.append(row)
    return out


def accuracy_band(cfg: ForgettingStudyConfig, run: Run) -> tuple[list[float], list[float], list[float]]:
    est = [mean_ci(a["pop_correct"][:, :, 0].mean(axis=1), level=cfg.metrics.ci_level, seed=cfg.seed)
           for a in run.result.signals]
    return [e["value"] for e in est], [e["lo"] for e in est], [e["hi"] for e in est]


def inject_section(cfg: ForgettingStudyConfig, ctx: Context, runs: list[Run], pooled: dict[str, Curve],
                   keep: np.ndarray, which: list[str | float]) -> ReportSection:
    f = cfg.forgetting
    width = pass_width(keep.shape[1], f.inject_per_step)
    rows, figures = [], []
    for r in runs:
        by_r = [curve(cfg, ctx, r, keep, np.arange(j * f.per_repetition, (j + 1) * f.per_repetition), f"r = {rep}")
                for j, rep in enumerate(f.repetitions)]
        rows += [(r.label, c.label, c) for c in by_r] + [(r.label, "all", pooled[r.label])]
        figures += [figure(f"{r.label}: {f.attack}", by_r, w, caption=f"one line per repetition count r; "
                           f"bands: {cfg.metrics.ci_level:.0%} bootstrap CI") for w in which]
    return ReportSection(
        "INJECT: exposure after the last pass",
        [f"{len(f.repetitions)} × {f.per_repetition} digits{WRONG[f.mislabel]}, each IN for half of the {f.models} "
         f"models, are added to "
         f"the batches of {f.inject_per_step} per step in passes of {width} steps, {f.repeat_gap} steps apart; an "
         f"example repeated r times is in the last r passes, the last ending at step {f.inject_step}. Between and "
         f"after passes every model trains on the same {f.train_size} other digits. x = steps after the "
         f"last pass ended (an example's own last step lies up to {width - 1} steps earlier). Each point: "
         f"{f.attack}, every model a target with the other {f.models - 1} as references."],
        table(rows, which), figures)


def poison_section(cfg: ForgettingStudyConfig, runs: list[Run], pooled: dict[str, Curve], keep: np.ndarray,
                   which: list[str | float]) -> ReportSection:
    f = cfg.forgetting
    curves = [pooled[r.label] for r in runs]
    return ReportSection(
        "POISON: the sensitive set trained first",
        [f"Each model first trains on its half of the {keep.shape[1]} sensitive digits{WRONG[f.mislabel]} alone for "
         f"{f.poison_epochs} "
         f"epochs (from random init), then on the {f.train_size} other digits only. x = steps into the second phase."],
        table([(r.label, "all", pooled[r.label]) for r in runs], which),
        [figure(f"poison: {f.attack}", curves, w) for w in which])


def determinism_section(cfg: ForgettingStudyConfig, runs: list[Run], pooled: dict[str, Curve]) -> ReportSection:
    f, m = cfg.forgetting, cfg.metrics
    text = ["Deterministic: every model uses one seed (initialisation, data order, augmentation draws) and deterministic "
            "algorithms, so an IN and an OUT model differ only by the injected examples. Nondeterministic: each model "
            "has its own seed. Jagielski et al. find that standard (nondeterministic) training forgets and deterministic "
            "training does not. Here, all injected digits pooled:"]
    text += [run_verdict(r.label, pooled[r.label].evals, r.since[-1], f.attack, m, cfg.seed) for r in runs]
    rows = []
    for kind in f.schedules:
        by_mode = {r.deterministic: r for r in runs if r.kind == kind}
        if len(by_mode) == 2:
            nondet, det = by_mode[False], by_mode[True]
            sentence, row = determinism_verdict(kind, pooled[nondet.label].evals, pooled[det.label].evals,
                                                det.since[-1], f.attack, m, cfg.seed)
            text.append(sentence)
            rows.append(row)
    text.append(rule(m))
    acc = [Series(r.label, [float(v) for v in r.since], *accuracy_band(cfg, r)) for r in runs]
    return ReportSection(
        "Deterministic vs nondeterministic training", text, rows,
        [figure(f"all injected examples pooled: {f.attack}", list(pooled.values()), "auc"),
         Figure("test accuracy along training", "steps since last seen", "test accuracy", acc,
                caption=f"mean over the {f.models} models; band: bootstrap CI over models")])


def sections(cfg: ForgettingStudyConfig, ctx: Context, runs: list[Run], keep: np.ndarray) -> list[ReportSection]:
    which = ["auc"] + [p for p in cfg.metrics.fprs if p <= 0.01]
    everything = np.arange(keep.shape[1])
    pooled = {r.label: curve(cfg, ctx, r, keep, everything, r.label) for r in runs}
    out = []
    inject_runs = [r for r in runs if r.kind == "inject"]
    if inject_runs:
        out.append(inject_section(cfg, ctx, inject_runs, pooled, keep, which))
    poison_runs = [r for r in runs if r.kind == "poison"]
    if poison_runs:
        out.append(poison_section(cfg, poison_runs, pooled, keep, which))
    out.append(determinism_section(cfg, runs, pooled))
    return out
