"""``lm-methods``: which way of fine-tuning a causal LM leaks most, at what perplexity.

The study compared full, head-only and adapter fine-tuning of GPT-2 by membership inference (the
likelihood ratio to the pretrained model, recall at 10 % FPR) and found head-only leaked most.
Here every method of ``lm.methods`` is fine-tuned at every learning rate of ``lm.lrs`` from the
same tiny base on the same keep-matrix (one ensemble per cell). Each cell's leakage is
``lm.method_attack``'s recall at 10 % and 1 % FPR (leave-one-out, bootstrap CIs); its utility is
the validation perplexity on held-out blocks. The report draws leakage against perplexity with the
Pareto frontier and compares methods at matched perplexity. Every model also trains on
``lm.canaries`` canaries (Carlini et al. 2019), each ``lm.canary_repeats`` times, so each cell also
gets a canary exposure: how far the inserted secrets rank ahead of never-inserted ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.canaries import (CanaryFormat, draw_secrets, rank_exposure, secret_log_perplexity,
                                      skewnorm_exposure, tokenize_canaries)
from ftaudit.attacks.registry import ATTACKS
from ftaudit.config import RunConfig
from ftaudit.data.text import TextBlocks
from ftaudit.errors import UserError
from ftaudit.metrics import mean_ci
from ftaudit.metrics.pareto import matched, pareto_front
from ftaudit.scenarios.base import Context, Figure, Scenario, Section, Series, StudyOutput
from ftaudit.scenarios.evaluate import Evaluation, evaluate_signals
from ftaudit.scenarios.lm_study import (CAUSAL, LMCell, LMStudy, attack_names, audit_arrays, check_config, descriptions,
                                        exposed_section, finetune_cell, finetune_recipe, lm_threads, model_kind_check,
                                        model_rows, perplexity, setup, setup_section, tokenizer_for, utility)
from ftaudit.seeding import derive_seed

RECALL_FPR, LOW_FPR = 0.1, 0.01
LEAK = "recall@10%FPR"
EXPOSURE = "canary exposure (rank, bits)"


def check_attack(cfg: RunConfig) -> None:
    name = cfg.lm.method_attack
    if name not in ATTACKS:
        raise UserError("lm.method_attack", f"unknown attack {name!r}", "use lm-ratio (the study's), loss, min-k++, "
                        "lira-online-global, …")


@dataclass
class Canaries:
    """Canaries to insert and the probe set their exposure is read from."""

    probe: TextBlocks  # the inserted canaries, then the never-inserted reference secrets
    start: int  # tokens of the shared prefix: the secret follows
    inserted: int
    repeats: int

    @property
    def copies(self) -> int:
        return self.inserted * self.repeats

    def training_rows(self, hosts: TextBlocks) -> TextBlocks:
        """Each canary ``repeats`` times, each copy written over the start of its own host block of
        private text: canary rows are ordinary blocks, so the canaries' tokens are a small part of
        the training loss, as in the Secret Sharer (canaries among ordinary sentences)."""
        copies = np.repeat(np.arange(self.inserted), self.repeats)
        ids = hosts.ids.copy()
        for row, c in enumerate(copies):
            tokens = self.probe.ids[c, self.probe.valid[c]]
            ids[row, :len(tokens)] = tokens
        return TextBlocks(ids, hosts.valid.copy(), tuple(self.probe.texts[c] + " …" for c in copies), hosts.source,
                          hosts.mode, hosts.pad_id)


def make_canaries(cfg: RunConfig, tok) -> Canaries | None:
    """lm.canaries random secrets to insert and lm.canary_references to compare them with (None: off)."""
    lm = cfg.lm
    if not lm.canaries:
        return None
    fmt = CanaryFormat()
    seed = derive_seed(cfg.seed, "lm-methods", "canaries")
    secrets = draw_secrets(lm.canaries + lm.canary_references, fmt.digits, seed, field="lm.canary_references")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0  # as make_blocks pads
    probe = tokenize_canaries(tok, fmt, secrets, pad_id=pad, field="lm.canaries")
    width, t = probe.ids.shape[1], lm.block_len
    if width > t:
        raise UserError("lm.block_len", f"a canary takes {width} tokens, a block {t}", f"use lm.block_len >= {width}")
    blocks = TextBlocks(probe.ids, probe.valid, tuple(fmt.text(s) for s in secrets), np.arange(len(secrets)), "documents", pad)
    return Canaries(blocks, probe.start, lm.canaries, lm.canary_repeats)


def exposures(ctx: Context, study: LMStudy, canaries: Canaries, template, keys, load) -> dict[str, np.ndarray]:
    """Rank and skew-normal exposure (bits) [M, inserted] of each model's inserted canaries."""
    logp = study.query(ctx, template, keys, load, canaries.probe, ["logp"])["logp"]
    bits = secret_log_perplexity(logp, canaries.start)  # [M, inserted + references]
    k = canaries.inserted
    return {"rank": np.stack([rank_exposure(b[:k], b[k:]) for b in bits]),
            "skew-normal": np.stack([skewnorm_exposure(b[:k], b[k:]) for b in bits])}


