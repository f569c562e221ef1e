"""``tmi-text``: TMI for language models — which PRETRAINING blocks a fine-tuned LM was pretrained on.

``tmi_text.shadows`` tiny GPT-2s are each pretrained (own random init) on a random half of a pool of
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

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from ftaudit.config import OptimConfig, RunConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import TextBlocks, load_corpus, make_blocks
from ftaudit.data.tokenizer import train_tokenizer
from ftaudit.dp.spec import DPSpec, dp_spec
from ftaudit.errors import UserError
from ftaudit.finetune.methods import Method, MethodOptions, get_method, init_state
from ftaudit.metrics import mean_ci
from ftaudit.models.lm import LMWrapper, initial_state, lm_arch_spec, tiny_gpt2
from ftaudit.scenarios.base import Context, Scenario, Section, StudyOutput
from ftaudit.scenarios.tmi import dp_columns, finetune_config
from ftaudit.scenarios.tmi_sweeps import (DESCRIPTIONS, TMI, Outputs, Tuned, attack_cell, augmentation_sweep, dp_sweep,
                                          fmt, method_sweep, shadow_sweep, study_threads, summarize, verdict)
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import logit_signals
from ftaudit.signals.lm import causal_lm_signals
from ftaudit.store.cache import content_key
from ftaudit.train.engine import Job, TrainGroup, TrainResult
from ftaudit.train.trainers import State

OWN = {"finetune.method": "tmi_text.method", "finetune.epochs": "tmi_text.finetune_epochs",
       "finetune.lr": "tmi_text.lrs", "finetune.batch_size": "tmi_text.batch_size"}
HELD_OUT = 64  # held-out blocks of each corpus: the utility measurements
TEXT_DESCRIPTIONS = {
    **DESCRIPTIONS,
    TMI: "one metaclassifier per block, trained on the other shadows' IN/OUT summaries (mean, Min-20 %, median "
         "of the per-token logit-scaled probabilities, rescaled); score = mean P(IN) over the victim's A queries",
    "adapted-lira": "Gaussian likelihood ratio (IN vs OUT shadows, Ledoit-Wolf covariance) of the victim's mean "
                    "per-token logit-scaled probability of the block over the A queries",
    "global-threshold": "the victim's mean per-token logit-scaled probability of the block (a LOSS attack); no shadows",
}


def check_config(cfg: RunConfig) -> None:
    for dotted, own in OWN.items():
        section, key = dotted.split(".")
        if key in getattr(cfg, section).model_fields_set:
            raise UserError(dotted, "the tmi-text scenario does not read it", f"set {own} instead")


# ---------------------------------------------------------------------------------- the world


@dataclass
class World:
    pool: TextBlocks  # challenge points
    pool_test: TextBlocks  # held-out blocks of the pretraining corpus
    downstream: TextBlocks
    downstream_test: TextBlocks
    keep: np.ndarray  # [M, P]
    views: torch.Tensor  # [A, P, T] token ids, view 0 the blocks themselves
    views_digest: str
    vocab: int
    seeds: dict


def split_blocks(corpus_name: str, field: str, count_field: str, tok, block_len: int, n: int,
                 seed: int) -> tuple[TextBlocks, TextBlocks]:
    """``n`` random blocks and HELD_OUT further ones, disjoint."""
    try:
        blocks = make_blocks(load_corpus(corpus_name, field=field), tok, block_len, n + HELD_OUT, seed)
    except UserError as exc:
        if exc.field != "data.n_blocks":
            raise
        raise UserError(count_field, f"{exc.problem} ({n} + {HELD_OUT} held out)",
                        f"ask for fewer blocks, shorter ones (tmi_text.block_len) or another {field}") from None
    return blocks.select(np.arange(n)), blocks.select(np.arange(n, n + HELD_OUT))


def token_views(ids: torch.Tensor, n_views: int, share: float, seed: int) -> torch.Tensor:
    """[A, n, T]: the blocks, then A - 1 copies with round(share * T) random positions each replaced
    by a token drawn from the blocks' own tokens (their unigram distribution)."""
    g = torch.Generator().manual_seed(seed)
    n, t = ids.shape
    k = int(round(share * t))
    tokens = ids.reshape(-1)
    views = [ids]
    for _ in range(n_views - 1):
        v = ids.clone()
        if k:
            pos = torch.rand((n, t), generator=g).argsort(dim=1)[:, :k]
            v.scatter_(1, pos, tokens[torch.randint(len(tokens), (n, k), generator=g)])
        views.append(v)
    return torch.stack(views)


