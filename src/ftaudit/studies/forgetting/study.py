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

from dataclasses import replace
from functools import partial

import numpy as np
import torch

from ftaudit.attacks.evaluators import leave_one_out_request
from ftaudit.config import DataConfig, OptimConfig
from ftaudit.data.digits import Split, load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.errors import UserError
from ftaudit.finetune.methods import get_method
from ftaudit.metrics import mean_ci
from ftaudit.models.vision import arch_spec, fresh_state
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import classifier_signals
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.forgetting.config import ForgettingStudyConfig
from ftaudit.studies.forgetting.report import Run, sections, signal_set
from ftaudit.studies.vision import QuerySet
from ftaudit.train.inject import concat, epochs_for, inject, injection_plan, model_seeds, train_checkpointed
from ftaudit.train.schedule import Schedule, steps_per_epoch
from ftaudit.train.trainers import n_training_views

N_CLASSES = 10
NAMES = ["conf", "loss", "correct", "pop_conf", "pop_loss", "pop_correct"]


def load_data(cfg: ForgettingStudyConfig):
    """The digits: a training pool (shared rows, then the injected set) and a held-out population."""
    f = cfg.forgetting
    try:  # reuse the digits split: its 'pretrain' part is the shared pool, its 'audit' part the injected set
        task = load_digits_task(DataConfig(split="half", pretrain_size=f.train_size, audit_size=f.n_injected,
                                           population_size=f.population_size), cfg.seed)
    except UserError as exc:
        raise UserError("forgetting.train_size", exc.problem.replace("pretrain_size + audit_size", "train_size + injected"),
                        "lower forgetting.train_size, per_repetition or population_size") from None
    if not f.mislabel:
        return task
    rng = np.random.default_rng([cfg.seed, 0x3A1])  # a wrong label: the true one shifted by 1..9 (mod 10)
    wrong = (task.audit.y + rng.integers(1, N_CLASSES, size=len(task.audit))) % N_CLASSES
    return replace(task, audit=Split(x=task.audit.x, y=wrong.astype(np.int64), source_index=task.audit.source_index))


def build_schedule(cfg: ForgettingStudyConfig, kind: str, seeds: list[int], keep: np.ndarray, shared: np.ndarray,
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


def train_runs(cfg: ForgettingStudyConfig, ctx: Context, task, keep: np.ndarray) -> list[Run]:
    """Every (schedule, determinism) run, trained with checkpoint signals, or loaded from the cache."""
    f = cfg.forgetting
    model_cfg = f.model
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
    measure_key = content_key(audit=audit_q.digest, population=pop_q.digest, signals="classifier-v1")

    place = ctx.engine.placement

    def measure(states):
        a = classifier_signals(template, states, audit_q.views, audit_q.y, device=place.device)
        p = classifier_signals(template, states, pop_q.views, pop_q.y, device=place.device)
        return {**a, **{f"pop_{k}": v for k, v in p.items()}}

    modes = {"both": [False, True], "deterministic": [True], "nondeterministic": [False]}[f.determinism]
    runs = []
    for kind in f.schedules:
        for det in modes:
            seeds = model_seeds(cfg.seed, f"forgetting-{kind}", f.models, det)
            inits = [fresh_state(model_cfg, N_CLASSES, s)[1] for s in seeds]
            schedule, start = build_schedule(cfg, kind, seeds, keep, shared, injected, n_views)
            label = f"{kind} ({'deterministic' if det else 'nondeterministic'})"
            advance = ctx.reporter(f"training forgetting {label}, {f.models} models", schedule.steps * f.models) \
                if ctx.reporter else None
            result = train_checkpointed(
                partial(ctx.cached, "signals"), template, arch_spec(model_cfg, N_CLASSES), inits, trainable, optim, x, y,
                data_digest, schedule, [start + c for c in f.checkpoints], measure, measure_key, NAMES, det, advance,
                placement=place)
            if result.trained:  # one vectorized run: all its models were trained, or none
                ctx.models_trained += f.models
            else:
                ctx.models_loaded += f.models
            runs.append(Run(kind, det, seeds, start, result))
    return runs


def run(cfg: ForgettingStudyConfig, ctx: Context) -> StudyOutput:
    f = cfg.forgetting
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
        evaluation=leave_one_out_request(signal_set(head.result.signals[-1], keep), cfg.attack.names, cfg.attack.params,
                                         f.models - 1, cfg.attack.targets, cfg.seed),
        member_rate=keep.mean(axis=0), utility=utility,
        audit_arrays={"audit_x": task.audit.x[:, 0].astype(np.float32), "audit_y": task.audit.y.astype(np.int64)},
        models=models, seeds={"run": cfg.seed, "keep": keep_seed, **{r.label: r.seeds for r in runs}},
        notes=[f"The attack table is {head.label} at its last checkpoint, all {len(task.audit)} injected digits pooled; "
               "the sections below follow the exposure along training."],
        sections=report)


STUDY = Study("forgetting", "how leakage of injected digits fades with further training (inject/poison, "
                            "deterministic vs not, repetitions)", ForgettingStudyConfig, run)