def exposure_columns(exp: dict[str, np.ndarray], cfg: RunConfig) -> dict:
    """Mean exposure of the inserted canaries (mean over models first), CI over canaries."""
    rank = mean_ci(exp["rank"].mean(axis=0), level=cfg.metrics.ci_level, seed=cfg.seed)
    skew = mean_ci(exp["skew-normal"].mean(axis=0), level=cfg.metrics.ci_level, seed=cfg.seed)
    return {"canary exposure (rank, bits)": rank["value"], "exposure lo": rank["lo"], "exposure hi": rank["hi"],
            "canary exposure (skew-normal, bits)": skew["value"]}


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


def exposure_figure(rows: list[dict], references: int) -> Figure:
    series = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        series.append(Series(name, [r["validation perplexity"] for r in mine], [r[EXPOSURE] for r in mine],
                             lo=[r["exposure lo"] for r in mine], hi=[r["exposure hi"] for r in mine], style="points"))
    return Figure("Canary exposure vs perplexity", "validation perplexity (held-out blocks; lower is better)",
                  "rank exposure (bits)", series,
                  caption=f"Bars: bootstrap CIs over canaries. A never-seen secret has expected exposure 1/ln 2 ≈ 1.44 "
                          f"bits; the most a canary can reach against {references} references is "
                          f"{np.log2(references + 1):.2f} bits.")


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


def run_grid(ctx: Context, cfg: RunConfig, study: LMStudy, canaries: Canaries | None) -> tuple[list[dict], list[LMCell]]:
    """One ensemble per (method, learning rate), each measured by lm.method_attack and its canaries."""
    lm, rows, cells = cfg.lm, [], []
    metrics = cfg.metrics.model_copy(update={"fprs": sorted(set(cfg.metrics.fprs) | {LOW_FPR, RECALL_FPR})})
    canary_rows = canaries.training_rows(study.spare) if canaries else None
    recipe = finetune_recipe(cfg, CAUSAL)
    for method in lm.methods:
        for lr in lm.lrs:
            cell = finetune_cell(ctx, study, recipe.model_copy(update={"method": method, "lr": lr}), f"{method} lr={lr:g}",
                                 canary_rows)
            with ctx.stage("attacks"):
                ev = evaluate_signals(ctx.store.metrics, cell.signals, [lm.method_attack], cfg.attack.params,
                                      lm.method_references, metrics, cfg.seed)
            row = cell_row(cfg, cell, ev)
            if canaries:
                with ctx.stage("signals"):
                    row.update(exposure_columns(exposures(ctx, study, canaries, cell.template, cell.result.keys,
                                                          cell.result.states), cfg))
            rows.append(row)
            cells.append(cell)
    front = set(pareto_front([-r["validation perplexity"] for r in rows], [r[LEAK] for r in rows]).tolist())
    for i, r in enumerate(rows):
        r["on frontier"] = "yes" if i in front else ""
    return rows, cells


