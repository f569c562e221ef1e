"""``lm-mia``: which blocks of its fine-tuning text a causal LM was trained on.

A tiny GPT-2 pretrained on public text (``lm.pretrain_corpus``) is fine-tuned with
``finetune.method`` on halves of an audit pool of private blocks (``lm.finetune_corpus``, a LiRA
keep-matrix over finetune.references + 1 models). Every LM attack runs on every (target, block)
pair: LOSS, zlib, Min-K %, Min-K %++, the NLL ratio to the pretrained base and to a reference
model, and LiRA / RMIA on the block's mean NLL with the other fine-tunes (same base) as references.
"""
from __future__ import annotations

from ftaudit.config import RunConfig
from ftaudit.scenarios.base import Context, Scenario, StudyOutput
from ftaudit.scenarios.evaluate import Evaluation, evaluate_signals, tpr_at
from ftaudit.scenarios.lm_study import (CAUSAL, attack_names, audit_arrays, descriptions, exposed_section, finetune_cell,
                                        finetune_recipe, lm_threads, model_rows, setup, setup_section, utility)


def headline(ev: Evaluation) -> list[str]:
    """Plain-language lines: the strongest attack at 1 % FPR and how the reference-free ones compare."""
    by = {a["name"]: a for a in ev.attacks}
    best = ev.best
    lines = [f"Strongest attack at 1 % FPR: {best['name']} (TPR {tpr_at(best):.1%} [{_ci(best)}], AUC "
             f"{best['auc']['value']:.3f} [{best['auc']['lo']:.3f}, {best['auc']['hi']:.3f}])."]
    free = [by[n] for n in ("loss", "zlib", "min-k", "min-k++") if n in by]
    if free:
        top = max(free, key=lambda a: (tpr_at(a), a["auc"]["value"]))
        lines.append(f"Best attack that needs no reference model: {top['name']} (TPR at 1 % FPR {tpr_at(top):.1%}, "
                     f"AUC {top['auc']['value']:.3f}).")
    if "lm-ratio" in by:
        r = by["lm-ratio"]
        ten = min(r["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - 0.1))
        lines.append(f"Likelihood ratio to the pretrained base (the study's attack): recall at 10 % FPR {ten['value']:.1%} "
                     f"[{ten['lo']:.1%}, {ten['hi']:.1%}].")
    return lines


def _ci(attack: dict, fpr: float = 0.01) -> str:
    t = min(attack["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - fpr))
    return f"{t['lo']:.1%}, {t['hi']:.1%}"


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    with lm_threads(cfg):
        study = setup(cfg, ctx, CAUSAL, "lm-mia", cfg.finetune.n_models)
        ft = finetune_recipe(cfg, CAUSAL)
        cell = finetune_cell(ctx, study, ft, f"fine-tune ({ft.method})")
    with ctx.stage("attacks"):
        ev = evaluate_signals(ctx.store.metrics, cell.signals, attack_names(cfg, CAUSAL), cfg.attack.params,
                              cfg.finetune.references, cfg.metrics, cfg.seed, cfg.attack.targets)
    sections = [setup_section(study, ft)]
    if cfg.metrics.exposed:
        sections.append(exposed_section(study, ev.pooled, ev.best["name"], cfg.metrics.exposed))
    lm = cfg.lm
    return StudyOutput(
        title=f"Membership of the fine-tuning text: GPT-2 ({study.base.source.split(' (')[0]}) fine-tuned on "
              f"{lm.finetune_corpus} blocks, method {ft.method}",
        signals=None, pooled=ev.pooled, descriptions=descriptions(CAUSAL), member_rate=study.keep.mean(axis=0),
        references=cfg.finetune.references, utility=utility(study, cell), audit_arrays=audit_arrays(study),
        models=model_rows(study, [cell]), seeds=study.seeds, sections=sections, notes=headline(ev))


SCENARIO = Scenario("lm-mia", "causal LM: membership of fine-tuning text blocks (LOSS, zlib, Min-K %, Min-K %++, ratio "
                              "to base / reference, LiRA, RMIA)", run)
