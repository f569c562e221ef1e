"""``lm-mia``: which blocks of its fine-tuning text a causal LM was trained on.

A tiny GPT-2 pretrained on public text (``lm.pretrain_corpus``) is fine-tuned with
``finetune.method`` on halves of an audit pool of private blocks (``lm.finetune_corpus``, a LiRA
keep-matrix over finetune.references + 1 models). Every LM attack runs on every (target, block)
pair: LOSS, zlib, Min-K %, Min-K %++, the NLL ratio to the pretrained base and to a reference
model, and LiRA / RMIA on the block's summed NLL with the other fine-tunes (same base) as references.
"""
from __future__ import annotations

from ftaudit.attacks.evaluators import leave_one_out_request
from ftaudit.evaluation import Evaluation, evaluate
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.lm.base import CAUSAL, lm_threads
from ftaudit.studies.lm.cell import finetune_cell, setup
from ftaudit.studies.lm.config import LMMIAConfig
from ftaudit.studies.lm.report import (audit_arrays, auc_ci, descriptions, model_rows, rate_ci, standard_sections,
                                       utility)

REFERENCE_FREE = ("loss", "zlib", "min-k", "min-k++")


def headline(ev: Evaluation) -> list[str]:
    """Plain-language lines: the strongest attack at 1 % FPR and the best reference-free one (each
    picked after the fact, as said beside it)."""
    names = [a.name for a in ev.attacks]
    best = ev.best
    lines = [f"Strongest attack at 1 % FPR: {best.name}, picked after the fact as the best of {len(names)} (TPR "
             f"{rate_ci(best)}, AUC {auc_ci(best)}; its CI is optimistic for being picked)."]
    free = [ev.by_name(n) for n in REFERENCE_FREE if n in names]
    if free:
        top = max(free, key=lambda a: (a.tpr_at().value, a.auc.value))
        picked = f"picked after the fact as the best of {len(free)}" if len(free) > 1 else "the only one run"
        lines.append(f"Best attack that needs no reference model: {top.name}, {picked} (TPR at 1 % FPR "
                     f"{top.tpr_at().value:.1%}, AUC {top.auc.value:.3f}).")
    if "lm-ratio" in names:
        lines.append("Likelihood ratio to the pretrained base (the study's attack): recall at 10 % FPR "
                     f"{rate_ci(ev.by_name('lm-ratio'), 0.1)}.")
    return lines


def run(cfg: LMMIAConfig, ctx: Context) -> StudyOutput:
    ft = cfg.finetune
    with lm_threads(cfg):
        study = setup(ctx, cfg.lm, ft, CAUSAL, "lm-mia", ft.n_models, cfg.seed)
        cell = finetune_cell(ctx, study, ft, f"fine-tune ({ft.method})")
    request = leave_one_out_request(cell.signals, cfg.attack.names, cfg.attack.params, ft.references, cfg.attack.targets,
                                    cfg.seed, descriptions(CAUSAL))
    with ctx.stage("attacks"):
        ev = evaluate(ctx.store.metrics, request, cfg.metrics, cfg.seed)
    return StudyOutput(
        title=f"Membership of the fine-tuning text: GPT-2 ({study.base.source.split(' (')[0]}) fine-tuned on "
              f"{cfg.lm.finetune_corpus} blocks, method {ft.method}",
        evaluation=request, member_rate=study.keep.mean(axis=0), utility=utility(study, cell, cfg.metrics),
        audit_arrays=audit_arrays(study), models=model_rows(study, [cell]), seeds=study.seeds,
        sections=standard_sections(study, ft, ev, cfg.metrics), notes=headline(ev))


STUDY = Study("lm-mia", "causal LM: membership of fine-tuning text blocks (LOSS, zlib, Min-K %, Min-K %++, ratio "
                        "to base / reference, LiRA, RMIA)", LMMIAConfig, run)