def canary_text(ctx: Context, cfg: RunConfig, study: LMStudy, canaries: Canaries | None, rows: list[dict]) -> str:
    """What the exposure column means, with the base (which never saw the canaries) as the control."""
    lm = cfg.lm
    if not canaries:
        return "No canaries (lm.canaries = 0): no exposure column."
    base = study.base
    with ctx.stage("signals"):
        control = exposure_columns(exposures(ctx, study, canaries, base.template, [base.key],
                                             lambda idx: [base.state for _ in idx]), cfg)
    top = max(rows, key=lambda r: r[EXPOSURE])
    return (f"Canary exposure: every model also trained on {lm.canaries} canaries (\"{CanaryFormat().prefix} "
            f"<6 random digits>\"), each {lm.canary_repeats} times, each copy written over the start of its own extra "
            "block of private text (not an audit block). Rank exposure = log2(|R|) − log2(rank) of the secret's "
            f"log-perplexity among {lm.canary_references} never-inserted secrets (at most "
            f"{np.log2(lm.canary_references + 1):.2f} bits); the skew-normal estimate extrapolates past the references. "
            "Mean over models, then over canaries (CI over canaries). The pretrained base, which never saw them, is the "
            f"control: {control[EXPOSURE]:.2f} bits [{control['exposure lo']:.2f}, {control['exposure hi']:.2f}]. "
            f"Highest: {top['method']} lr={top['lr']:g}, {top[EXPOSURE]:.2f} bits.")


def grid_sections(cfg: RunConfig, rows: list[dict], n_models: int, canaries_text: str, exposure: bool) -> list[Section]:
    lm = cfg.lm
    target, ranked = ranking(rows)
    order = ", ".join(f"{r['method']} {r[LEAK]:.1%} [{r['recall lo']:.1%}, {r['recall hi']:.1%}]" for r in ranked)
    most = max(rows, key=lambda r: r[LEAK])
    epochs = f"{lm.finetune_epochs} epoch{'s' if lm.finetune_epochs > 1 else ''}"
    figures = [leakage_figure(rows, lm.method_attack)] + ([exposure_figure(rows, lm.canary_references)] if exposure else [])
    return [
        Section("Leakage vs perplexity, by fine-tuning method", [
            f"Each point is one ensemble of {n_models} tiny GPT-2s fine-tuned from the same base on the same keep-matrix, "
            f"{epochs}, one method at one learning rate ({', '.join(f'{lr:g}' for lr in lm.lrs)}). Leakage is "
            f"{lm.method_attack}'s recall (TPR) at 10 % and 1 % FPR (95 % CIs over blocks); utility is the validation "
            "perplexity (mean over models of the held-out mean NLL, exponentiated).", canaries_text],
            table=rows, figures=figures),
        Section("At matched perplexity", [
            f"Target validation perplexity {target:.2f}: the best every method reaches. Each method's least-leaking cell "
            f"at or below it, most leaking first: {order}. Most leaking cell overall: {most['method']} lr={most['lr']:g} "
            f"({most[LEAK]:.1%} at 10 % FPR)."],
            table=[{k: r[k] for k in ("method", "lr", "validation perplexity", LEAK, "recall lo", "recall hi", "TPR@1%FPR",
                                      "AUC", EXPOSURE, "trainable params") if k in r} for r in ranked]),
    ]


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_attack(cfg)
    lm = cfg.lm
    n_models = lm.method_references + 1 + (lm.method_references + 1) % 2
    with lm_threads(cfg):
        check_config(cfg, "lm-methods")
        with ctx.stage("data"):  # the canaries must fit a block: known before anything trains
            canaries = make_canaries(cfg, tokenizer_for(ctx, cfg, model_kind_check(cfg, CAUSAL, "lm-methods"))[0])
        study = setup(cfg, ctx, CAUSAL, "lm-methods", n_models, spare=canaries.copies if canaries else 0)
        rows, cells = run_grid(ctx, cfg, study, canaries)
        sections = grid_sections(cfg, rows, n_models, canary_text(ctx, cfg, study, canaries, rows), canaries is not None)
    # Headline: finetune.method at lm.finetune_lr when the grid has it, else the first cell; every attack on it.
    recipe = finetune_recipe(cfg, CAUSAL)
    cell = next((c for c in cells if c.method == recipe.method and np.isclose(c.lr, recipe.lr)), cells[0])
    with ctx.stage("attacks"):
        ev = evaluate_signals(ctx.store.metrics, cell.signals, attack_names(cfg, CAUSAL), cfg.attack.params,
                              lm.method_references, cfg.metrics, cfg.seed, cfg.attack.targets)
    sections.append(setup_section(study, recipe))
    if cfg.metrics.exposed:
        sections.append(exposed_section(study, ev.pooled, ev.best["name"], cfg.metrics.exposed))
    target, ranked = ranking(rows)
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
