"""``lm-methods``: which way of fine-tuning a causal LM leaks most, at what perplexity.

The study compared full, head-only and adapter fine-tuning of GPT-2 by membership inference (the
likelihood ratio to the pretrained model, recall at 10 % FPR) and found head-only leaked most.
Here every method of ``sweep.methods`` is fine-tuned at every learning rate of ``sweep.lrs`` from
the same tiny base on the same keep-matrix (one ensemble per cell, ``finetune`` the recipe of every
cell). Each cell's leakage is ``sweep.attack``'s recall at 10 % and 1 % FPR (leave-one-out,
bootstrap CIs); its utility is the validation perplexity on held-out blocks. The report draws
leakage against perplexity with the Pareto frontier and compares methods at matched perplexity.
Every model also trains on ``sweep.canaries`` canaries (Carlini et al. 2019), each
``sweep.canary_repeats`` times, so each cell also gets a canary exposure.

The cells are different ensembles, so "X leaks most" is said only when X's CI lies above every
other's (non-overlapping CIs, a conservative rule); otherwise the report says "not resolved".
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.evaluators import leave_one_out_request
from ftaudit.evaluation import Evaluation, cell_difference, evaluate
from ftaudit.metrics.pareto import matched, pareto_front
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.lm.base import CAUSAL, lm_threads, model_name, tokenizer_for
from ftaudit.studies.lm.canaries import EXPOSURE, Canaries, canary_text, exposure_columns, exposures, highest, make_canaries
from ftaudit.studies.lm.cell import LMCell, LMStudy, finetune_cell, setup
from ftaudit.studies.lm.config import LMMethodsConfig
from ftaudit.studies.lm.report import audit_arrays, descriptions, model_rows, perplexity, standard_sections, utility

RECALL_FPR, LOW_FPR = 0.1, 0.01
LEAK = "recall@10%FPR"


def cell_row(cfg: LMMethodsConfig, cell: LMCell, ev: Evaluation) -> dict:
    """One table row: the cell's leakage under sweep.attack and its perplexities."""
    att = ev.by_name(cfg.sweep.attack)
    ten, one = att.tpr_at(RECALL_FPR), att.tpr_at(LOW_FPR)
    val = perplexity(cell.val_nll, cfg.seed, cfg.metrics.ci_level)
    return {"method": cell.method, "lr": cell.lr, "trainable params": cell.n_trainable,
            "validation perplexity": val["value"], "ppl lo": val["lo"], "ppl hi": val["hi"],
            "training perplexity": float(np.exp(cell.train_nll.mean())),
            LEAK: ten.value, "recall lo": ten.lo, "recall hi": ten.hi,
            "TPR@1%FPR": one.value, "TPR lo": one.lo, "TPR hi": one.hi,
            "AUC": att.auc.value, "AUC lo": att.auc.lo, "AUC hi": att.auc.hi}


def by_method(rows: list[dict], y: str, lo: str | None = None, hi: str | None = None) -> list[Series]:
    series = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        series.append(Series(name, [r["validation perplexity"] for r in mine], [r[y] for r in mine],
                             lo=[r[lo] for r in mine] if lo else None, hi=[r[hi] for r in mine] if hi else None,
                             style="points"))
    return series


def exposure_figure(rows: list[dict], references: int) -> Figure:
    return Figure("Canary exposure vs perplexity", "validation perplexity (held-out blocks; lower is better)",
                  "rank exposure (bits)", by_method(rows, EXPOSURE, "exposure lo", "exposure hi"),
                  caption=f"Bars: bootstrap CIs over canaries. A never-seen secret has expected exposure 1/ln 2 ≈ 1.44 "
                          f"bits; the most a canary can reach against {references} references is "
                          f"{np.log2(references + 1):.2f} bits.")


def leakage_figure(rows: list[dict], attack: str) -> Figure:
    """Recall at 10 % FPR (CI bars) against validation perplexity, one colour per method, with the
    Pareto frontier (lower perplexity and lower leakage are both better)."""
    series = by_method(rows, LEAK, "recall lo", "recall hi")
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


