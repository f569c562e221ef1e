"""``lm-methods``: which way of fine-tuning a causal LM leaks most, at what perplexity.

The study compared full, head-only and adapter fine-tuning of GPT-2 by membership inference (the
likelihood ratio to the pretrained model, recall at 10 % FPR) and found head-only leaked most.
Here every method of ``lm.methods`` is fine-tuned at every learning rate of ``lm.lrs`` from the
same tiny base on the same keep-matrix (one ensemble per cell). Each cell's leakage is
``lm.method_attack``'s recall at 10 % and 1 % FPR (leave-one-out, bootstrap CIs); its utility is
the validation perplexity on held-out blocks. The report draws leakage against perplexity with the
Pareto frontier and compares methods at matched perplexity.
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import RunConfig
from ftaudit.errors import UserError
from ftaudit.metrics.pareto import matched, pareto_front
from ftaudit.scenarios.base import Context, Figure, Scenario, Section, Series, StudyOutput
from ftaudit.scenarios.evaluate import Evaluation, evaluate_signals
from ftaudit.scenarios.lm_study import (CAUSAL, LMCell, attack_names, audit_arrays, descriptions, exposed_section,
                                        finetune_cell, finetune_recipe, lm_threads, model_rows, perplexity, setup,
                                        setup_section, utility)

RECALL_FPR, LOW_FPR = 0.1, 0.01
LEAK = "recall@10%FPR"


def check_attack(cfg: RunConfig) -> None:
    name = cfg.lm.method_attack
    if name not in ATTACKS:
        raise UserError("lm.method_attack", f"unknown attack {name!r}", "use lm-ratio (the study's), loss, min-k++, "
                        "lira-online-global, …")


def _rate(attack: dict, fpr: float) -> dict:
    return min(attack["tpr_at_fpr"], key=lambda t: abs(t["fpr"] - fpr))


def cell_row(cfg: RunConfig, cell: LMCell, ev: Evaluation) -> dict:
    """One table row: the cell's leakage under lm.method_attack and its perplexities."""
    att = ev.by_name(cfg.lm.method_attack)
    ten, one = _rate(att, RECALL_FPR), _rate(att, LOW_FPR)
    val = perplexity(cell.val_nll, cfg.seed, cfg.metrics.ci_level)
    return {"method": cell.method, "lr": cell.lr, "trainable params": cell.n_trainable,
            "validation perplexity": val["value"], "ppl lo": val["lo"], "ppl hi": val["hi"],
            "training perplexity": float(np.exp(cell.train_nll.mean())),
            LEAK: ten["value"], "recall lo": ten["lo"], "recall hi": ten["hi"],
            "TPR@1%FPR": one["value"], "TPR lo": one["lo"], "TPR hi": one["hi"],
            "AUC": att["auc"]["value"], "AUC lo": att["auc"]["lo"], "AUC hi": att["auc"]["hi"]}


def leakage_figure(rows: list[dict], attack: str) -> Figure:
    """Recall at 10 % FPR (CI bars) against validation perplexity, one colour per method, with the
    Pareto frontier (lower perplexity and lower leakage are both better)."""
    series = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        series.append(Series(name, [r["validation perplexity"] for r in mine], [r[LEAK] for r in mine],
                             lo=[r["recall lo"] for r in mine], hi=[r["recall hi"] for r in mine], style="points"))
    front = pareto_front([-r["validation perplexity"] for r in rows], [r[LEAK] for r in rows])
    series.append(Series("Pareto frontier", [rows[i]["validation perplexity"] for i in front],
                         [rows[i][LEAK] for i in front], style="frontier"))
    return Figure(f"Leakage vs perplexity ({attack})", "validation perplexity (held-out blocks; lower is better)",
                  "recall at 10 % FPR", series,
                  caption="Bars: bootstrap CIs over blocks. Dashed: the Pareto frontier (no other cell has both lower "
                          "perplexity and lower leakage).")


