"""Text, tokenizer and the pretrained base every language-model study starts from.

* The tokenizer is trained on both corpora: every block of private text is in its training text
  whether or not a model fine-tunes on it, so it carries no membership signal, and private text
  still tokenizes well.
* The base is a tiny GPT-2 or BERT pretrained here by the engine on the public corpus (cached by
  content, so every LM study with the same ``lm`` settings shares it), or a model loaded by hub id
  or local directory with its own tokenizer.
* Tiny LMs train one model at a time (:data:`VECTORIZED`) on one torch thread (:func:`lm_threads`):
  both ran faster that way on CPU (docs/language-models.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.config import StudyConfig
from ftaudit.data.text import TextBlocks, encode, load_corpus, make_blocks
from ftaudit.data.tokenizer import MASK_ID, load_tokenizer, tokenizer_key, train_tokenizer
from ftaudit.errors import UserError
from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import get_method
from ftaudit.models.lm import LMWrapper, initial_state, lm_arch_spec, load_pretrained, tiny_bert, tiny_gpt2
from ftaudit.store.cache import content_key, state_digest
from ftaudit.studies.base import Context
from ftaudit.studies.lm.config import CAUSAL_TINY, MASKED_TINY, LMFinetuneConfig, LMTextConfig
from ftaudit.threads import torch_threads
from ftaudit.train.engine import TrainResult
from ftaudit.train.mlm import masked_lm_objective
from ftaudit.train.trainers import State
from ftaudit.wording import plural

CAUSAL, MASKED = "causal-lm", "masked-lm"
TINY = {CAUSAL: CAUSAL_TINY, MASKED: MASKED_TINY}
VECTORIZED = False  # the LM studies' trainer preference (ctx.train): the per-model loop, unless engine.vectorized is set

__all__ = ["CAUSAL", "MASKED", "TINY", "VECTORIZED", "Base", "base_model", "blocks_of", "finetune_from_base", "lm_threads", "load_base",
           "model_name", "pretrain_base", "tokenizer_for"]


def lm_threads(cfg: StudyConfig):
    """One torch thread when engine.threads is 0 (torch's default otherwise): tiny LMs are
    dispatch-bound, and a second OpenMP thread waiting for a busy core made them several times
    slower on a shared 2-core machine."""
    return torch_threads(None if cfg.engine.threads else 1)


@dataclass
class Base:
    """The pretrained model every fine-tune starts from."""

    template: LMWrapper
    state: State
    key: str  # its model-cache key (pretrained here) or the digest of its weights (loaded)
    source: str  # how it came to be, for the report
    mask_id: int

    @property
    def objective(self) -> str:
        return CAUSAL if self.template.kind == CAUSAL else masked_lm_objective(self.mask_id)

    def load(self, index: list[int]) -> list[State]:
        """Its weights once per index (the loader a signal query takes)."""
        return [self.state for _ in index]


def model_name(lm: LMTextConfig, kind: str, study: str) -> str:
    """The tiny model's name for this kind of LM, or the user's path / hub id."""
    if lm.model == "tiny":
        return TINY[kind]
    if lm.model in TINY.values() and lm.model != TINY[kind]:
        raise UserError("lm.model", f"{study} studies a {kind.replace('-lm', '')} LM, not {lm.model}",
                        f"use {TINY[kind]} (or tiny), or a {kind} checkpoint")
    return lm.model


def check_text(lm: LMTextConfig, blocks: int) -> None:
    """Refuse, before any tokenizer is trained and cached, a private corpus that cannot hold
    ``blocks`` blocks: a byte-level token covers at least one byte, so fewer bytes than the tokens
    asked for can never be enough (the exact count is checked once the text is tokenized)."""
    corpus = load_corpus(lm.finetune_corpus, field="lm.finetune_corpus")
    size = sum(len(d.encode()) for d in corpus.documents)
    if size < blocks * lm.block_len:
        raise UserError("lm.n_blocks", f"{blocks} blocks of {lm.block_len} tokens need at least {blocks * lm.block_len} "
                        f"bytes of text, {lm.finetune_corpus!r} has {size}",
                        "lower lm.n_blocks / lm.population or lm.block_len, or use a larger corpus")


def tokenizer_for(ctx: Context, lm: LMTextConfig, model: str):
    """(tokenizer, where it is saved): trained on both corpora for a tiny model, else the model's own."""
    if model in TINY.values():
        docs = list(load_corpus(lm.pretrain_corpus, field="lm.pretrain_corpus").documents)
        docs += load_corpus(lm.finetune_corpus, field="lm.finetune_corpus").documents
        cache = ctx.store.root / "cache" / "tokenizers"
        tok = train_tokenizer(docs, lm.vocab_size, cache_dir=cache)
        return tok, str(cache / tokenizer_key(docs, lm.vocab_size) / "tokenizer.json")
    return load_tokenizer(model, field="lm.model"), f"{model} (the model's own tokenizer)"


def blocks_of(corpus: str, corpus_field: str, count_field: str, tok, block_len: int, n: int, seed: int) -> TextBlocks:
    """``n`` random blocks (n <= 0: every block) of a corpus; a shortfall names ``count_field``."""
    c = load_corpus(corpus, field=corpus_field)
    if n <= 0:  # the corpus' token stream (documents joined by a blank line, as make_blocks joins them), cut up
        docs = encode(tok, list(c.documents))
        n = max(1, (sum(map(len, docs)) + len(encode(tok, ["\n\n"])[0]) * (len(docs) - 1)) // block_len)
    try:
        return make_blocks(c, tok, block_len, n, seed)
    except UserError as exc:
        if not exc.field.startswith("data."):
            raise
        raise UserError(count_field, exc.problem, "lower lm.n_blocks / lm.population / lm.pretrain_blocks or lm.block_len, "
                        "or use a larger corpus") from None


def load_base(lm: LMTextConfig, name: str, kind: str, tok, field: str = "lm.model") -> Base:
    """A checkpoint by local directory or hub id, checked against the study and the blocks."""
    model = load_pretrained(name, field=field)
    if model.kind != kind:
        raise UserError(field, f"{name!r} is a {model.kind}, this study studies a {kind}",
                        "use mlm-ratio for masked LMs and lm-mia / lm-methods / lm-extraction for causal LMs")
    positions = getattr(model.lm.config, "n_positions", None) or getattr(model.lm.config, "max_position_embeddings", None)
    if positions is not None and lm.block_len > positions:
        raise UserError("lm.block_len", f"{lm.block_len} tokens, but {name!r} takes at most {positions}",
                        f"use at most {positions}")
    if len(tok) > model.vocab_size:
        raise UserError(field, f"its tokenizer has {len(tok)} tokens but the model only {model.vocab_size}",
                        "save the model together with its own tokenizer")
    mask_id = MASK_ID
    if kind == MASKED:
        if tok.mask_token_id is None:
            raise UserError(field, f"the tokenizer of {name!r} has no mask token", "use a masked LM's tokenizer")
        mask_id = int(tok.mask_token_id)
    state = initial_state(model)
    key = content_key(arch=lm_arch_spec(model), state=state_digest(state))
    return Base(model, state, key, f"{name} (loaded, not pretrained here)", mask_id)


def tiny_template(lm: LMTextConfig, name: str, tok, seed: int | None = None) -> LMWrapper:
    """The tiny GPT-2 or BERT the ``lm`` section describes (HF's init; ``seed`` None leaves torch's RNG)."""
    build = tiny_gpt2 if name == TINY[CAUSAL] else tiny_bert
    return build(len(tok), lm.block_len, n_layer=lm.n_layer, n_embd=lm.n_embd, n_head=lm.n_head, seed=seed)


def pretrain_base(ctx: Context, lm: LMTextConfig, name: str, tok, seeds: dict, run_seed: int) -> Base:
    """A tiny GPT-2 or BERT from HF's init, pretrained by the engine on ``lm.pretrain_corpus`` (cached)."""
    model = tiny_template(lm, name, tok, seed=seeds["init"])
    blocks = blocks_of(lm.pretrain_corpus, "lm.pretrain_corpus", "lm.pretrain_blocks", tok, lm.block_len,
                       lm.pretrain_blocks, seeds["pretrain_blocks"])
    objective = CAUSAL if model.kind == CAUSAL else masked_lm_objective(MASK_ID)
    group = method_group("LM pretraining", model, lm_arch_spec(model), get_method("full"), lm.pretrain_optim, blocks,
                         [initial_state(model)], [np.arange(len(blocks))], [seeds["pretrain"]], run_seed=run_seed,
                         objective=objective)
    result = ctx.train(group, vectorized=VECTORIZED)
    source = (f"{name} ({plural(lm.n_layer, 'layer')} × {lm.n_embd}, vocab {len(tok)}) pretrained here on {len(blocks)} "
              f"blocks of {lm.pretrain_corpus}, {plural(lm.pretrain_epochs, 'epoch')}, Adam lr {lm.pretrain_lr:g}")
    return Base(model, result.states()[0], result.keys[0], source, MASK_ID)


def finetune_from_base(ctx: Context, base: Base, name: str, ft: LMFinetuneConfig, pool: TextBlocks,
                       rows: list[np.ndarray], seeds: list[int], run_seed: int) -> tuple[LMWrapper, TrainResult]:
    """Fine-tune one model per keep-row from the base with ``ft`` (method, options, recipe)."""
    group = method_group(name, base.template, lm_arch_spec(base.template), get_method(ft.method), ft.optim, pool,
                         [base.state] * len(rows), rows, seeds, run_seed=run_seed, opts=ft.options,
                         objective=base.objective)
    with ctx.stage("finetune"):
        return group.template, ctx.train(group, vectorized=VECTORIZED)


def base_model(ctx: Context, lm: LMTextConfig, name: str, kind: str, tok, seeds: dict, run_seed: int) -> Base:
    """The study's base: pretrained here for a tiny model, else loaded."""
    with ctx.stage("pretrain"):
        if name in TINY.values():
            return pretrain_base(ctx, lm, name, tok, seeds, run_seed)
        return load_base(lm, name, kind, tok)
