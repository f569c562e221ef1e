"""The digits transfer study shared by the fine-tuning studies: the data, the keep-matrix, the
pretrained base, and one fine-tuned ensemble (a "cell") with its signals.

``finetune-mia`` runs one cell; ``methods`` and ``dp-finetune`` run a grid of cells over the same
base, data and keep-matrix, so their cells differ only in how they were fine-tuned.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from ftaudit.config import FinetuneConfig
from ftaudit.data.digits import DigitsTask, Split, load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.dp.spec import dp_spec
from ftaudit.errors import UserError
from ftaudit.finetune.methods import MethodOptions, get_method, init_state
from ftaudit.studies.base import Context
from ftaudit.studies.digits.config import DigitsStudyConfig
from ftaudit.studies.vision import QuerySet, fresh_state, query_models, query_states, train_group, with_new_head
from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet
from ftaudit.train.engine import TrainResult
from ftaudit.train.schedule import steps_per_epoch
from ftaudit.train.trainers import State


def check_rows_per_step(rows: list[np.ndarray], batch_size: int) -> None:
    """Every model takes the same steps per epoch (ceil(longest keep-row / batch)), so every keep-row
    needs at least that many rows; tiny audit pools with tiny batches can break this."""
    per_epoch = steps_per_epoch(rows, batch_size)
    shortest = min(len(r) for r in rows)
    if shortest < per_epoch:
        raise UserError("finetune.batch_size", f"a model has only {shortest} training rows but every model takes "
                        f"{per_epoch} steps per epoch", f"raise finetune.batch_size to at least "
                        f"{-(-max(len(r) for r in rows) // shortest)} or data.audit_size")


@dataclass
class DigitsStudy:
    cfg: DigitsStudyConfig
    task: DigitsTask
    keep: np.ndarray  # [M, N] bool
    rows: list[np.ndarray]
    seeds: dict
    audit_q: QuerySet
    pop_q: QuerySet
    pre_template: nn.Module
    pre: TrainResult
    ft_init: State  # the fine-tuning's starting point (base body, new head when the task changes)
    base_correct: np.ndarray  # [n] the base on its own task's held-out images
    canaries: np.ndarray  # audit indices relabelled as canaries (empty unless asked for)

    @property
    def n_models(self) -> int:
        return len(self.rows)


def with_canaries(task: DigitsTask, n: int, seed: int) -> tuple[DigitsTask, np.ndarray]:
    """Relabel ``n`` random audit examples to a wrong class: mislabelled examples are the strongest
    membership canaries (a model can only fit them by memorising), which is what a DP audit wants."""
    if n == 0:
        return task, np.zeros(0, dtype=np.int64)
    if n > len(task.audit):
        raise UserError("sweep.canaries", f"{n} canaries but the audit pool has {len(task.audit)} examples",
                        f"use at most {len(task.audit)}")
    rng = np.random.default_rng([seed, 0xCA4A])
    index = np.sort(rng.choice(len(task.audit), size=n, replace=False))
    y = task.audit.y.copy()
    y[index] = (y[index] + rng.integers(1, task.n_finetune_classes, size=n)) % task.n_finetune_classes
    audit = Split(x=task.audit.x, y=y, source_index=task.audit.source_index)
    return replace(task, audit=audit), index


def setup(cfg: DigitsStudyConfig, ctx: Context, n_models: int, batch_size: int, canaries: int = 0) -> DigitsStudy:
    """Data, keep-matrix, query sets and the pretrained base (trained once, then cached)."""
    with ctx.stage("data"):
        task, canary_index = with_canaries(load_digits_task(cfg.data, cfg.seed), canaries, cfg.seed)
        keep = half_keep_matrix(n_models, len(task.audit), cfg.seed)
        rows = [np.flatnonzero(k) for k in keep]
        check_rows_per_step(rows, batch_size)
        seeds = {
            "run": cfg.seed,
            "pretrain": derive_seed(cfg.seed, "pretrain"),
            "head": derive_seed(cfg.seed, "finetune-head"),
            "scratch": derive_seed(cfg.seed, "scratch"),
            "models": [derive_seed(cfg.seed, "finetune", m) for m in range(n_models)],
        }
        audit_q = QuerySet.of(task.audit, cfg.attack.shifts)
        pop_q = QuerySet.of(task.population, cfg.attack.shifts)
    with ctx.stage("pretrain"):
        _, init = fresh_state(cfg.model, task.n_pretrain_classes, seeds["pretrain"])
        all_rows = np.arange(len(task.pretrain))
        pre_template, pre = train_group(ctx, "pretrain", cfg.model, task.n_pretrain_classes, get_method("full"),
                                        cfg.pretrain, task.pretrain, [init], [all_rows], [seeds["pretrain"]],
                                        run_seed=cfg.seed)
        base_correct = query_models(ctx, pre_template, pre.keys, pre.states, QuerySet.of(task.pretrain_test, 0))["correct"][0, :, 0]
        base_state = pre.states()[0]
        ft_init = with_new_head(base_state, cfg.model, task.n_finetune_classes, seeds["head"]) if task.new_head else base_state
    return DigitsStudy(cfg=cfg, task=task, keep=keep, rows=rows, seeds=seeds, audit_q=audit_q, pop_q=pop_q,
                       pre_template=pre_template, pre=pre, ft_init=ft_init, base_correct=base_correct,
                       canaries=canary_index)


@dataclass
class Cell:
    """One fine-tuned ensemble: its models, signals and accuracies."""

    name: str
    template: nn.Module
    result: TrainResult
    signals: SignalSet
    test_acc: np.ndarray  # [M] on the held-out population
    train_acc: np.ndarray  # [M] on each model's own keep-row
    n_trainable: int
    dp: dict | None = None  # noise multiplier, steps, accounted ε (engine's DP record)


def finetune_cell(ctx: Context, study: DigitsStudy, ft: FinetuneConfig, name: str | None = None) -> Cell:
    """Fine-tune the study's ensemble with ``ft`` (method, its options, recipe, DP) and query it."""
    method = get_method(ft.method)
    opts = MethodOptions.from_config(ft)
    task, keep = study.task, study.keep
    label = name or f"fine-tune ({method.name})"
    dp = dp_spec(ft.dp, int(np.mean([len(r) for r in study.rows])), ft.batch_size, ft.epochs)
    with ctx.stage("finetune"):
        template, tuned = train_group(ctx, label, study.cfg.model, task.n_finetune_classes, method, ft, task.audit,
                                      [study.ft_init] * study.n_models, study.rows, study.seeds["models"],
                                      run_seed=study.cfg.seed, opts=opts, dp=dp)
    with ctx.stage("signals"):
        audit = query_models(ctx, template, tuned.keys, tuned.states, study.audit_q)
        pop = query_models(ctx, template, tuned.keys, tuned.states, study.pop_q)
        base = query_states(ctx, template, [init_state(template, study.ft_init)], study.audit_q)
    signals = SignalSet(conf=audit["conf"], loss=audit["loss"], keep=keep, pop_conf=pop["conf"], pop_loss=pop["loss"],
                        base_conf=base["conf"][0], base_loss=base["loss"][0])
    test_acc = pop["correct"][:, :, 0].mean(axis=1)
    train_acc = np.array([audit["correct"][m, keep[m], 0].mean() for m in range(study.n_models)])
    n_trainable = sum(int(template.get_parameter(n).numel()) for n in method.trainable(template, opts))
    return Cell(name=label, template=template, result=tuned, signals=signals, test_acc=test_acc, train_acc=train_acc,
                n_trainable=n_trainable, dp=tuned.dp)