def ranking(rows: list[dict]) -> tuple[float, list[dict]]:
    """Each method's least-leaking cell at the best perplexity every method reaches (matched utility)."""
    target, chosen = matched([-r["validation perplexity"] for r in rows], [r[LEAK] for r in rows],
                             [r["method"] for r in rows])
    return -target, sorted((rows[i] for i in chosen.values()), key=lambda r: r[LEAK], reverse=True)


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_attack(cfg)
    lm = cfg.lm
    n_models = lm.method_references + 1 + (lm.method_references + 1) % 2
    metrics = cfg.metrics.model_copy(update={"fprs": sorted(set(cfg.metrics.fprs) | {LOW_FPR, RECALL_FPR})})
    rows, cells = [], []
    with lm_threads(cfg):
        study = setup(cfg, ctx, CAUSAL, "lm-methods", n_models)
        recipe = finetune_recipe(cfg, CAUSAL)
        for method in lm.methods:
            for lr in lm.lrs:
                cell = finetune_cell(ctx, study, recipe.model_copy(update={"method": method, "lr": lr}),
                                     f"{method} lr={lr:g}")
                with ctx.stage("attacks"):
                    ev = evaluate_signals(ctx.store.metrics, cell.signals, [lm.method_attack], cfg.attack.params,
                                          lm.method_references, metrics, cfg.seed)
                rows.append(cell_row(cfg, cell, ev))
                cells.append(cell)
    front = set(pareto_front([-r["validation perplexity"] for r in rows], [r[LEAK] for r in rows]).tolist())
    for i, r in enumerate(rows):
        r["on frontier"] = "yes" if i in front else ""
    target, ranked = ranking(rows)
    order = ", ".join(f"{r['method']} {r[LEAK]:.1%} [{r['recall lo']:.1%}, {r['recall hi']:.1%}]" for r in ranked)
    most = max(rows, key=lambda r: r[LEAK])
    sections = [
        Section("Leakage vs perplexity, by fine-tuning method", [
            f"Each point is one ensemble of {n_models} tiny GPT-2s fine-tuned from the same base on the same keep-matrix, "
            f"{lm.finetune_epochs} epoch{'s' if lm.finetune_epochs > 1 else ''}, one method at one learning rate ({', '.join(f'{lr:g}' for lr in lm.lrs)}). "
            f"Leakage is {lm.method_attack}'s recall (TPR) at 10 % and 1 % FPR (95 % CIs over blocks); utility is the "
            "validation perplexity (mean over models of the held-out mean NLL, exponentiated).",
            "Canary exposure is not reported: no canary-exposure module was available to this scenario."],
            table=rows, figures=[leakage_figure(rows, lm.method_attack)]),
        Section("At matched perplexity", [
            f"Target validation perplexity {target:.2f}: the best every method reaches. Each method's least-leaking cell "
            f"at or below it, most leaking first: {order}. Most leaking cell overall: {most['method']} lr={most['lr']:g} "
            f"({most[LEAK]:.1%} at 10 % FPR)."],
            table=[{k: r[k] for k in ("method", "lr", "validation perplexity", LEAK, "recall lo", "recall hi", "TPR@1%FPR",
                                      "AUC", "trainable params")} for r in ranked]),
    ]
    # Headline: finetune.method at lm.finetune_lr when the grid has it, else the first cell; every attack on it.
    head = next((i for i, c in enumerate(cells) if c.method == recipe.method and np.isclose(c.lr, recipe.lr)), 0)
    cell = cells[head]
    with ctx.stage("attacks"):
        ev = evaluate_signals(ctx.store.metrics, cell.signals, attack_names(cfg, CAUSAL), cfg.attack.params,
                              lm.method_references, cfg.metrics, cfg.seed, cfg.attack.targets)
    sections.append(setup_section(study, recipe))
    if cfg.metrics.exposed:
        sections.append(exposed_section(study, ev.pooled, ev.best["name"], cfg.metrics.exposed))
    return StudyOutput(
        title=f"Which fine-tuning method of a causal LM leaks most (headline cell: {cell.name})",
        signals=None, pooled=ev.pooled, descriptions=descriptions(CAUSAL), member_rate=study.keep.mean(axis=0),
        references=lm.method_references, utility=utility(study, cell), audit_arrays=audit_arrays(study),
        models=model_rows(study, cells), seeds=study.seeds, sections=sections,
        notes=[f"Attack table, ROC and exposed blocks: the headline cell {cell.name}; every cell is in the sections below.",
               f"At matched validation perplexity ({target:.2f}) the most leaking method is {ranked[0]['method']} and the "
               f"least leaking {ranked[-1]['method']} ({lm.method_attack}, recall at 10 % FPR)."])


SCENARIO = Scenario("lm-methods", "causal LM: full / head / adapters / LoRA × learning rates; recall at 10 % / 1 % FPR "
                                  "vs validation perplexity, Pareto frontier", run)
