"""What the LM membership studies hand the report: attack descriptions, utility, sections, arrays."""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import MetricsConfig
from ftaudit.evaluation import HEADLINE_FPR, AttackResult, Evaluation
from ftaudit.metrics import mean_ci
from ftaudit.report.blocks import ReportSection
from ftaudit.studies.lm.base import CAUSAL
from ftaudit.studies.lm.cell import LMCell, LMStudy
from ftaudit.studies.lm.config import MLM_REF_RATIO, REF_RATIO, SEQUENCE_ATTACKS, LMFinetuneConfig
from ftaudit.wording import plural

SIGNAL_WORDS = {CAUSAL: "the block's NLL (summed next-token loss)",
                "masked-lm": "the block's MLM loss (masked-token loss over random 15 % maskings, summed per masking)"}


def descriptions(kind: str) -> dict[str, str]:
    """What the generic attacks mean on LM signals (the report's attack table shows these)."""
    words = SIGNAL_WORDS[kind]
    out = {"loss": f"LOSS on {words}", "reference": f"drop of {words} from the pretrained base to the target"}
    out.update({name: f"{ATTACKS[name].description}, on {words}" for name in SEQUENCE_ATTACKS})
    return out


def perplexity(nll: np.ndarray, seed: int, level: float) -> dict:
    """exp of the mean NLL, with the CI of the mean mapped through exp (a monotone map)."""
    est = mean_ci(nll, level=level, seed=seed)
    return {"value": float(np.exp(est["value"])), "lo": float(np.exp(est["lo"])), "hi": float(np.exp(est["hi"]))}


def utility(study: LMStudy, cell: LMCell, metrics: MetricsConfig) -> list[dict]:
    """Validation and training perplexity of the fine-tunes, and the base's, on the same blocks."""
    z, seed, level = len(study.population), study.run_seed, metrics.ci_level
    word = "perplexity" if study.kind == CAUSAL else "MLM pseudo-perplexity (exp of the masked-token loss)"
    return [
        {**perplexity(cell.val_nll, seed, level), "name": f"fine-tuned validation {word} ({cell.name})",
         "note": f"mean over {len(cell.val_nll)} models of the mean NLL on {z} held-out {study.lm.finetune_corpus} blocks, "
                 "exponentiated (CI over models)"},
        {**perplexity(cell.train_nll, seed, level), "name": f"fine-tuned training {word}",
         "note": "on each model's own member blocks (CI over models)"},
        {**perplexity(study.base_pop, seed, level), "name": f"pretrained base validation {word}",
         "note": f"the base alone on the same {z} held-out blocks (CI over blocks)"},
    ]


def exposed_section(study: LMStudy, pooled: PooledScores, attack: str, k: int) -> ReportSection:
    """The audit blocks the attack flags most often when they are members, with their text."""
    s, labels, ex = pooled.scores[attack], pooled.labels, pooled.example
    n = len(study.audit)
    threshold = np.quantile(s[~labels], 1 - HEADLINE_FPR)
    count = np.maximum(np.bincount(ex[labels], minlength=n), 1)
    hits = np.bincount(ex[labels], weights=s[labels] > threshold, minlength=n) / count
    mean = np.bincount(ex[labels], weights=s[labels], minlength=n) / count
    order = np.lexsort((-mean, -hits))[:k]
    rows = [{"block": int(i), "found as member at 1% FPR": f"{hits[i]:.0%}", f"mean {attack} score as member": f"{mean[i]:.4g}",
             "text (first 80 characters)": study.audit.texts[i][:80].replace("\n", " ⏎ ")} for i in order]
    return ReportSection(f"Most exposed blocks ({attack})", [
        f"Audit blocks ranked by the share of the targets holding them whose {attack} score exceeds the 1 %-FPR "
        "threshold of all non-member rows, ties by the mean member score. Token ids: arrays/audit_ids.npy."], rows)


def setup_section(study: LMStudy, ft: LMFinetuneConfig, extra: list[str] = ()) -> ReportSection:
    """How the study was built: corpora, tokenizer (where it is saved), base, reference, recipe."""
    lm = study.lm
    lines = [f"Private text: {lm.finetune_corpus}; {len(study.audit)} audit blocks of {lm.block_len} tokens under a half "
             f"keep-matrix ({study.n_models} models; each block a member of half of them), {len(study.population)} "
             "held-out blocks (validation, RMIA population).",
             f"Tokenizer: {study.tokenizer_path} (sha256 of its definition {study.tokenizer_digest[:16]}…).",
             f"Base: {study.base.source}.",
             f"Reference of {REF_RATIO if study.kind == CAUSAL else MLM_REF_RATIO}: "
             f"{study.reference_name or 'none (lm.reference=base)'}; "
             "the other ratio attacks compare with the base.",
             f"Fine-tuning: {ft.method}, {plural(ft.epochs, 'epoch')}, {ft.optimizer} lr {ft.lr:g}, batch {ft.batch_size} blocks."]
    return ReportSection("Setup", lines + list(extra))


def standard_sections(study: LMStudy, ft: LMFinetuneConfig, ev: Evaluation, metrics: MetricsConfig) -> list[ReportSection]:
    """Setup, then the blocks the best attack exposes most (when metrics.exposed asks for them)."""
    sections = [setup_section(study, ft)]
    if metrics.exposed and ev.best is not None:
        sections.append(exposed_section(study, ev.pooled, ev.best.name, metrics.exposed))
    return sections


def audit_arrays(study: LMStudy) -> dict[str, np.ndarray]:
    """The audit and population token ids, stored with the run (text is not image-shaped, so the
    report lists the exposed blocks' text in a section instead)."""
    return {"audit_ids": study.audit.ids, "population_ids": study.population.ids}


def model_rows(study: LMStudy, cells: list[LMCell]) -> list[tuple[str, int, str, int]]:
    rows = [("pretrain", 0, study.base.key, study.seeds["pretrain"])]
    if study.reference_key:
        rows.append(("reference", 0, study.reference_key, study.seeds["reference"]))
    for cell in cells:
        rows += [(f"finetune:{cell.name}", m, k, s) for m, (k, s) in enumerate(zip(cell.result.keys, study.seeds["models"]))]
    return rows


def rate_ci(attack: AttackResult, fpr: float = HEADLINE_FPR) -> str:
    """'TPR% [lo%, hi%]' at the reported FPR closest to ``fpr``."""
    t = attack.tpr_at(fpr)
    return f"{t.value:.1%} [{t.lo:.1%}, {t.hi:.1%}]"


def auc_ci(attack: AttackResult) -> str:
    a = attack.auc
    return f"{a.value:.3f} [{a.lo:.3f}, {a.hi:.3f}]"
