"""``forgetting``: how the exposure of memorized digits fades with further training.

Follows Jagielski et al. (2022), "Measuring Forgetting of Memorized Training Examples". Every model
trains on the same digits throughout; an injected set is under a half keep-matrix. INJECT: the set
enters mid-training in r passes (r in ``forgetting.repetitions``) and is never seen again; POISON:
the set is trained on first, as its own phase (the pretraining → fine-tuning case). LiRA, with the
other models as references (same schedule, with and without each example), is scored at checkpoints
after the last exposure, measured inside the vectorized run (no weights saved). Each schedule runs
deterministically (one shared seed, so IN and OUT models differ only by the injection) and not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import DataConfig, OptimConfig, RunConfig
from ftaudit.data.digits import Split, load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.errors import UserError
from ftaudit.finetune.methods import get_method
from ftaudit.metrics import mean_ci
from ftaudit.models.vision import arch_spec
from ftaudit.scenarios.base import Context, Figure, Scenario, Section, Series, StudyOutput
from ftaudit.scenarios.evaluate import evaluate_signals
from ftaudit.scenarios.vision import QuerySet, fresh_state
from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet
from ftaudit.signals.classifier import classifier_signals
from ftaudit.store.cache import content_key
from ftaudit.train.inject import (Checkpointed, concat, epochs_for, inject, injection_plan, model_seeds, pass_width,
                                  train_checkpointed)
from ftaudit.train.schedule import Schedule, steps_per_epoch
from ftaudit.train.trainers import n_training_views

N_CLASSES = 10
NAMES = ["conf", "loss", "correct", "pop_conf", "pop_loss", "pop_correct"]
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


def check_config(cfg: RunConfig) -> None:
    """Cross-field checks, before any training."""
    f = cfg.forgetting
    if "arch" in cfg.model.model_fields_set and cfg.model.arch != f.arch:
        raise UserError("model.arch", f"the forgetting study trains forgetting.arch ({f.arch}), not model.arch",
                        f"set forgetting.arch={cfg.model.arch} instead")
    spec = ATTACKS.get(f.attack)
    if spec is None or not spec.needs <= {"references", "population"}:
        raise UserError("forgetting.attack", f"{f.attack!r} is not an attack on reference models' signals",
                        "use one of lira-online, lira-offline (…-global), rmia-online, rmia-offline, loss")
    n_injected = f.per_repetition * len(f.repetitions)
    width = pass_width(n_injected, f.inject_per_step)
    if "inject" in f.schedules:
        if max(f.repetitions) > 1 and f.repeat_gap < width:
            raise UserError("forgetting.repeat_gap", f"a pass of {n_injected} examples spans {width} steps but passes "
                            f"start every {f.repeat_gap}", f"set repeat_gap >= {width} or raise inject_per_step")
        need = (max(f.repetitions) - 1) * f.repeat_gap + width - 1
        if f.inject_step < need:
            raise UserError("forgetting.inject_step", f"{max(f.repetitions)} passes need {need + 1} steps before it ends",
                            f"set inject_step >= {need}, or lower repeat_gap or the repetitions")


def load_data(cfg: RunConfig):
    """The digits: a training pool (shared rows, then the injected set) and a held-out population."""
    f = cfg.forgetting
    n_injected = f.per_repetition * len(f.repetitions)
    try:  # reuse the digits split: its 'pretrain' part is the shared pool, its 'audit' part the injected set
        task = load_digits_task(DataConfig(split="half", pretrain_size=f.train_size, audit_size=n_injected,
                                           population_size=f.population_size), cfg.seed)
    except UserError as exc:
        raise UserError("forgetting.train_size", exc.problem.replace("pretrain_size + audit_size", "train_size + injected"),
                        "lower forgetting.train_size, per_repetition or population_size") from None
    if f.train_size < f.batch_size:
        raise UserError("forgetting.train_size", f"{f.train_size} digits is less than one batch ({f.batch_size})",
                        "raise train_size or lower batch_size")
    if not f.mislabel:
        return task
    rng = np.random.default_rng([cfg.seed, 0x3A1])  # a wrong label: the true one shifted by 1..9 (mod 10)
    wrong = (task.audit.y + rng.integers(1, N_CLASSES, size=len(task.audit))) % N_CLASSES
    return replace(task, audit=Split(x=task.audit.x, y=wrong.astype(np.int64), source_index=task.audit.source_index))


def build_schedule(cfg: RunConfig, kind: str, seeds: list[int], keep: np.ndarray, shared: np.ndarray,
                   injected: np.ndarray, n_views: int) -> tuple[Schedule, int]:
    """The run's schedule and the steps done when the injected set was last seen."""
    f = cfg.forgetting
    m = len(seeds)
    if kind == "inject":
        repeats = np.repeat(f.repetitions, f.per_repetition)
        plan = injection_plan(injected, repeats, f.inject_step, f.repeat_gap, f.inject_per_step)
        start = f.inject_step + 1
        base = epochs_for([shared] * m, seeds, start + f.steps_after, f.batch_size, n_views)
        return inject(base, plan, keep, seeds, n_views), start
    kept = [injected[k] for k in keep]
    first_steps = f.poison_epochs * steps_per_epoch(kept, f.batch_size)
    first = epochs_for(kept, seeds, first_steps, f.batch_size, n_views)
    then = epochs_for([shared] * m, [derive_seed(s, "after") for s in seeds], f.steps_after, f.batch_size, n_views)
    return concat(first, then), first_steps