def build_world(cfg: RunConfig, ctx: Context) -> World:
    t = cfg.tmi_text
    pre_docs = load_corpus(t.pretrain_corpus, field="tmi_text.pretrain_corpus").documents
    ft_docs = load_corpus(t.finetune_corpus, field="tmi_text.finetune_corpus").documents
    tok = train_tokenizer(list(pre_docs) + list(ft_docs), t.vocab_size, cache_dir=ctx.store.root / "cache" / "tokenizers")
    pool, pool_test = split_blocks(t.pretrain_corpus, "tmi_text.pretrain_corpus", "tmi_text.pool", tok, t.block_len,
                                   t.pool, derive_seed(cfg.seed, "tmi-text-pool"))
    down, down_test = split_blocks(t.finetune_corpus, "tmi_text.finetune_corpus", "tmi_text.finetune_blocks", tok,
                                   t.block_len, t.finetune_blocks, derive_seed(cfg.seed, "tmi-text-downstream"))
    seeds = {
        "run": cfg.seed, "keep": derive_seed(cfg.seed, "tmi-text-keep"), "views": derive_seed(cfg.seed, "tmi-text-views"),
        "pretrain": [derive_seed(cfg.seed, "tmi-text-pretrain", m) for m in range(t.shadows)],
        "finetune": [derive_seed(cfg.seed, "tmi-text-finetune", m) for m in range(t.shadows)],
    }
    views = token_views(torch.from_numpy(pool.ids), t.augmentations, t.perturb, seeds["views"])
    return World(pool=pool, pool_test=pool_test, downstream=down, downstream_test=down_test,
                 keep=half_keep_matrix(t.shadows, t.pool, seeds["keep"]), views=views,
                 views_digest=content_key(views=views.numpy()), vocab=len(tok), seeds=seeds)


# ---------------------------------------------------------------------------- train and query


def lm(cfg: RunConfig, vocab: int, seed: int) -> LMWrapper:
    t = cfg.tmi_text
    return tiny_gpt2(vocab, t.block_len, n_layer=t.n_layer, n_embd=t.n_embd, n_head=t.n_head, seed=seed)


def train_lms(ctx: Context, name: str, base: LMWrapper, method: Method, opts: MethodOptions, optim: OptimConfig,
              blocks: TextBlocks, inits: list[State], rows: list[np.ndarray], seeds: list[int],
              dp: DPSpec | None = None) -> tuple[LMWrapper, TrainResult]:
    """The engine trains one causal LM per (init, rows, seed) with ``method`` (cached by content)."""
    torch.manual_seed(derive_seed(0, "method-init", method.name))
    template = method.build(base, opts)
    group = TrainGroup(
        name=name, template=template, arch=lm_arch_spec(base), method=method.name, method_options=method.spec(opts),
        trainable=method.trainable(template, opts), optim=optim, x=torch.from_numpy(blocks.x),
        y=torch.from_numpy(blocks.y), data_digest=blocks.digest(), objective="causal-lm",
        jobs=[Job(init=init_state(template, i), rows=r, seed=s) for i, r, s in zip(inits, rows, seeds)], dp=dp)
    result = ctx.engine.train(group)
    ctx.models_trained += result.trained
    ctx.models_loaded += result.loaded
    return template, result


@torch.no_grad()
def token_phi(template: LMWrapper, states: list[State], ids: torch.Tensor, chunk: int = 256) -> np.ndarray:
    """float64 [M, n, T-1]: per position, logit-scaled probability of the actual next token,
    z_y - logsumexp_{j != y} z_j (finite where log p saturates)."""
    module = copy.deepcopy(template).eval()
    out = []
    for state in states:
        rows = []
        for start in range(0, len(ids), chunk):
            x = ids[start:start + chunk]
            rows.append(logit_signals(functional_call(module, state, (x,))[:, :-1], x[:, 1:])[0])
        out.append(torch.cat(rows).numpy())
    return np.stack(out)


