"""``tmi-text``: TMI for language models — which PRETRAINING blocks a fine-tuned LM was pretrained on.

``tmi.shadows`` tiny GPT-2s are each pretrained (own random init) on a random half of a pool of
fixed-length token blocks of one corpus (the challenge points, under their own keep-matrix), then
fine-tuned on blocks of another corpus. The adversary queries a fine-tuned LM on A views of each
pool block (the block itself, then copies with a share of tokens replaced by random ones) and reads,
per position, the logit-scaled probability of the block's actual next token. Their summary — mean,
mean of the lowest fifth (Min-K %), median — is a K = 3 vector per query, the role a classifier's K
class outputs play in the study. TMI trains one metaclassifier per block on those vectors; the
baselines use the mean alone (a LOSS-like confidence). Why a summary rather than the T - 1
per-position values, and why more metaclassifier epochs than the study's 20: docs/tmi.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.attacks.tmi import ADAPTED_LIRA, GLOBAL_THRESHOLD, TMI
from ftaudit.config import OptimConfig
from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import get_method
from ftaudit.metrics import mean_ci
from ftaudit.models.lm import LMWrapper, initial_state, lm_arch_spec
from ftaudit.report.blocks import ReportSection
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.tmi.common import dp_columns, finetune_recipe
from ftaudit.studies.tmi.config import TMITextStudyConfig
from ftaudit.studies.tmi.scoring import DESCRIPTIONS, Outputs, Scorer, fmt, study_threads, verdict
from ftaudit.studies.tmi.sweeps import Tuned, all_sweeps
from ftaudit.studies.tmi.text_world import HELD_OUT, World, block_loss, build_world, lm, query_phi, token_summary
from ftaudit.train.engine import TrainResult

TEXT_DESCRIPTIONS = {
    **DESCRIPTIONS,
    TMI: "one metaclassifier per block, trained on the other shadows' IN/OUT summaries (mean, Min-20 %, median "
         "of the per-token logit-scaled probabilities, rescaled); score = mean P(IN) over the victim's A queries",
    ADAPTED_LIRA: "Gaussian likelihood ratio (IN vs OUT shadows, Ledoit-Wolf covariance) of the victim's mean "
                  "per-token logit-scaled probability of the block over the A queries",
    GLOBAL_THRESHOLD: "the victim's mean per-token logit-scaled probability of the block (a LOSS attack); no shadows",
}


@dataclass
class Pretrained:
    template: LMWrapper
    result: TrainResult


def pretrain(ctx: Context, cfg: TMITextStudyConfig, w: World) -> Pretrained:
    """Every shadow LM from its own random init on its half of the pool (cached by content)."""
    t = cfg.tmi
    base = lm(cfg, w.vocab, 0)
    inits = [initial_state(lm(cfg, w.vocab, s)) for s in w.seeds["pretrain"]]
    optim = OptimConfig(optimizer="adam", lr=t.pretrain_lr, epochs=t.pretrain_epochs, batch_size=t.batch_size)
    group = method_group("TMI-text shadow pretraining", base, lm_arch_spec(base), get_method("full"), optim, w.pool,
                         inits, [np.flatnonzero(r) for r in w.keep], w.seeds["pretrain"], run_seed=cfg.seed,
                         objective="causal-lm")
    return Pretrained(group.template, ctx.train(group))


def tune(ctx: Context, cfg: TMITextStudyConfig, w: World, pre: Pretrained, method: str, epsilon: float | None) -> Tuned:
    """Fine-tune every shadow LM with ``method`` (DP at ``epsilon``), query it, and measure its held-out loss."""
    r = finetune_recipe(cfg, method, epsilon, len(w.downstream), cfg.tmi.batch_size, augment=0)
    label = f"TMI-text fine-tune ({method}{'' if r.dp is None else f', DP ε={r.dp.epsilon:g}'})"
    states = pre.result.states()
    with ctx.stage("finetune"):
        group = method_group(label, pre.template, lm_arch_spec(pre.template), get_method(method), r.optim,
                             w.downstream, states, [np.arange(len(w.downstream))] * len(states), w.seeds["finetune"],
                             run_seed=cfg.seed, opts=r.opts, objective="causal-lm", dp=r.dp)
        result = ctx.train(group)
    template = group.template
    with ctx.stage("queries"):
        phi = query_phi(ctx, template, result.keys, result.states, w.views, w.views_digest)
        loss = block_loss(template, result.states(), w.downstream_test, ctx.engine.placement.device).mean(axis=1)
    est = mean_ci(loss, level=cfg.metrics.ci_level, seed=cfg.seed)
    columns = {"downstream held-out loss": fmt(est), **dp_columns(result.dp)}
    return Tuned(outputs=Outputs(token_summary(phi), kind="token-summary"), columns=columns, utility=est,
                 utility_label="downstream held-out loss (nats)")


# ------------------------------------------------------------------------------------ report


def utility(cfg: TMITextStudyConfig, w: World, pre: Pretrained, tuned_loss: dict, device=None) -> list[dict]:
    """Pretraining losses on members, non-members and held-out blocks (how much the shadows memorized),
    and the fine-tuned LMs' held-out loss on the downstream corpus."""
    t, keep = cfg.tmi, w.keep
    states = pre.result.states()
    pool_loss = block_loss(pre.template, states, w.pool, device)
    test_loss = block_loss(pre.template, states, w.pool_test, device).mean(axis=1)
    per_model = lambda mask: np.array([pool_loss[m, mask[m]].mean() for m in range(len(keep))])  # noqa: E731
    rows = [(per_model(keep), "pretrained: loss on its own pool blocks (members)"),
            (per_model(~keep), "pretrained: loss on the other pool blocks (non-members)"),
            (test_loss, f"pretrained: loss on {HELD_OUT} held-out {t.pretrain_corpus} blocks")]
    out = [{**mean_ci(v, level=cfg.metrics.ci_level, seed=cfg.seed), "name": name,
            "note": f"mean next-token cross-entropy (nats), mean over {len(v)} shadows (CI over shadows)"}
           for v, name in rows]
    before = block_loss(pre.template, states, w.downstream_test, device).mean(axis=1)
    out.append({**mean_ci(before, level=cfg.metrics.ci_level, seed=cfg.seed),
                "name": f"pretrained, before fine-tuning: loss on {HELD_OUT} held-out {t.finetune_corpus} blocks",
                "note": "the reference for the fine-tuned losses below and in the sweeps"})
    out.append({**tuned_loss, "name": f"fine-tuned ({t.method}): loss on {HELD_OUT} held-out {t.finetune_corpus} blocks",
                "note": "mean next-token cross-entropy (nats) over shadows (CI over shadows)"})
    return out


