"""``mlm-ratio``: do masked LMs that look robust to membership inference leak once the attack
has a reference model? (Mireshghallah et al. 2022: on clinical notes, a likelihood-ratio attack
with a reference MLM raised AUC from 0.66 to 0.90 and was 51x stronger at 1 % FPR than scoring the
target's pseudo-log-likelihood alone.)

A tiny BERT pretrained on public text is fine-tuned on halves of a private audit pool (a LiRA
keep-matrix). Each block is scored by the target's mean PLL alone (``mlm-pll``), by its PLL gain
over the pretrained base (``mlm-ratio``) and over a reference MLM fine-tuned on disjoint blocks of
the same text (``mlm-ref-ratio``); LOSS, LiRA and RMIA run on the random-masking MLM loss. The
section compares PLL alone with each ratio on the same rows (paired bootstrap over blocks) and says
whether the study's jump appears: only when both paired CIs (AUC gain above 0, TPR factor above 1)
exclude no change.
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.evaluators import leave_one_out_request
from ftaudit.evaluation import Evaluation, evaluate
from ftaudit.metrics.paired import PairedDifference
from ftaudit.report.blocks import ReportSection
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.lm.base import MASKED, lm_threads
from ftaudit.studies.lm.cell import finetune_cell, setup
from ftaudit.studies.lm.config import MLM_REF_RATIO, MLMRatioConfig
from ftaudit.studies.lm.report import audit_arrays, auc_ci, descriptions, model_rows, standard_sections, utility

PLL = "mlm-pll"
RATIOS = ["mlm-ratio", MLM_REF_RATIO]
FPR = 0.01
STUDY_NUMBERS = {"auc_pll": 0.66, "auc_ratio": 0.90, "tpr_factor": 51}


def _factor(value: float) -> str:
    if np.isnan(value):
        return "undefined (neither finds members)"
    return "∞ (PLL alone finds none)" if np.isinf(value) else f"{value:.2f}×"


def significant(g: PairedDifference) -> bool:
    """The jump is there only when the paired CIs exclude no change: AUC gain above 0 and TPR factor above 1."""
    return g.auc_diff_lo > 0 and g.tpr_factor_lo > 1


def verdict(ev: Evaluation, gains: dict[str, PairedDifference]) -> str:
    """Does the study's jump (AUC 0.66 → 0.90, 51× at 1 % FPR) appear here? Said either way."""
    pll = ev.by_name(PLL)
    parts = []
    for name, g in gains.items():
        r = ev.by_name(name)
        parts.append(f"{name}: AUC {pll.auc.value:.3f} → {r.auc.value:.3f} (gain {g.auc_diff:+.3f} "
                     f"[{g.auc_diff_lo:+.3f}, {g.auc_diff_hi:+.3f}]), TPR at 1 % FPR {pll.tpr_at(FPR).value:.1%} → "
                     f"{r.tpr_at(FPR).value:.1%} ({_factor(g.tpr_factor)} [{_factor(g.tpr_factor_lo)}, "
                     f"{_factor(g.tpr_factor_hi)}]) — {'a significant jump' if significant(g) else 'no significant jump'}")
    level = f"{ev.metrics.ci_level:.0%}"
    return (f"The study: AUC {STUDY_NUMBERS['auc_pll']} → {STUDY_NUMBERS['auc_ratio']} and {STUDY_NUMBERS['tpr_factor']}× "
            f"at 1 % FPR. Here, PLL alone vs the likelihood ratio ({level} paired bootstrap over blocks; a jump is called "
            "significant only when the AUC gain's CI lies above 0 and the TPR factor's above 1): " + "; ".join(parts) + ".")


def comparison_section(ev: Evaluation, gains: dict[str, PairedDifference], verdict_text: str) -> ReportSection:
    rows = []
    for a in ev.attacks:
        t, g = a.tpr_at(FPR), gains.get(a.name)
        gain = "" if g is None else f"{g.auc_diff:+.3f} [{g.auc_diff_lo:+.3f}, {g.auc_diff_hi:+.3f}]"
        factor = "" if g is None else f"{_factor(g.tpr_factor)} [{_factor(g.tpr_factor_lo)}, {_factor(g.tpr_factor_hi)}]"
        rows.append({"attack": a.name, "AUC": auc_ci(a), "TPR@1%FPR": f"{t.value:.2%} [{t.lo:.2%}, {t.hi:.2%}]",
                     "vs mlm-pll: AUC gain": gain, "vs mlm-pll: TPR@1% factor": factor})
    return ReportSection("PLL alone vs likelihood ratio", [
        "mlm-pll scores a block by the target's mean pseudo-log-likelihood alone; mlm-ratio subtracts the pretrained "
        "base's, mlm-ref-ratio that of a reference MLM fine-tuned on disjoint blocks of the same text. Gains and factors "
        "come from one paired cluster bootstrap (the same resampled blocks for both attacks).", verdict_text], rows)


def run(cfg: MLMRatioConfig, ctx: Context) -> StudyOutput:
    ft = cfg.finetune
    with lm_threads(cfg):
        study = setup(ctx, cfg.lm, ft, MASKED, "mlm-ratio", ft.n_models, cfg.seed, maskings=cfg.lm.maskings)
        cell = finetune_cell(ctx, study, ft, f"fine-tune ({ft.method})")
    request = leave_one_out_request(cell.signals, cfg.attack.names, cfg.attack.params, ft.references, cfg.attack.targets,
                                    cfg.seed, descriptions(MASKED))
    with ctx.stage("attacks"):
        ev = evaluate(ctx.store.metrics, request, cfg.metrics, cfg.seed)
        names = {a.name for a in ev.attacks}
        gains = {r: ev.compare(PLL, r, FPR) for r in RATIOS if r in names and PLL in names}
    text = verdict(ev, gains) if gains else "mlm-pll and a ratio attack must both be in attack.names for the comparison."
    return StudyOutput(
        title=f"Masked LM: PLL alone vs likelihood ratio — BERT ({study.base.source.split(' (')[0]}) fine-tuned on "
              f"{cfg.lm.finetune_corpus} blocks, method {ft.method}",
        evaluation=request, member_rate=study.keep.mean(axis=0), utility=utility(study, cell, cfg.metrics),
        audit_arrays=audit_arrays(study), models=model_rows(study, [cell]), seeds=study.seeds,
        sections=[comparison_section(ev, gains, text), *standard_sections(study, ft, ev, cfg.metrics)], notes=[text])


STUDY = Study("mlm-ratio", "masked LM: PLL alone vs likelihood ratio to the base / a disjoint reference MLM "
                           "(AUC, TPR at 1 % FPR, paired CIs)", MLMRatioConfig, run)