def query_phi(ctx: Context, template: LMWrapper, result: TrainResult, w: World) -> np.ndarray:
    """[M, P, A, T-1] for every fine-tuned LM on the views; cached per (model, views)."""
    cache = ctx.store.signals
    keys = [content_key(model=k, queries=w.views_digest, signals="token-phi-v1") for k in result.keys]
    missing = [i for i, k in enumerate(keys) if not cache.has(k, ["phi"])]
    if missing:
        a, p, t = w.views.shape
        fresh = token_phi(template, result.states(missing), w.views.reshape(a * p, t)).reshape(len(missing), a, p, t - 1)
        for j, i in enumerate(missing):
            cache.save(keys[i], {"phi": fresh[j].transpose(1, 0, 2).astype(np.float32)})
    return np.stack([cache.load(k, ["phi"])["phi"] for k in keys])


def token_summary(phi: np.ndarray) -> np.ndarray:
    """[..., T-1] per-position values -> [..., 3]: mean, mean of the lowest fifth, median (float32)."""
    low = np.sort(phi, axis=-1)[..., : max(1, phi.shape[-1] // 5)]
    return np.stack([phi.mean(-1), low.mean(-1), np.median(phi, axis=-1)], axis=-1).astype(np.float32)


def block_loss(template: LMWrapper, result: TrainResult, blocks: TextBlocks) -> np.ndarray:
    """Mean next-token loss [M, n] of every model on each block."""
    logp = causal_lm_signals(template, result.states(), blocks.ids, blocks.valid)["logp"]
    return -np.nanmean(logp, axis=2)


@dataclass
class Pretrained:
    template: LMWrapper
    result: TrainResult


def tune(ctx: Context, cfg: RunConfig, w: World, pre: Pretrained, method: str, epsilon: float | None) -> Tuned:
    t = cfg.tmi_text
    ft = finetune_config(cfg, t, method, epsilon).model_copy(update={"batch_size": t.batch_size, "augment": 0})
    dp = dp_spec(ft.dp, len(w.downstream), ft.batch_size, ft.epochs,
                 field="tmi_text.epsilons" if epsilon else "finetune.dp")
    label = f"TMI-text fine-tune ({method}{'' if dp is None else f', DP ε={ft.dp.epsilon:g}'})"
    states = pre.result.states()
    with ctx.stage("finetune"):
        template, result = train_lms(ctx, label, pre.template, get_method(method), MethodOptions.from_config(ft), ft,
                                     w.downstream, states, [np.arange(len(w.downstream))] * len(states),
                                     w.seeds["finetune"], dp)
    with ctx.stage("queries"):
        phi = query_phi(ctx, template, result, w)
        loss = block_loss(template, result, w.downstream_test).mean(axis=1)
    est = mean_ci(loss, level=cfg.metrics.ci_level, seed=cfg.seed)
    columns = {"downstream held-out loss": fmt(est, False), **dp_columns(result.dp)}
    return Tuned(outputs=Outputs(token_summary(phi), kind="token-summary"), columns=columns, utility=est,
                 utility_label="downstream held-out loss (nats)")


# ------------------------------------------------------------------------------------ report


def utility(cfg: RunConfig, w: World, pre: Pretrained, tuned_loss: dict) -> list[dict]:
    """Pretraining losses on members, non-members and held-out blocks (how much the shadows memorized),
    and the fine-tuned LMs' held-out loss on the downstream corpus."""
    t, keep = cfg.tmi_text, w.keep
    pool_loss = block_loss(pre.template, pre.result, w.pool)
    test_loss = block_loss(pre.template, pre.result, w.pool_test).mean(axis=1)
    per_model = lambda mask: np.array([pool_loss[m, mask[m]].mean() for m in range(len(keep))])  # noqa: E731
    rows = [(per_model(keep), "pretrained: loss on its own pool blocks (members)"),
            (per_model(~keep), "pretrained: loss on the other pool blocks (non-members)"),
            (test_loss, f"pretrained: loss on {HELD_OUT} held-out {t.pretrain_corpus} blocks")]
    out = [{**mean_ci(v, level=cfg.metrics.ci_level, seed=cfg.seed), "name": name,
            "note": f"mean next-token cross-entropy (nats), mean over {len(v)} shadows (CI over shadows)"}
           for v, name in rows]
    before = block_loss(pre.template, pre.result, w.downstream_test).mean(axis=1)
    out.append({**mean_ci(before, level=cfg.metrics.ci_level, seed=cfg.seed),
                "name": f"pretrained, before fine-tuning: loss on {HELD_OUT} held-out {t.finetune_corpus} blocks",
                "note": "the reference for the fine-tuned losses below and in the sweeps"})
    out.append({**tuned_loss, "name": f"fine-tuned ({t.method}): loss on {HELD_OUT} held-out {t.finetune_corpus} blocks",
                "note": "mean next-token cross-entropy (nats) over shadows (CI over shadows)"})
    return out


def exposed_section(w: World, pooled, k: int = 10) -> Section:
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
    return Section("Most exposed pretraining blocks (TMI)", [
        "Ranked by the share of victims that held the block whose TMI score exceeds the 1 %-FPR threshold of "
        "all non-member rows, ties by the mean member score."], rows)


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_config(cfg)
    with study_threads(cfg):
        return study(cfg, ctx)


def study(cfg: RunConfig, ctx: Context) -> StudyOutput:
    t = cfg.tmi_text
    with ctx.stage("data"):
        w = build_world(cfg, ctx)
    with ctx.stage("pretrain"):
        base = lm(cfg, w.vocab, 0)
        inits = [initial_state(lm(cfg, w.vocab, s)) for s in w.seeds["pretrain"]]
        optim = OptimConfig(optimizer="adam", lr=t.pretrain_lr, epochs=t.pretrain_epochs, batch_size=t.batch_size)
        full = get_method("full")
        template, result = train_lms(ctx, "TMI-text shadow pretraining", base, full, MethodOptions(), optim, w.pool,
                                     inits, [np.flatnonzero(r) for r in w.keep], w.seeds["pretrain"])
    pre = Pretrained(template, result)
    headline = tune(ctx, cfg, w, pre, t.method, None)
    victims = list(range(t.victims or t.shadows))
    with ctx.stage("attacks"):
        pooled = attack_cell(ctx, cfg, t, headline.outputs, w.keep, victims)
        attacks = summarize(ctx, cfg, pooled)
    sections = [exposed_section(w, pooled)]
    with ctx.stage("sweeps"):
        retune = lambda method, eps: tune(ctx, cfg, w, pre, method, eps)  # noqa: E731
        if t.shadow_counts:
            sections.append(shadow_sweep(ctx, cfg, t, headline.outputs, w.keep))
        if t.methods:
            sections.append(method_sweep(ctx, cfg, t, w.keep, retune))
        if t.epsilons:
            sections.append(dp_sweep(ctx, cfg, t, w.keep, retune, headline.outputs))
        if t.augmentation_counts:
            sections.append(augmentation_sweep(ctx, cfg, t, headline.outputs, w.keep))
    with ctx.stage("utility"):
        util = utility(cfg, w, pre, headline.utility)
    models = [("pretrain", m, key, s) for m, (key, s) in enumerate(zip(result.keys, w.seeds["pretrain"]))]
    return StudyOutput(
        title=f"TMI on text: pretraining membership of {t.pretrain_corpus} blocks through a GPT-2 fine-tuned on "
              f"{t.finetune_corpus} ({t.n_layer}×{t.n_embd}, {t.shadows} shadows, fine-tuning {t.method})",
        signals=None, references=t.shadows - 1, utility=util, audit_arrays={}, models=models, seeds=w.seeds,
        sections=sections, pooled=pooled, descriptions=TEXT_DESCRIPTIONS, member_rate=w.keep.mean(axis=0),
        notes=[f"Challenge points: {t.pool} blocks of {t.block_len} tokens; each of {len(victims)} victims is attacked "
               f"with the other {t.shadows - 1} shadows; {t.augmentations} queries per block ({t.perturb:.0%} of the "
               "tokens replaced in each view after the first).", verdict(attacks)])


SCENARIO = Scenario("tmi-text", "TMI on text: membership of the PRETRAINING blocks of a tiny GPT-2, from queries to "
                                "its fine-tuned version (sweeps over shadows, method, DP ε, queries)", run)
