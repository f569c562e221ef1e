"""``finetune-mia``: membership inference against the fine-tuning data, on digits.

A small network is pretrained on the public task (some digit classes), then the target and its
reference models are fine-tuned from that checkpoint on halves of the private task's audit pool
(a LiRA keep-matrix). Every model is queried on the audit pool (original + pixel shifts) and on a
held-out population; the pipeline then runs the attacks leave-one-out.
"""
from __future__ import annotations

import numpy as np

from ftaudit.config import RunConfig
from ftaudit.errors import UserError
from ftaudit.data.digits import load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.finetune.methods import MethodOptions, get_method, init_state
from ftaudit.metrics import mean_ci
from ftaudit.scenarios.base import Context, Scenario, StudyOutput
from ftaudit.scenarios.vision import QuerySet, fresh_state, query_models, query_states, train_group, with_new_head
from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet
from ftaudit.train.schedule import steps_per_epoch


def check_rows_per_step(rows: list[np.ndarray], batch_size: int) -> None:
    """Every model takes the same steps per epoch (ceil(longest keep-row / batch)), so every keep-row
    needs at least that many rows; tiny audit pools with tiny batches can break this."""
    per_epoch = steps_per_epoch(rows, batch_size)
    shortest = min(len(r) for r in rows)
    if shortest < per_epoch:
        raise UserError("finetune.batch_size", f"a model has only {shortest} training rows but every model takes "
                        f"{per_epoch} steps per epoch", f"raise finetune.batch_size to at least "
                        f"{-(-max(len(r) for r in rows) // shortest)} or data.audit_size")


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    method = get_method(cfg.finetune.method)
    opts = MethodOptions.from_config(cfg.finetune)
    with ctx.stage("data"):
        task = load_digits_task(cfg.data, cfg.seed)
        n_models = cfg.finetune.n_models
        keep = half_keep_matrix(n_models, len(task.audit), cfg.seed)
        rows = [np.flatnonzero(k) for k in keep]
        check_rows_per_step(rows, cfg.finetune.batch_size)
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
                                        cfg.pretrain, task.pretrain, [init], [all_rows], [seeds["pretrain"]])
        pre_test = QuerySet.of(task.pretrain_test, 0)
        base_correct = query_models(ctx, pre_template, pre.keys, pre.states, pre_test)["correct"][0, :, 0]

    with ctx.stage("finetune"):
        base_state = pre.states()[0]
        ft_init = with_new_head(base_state, cfg.model, task.n_finetune_classes, seeds["head"]) if task.new_head else base_state
        template, tuned = train_group(ctx, f"fine-tune ({method.name})", cfg.model, task.n_finetune_classes, method,
                                      cfg.finetune, task.audit, [ft_init] * n_models, rows, seeds["models"], opts)
        # Transfer control: the same data and recipe from random init, all parameters trained.
        _, scratch_init = fresh_state(cfg.model, task.n_finetune_classes, seeds["scratch"])
        scratch_template, scratch = train_group(ctx, "from scratch (control)", cfg.model, task.n_finetune_classes, get_method("full"),
                                 cfg.finetune, task.audit, [scratch_init], [rows[0]], [seeds["models"][0]])

    with ctx.stage("signals"):
        audit = query_models(ctx, template, tuned.keys, tuned.states, audit_q)
        pop = query_models(ctx, template, tuned.keys, tuned.states, pop_q)
        base = query_states(ctx, template, [init_state(template, ft_init)], audit_q)
        scratch_pop = query_models(ctx, scratch_template, scratch.keys, scratch.states, pop_q)

    signals = SignalSet(conf=audit["conf"], loss=audit["loss"], keep=keep,
                        pop_conf=pop["conf"], pop_loss=pop["loss"],
                        base_conf=base["conf"][0], base_loss=base["loss"][0])
    test_acc = pop["correct"][:, :, 0].mean(axis=1)
    train_acc = np.array([audit["correct"][m, keep[m], 0].mean() for m in range(n_models)])
    utility = [
        {**mean_ci(test_acc, seed=cfg.seed), "name": "fine-tuned test accuracy",
         "note": f"mean over {n_models} models on {len(task.population)} held-out images (CI over models)"},
        {**mean_ci(train_acc, seed=cfg.seed), "name": "fine-tuned train accuracy", "note": "on each model's own keep-row"},
        {**mean_ci(scratch_pop["correct"][0, :, 0].astype(float), seed=cfg.seed),
         "name": "from-scratch test accuracy (control)",
         "note": "one model, same data and recipe from random init (CI over test images): the gap is what pretraining buys"},
        {**mean_ci(base_correct.astype(float), seed=cfg.seed),
         "name": "pretrained base test accuracy" + (" (pretraining task)" if task.new_head else ""),
         "note": f"classes {list(task.pretrain_classes)}, {len(task.pretrain_test)} held-out images (CI over images)"},
    ]
    models = [("pretrain", 0, pre.keys[0], seeds["pretrain"]), ("scratch", 0, scratch.keys[0], seeds["models"][0])]
    models += [("finetune", m, k, s) for m, (k, s) in enumerate(zip(tuned.keys, seeds["models"]))]
    images = task.audit.x[:, 0]
    digit = np.array(task.finetune_classes)[task.audit.y]
    split = (f"digits {list(task.pretrain_classes)} → {list(task.finetune_classes)}" if task.new_head
             else f"digits, public {len(task.pretrain)} → private {len(task.audit)}")
    title = f"Membership of the fine-tuning data: {split}, {cfg.model.arch}, method {method.name}"
    return StudyOutput(title=title, signals=signals, references=cfg.finetune.references, utility=utility,
                       audit_arrays={"audit_x": images.astype(np.float32), "audit_y": digit.astype(np.int64)},
                       models=models, seeds=seeds)


SCENARIO = Scenario("finetune-mia", "membership of the fine-tuning data on digits (LOSS, base reference, LiRA, RMIA)", run)
