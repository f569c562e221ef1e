"""``mlm-ratio``: do masked LMs that look robust to membership inference leak once the attack
has a reference model? (Mireshghallah et al. 2022: on clinical notes, a likelihood-ratio attack
with a reference MLM raised AUC from 0.66 to 0.90 and was 51x stronger at 1 % FPR than scoring the
target's pseudo-log-likelihood alone.)

A tiny BERT pretrained on public text is fine-tuned on halves of a private audit pool (a LiRA
keep-matrix). Each block is scored by the target's mean PLL alone (``mlm-pll``), by its PLL gain
over the pretrained base (``mlm-ratio``) and over a reference MLM fine-tuned on disjoint blocks of
the same text (``mlm-ref-ratio``); LOSS, LiRA and RMIA run on the random-masking MLM loss. The
section compares PLL alone with each ratio on the same rows (paired bootstrap over blocks) and says
whether the study's jump appears.
"""
from __future__ import annotations

import numpy as np

from ftaudit.config import RunConfig
from ftaudit.metrics import weighted_roc_stats
from ftaudit.scenarios.base import Context, Scenario, Section, StudyOutput
from ftaudit.scenarios.evaluate import evaluate_signals, tpr_at
from ftaudit.scenarios.lm_study import (MASKED, MLM_REF_RATIO, attack_names, audit_arrays, descriptions, exposed_section,
                                        finetune_cell, finetune_recipe, lm_threads, model_rows, setup, setup_section, utility)

PLL = "mlm-pll"
RATIOS = ["mlm-ratio", MLM_REF_RATIO]
FPR = 0.01
STUDY = {"auc_pll": 0.66, "auc_ratio": 0.90, "tpr_factor": 51}


def paired_gain(pooled, alone: str, ratio: str, fpr: float, n_boot: int, level: float, seed: int) -> dict:
    """``ratio`` against ``alone`` on the same rows: AUC difference and TPR@fpr factor, each with a
    percentile interval from one cluster bootstrap (the same resampled blocks for both attacks)."""
    _, cluster = np.unique(pooled.example, return_inverse=True)
    k = int(cluster.max()) + 1
    rng = np.random.default_rng([seed, 0x9A1D])
    picks = rng.integers(0, k, size=(n_boot, k))
    counts = np.bincount((picks + np.arange(n_boot)[:, None] * k).ravel(), minlength=n_boot * k).reshape(n_boot, k)
    weights = np.vstack([np.ones(k), counts])[:, cluster]  # row 0: the full data
    auc_a, tpr_a = weighted_roc_stats(pooled.scores[alone], pooled.labels, weights, [fpr])
    auc_b, tpr_b = weighted_roc_stats(pooled.scores[ratio], pooled.labels, weights, [fpr])
    a, b = tpr_a[:, 0], tpr_b[:, 0]
    # b / a; infinite when only the ratio finds members, undefined (NaN, left out) when neither does
    factor = np.where(a > 0, b / np.where(a > 0, a, 1.0), np.where(b > 0, np.inf, np.nan))
    gain = auc_b - auc_a
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.quantile(gain[1:], q)
    reps = factor[1:][~np.isnan(factor[1:])]
    flo, fhi = np.quantile(reps, q, method="inverted_cdf") if reps.size else (np.nan, np.nan)  # no interpolation: may be inf
    return {"auc_gain": float(gain[0]), "auc_gain_lo": float(lo), "auc_gain_hi": float(hi),
            "tpr_factor": float(factor[0]), "tpr_factor_lo": float(flo), "tpr_factor_hi": float(fhi)}


def _factor(value: float) -> str:
    if np.isnan(value):
        return "undefined (neither finds members)"
    return "∞ (PLL alone finds none)" if np.isinf(value) else f"{value:.2f}×"


