"""``finetune-mia``: membership inference against the fine-tuning data, on digits.

A small network is pretrained on the public task (some digit classes), then the target and its
reference models are fine-tuned from that checkpoint on halves of the private task's audit pool
(a LiRA keep-matrix). Every model is queried on the audit pool (original + pixel shifts) and on a
held-out population; the pipeline then runs the attacks leave-one-out.
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.evaluators import leave_one_out_request
from ftaudit.finetune.methods import get_method
from ftaudit.metrics import mean_ci
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.digits.common import Cell, DigitsStudy, finetune_cell, setup
from ftaudit.studies.digits.config import DigitsStudyConfig, FinetuneMIAConfig
from ftaudit.studies.vision import fresh_state, query_models, train_group


def study_utility(cfg: DigitsStudyConfig, study: DigitsStudy, test_acc: np.ndarray, train_acc: np.ndarray,
                  scratch_correct: np.ndarray | None = None) -> list[dict]:
    """Fine-tuned accuracies, the from-scratch control and the base: what pretraining buys."""
    task = study.task
    rows = [
        {**mean_ci(test_acc, seed=cfg.seed), "name": "fine-tuned test accuracy",
         "note": f"mean over {len(test_acc)} models on {len(task.population)} held-out images (CI over models)"},
        {**mean_ci(train_acc, seed=cfg.seed), "name": "fine-tuned train accuracy", "note": "on each model's own keep-row"},
    ]
    if scratch_correct is not None:
        rows.append({**mean_ci(scratch_correct.astype(float), seed=cfg.seed), "name": "from-scratch test accuracy (control)",
                     "note": "one model, same data and recipe from random init (CI over test images): the gap is what pretraining buys"})
    rows.append({**mean_ci(study.base_correct.astype(float), seed=cfg.seed),
                 "name": "pretrained base test accuracy" + (" (pretraining task)" if task.new_head else ""),
                 "note": f"classes {list(task.pretrain_classes)}, {len(task.pretrain_test)} held-out images (CI over images)"})
    return rows


def study_title(cfg: DigitsStudyConfig, study: DigitsStudy, what: str) -> str:
    task = study.task
    split = (f"digits {list(task.pretrain_classes)} → {list(task.finetune_classes)}" if task.new_head
             else f"digits, public {len(task.pretrain)} → private {len(task.audit)}")
    return f"{what}: {split}, {cfg.model.arch}"


def audit_arrays(study: DigitsStudy) -> dict[str, np.ndarray]:
    task = study.task
    return {"audit_x": task.audit.x[:, 0].astype(np.float32),
            "audit_y": np.array(task.finetune_classes)[task.audit.y].astype(np.int64)}


def headline(cfg: DigitsStudyConfig, cell: Cell, references: int, cap: int | None = None) -> dict:
    """The StudyOutput fields of a headline cell: its leave-one-out request (``cap`` references per
    example of the target's ``references``; None = all) and member rate."""
    return {"evaluation": leave_one_out_request(cell.signals, cfg.attack.names, cfg.attack.params, references,
                                                cfg.attack.targets, cfg.seed, cap=cap),
            "member_rate": cell.signals.keep.mean(axis=0)}


def run(cfg: FinetuneMIAConfig, ctx: Context) -> StudyOutput:
    study = setup(cfg, ctx, cfg.finetune.n_models, cfg.finetune.batch_size)
    cell = finetune_cell(ctx, study, cfg.finetune)
    with ctx.stage("finetune"):
        # Transfer control: the same data and recipe from random init, all parameters trained.
        task, seeds = study.task, study.seeds
        _, scratch_init = fresh_state(cfg.model, task.n_finetune_classes, seeds["scratch"])
        scratch_template, scratch = train_group(ctx, "from scratch (control)", cfg.model, task.n_finetune_classes,
                                                get_method("full"), cfg.finetune, task.audit, [scratch_init],
                                                [study.rows[0]], [seeds["models"][0]], run_seed=cfg.seed)
    with ctx.stage("signals"):
        scratch_correct = query_models(ctx, scratch_template, scratch.keys, scratch.states, study.pop_q)["correct"][0, :, 0]
    models = [("pretrain", 0, study.pre.keys[0], seeds["pretrain"]), ("scratch", 0, scratch.keys[0], seeds["models"][0])]
    models += [("finetune", m, k, s) for m, (k, s) in enumerate(zip(cell.result.keys, seeds["models"]))]
    title = study_title(cfg, study, "Membership of the fine-tuning data") + f", method {cfg.finetune.method}"
    notes = [dp_note(cell.dp)] if cell.dp else []
    return StudyOutput(title=title, **headline(cfg, cell, cfg.finetune.references, cfg.attack.references),
                       utility=study_utility(cfg, study, cell.test_acc, cell.train_acc, scratch_correct), audit_arrays=audit_arrays(study),
                       models=models, seeds=seeds, notes=notes)


def dp_note(dp: dict) -> str:
    return (f"DP-SGD fine-tuning: accounted ε = {dp['epsilon']:.4g} ({dp['accountant']}, Opacus; "
            f"dp-accounting gives {dp['epsilon_reference']:.4g}) at δ = {dp['delta']:.3g}, noise multiplier σ = "
            f"{dp['noise_multiplier']:.4g}, clipping C = {dp['clip']:g}, Poisson rate q = {dp['sample_rate']:.4g}, {dp['steps']} steps.")


STUDY = Study("finetune-mia", "membership of the fine-tuning data on digits (LOSS, base reference, LiRA, RMIA)",
              FinetuneMIAConfig, run)
