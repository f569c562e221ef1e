"""The world of ``tmi-text`` — corpora cut into blocks, the keep-matrix over the pool, the query views —
and what the attacker reads from a language model: per-token logit-scaled probabilities of the
block's next tokens (:func:`token_phi`), summarized per query (:func:`token_summary`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import TextBlocks, load_corpus, make_blocks
from ftaudit.data.tokenizer import train_tokenizer
from ftaudit.errors import UserError
from ftaudit.models.lm import LMWrapper, tiny_gpt2
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import logit_signals
from ftaudit.signals.jobs import SignalJob
from ftaudit.signals.lm import causal_lm_signals
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context
from ftaudit.studies.tmi.common import template_arch
from ftaudit.studies.tmi.config import TMITextStudyConfig
from ftaudit.train.trainers import State

HELD_OUT = 64  # held-out blocks of each corpus: the utility measurements


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
                        f"ask for fewer blocks, shorter ones (tmi.block_len) or another {field}") from None
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


def build_world(cfg: TMITextStudyConfig, ctx: Context) -> World:
    t = cfg.tmi
    pre_docs = load_corpus(t.pretrain_corpus, field="tmi.pretrain_corpus").documents
    ft_docs = load_corpus(t.finetune_corpus, field="tmi.finetune_corpus").documents
    tok = train_tokenizer(list(pre_docs) + list(ft_docs), t.vocab_size, cache_dir=ctx.store.root / "cache" / "tokenizers")
    pool, pool_test = split_blocks(t.pretrain_corpus, "tmi.pretrain_corpus", "tmi.pool", tok, t.block_len,
                                   t.pool, derive_seed(cfg.seed, "tmi-text-pool"))
    down, down_test = split_blocks(t.finetune_corpus, "tmi.finetune_corpus", "tmi.finetune_blocks", tok,
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


# ------------------------------------------------------------------------- models and signals


def lm(cfg: TMITextStudyConfig, vocab: int, seed: int) -> LMWrapper:
    t = cfg.tmi
    return tiny_gpt2(vocab, t.block_len, n_layer=t.n_layer, n_embd=t.n_embd, n_head=t.n_head, seed=seed)


@torch.no_grad()
def token_phi(template: LMWrapper, states: list[State], ids: torch.Tensor, chunk: int = 256,
              device=None) -> np.ndarray:
    """float64 [M, n, T-1]: per position, logit-scaled probability of the actual next token,
    z_y - logsumexp_{j != y} z_j (finite where log p saturates); the models run on ``device``."""
    device = torch.device(device or "cpu")
    module = copy.deepcopy(template).eval().to(device)
    out = []
    for state in states:
        state = {n: t.to(device) for n, t in state.items()}
        rows = []
        for start in range(0, len(ids), chunk):
            x = ids[start:start + chunk]
            rows.append(logit_signals(functional_call(module, state, (x.to(device),))[:, :-1].cpu(), x[:, 1:])[0])
        out.append(torch.cat(rows).numpy())
    return np.stack(out)


def query_phi(ctx: Context, template: LMWrapper, keys: list[str], load_states, views: torch.Tensor,
              views_digest: str) -> np.ndarray:
    """:func:`token_phi` [M, P, A, T-1] (float32) of every model (by cache key) on the views [A, P, T];
    cached per (model, architecture, views)."""
    arch = template_arch(template)
    skeys = [ctx.signal_key(model=k, arch=arch, queries=views_digest, signals="token-phi-v3") for k in keys]
    a, p, t = views.shape
    inputs = {"ids": views.reshape(a * p, t)}

    def split(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:  # [m, A*P, T-1] -> m x [P, A, T-1]
        return [{"phi": f.reshape(a, p, t - 1).transpose(1, 0, 2).astype(np.float32)} for f in arrays["phi"]]

    entries = ctx.query(skeys, lambda idx: SignalJob("token-phi", template, load_states(idx), inputs), split)
    return np.stack([e["phi"] for e in entries])


def phi_job(template: LMWrapper, states: list[State], inputs: dict[str, torch.Tensor], device) -> dict[str, np.ndarray]:
    """The ``token-phi`` signal job (:mod:`ftaudit.signals.jobs`): :func:`token_phi` of ``inputs["ids"]``."""
    return {"phi": token_phi(template, states, inputs["ids"], device=device)}


def token_summary(phi: np.ndarray) -> np.ndarray:
    """[..., T-1] per-position values -> [..., 3]: mean, mean of the lowest fifth, median (float32)."""
    low = np.sort(phi, axis=-1)[..., : max(1, phi.shape[-1] // 5)]
    return np.stack([phi.mean(-1), low.mean(-1), np.median(phi, axis=-1)], axis=-1).astype(np.float32)


def block_loss(template: LMWrapper, states: list[State], blocks: TextBlocks, device=None) -> np.ndarray:
    """Mean next-token loss [M, n] of every model on each block (the models run on ``device``)."""
    logp = causal_lm_signals(template, states, blocks.ids, blocks.valid, device=device)["logp"]
    return -np.nanmean(logp, axis=2)