def exposed_section(w: World, pooled: PooledScores, k: int = 10) -> ReportSection:
    """The pool blocks TMI finds most often when they are members (at the 1 %-FPR threshold of all
    non-member rows), with their text."""
    s, labels, ex = pooled.scores[TMI], pooled.labels, pooled.example
    threshold = np.quantile(s[~labels], 0.99)
    n = len(w.pool)
    hits = np.bincount(ex[labels], weights=s[labels] > threshold, minlength=n)
    count = np.maximum(np.bincount(ex[labels], minlength=n), 1)
    mean = np.bincount(ex[labels], weights=s[labels], minlength=n) / count
    order = np.lexsort((-mean, -hits / count))[:k]
    rows = [{"block": int(i), "found as member at 1% FPR": f"{hits[i] / count[i]:.0%}",
             "mean TMI score as member": f"{mean[i]:.3f}", "text": w.pool.texts[i].replace("\n", " ⏎ ")} for i in order]
    return ReportSection("Most exposed pretraining blocks (TMI)", [
        "Ranked by the share of victims that held the block whose TMI score exceeds the 1 %-FPR threshold of "
        "all non-member rows, ties by the mean member score."], rows)


def run(cfg: TMITextStudyConfig, ctx: Context) -> StudyOutput:
    with study_threads(cfg):
        return study(cfg, ctx)


def study(cfg: TMITextStudyConfig, ctx: Context) -> StudyOutput:
    t = cfg.tmi
    with ctx.stage("data"):
        w = build_world(cfg, ctx)
    with ctx.stage("pretrain"):
        pre = pretrain(ctx, cfg, w)
    headline = tune(ctx, cfg, w, pre, t.method, None)
    victims = list(range(t.victims or t.shadows))
    scorer = Scorer(ctx, cfg, TEXT_DESCRIPTIONS)
    with ctx.stage("attacks"):
        request = scorer.request(headline.outputs, w.keep, victims)
        ev = scorer.evaluate(request)  # the pipeline reuses these scores (the request keeps them)
    sections = [exposed_section(w, ev.pooled)]
    with ctx.stage("sweeps"):
        retune = lambda method, eps: tune(ctx, cfg, w, pre, method, eps)  # noqa: E731
        sections += all_sweeps(scorer, t, headline.outputs, w.keep, retune)
    with ctx.stage("utility"):
        util = utility(cfg, w, pre, headline.utility, ctx.engine.placement.device)
    models = [("pretrain", m, key, s) for m, (key, s) in enumerate(zip(pre.result.keys, w.seeds["pretrain"]))]
    return StudyOutput(
        title=f"TMI on text: pretraining membership of {t.pretrain_corpus} blocks through a GPT-2 fine-tuned on "
              f"{t.finetune_corpus} ({t.n_layer}×{t.n_embd}, {t.shadows} shadows, fine-tuning {t.method})",
        evaluation=request, member_rate=w.keep.mean(axis=0), utility=util, audit_arrays={}, models=models,
        seeds=w.seeds, sections=sections,
        notes=[f"Challenge points: {t.pool} blocks of {t.block_len} tokens; each of {len(victims)} victims is attacked "
               f"with the other {t.shadows - 1} shadows; {t.augmentations} queries per block ({t.perturb:.0%} of the "
               "tokens replaced in each view after the first).", verdict(ev)])


STUDY = Study("tmi-text", "TMI on text: membership of the PRETRAINING blocks of a tiny GPT-2, from queries to "
                          "its fine-tuned version (sweeps over shadows, method, DP ε, queries)", TMITextStudyConfig, run)