def verdict(by: dict, gains: dict) -> str:
    """Does the study's jump (AUC 0.66 → 0.90, 51× at 1 % FPR) appear here? Said either way."""
    pll = by[PLL]
    parts = []
    for name, g in gains.items():
        r = by[name]
        significant = g["auc_gain_lo"] > 0 and g["tpr_factor_lo"] > 1
        parts.append(f"{name}: AUC {pll['auc']['value']:.3f} → {r['auc']['value']:.3f} (gain {g['auc_gain']:+.3f} "
                     f"[{g['auc_gain_lo']:+.3f}, {g['auc_gain_hi']:+.3f}]), TPR at 1 % FPR {tpr_at(pll, FPR):.1%} → "
                     f"{tpr_at(r, FPR):.1%} ({_factor(g['tpr_factor'])} [{_factor(g['tpr_factor_lo'])}, "
                     f"{_factor(g['tpr_factor_hi'])}]) — {'a significant jump' if significant else 'no significant jump'}")
    return (f"The study: AUC {STUDY['auc_pll']} → {STUDY['auc_ratio']} and {STUDY['tpr_factor']}× at 1 % FPR. Here, PLL "
            "alone vs the likelihood ratio (95 % paired bootstrap over blocks): " + "; ".join(parts) + ".")


def comparison_section(ev, gains: dict, verdict_text: str) -> Section:
    rows = []
    for a in ev.attacks:
        t = min(a["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - FPR))
        g = gains.get(a["name"])
        gain = "" if g is None else f"{g['auc_gain']:+.3f} [{g['auc_gain_lo']:+.3f}, {g['auc_gain_hi']:+.3f}]"
        factor = "" if g is None else f"{_factor(g['tpr_factor'])} [{_factor(g['tpr_factor_lo'])}, {_factor(g['tpr_factor_hi'])}]"
        rows.append({"attack": a["name"], "AUC": f"{a['auc']['value']:.3f} [{a['auc']['lo']:.3f}, {a['auc']['hi']:.3f}]",
                     "TPR@1%FPR": f"{t['value']:.2%} [{t['lo']:.2%}, {t['hi']:.2%}]",
                     "vs mlm-pll: AUC gain": gain, "vs mlm-pll: TPR@1% factor": factor})
    return Section("PLL alone vs likelihood ratio", [
        "mlm-pll scores a block by the target's mean pseudo-log-likelihood alone; mlm-ratio subtracts the pretrained "
        "base's, mlm-ref-ratio that of a reference MLM fine-tuned on disjoint blocks of the same text. Gains and factors "
        "come from one paired cluster bootstrap (the same resampled blocks for both attacks).", verdict_text], rows)


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    with lm_threads(cfg):
        study = setup(cfg, ctx, MASKED, "mlm-ratio", cfg.finetune.n_models)
        ft = finetune_recipe(cfg, MASKED)
        cell = finetune_cell(ctx, study, ft, f"fine-tune ({ft.method})")
    with ctx.stage("attacks"):
        ev = evaluate_signals(ctx.store.metrics, cell.signals, attack_names(cfg, MASKED), cfg.attack.params,
                              cfg.finetune.references, cfg.metrics, cfg.seed, cfg.attack.targets)
        by = {a["name"]: a for a in ev.attacks}
        gains = {r: paired_gain(ev.pooled, PLL, r, FPR, cfg.metrics.bootstrap, cfg.metrics.ci_level, cfg.seed)
                 for r in RATIOS if r in by and PLL in by}
    text = verdict(by, gains) if gains else "mlm-pll and a ratio attack must both be in attack.names for the comparison."
    sections = [comparison_section(ev, gains, text), setup_section(study, ft)]
    if cfg.metrics.exposed:
        sections.append(exposed_section(study, ev.pooled, ev.best["name"], cfg.metrics.exposed))
    return StudyOutput(
        title=f"Masked LM: PLL alone vs likelihood ratio — BERT ({study.base.source.split(' (')[0]}) fine-tuned on "
              f"{cfg.lm.finetune_corpus} blocks, method {ft.method}",
        signals=None, pooled=ev.pooled, descriptions=descriptions(MASKED), member_rate=study.keep.mean(axis=0),
        references=cfg.finetune.references, utility=utility(study, cell), audit_arrays=audit_arrays(study),
        models=model_rows(study, [cell]), seeds=study.seeds, sections=sections, notes=[text])


SCENARIO = Scenario("mlm-ratio", "masked LM: PLL alone vs likelihood ratio to the base / a disjoint reference MLM "
                                 "(AUC, TPR at 1 % FPR, paired CIs)", run)