def train_runs(cfg: RunConfig, ctx: Context, task, keep: np.ndarray) -> list[Run]:
    f = cfg.forgetting
    model_cfg = cfg.model.model_copy(update={"arch": f.arch})
    template, _ = fresh_state(model_cfg, N_CLASSES, 0)
    trainable = get_method("full").trainable(template)
    optim = OptimConfig(optimizer=f.optimizer, lr=f.lr, batch_size=f.batch_size, augment=f.augment, epochs=1)
    n_views = n_training_views(optim)
    x = torch.from_numpy(np.concatenate([task.pretrain.x, task.audit.x]))
    y = torch.from_numpy(np.concatenate([task.pretrain.y, task.audit.y]))
    shared = np.arange(len(task.pretrain))
    injected = len(task.pretrain) + np.arange(len(task.audit))
    data_digest = content_key(shared=task.pretrain.digest(), injected=task.audit.digest())
    audit_q, pop_q = QuerySet.of(task.audit, cfg.attack.shifts), QuerySet.of(task.population, cfg.attack.shifts)

    def measure(states):
        a = classifier_signals(template, states, audit_q.views, audit_q.y)
        p = classifier_signals(template, states, pop_q.views, pop_q.y)
        return {**a, **{f"pop_{k}": v for k, v in p.items()}}

    modes = {"both": [False, True], "deterministic": [True], "nondeterministic": [False]}[f.determinism]
    runs = []
    for kind in f.schedules:
        for det in modes:
            seeds = model_seeds(cfg.seed, f"forgetting-{kind}", f.models, det)
            inits = [fresh_state(model_cfg, N_CLASSES, s)[1] for s in seeds]
            schedule, start = build_schedule(cfg, kind, seeds, keep, shared, injected, n_views)
            checkpoints = [start + c for c in f.checkpoints]
            label = f"{kind} ({'deterministic' if det else 'nondeterministic'})"
            advance = ctx.reporter(f"training forgetting {label}, {f.models} models", schedule.steps * f.models) \
                if ctx.reporter else None
            result = train_checkpointed(
                ctx.store.signals, template, arch_spec(model_cfg, N_CLASSES), inits, trainable, optim, x, y, data_digest,
                schedule, checkpoints, measure, content_key(audit=audit_q.digest, population=pop_q.digest,
                                                            signals="classifier-v1"), NAMES, det, advance)
            if result.trained:
                ctx.models_trained += f.models
            else:
                ctx.models_loaded += f.models
            runs.append(Run(kind, det, seeds, start, result))
    return runs


# --------------------------------------------------------------------------------- curves


