"""``methods``: which fine-tuning method leaks most, at what utility.

Same pretrained base, same private data and keep-matrix; every method of ``sweep.methods`` is
fine-tuned at every learning rate of ``sweep.lrs`` (one ensemble per cell, recipe ``finetune``).
Each cell's leakage is ``sweep.attack``'s TPR at 1 % FPR and AUC (leave-one-out over its models,
bootstrap CIs); its utility is the held-out accuracy. The report draws leakage against accuracy
with the Pareto frontier and compares methods at matched accuracy: the most and least leaking
methods are named only when the CI of their difference excludes zero.
"""
from __future__ import annotations

import numpy as np

from ftaudit.evaluation import Evaluation, cell_difference, evaluate_signals
from ftaudit.metrics import mean_ci
from ftaudit.metrics.pareto import matched, pareto_front
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.digits.common import Cell, finetune_cell, setup
from ftaudit.studies.digits.config import MethodsConfig
from ftaudit.studies.digits.finetune_mia import audit_arrays, headline, study_title, study_utility


def cell_row(cell: Cell, ev: Evaluation, attack: str, seed: int, **labels) -> dict:
    """One table row and the numbers the figures need for a fine-tuned ensemble."""
    att = ev.by_name(attack)
    tpr = att.tpr_at(0.01)
    acc = mean_ci(cell.test_acc, seed=seed)
    return {**labels, "trainable params": cell.n_trainable,
            "test accuracy": acc["value"], "acc lo": acc["lo"], "acc hi": acc["hi"],
            "train accuracy": float(cell.train_acc.mean()),
            f"{attack} AUC": att.auc.value, "AUC lo": att.auc.lo, "AUC hi": att.auc.hi,
            "TPR@1%FPR": tpr.value, "TPR lo": tpr.lo, "TPR hi": tpr.hi,
            "best attack": ev.best.name, "best TPR@1%FPR": ev.best.tpr_at(0.01).value}


def leakage_figure(rows: list[dict], group: str, title: str, caption: str) -> Figure:
    """Leakage (TPR@1 % FPR, CI bars) against test accuracy, one colour per group, with the frontier."""
    series = []
    for name in dict.fromkeys(r[group] for r in rows):
        mine = [r for r in rows if r[group] == name]
        series.append(Series(str(name), [r["test accuracy"] for r in mine], [r["TPR@1%FPR"] for r in mine],
                             lo=[r["TPR lo"] for r in mine], hi=[r["TPR hi"] for r in mine], style="points"))
    front = pareto_front([r["test accuracy"] for r in rows], [r["TPR@1%FPR"] for r in rows])
    series.append(Series("Pareto frontier", [rows[i]["test accuracy"] for i in front],
                         [rows[i]["TPR@1%FPR"] for i in front], style="frontier"))
    return Figure(title, "test accuracy (held-out, mean over models)", "TPR at 1 % FPR", series, caption=caption)


def extremes_verdict(matched_rows: list[dict], evals: dict[str, Evaluation], attack: str, level: float) -> str:
    """Name the most and least leaking methods at matched accuracy only when the CI of the
    difference of their TPRs excludes zero. The cells are different ensembles on the same audit
    examples, so the difference is bootstrapped over examples with both cells resampled together."""
    if len(matched_rows) < 2:
        return "Only one method reaches the matched accuracy: no comparison."
    top, bottom = matched_rows[0], matched_rows[-1]
    diff = cell_difference(evals[top["cell"]], evals[bottom["cell"]], attack, 0.01)
    span = (f"{top['method']} {top['TPR@1%FPR']:.1%} vs {bottom['method']} {bottom['TPR@1%FPR']:.1%}: difference "
            f"{diff['value']:+.1%} [{diff['lo']:+.1%}, {diff['hi']:+.1%}] ({level:.0%} bootstrap over audit examples)")
    if diff["lo"] > 0:
        return f"At matched accuracy {top['method']} leaks most and {bottom['method']} least ({attack}, TPR at 1 % FPR; {span})."
    return (f"At matched accuracy, which method leaks most is not resolved: the highest and lowest TPR at 1 % FPR "
            f"({attack}) differ by no more than the noise ({span}).")