def run_grid(ctx: Context, cfg: LMMethodsConfig, study: LMStudy,
             canaries: Canaries | None) -> tuple[list[dict], list[LMCell], list[Evaluation]]:
    """One ensemble per (method, learning rate), each measured by sweep.attack and its canaries."""
    sweep, rows, cells, evs = cfg.sweep, [], [], []
    metrics = cfg.metrics.model_copy(update={"fprs": sorted(set(cfg.metrics.fprs) | {LOW_FPR, RECALL_FPR})})
    params = {k: v for k, v in cfg.attack.params.items() if k == sweep.attack}
    canary_rows = canaries.training_rows(study.spare) if canaries else None
    for method in sweep.methods:
        for lr in sweep.lrs:
            ft = cfg.finetune.model_copy(update={"method": method, "lr": lr})
            cell = finetune_cell(ctx, study, ft, f"{method} lr={lr:g}", canary_rows)
            with ctx.stage("attacks"):
                ev = evaluate(ctx.store.metrics, leave_one_out_request(cell.signals, [sweep.attack], params,
                                                                       cfg.finetune.references, seed=cfg.seed),
                              metrics, cfg.seed)
            row = cell_row(cfg, cell, ev)
            if canaries:
                with ctx.stage("signals"):
                    row.update(exposure_columns(exposures(ctx, study, canaries, cell.template, cell.result.keys,
                                                          cell.result.states), cfg.metrics, cfg.seed))
            rows.append(row)
            cells.append(cell)
            evs.append(ev)
    front = set(pareto_front([-r["validation perplexity"] for r in rows], [r[LEAK] for r in rows]).tolist())
    for i, r in enumerate(rows):
        r["on frontier"] = "yes" if i in front else ""
    return rows, cells, evs


PAIRED_TITLE = "Methods at matched perplexity, paired over blocks"


def paired_section(cfg: LMMethodsConfig, rows: list[dict], evs: list[Evaluation]) -> ReportSection:
    """Every pair of methods' matched cells (:func:`ranking`): the difference of sweep.attack's recall at
    10 % FPR, with a bootstrap CI resampling the audit blocks jointly for both cells (the cells are
    different ensembles audited on the same blocks: ``evaluation.cell_difference``)."""
    _, ranked = ranking(rows)
    index = {id(r): i for i, r in enumerate(rows)}
    table = []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            d = cell_difference(evs[index[id(a)]], evs[index[id(b)]], cfg.sweep.attack, RECALL_FPR)
            verdict = (f"{a['method']} leaks more" if d["lo"] > 0 else f"{b['method']} leaks more" if d["hi"] < 0
                       else "not resolved")
            table.append({"a": f"{a['method']} lr={a['lr']:g}", "b": f"{b['method']} lr={b['lr']:g}",
                          "method a": a["method"], "method b": b["method"], f"{LEAK} a − b": d["value"], "lo": d["lo"],
                          "hi": d["hi"], "verdict": verdict})
    return ReportSection(PAIRED_TITLE, [
        f"Each method's matched cell (above) against every other's: {cfg.sweep.attack}'s recall at 10 % FPR of a minus b, "
        f"with a {cfg.metrics.ci_level:.0%} bootstrap CI that resamples the audit blocks once for both cells (different "
        "ensembles, the same blocks). A method leaks more only where that CI excludes zero."], table=table)