def signal_set(arrays: dict[str, np.ndarray], keep: np.ndarray, idx: np.ndarray | None = None) -> SignalSet:
    idx = np.arange(keep.shape[1]) if idx is None else idx
    return SignalSet(conf=arrays["conf"][:, idx], loss=arrays["loss"][:, idx], keep=keep[:, idx],
                     pop_conf=arrays["pop_conf"], pop_loss=arrays["pop_loss"])


@dataclass
class Curve:
    label: str
    x: list[int]
    points: list[dict]  # the attack's metrics (auc, tpr_at_fpr with CIs) at each checkpoint


def curve(cfg: RunConfig, ctx: Context, run: Run, keep: np.ndarray, idx: np.ndarray, label: str) -> Curve:
    f = cfg.forgetting
    params = {f.attack: cfg.attack.params[f.attack]} if f.attack in cfg.attack.params else None
    points = [evaluate_signals(ctx.store.metrics, signal_set(arrays, keep, idx), [f.attack], params, f.models - 1,
                               cfg.metrics, cfg.seed).attacks[0] for arrays in run.result.signals]
    return Curve(label, run.since, points)


def metric(point: dict, which: str | float) -> dict:
    """{"value", "lo", "hi"} of the AUC (``"auc"``) or of the TPR at FPR ``which``."""
    if which == "auc":
        return point["auc"]
    return min(point["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - which))


def name_of(which: str | float) -> str:
    return "AUC" if which == "auc" else f"TPR @ {which:.1%} FPR".replace(".0%", "%")


def fmt(est: dict, pct: bool) -> str:
    if pct:
        return f"{est['value']:.1%} [{est['lo']:.1%}, {est['hi']:.1%}]"
    return f"{est['value']:.3f} [{est['lo']:.3f}, {est['hi']:.3f}]"


def figure(title: str, curves: list[Curve], which: str | float, caption: str = "") -> Figure:
    series = []
    for c in curves:
        est = [metric(p, which) for p in c.points]
        series.append(Series(c.label, [float(v) for v in c.x], [e["value"] for e in est],
                             lo=[e["lo"] for e in est], hi=[e["hi"] for e in est]))
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


def verdict(run_label: str, c: Curve) -> str:
    """Does the AUC fall, beyond its CI, between the first and the last checkpoint?"""
    a0, a1 = metric(c.points[0], "auc"), metric(c.points[-1], "auc")
    forgot = "it forgets (the final AUC lies below the first one's CI)" if a1["value"] < a0["lo"] \
        else "no forgetting beyond the CIs"
    chance = "still above chance" if a1["lo"] > 0.5 else "not distinguishable from chance"
    return (f"{run_label}: AUC {fmt(a0, False)} right after the last exposure, {fmt(a1, False)} after {c.x[-1]} more "
            f"steps — {forgot}; {chance}.")


def sections(cfg: RunConfig, ctx: Context, runs: list[Run], keep: np.ndarray) -> list[Section]:
    f = cfg.forgetting
    which = ["auc"] + [p for p in cfg.metrics.fprs if p <= 0.01]
    everything = np.arange(keep.shape[1])
    pooled = {r.label: curve(cfg, ctx, r, keep, everything, r.label) for r in runs}
    out = []
    inject_runs = [r for r in runs if r.kind == "inject"]
    if inject_runs:
        width = pass_width(keep.shape[1], f.inject_per_step)
        rows, figures = [], []
        for r in inject_runs:
            by_r = [curve(cfg, ctx, r, keep, np.arange(j * f.per_repetition, (j + 1) * f.per_repetition), f"r = {rep}")
                    for j, rep in enumerate(f.repetitions)]
            rows += [(r.label, c.label, c) for c in by_r] + [(r.label, "all", pooled[r.label])]
            figures += [figure(f"{r.label}: {f.attack}", by_r, w, caption=f"one line per repetition count r; "
                               f"bands: {cfg.metrics.ci_level:.0%} bootstrap CI") for w in which]
        out.append(Section(
            "INJECT: exposure after the last pass",
            [f"{len(f.repetitions)} × {f.per_repetition} digits{WRONG[f.mislabel]}, each IN for half of the {f.models} "
             f"models, are added to "
             f"the batches of {f.inject_per_step} per step in passes of {width} steps, {f.repeat_gap} steps apart; an "
             f"example repeated r times is in the last r passes, the last ending at step {f.inject_step}. Between and "
             f"after passes every model trains on the same {cfg.forgetting.train_size} other digits. x = steps after the "
             f"last pass ended (an example's own last step lies up to {width - 1} steps earlier). Each point: "
             f"{f.attack}, every model a target with the other {f.models - 1} as references."],
            table(rows, which), figures))
    poison_runs = [r for r in runs if r.kind == "poison"]
    if poison_runs:
        curves = [pooled[r.label] for r in poison_runs]
        out.append(Section(
            "POISON: the sensitive set trained first",
            [f"Each model first trains on its half of the {keep.shape[1]} sensitive digits{WRONG[f.mislabel]} alone for "
             f"{f.poison_epochs} "
             f"epochs (from random init), then on the {f.train_size} other digits only. x = steps into the second phase."],
            table([(r.label, "all", pooled[r.label]) for r in poison_runs], which),
            [figure(f"poison: {f.attack}", curves, w) for w in which]))
    acc = [Series(r.label, [float(v) for v in r.since], *accuracy_band(cfg, r)) for r in runs]
    out.append(Section(
        "Deterministic vs nondeterministic training",
        ["Deterministic: every model uses one seed (initialisation, data order, augmentation draws) and deterministic "
         "algorithms, so an IN and an OUT model differ only by the injected examples. Nondeterministic: each model "
         "has its own seed. Jagielski et al. find that standard (nondeterministic) training forgets and deterministic "
         "training does not. Here:"] + [verdict(r.label, pooled[r.label]) for r in runs],
        [], [figure(f"all injected examples pooled: {f.attack}", list(pooled.values()), "auc"),
             Figure("test accuracy along training", "steps since last seen", "test accuracy", acc,
                    caption=f"mean over the {f.models} models; band: bootstrap CI over models")]))
    return out


def accuracy_band(cfg: RunConfig, run: Run) -> tuple[list[float], list[float], list[float]]:
    est = [mean_ci(a["pop_correct"][:, :, 0].mean(axis=1), level=cfg.metrics.ci_level, seed=cfg.seed)
           for a in run.result.signals]
    return [e["value"] for e in est], [e["lo"] for e in est], [e["hi"] for e in est]


# ----------------------------------------------------------------------------------- study


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    f = cfg.forgetting
    check_config(cfg)
    with ctx.stage("data"):
        task = load_data(cfg)
        keep_seed = derive_seed(cfg.seed, "forgetting-keep")
        keep = half_keep_matrix(f.models, len(task.audit), keep_seed)
    with ctx.stage("train"):
        runs = train_runs(cfg, ctx, task, keep)
    with ctx.stage("curves"):
        report = sections(cfg, ctx, runs, keep)
    head = next((r for r in runs if r.kind == "inject" and not r.deterministic), runs[0])
    utility = [{**mean_ci(r.result.signals[-1]["pop_correct"][:, :, 0].mean(axis=1), seed=cfg.seed),
                "name": f"test accuracy, {r.label}",
                "note": f"mean over {f.models} models on {len(task.population)} held-out digits at the end (CI over models)"}
               for r in runs]
    models = [(r.label.replace(" · ", "-"), m, r.result.key, s) for r in runs for m, s in enumerate(r.seeds)]
    return StudyOutput(
        title=f"Forgetting of injected digits ({f.arch}, {f.models} models per run); attack table: {head.label}, "
              f"{head.since[-1]} steps after the last exposure",
        signals=signal_set(head.result.signals[-1], keep), references=f.models - 1, utility=utility,
        audit_arrays={"audit_x": task.audit.x[:, 0].astype(np.float32), "audit_y": task.audit.y.astype(np.int64)},
        models=models, seeds={"run": cfg.seed, "keep": keep_seed, **{r.label: r.seeds for r in runs}},
        notes=[f"The attack table is {head.label} at its last checkpoint, all {len(task.audit)} injected digits pooled; "
               "the sections below follow the exposure along training."],
        sections=report)


SCENARIO = Scenario("forgetting", "how leakage of injected digits fades with further training (inject/poison, "
                                  "deterministic vs not, repetitions)", run)