def run(cfg: MethodsConfig, ctx: Context) -> StudyOutput:
    sweep, ft_cfg = cfg.sweep, cfg.finetune
    n_models = ft_cfg.n_models
    study = setup(cfg, ctx, n_models, ft_cfg.batch_size)
    rows, cells, evals = [], [], []
    for method in sweep.methods:
        for lr in sweep.lrs:
            ft = ft_cfg.model_copy(update={"method": method, "lr": lr})
            cell = finetune_cell(ctx, study, ft, name=f"{method} lr={lr:g}")
            with ctx.stage("attacks"):
                ev = evaluate_signals(ctx.store.metrics, cell.signals, cfg.attack.names, cfg.attack.params,
                                      ft_cfg.references, cfg.metrics, cfg.seed)
            rows.append(cell_row(cell, ev, sweep.attack, cfg.seed, method=method, lr=lr) | {"cell": cell.name})
            cells.append(cell)
            evals.append(ev)

    acc = np.array([r["test accuracy"] for r in rows])
    leak = np.array([r["TPR@1%FPR"] for r in rows])
    front = set(pareto_front(acc, leak).tolist())
    for i, r in enumerate(rows):
        r["on frontier"] = "yes" if i in front else ""
    target, chosen = matched(acc, leak, [r["method"] for r in rows], sweep.match_tolerance)
    matched_rows = sorted((rows[i] for i in chosen.values()), key=lambda r: r["TPR@1%FPR"], reverse=True)
    ranking = ", ".join(f"{r['method']} {r['TPR@1%FPR']:.1%}" for r in matched_rows)
    verdict = extremes_verdict(matched_rows, {c.name: e for c, e in zip(cells, evals)}, sweep.attack, cfg.metrics.ci_level)
    sections = [
        ReportSection("Leakage vs utility, by fine-tuning method",
                text=[f"Each point is one ensemble of {n_models} models fine-tuned from the same base on the same "
                      f"keep-matrix, {ft_cfg.epochs} epochs, one method at one learning rate ({', '.join(f'{lr:g}' for lr in sweep.lrs)}). "
                      f"Leakage is {sweep.attack}'s TPR at 1 % FPR (95 % CI over examples); utility is held-out accuracy."],
                table=rows,
                figures=[leakage_figure(rows, "method", "Leakage vs accuracy", "Bars: bootstrap CIs. Dashed: the Pareto frontier "
                                        "(no other cell is both more accurate and less leaky).")]),
        ReportSection("At matched accuracy",
                text=[f"Target accuracy {target:.1%}: the highest every method reaches (minus {sweep.match_tolerance:.1%} slack). "
                      f"Each method's least-leaking cell at or above it, by point estimate, most leaking first: {ranking}.",
                      verdict],
                table=[{k: r[k] for k in ("method", "lr", "test accuracy", "TPR@1%FPR", "TPR lo", "TPR hi",
                                          f"{sweep.attack} AUC", "trainable params")} for r in matched_rows]),
    ]
    # Headline: the configured method at the configured learning rate when the grid has it, else the first cell.
    head = next((i for i, r in enumerate(rows) if r["method"] == ft_cfg.method and np.isclose(r["lr"], ft_cfg.lr)), 0)
    cell = cells[head]
    utility = study_utility(cfg, study, cell.test_acc, cell.train_acc)
    utility[0]["name"] += f" ({cell.name})"
    seeds = study.seeds
    models = [("pretrain", 0, study.pre.keys[0], seeds["pretrain"])]
    models += [(f"finetune:{c.name}", m, k, s) for c in cells for m, (k, s) in enumerate(zip(c.result.keys, seeds["models"]))]
    return StudyOutput(title=study_title(cfg, study, "Which fine-tuning method leaks most") + f" (headline cell: {cell.name})",
                       **headline(cfg, cell, ft_cfg.references), utility=utility,
                       audit_arrays=audit_arrays(study), models=models, seeds=seeds, sections=sections,
                       notes=[f"Attack table, ROC and exposed examples: the headline cell {cell.name}; every cell is in the sections below.",
                              verdict])


STUDY = Study("methods", "which fine-tuning method leaks most: methods × learning rates, leakage vs accuracy, Pareto frontier",
              MethodsConfig, run)