def grid_sections(cfg: LMMethodsConfig, rows: list[dict], n_models: int, canaries_text: str,
                  exposure: bool) -> tuple[list[ReportSection], str]:
    """The grid's table and figures, the comparison at matched perplexity, and its one-line summary."""
    sweep, epochs = cfg.sweep, cfg.finetune.epochs
    target, ranked = ranking(rows)
    order = ", ".join(f"{r['method']} {r[LEAK]:.1%} [{r['recall lo']:.1%}, {r['recall hi']:.1%}]" for r in ranked)
    most = highest(ranked, LEAK, "recall lo", "recall hi", "method")
    least = highest(ranked, LEAK, "recall lo", "recall hi", "method", lowest=True)
    figures = [leakage_figure(rows, sweep.attack)] + ([exposure_figure(rows, sweep.canary_references)] if exposure else [])
    sections = [
        ReportSection("Leakage vs perplexity, by fine-tuning method", [
            f"Each point is one ensemble of {n_models} tiny GPT-2s fine-tuned from the same base on the same keep-matrix, "
            f"{epochs} epoch{'s' if epochs > 1 else ''}, one method at one learning rate "
            f"({', '.join(f'{lr:g}' for lr in sweep.lrs)}). Leakage is {sweep.attack}'s recall (TPR) at 10 % and 1 % FPR "
            f"({cfg.metrics.ci_level:.0%} CIs over blocks); utility is the validation perplexity (mean over models of the "
            "held-out mean NLL, exponentiated).", canaries_text],
            table=rows, figures=figures),
        ReportSection("At matched perplexity", [
            f"Target validation perplexity {target:.2f}: the best every method reaches. Each method's least-leaking cell "
            f"at or below it, most leaking first: {order}. Most leaking method: {most}. Least leaking: {least}. "
            f"Most leaking cell overall: {highest(rows, LEAK, 'recall lo', 'recall hi', 'cell')}."],
            table=[{k: r[k] for k in ("method", "lr", "validation perplexity", LEAK, "recall lo", "recall hi", "TPR@1%FPR",
                                      "AUC", EXPOSURE, "trainable params") if k in r} for r in ranked]),
    ]
    summary = (f"At matched validation perplexity ({target:.2f}), {sweep.attack} recall at 10 % FPR: most leaking "
               f"method {most}; least leaking {least}.")
    return sections, summary


def run(cfg: LMMethodsConfig, ctx: Context) -> StudyOutput:
    ft, sweep = cfg.finetune, cfg.sweep
    with lm_threads(cfg):
        with ctx.stage("data"):  # the canaries must fit a block: known before anything trains
            tok = tokenizer_for(ctx, cfg.lm, model_name(cfg.lm, CAUSAL, "lm-methods"))[0]
            canaries = make_canaries(sweep, cfg.lm.block_len, tok, cfg.seed)
        study = setup(ctx, cfg.lm, ft, CAUSAL, "lm-methods", ft.n_models, cfg.seed,
                      spare=canaries.copies if canaries else 0)
        rows, cells, evs = run_grid(ctx, cfg, study, canaries)
        sections, summary = grid_sections(cfg, rows, ft.n_models, canary_text(ctx, sweep, study, canaries, rows, cfg.metrics),
                                          canaries is not None)
        sections.append(paired_section(cfg, rows, evs))
    # Headline: finetune.method at finetune.lr when the grid has it, else the first cell; every attack on it.
    cell = next((c for c in cells if c.method == ft.method and np.isclose(c.lr, ft.lr)), cells[0])
    request = leave_one_out_request(cell.signals, cfg.attack.names, cfg.attack.params, ft.references, cfg.attack.targets,
                                    cfg.seed, descriptions(CAUSAL))
    with ctx.stage("attacks"):
        ev = evaluate(ctx.store.metrics, request, cfg.metrics, cfg.seed)
    headline_ft = ft.model_copy(update={"method": cell.method, "lr": cell.lr})
    sections += standard_sections(study, headline_ft, ev, cfg.metrics)
    return StudyOutput(
        title=f"Which fine-tuning method of a causal LM leaks most (headline cell: {cell.name})",
        evaluation=request, member_rate=study.keep.mean(axis=0), utility=utility(study, cell, cfg.metrics),
        audit_arrays=audit_arrays(study), models=model_rows(study, cells), seeds=study.seeds, sections=sections,
        notes=[f"Attack table, ROC and exposed blocks: the headline cell {cell.name}; every cell is in the sections below.",
               summary])


STUDY = Study("lm-methods", "causal LM: full / head / adapters / LoRA × learning rates; recall at 10 % / 1 % FPR "
                            "vs validation perplexity, Pareto frontier", LMMethodsConfig, run)
