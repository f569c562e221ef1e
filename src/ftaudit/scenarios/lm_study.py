"""The language-model study shared by ``lm-mia``, ``mlm-ratio`` and ``lm-methods``.

Text → a locally trained tokenizer → fixed-length blocks (the membership unit) → a half keep-matrix
over the audit blocks → a pretrained base (a tiny GPT-2/BERT pretrained here on another corpus, or
a model by hub id / local directory) → ensembles fine-tuned from it by the engine ("cells") →
per-token signals, computed once per (model, block set) and cached → a :class:`SignalSet` whose
``scores`` hold the LM attacks and whose block-level NLL feeds LOSS, LiRA and RMIA.

Why the pieces are as they are:

* the tokenizer is trained on both corpora: every audit block is in its text whether or not a
  model trains on it, so it carries no membership signal, and private text still tokenizes well;
* the reference of the ratio attacks is the pretrained base (free to an attacker: it is public),
  plus by default a model fine-tuned from the base on *disjoint* blocks of the private corpus — the
  reference the MLM study found strongest;
* masked LMs score blocks by pseudo-log-likelihood (one forward per token): it is the expensive
  signal, so it is computed on the audit blocks only; the held-out population gets the cheap
  random-masking loss, which is what RMIA and the validation numbers need.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ftaudit.attacks.lm import lm_score_set, mean_nll, mlm_ratio_score, ratio_score, sequence_signals
from ftaudit.attacks.registry import ATTACKS, register_precomputed
from ftaudit.config import FinetuneConfig, OptimConfig, RunConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import TextBlocks, encode, load_corpus, make_blocks
from ftaudit.data.tokenizer import MASK_ID, load_tokenizer, tokenizer_digest, tokenizer_key, train_tokenizer
from ftaudit.errors import UserError
from ftaudit.finetune.methods import Method, MethodOptions, get_method, init_state
from ftaudit.metrics import mean_ci
from ftaudit.models.lm import LMWrapper, initial_state, lm_arch_spec, load_pretrained, tiny_bert, tiny_gpt2
from ftaudit.scenarios.base import Context, Section
from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet
from ftaudit.signals.lm import CAUSAL_SIGNALS, causal_lm_signals, masked_lm_loss, pseudo_log_likelihood
from ftaudit.store.cache import content_key, state_digest
from ftaudit.train.engine import Engine, Job, TrainGroup, TrainResult
from ftaudit.train.mlm import MASK_RATE, masked_lm_objective
from ftaudit.train.trainers import State

CAUSAL, MASKED = "causal-lm", "masked-lm"
TINY = {CAUSAL: "tiny-gpt2", MASKED: "tiny-bert"}
SIGNALS_VERSION = "lm-signals-v1"  # bump when a signal's definition changes: cached signals stop matching
BUDGET = 1 << 20  # logits per forward chunk: 8 MB in float64 stays in cache (3x faster than 1 << 24 here)
PLL_BUDGET = 1 << 22  # PLL keeps one position's logits per row, so larger chunks pay (1.3x faster than 1 << 20)

# Recipe keys the LM scenarios take from ``lm`` instead (text needs other values than digits).
OWN = {"finetune.epochs": "lm.finetune_epochs / lm.mlm_epochs", "finetune.lr": "lm.finetune_lr",
       "finetune.batch_size": "lm.batch_size"}
PRETRAIN_FIX = "the tiny base pretrains with Adam and lm.pretrain_epochs, lm.pretrain_lr, lm.batch_size: set those"

REF_RATIO, MLM_REF_RATIO = "ref-ratio", "mlm-ref-ratio"
for _name, _text in {REF_RATIO: "LM: NLL drop from the named reference model (lm.reference) to the target",
                     MLM_REF_RATIO: "masked LM: PLL gain of the target over the named reference MLM (lm.reference)"}.items():
    if _name not in ATTACKS:
        register_precomputed(_name, _text)

SEQUENCE_ATTACKS = ["lira-online", "lira-online-global", "lira-offline", "lira-offline-global", "rmia-online", "rmia-offline"]
DEFAULT_ATTACKS = {CAUSAL: ["loss", "zlib", "min-k", "min-k++", "lm-ratio", REF_RATIO, *SEQUENCE_ATTACKS],
                   MASKED: ["loss", "reference", "mlm-pll", "mlm-ratio", MLM_REF_RATIO, *SEQUENCE_ATTACKS]}
SIGNAL_WORDS = {CAUSAL: "the block's NLL (summed next-token loss)",
                MASKED: "the block's MLM loss (masked-token loss over random 15 % maskings, summed per masking)"}


def attack_names(cfg: RunConfig, kind: str) -> list[str]:
    """attack.names when the user set it, else every LM attack of this kind of model."""
    return list(cfg.attack.names) if "names" in cfg.attack.model_fields_set else list(DEFAULT_ATTACKS[kind])


def descriptions(kind: str) -> dict[str, str]:
    """What the generic attacks mean on LM signals (the report's attack table shows these)."""
    words = SIGNAL_WORDS[kind]
    out = {"loss": f"LOSS on {words}", "reference": f"drop of {words} from the pretrained base to the target"}
    out.update({name: f"{ATTACKS[name].description}, on {words}" for name in SEQUENCE_ATTACKS})
    return out


# ------------------------------------------------------------------------------ config and recipe


def check_config(cfg: RunConfig, scenario: str) -> None:
    """Refuse settings the LM scenarios would silently ignore."""
    for dotted, own in OWN.items():
        section, key = dotted.split(".")
        if key in getattr(cfg, section).model_fields_set:
            raise UserError(dotted, f"the {scenario} scenario does not read it", f"set {own} instead")
    if cfg.finetune.augment and "augment" in cfg.finetune.model_fields_set:
        raise UserError("finetune.augment", "pixel-shift augmentation does not apply to text", "set it to 0 or leave it unset")
    for key in sorted(cfg.pretrain.model_fields_set - ({"augment"} if not cfg.pretrain.augment else set())):
        raise UserError(f"pretrain.{key}", f"the {scenario} scenario does not read it", PRETRAIN_FIX)
    if cfg.finetune.dp.enabled:
        raise UserError("finetune.dp.epsilon", f"the {scenario} scenario fine-tunes without DP",
                        "leave it unset (dp-finetune and tmi-text study DP fine-tuning)")
    lm = cfg.lm
    if lm.pretrain_corpus == lm.finetune_corpus and lm.model in ("tiny", *TINY.values()):
        raise UserError("lm.pretrain_corpus", "is the fine-tuning corpus: the base would be pretrained on audit blocks",
                        "pretrain on other text, e.g. wikitext2 for shakespeare or wikitext2-test for wikitext2")


def finetune_recipe(cfg: RunConfig, kind: str) -> FinetuneConfig:
    """``finetune`` (method, its options, optimizer, references) with the LM epochs, lr and batch."""
    lm = cfg.lm
    epochs = lm.finetune_epochs if kind == CAUSAL else lm.mlm_epochs
    return cfg.finetune.model_copy(update={"epochs": epochs, "lr": lm.finetune_lr, "batch_size": lm.batch_size, "augment": 0})


def pretrain_recipe(cfg: RunConfig) -> OptimConfig:
    lm = cfg.lm
    return OptimConfig(optimizer="adam", lr=lm.pretrain_lr, epochs=lm.pretrain_epochs, batch_size=lm.batch_size, augment=0)


def lm_engine(ctx: Context, cfg: RunConfig) -> Engine:
    """The per-model trainer unless engine.vectorized was set: on CPU, vmapped tiny HF models were
    slower than the plain loop (docs/language-models.md)."""
    if "vectorized" in cfg.engine.model_fields_set:
        return ctx.engine
    return Engine(ctx.engine.cache, cfg.engine.model_copy(update={"vectorized": False}), ctx.engine.reporter)


@contextmanager
def lm_threads(cfg: RunConfig) -> Iterator[None]:
    """One torch thread unless engine.threads is set: tiny LMs are dispatch-bound, and a second
    OpenMP thread waiting for a busy core made them several times slower on a shared 2-core machine."""
    before = torch.get_num_threads()
    if not cfg.engine.threads:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------- text and base


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


def model_kind_check(cfg: RunConfig, kind: str, scenario: str) -> str:
    """The tiny model's name for this scenario, or the user's path / hub id."""
    name = cfg.lm.model
    if name == "tiny":
        return TINY[kind]
    if name in TINY.values() and name != TINY[kind]:
        raise UserError("lm.model", f"{scenario} studies a {kind.replace('-lm', '')} LM, not {name}",
                        f"use {TINY[kind]} (or tiny), or a {kind} checkpoint")
    return name


def tokenizer_for(ctx: Context, cfg: RunConfig, model: str):
    """(tokenizer, where it is saved): trained on both corpora for a tiny model, else the model's own."""
    lm = cfg.lm
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


def load_base(cfg: RunConfig, name: str, kind: str, tok, field: str = "lm.model") -> Base:
    """A checkpoint by local directory or hub id, checked against the scenario and the blocks."""
    model = load_pretrained(name, field=field)
    if model.kind != kind:
        raise UserError(field, f"{name!r} is a {model.kind}, this scenario studies a {kind}",
                        "use mlm-ratio for masked LMs and lm-mia / lm-methods for causal LMs")
    positions = getattr(model.lm.config, "n_positions", None) or getattr(model.lm.config, "max_position_embeddings", None)
    if positions is not None and cfg.lm.block_len > positions:
        raise UserError("lm.block_len", f"{cfg.lm.block_len} tokens, but {name!r} takes at most {positions}",
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


def pretrain_base(ctx: Context, cfg: RunConfig, name: str, tok, seeds: dict) -> Base:
    """A tiny GPT-2 or BERT from HF's init, pretrained by the engine on ``lm.pretrain_corpus`` (cached)."""
    lm = cfg.lm
    build = tiny_gpt2 if name == TINY[CAUSAL] else tiny_bert
    model = build(len(tok), lm.block_len, n_layer=lm.n_layer, n_embd=lm.n_embd, n_head=lm.n_head, seed=seeds["init"])
    blocks = blocks_of(lm.pretrain_corpus, "lm.pretrain_corpus", "lm.pretrain_blocks", tok, lm.block_len,
                       lm.pretrain_blocks, seeds["pretrain_blocks"])
    objective = CAUSAL if model.kind == CAUSAL else masked_lm_objective(MASK_ID)
    _, result = train_lms(ctx, cfg, "LM pretraining", model, get_method("full"), MethodOptions(), pretrain_recipe(cfg),
                          blocks, [initial_state(model)], [np.arange(len(blocks))], [seeds["pretrain"]], objective)
    source = (f"{name} ({lm.n_layer} layers × {lm.n_embd}, vocab {len(tok)}) pretrained here on {len(blocks)} blocks of "
              f"{lm.pretrain_corpus}, {lm.pretrain_epochs} epochs, Adam lr {lm.pretrain_lr:g}")
    return Base(model, result.states()[0], result.keys[0], source, MASK_ID)


def train_lms(ctx: Context, cfg: RunConfig, name: str, model: LMWrapper, method: Method, opts: MethodOptions,
              optim: OptimConfig, blocks: TextBlocks, inits: list[State], rows: list[np.ndarray], seeds: list[int],
              objective: str) -> tuple[LMWrapper, TrainResult]:
    """The engine trains one LM per (init, rows, seed) with ``method`` (cached by content).
    Inits are checkpoints of ``model``; the method's extra parameters are added here."""
    torch.manual_seed(derive_seed(0, "method-init", method.name))
    template = method.build(model, opts)
    group = TrainGroup(
        name=name, template=template, arch=lm_arch_spec(model), method=method.name, method_options=method.spec(opts),
        trainable=method.trainable(template, opts), optim=optim, x=torch.from_numpy(blocks.x),
        y=torch.from_numpy(blocks.y), data_digest=blocks.digest(), objective=objective,
        jobs=[Job(init=init_state(template, i), rows=r, seed=s) for i, r, s in zip(inits, rows, seeds)])
    result = lm_engine(ctx, cfg).train(group)
    ctx.models_trained += result.trained
    ctx.models_loaded += result.loaded
    return template, result


# ------------------------------------------------------------------------------------- signals


def query_lm(ctx: Context, template: LMWrapper, keys: list[str], load_states: Callable[[list[int]], list[State]],
             blocks: TextBlocks, names: list[str], mask_id: int = MASK_ID, maskings: int = 8,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Per-token signals {name: [M, n, ...]} of each model (by key) on ``blocks``, cached per
    (model, blocks, signal). Causal: logp/mu/sigma [M, n, T-1]; masked: pll [M, n, T], mlm_loss [M, n]."""
    cache = ctx.store.signals
    out: dict[str, list] = {}
    for name in names:
        params = {"maskings": maskings, "seed": seed} if name == "mlm_loss" else {}
        skeys = [content_key(model=k, blocks=blocks.digest(), signal=name, version=SIGNALS_VERSION, mask_id=mask_id, **params)
                 for k in keys]
        missing = [i for i, sk in enumerate(skeys) if not cache.has(sk, [name])]
        if missing:
            states = load_states(missing)
            if name in CAUSAL_SIGNALS:
                fresh = causal_lm_signals(template, states, blocks.ids, blocks.valid, budget=BUDGET)
                for other in CAUSAL_SIGNALS:  # one forward gives all three: cache them together
                    okeys = [content_key(model=keys[i], blocks=blocks.digest(), signal=other, version=SIGNALS_VERSION,
                                         mask_id=mask_id) for i in missing]
                    for j, ok in enumerate(okeys):
                        cache.save(ok, {other: fresh[other][j]})
            else:
                value = (pseudo_log_likelihood(template, states, blocks.ids, blocks.valid, mask_id, PLL_BUDGET) if name == "pll"
                         else masked_lm_loss(template, states, blocks.ids, blocks.valid, mask_id, maskings, seed, budget=BUDGET))
                for j, i in enumerate(missing):
                    cache.save(skeys[i], {name: value[j]})
        out[name] = [cache.load(sk, [name])[name] for sk in skeys]
    return {name: np.stack(v) for name, v in out.items()}


def audit_signal_names(kind: str) -> list[str]:
    return list(CAUSAL_SIGNALS) if kind == CAUSAL else ["pll", "mlm_loss"]


def token_nll(kind: str, sig: dict[str, np.ndarray]) -> np.ndarray:
    """Mean NLL per scored token [M, n] (nats): next-token (causal) or masked-token (masked) loss."""
    return mean_nll(sig["logp"]) if kind == CAUSAL else sig["mlm_loss"]


def scored_tokens(kind: str, blocks: TextBlocks) -> np.ndarray:
    """Tokens [n] behind each block's mean: the predicted ones (causal), or the masked ones of one
    random 15 % masking (masked)."""
    if kind == CAUSAL:
        return blocks.valid[:, 1:].sum(axis=1)
    real = blocks.valid.sum(axis=1)
    return np.maximum(1, np.rint(MASK_RATE * real))


def sequence_nll(kind: str, sig: dict[str, np.ndarray], blocks: TextBlocks) -> np.ndarray:
    """The block-level signal [M, n] of LOSS / LiRA / RMIA: the NLL summed over the block's scored
    tokens, i.e. -log Pr(block | model). Summed rather than averaged so that RMIA's likelihood ratio
    (and its threshold gamma) is one of block probabilities; the other attacks rank the same either way."""
    return token_nll(kind, sig) * scored_tokens(kind, blocks)


# --------------------------------------------------------------------------------------- study


@dataclass
class LMStudy:
    cfg: RunConfig
    kind: str
    tokenizer: object  # a transformers fast tokenizer
    tokenizer_path: str
    tokenizer_digest: str
    audit: TextBlocks
    population: TextBlocks
    keep: np.ndarray  # [M, N] bool
    rows: list[np.ndarray]
    seeds: dict
    base: Base
    spare: TextBlocks  # private blocks in no other role (setup's ``spare``; may be empty)
    # Filled by setup once the base (and the reference) are queried:
    base_audit: dict[str, np.ndarray] = field(default_factory=dict)  # the base's audit signals ([n, ...])
    base_pop: np.ndarray | None = None  # [Z] the base's mean NLL per token on the population blocks
    reference_name: str | None = None  # what the ref-ratio attacks compare against (None: the base only)
    ref_audit: dict[str, np.ndarray] | None = None
    reference_key: str | None = None

    @property
    def n_models(self) -> int:
        return len(self.rows)

    def query(self, ctx: Context, template: LMWrapper, keys: list[str], load_states, blocks: TextBlocks,
              names: list[str]) -> dict[str, np.ndarray]:
        return query_lm(ctx, template, keys, load_states, blocks, names, self.base.mask_id, self.cfg.lm.maskings,
                        self.seeds["maskings"])


def make_seeds(seed: int, n_models: int) -> dict:
    d = lambda *labels: derive_seed(seed, "lm", *labels)  # noqa: E731
    return {"run": seed, "blocks": d("blocks"), "pretrain_blocks": d("pretrain-blocks"), "init": d("init"),
            "pretrain": d("pretrain"), "keep": d("keep"), "reference": d("reference"), "maskings": d("maskings"),
            "models": [d("finetune", m) for m in range(n_models)]}


def setup(cfg: RunConfig, ctx: Context, kind: str, scenario: str, n_models: int, spare: int = 0) -> LMStudy:
    """Tokenizer, blocks, keep-matrix, the base (pretrained or loaded) and the reference model;
    ``spare`` further private blocks, disjoint from all others, for the scenario's own use."""
    check_config(cfg, scenario)
    lm, seeds = cfg.lm, make_seeds(cfg.seed, n_models)
    name = model_kind_check(cfg, kind, scenario)
    with ctx.stage("data"):
        tok, tok_path = tokenizer_for(ctx, cfg, name)
        n_ref = lm.n_blocks // 2 if lm.reference == "disjoint" else 0
        private = blocks_of(lm.finetune_corpus, "lm.finetune_corpus", "lm.n_blocks", tok, lm.block_len,
                            lm.n_blocks + lm.population + n_ref + spare, seeds["blocks"])
        audit = private.select(np.arange(lm.n_blocks))
        population = private.select(np.arange(lm.n_blocks, lm.n_blocks + lm.population))
        used = lm.n_blocks + lm.population
        ref_blocks = private.select(np.arange(used, used + n_ref)) if n_ref else None
        spare_blocks = private.select(np.arange(used + n_ref, len(private)))
        keep = half_keep_matrix(n_models, lm.n_blocks, seeds["keep"])
        rows = [np.flatnonzero(k) for k in keep]
        named = named_reference(cfg, kind, tok) if lm.reference not in ("base", "disjoint") else None  # fail early
    with ctx.stage("pretrain"):
        base = pretrain_base(ctx, cfg, name, tok, seeds) if name in TINY.values() else load_base(cfg, name, kind, tok)
    study = LMStudy(cfg=cfg, kind=kind, tokenizer=tok, tokenizer_path=tok_path, tokenizer_digest=tokenizer_digest(tok),
                    audit=audit, population=population, keep=keep, rows=rows, seeds=seeds, base=base, spare=spare_blocks)
    with ctx.stage("signals"):
        one = lambda idx: [base.state for _ in idx]  # noqa: E731
        study.base_audit = {k: v[0] for k, v in study.query(ctx, base.template, [base.key], one, audit,
                                                             audit_signal_names(kind)).items()}
        pop = study.query(ctx, base.template, [base.key], one, population, ["logp"] if kind == CAUSAL else ["mlm_loss"])
        study.base_pop = token_nll(kind, pop)[0]
    if lm.reference != "base":
        add_reference(ctx, study, ref_blocks, named)
    return study


def named_reference(cfg: RunConfig, kind: str, tok) -> Base:
    """lm.reference as a local directory / hub id: a model of the same kind and tokenizer."""
    other = load_base(cfg, cfg.lm.reference, kind, tok, field="lm.reference")
    if tokenizer_digest(load_tokenizer(cfg.lm.reference, field="lm.reference")) != tokenizer_digest(tok):
        raise UserError("lm.reference", f"{cfg.lm.reference!r} has another tokenizer than the studied model",
                        "use a reference that shares the model's tokenizer, or disjoint / base")
    return other


def add_reference(ctx: Context, study: LMStudy, ref_blocks: TextBlocks | None, named: Base | None) -> None:
    """The second reference of the ratio attacks and its audit signals: fine-tuned from the base
    (same recipe as the targets) on disjoint private blocks, or a loaded model."""
    cfg, base = study.cfg, study.base
    if ref_blocks is not None:
        ft = finetune_recipe(cfg, study.kind)
        with ctx.stage("finetune"):
            template, result = train_lms(ctx, cfg, "reference on disjoint blocks", base.template, get_method(ft.method),
                                         MethodOptions.from_config(ft), ft, ref_blocks, [base.state],
                                         [np.arange(len(ref_blocks))], [study.seeds["reference"]], base.objective)
        key, load = result.keys[0], result.states
        study.reference_name = (f"a {ft.method} fine-tune of the base on {len(ref_blocks)} other {cfg.lm.finetune_corpus} "
                                "blocks (disjoint from the audit pool and the population)")
    else:
        template, key, load = named.template, named.key, (lambda idx: [named.state for _ in idx])
        study.reference_name = f"{cfg.lm.reference} (loaded)"
    with ctx.stage("signals"):
        names = ["logp"] if study.kind == CAUSAL else ["pll"]
        study.ref_audit = {k: v[0] for k, v in study.query(ctx, template, [key], load, study.audit, names).items()}
    study.reference_key = key


# ---------------------------------------------------------------------------------------- cells


@dataclass
class LMCell:
    """One fine-tuned ensemble: its models and signals, and each model's validation loss."""

    name: str
    method: str
    lr: float
    template: LMWrapper
    result: TrainResult
    signals: SignalSet
    val_nll: np.ndarray  # [M] mean NLL per token on the held-out population (nats)
    train_nll: np.ndarray  # [M] the same on each model's own members
    n_trainable: int


def finetune_cell(ctx: Context, study: LMStudy, ft: FinetuneConfig, name: str, extra: TextBlocks | None = None) -> LMCell:
    """Fine-tune the study's ensemble with ``ft`` from the base, query it, build its SignalSet.
    ``extra`` rows (e.g. canaries) are trained on by every model besides its keep-row."""
    method, opts, base = get_method(ft.method), MethodOptions.from_config(ft), study.base
    pool, rows = study.audit, study.rows
    if extra is not None:
        pool = concat_blocks(study.audit, extra)
        rows = [np.concatenate([r, len(study.audit) + np.arange(len(extra))]) for r in rows]
    with ctx.stage("finetune"):
        template, result = train_lms(ctx, study.cfg, name, base.template, method, opts, ft, pool,
                                     [base.state] * study.n_models, rows, study.seeds["models"], base.objective)
    with ctx.stage("signals"):
        audit = study.query(ctx, template, result.keys, result.states, study.audit, audit_signal_names(study.kind))
        pop_names = ["logp"] if study.kind == CAUSAL else ["mlm_loss"]
        pop = study.query(ctx, template, result.keys, result.states, study.population, pop_names)
    conf, loss = sequence_signals(sequence_nll(study.kind, audit, study.audit))
    pop_conf, pop_loss = sequence_signals(sequence_nll(study.kind, pop, study.population))
    base_conf, base_loss = sequence_signals(sequence_nll(study.kind, {k: v[None] for k, v in study.base_audit.items()},
                                                         study.audit)[0])
    nll, val_nll = token_nll(study.kind, audit), token_nll(study.kind, pop).mean(axis=1)
    signals = SignalSet(conf=conf, loss=loss, keep=study.keep, pop_conf=pop_conf, pop_loss=pop_loss,
                        base_conf=base_conf, base_loss=base_loss, scores=cell_scores(study, audit))
    train_nll = np.array([nll[m, study.keep[m]].mean() for m in range(study.n_models)])
    n_trainable = sum(int(template.get_parameter(n).numel()) for n in method.trainable(template, opts))
    return LMCell(name, ft.method, ft.lr, template, result, signals, val_nll, train_nll, n_trainable)


def concat_blocks(a: TextBlocks, b: TextBlocks) -> TextBlocks:
    """One training pool of ``a``'s rows then ``b``'s (same width)."""
    return TextBlocks(np.concatenate([a.ids, b.ids]), np.concatenate([a.valid, b.valid]), a.texts + b.texts,
                      np.concatenate([a.source, b.source]), a.mode if a.mode == b.mode else "documents", a.pad_id)


def cell_scores(study: LMStudy, audit: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The LM attacks' scores [M, N]: against the base, and against the named reference if any."""
    base, ref = study.base_audit, study.ref_audit
    if study.kind == CAUSAL:
        scores = lm_score_set(logp=audit["logp"], mu=audit["mu"], sigma=audit["sigma"], texts=study.audit.texts,
                              reference_logp=base["logp"])
        if ref is not None:
            scores[REF_RATIO] = ratio_score(mean_nll(audit["logp"]), mean_nll(ref["logp"]))
        return scores
    scores = lm_score_set(pll=audit["pll"], reference_pll=base["pll"])
    if ref is not None:
        scores[MLM_REF_RATIO] = mlm_ratio_score(audit["pll"], ref["pll"])
    return scores


# ------------------------------------------------------------------------------------- reporting


def perplexity(nll: np.ndarray, seed: int, level: float) -> dict:
    """exp of the mean NLL, with the CI of the mean mapped through exp (a monotone map)."""
    est = mean_ci(nll, level=level, seed=seed)
    return {"value": float(np.exp(est["value"])), "lo": float(np.exp(est["lo"])), "hi": float(np.exp(est["hi"]))}


def utility(study: LMStudy, cell: LMCell) -> list[dict]:
    """Validation and training perplexity of the fine-tunes, and the base's, on the same blocks."""
    cfg, z = study.cfg, len(study.population)
    word = "perplexity" if study.kind == CAUSAL else "MLM pseudo-perplexity (exp of the masked-token loss)"
    level = cfg.metrics.ci_level
    return [
        {**perplexity(cell.val_nll, cfg.seed, level), "name": f"fine-tuned validation {word} ({cell.name})",
         "note": f"mean over {len(cell.val_nll)} models of the mean NLL on {z} held-out {cfg.lm.finetune_corpus} blocks, "
                 "exponentiated (CI over models)"},
        {**perplexity(cell.train_nll, cfg.seed, level), "name": f"fine-tuned training {word}",
         "note": "on each model's own member blocks (CI over models)"},
        {**perplexity(study.base_pop, cfg.seed, level), "name": f"pretrained base validation {word}",
         "note": f"the base alone on the same {z} held-out blocks (CI over blocks)"},
    ]


def exposed_section(study: LMStudy, pooled, attack: str, k: int) -> Section:
    """The audit blocks the attack flags most often when they are members, with their text."""
    s, labels, ex = pooled.scores[attack], pooled.labels, pooled.example
    n = len(study.audit)
    threshold = np.quantile(s[~labels], 0.99)
    count = np.maximum(np.bincount(ex[labels], minlength=n), 1)
    hits = np.bincount(ex[labels], weights=s[labels] > threshold, minlength=n) / count
    mean = np.bincount(ex[labels], weights=s[labels], minlength=n) / count
    order = np.lexsort((-mean, -hits))[:k]
    rows = [{"block": int(i), "found as member at 1% FPR": f"{hits[i]:.0%}", f"mean {attack} score as member": f"{mean[i]:.4g}",
             "text (first 80 characters)": study.audit.texts[i][:80].replace("\n", " ⏎ ")} for i in order]
    return Section(f"Most exposed blocks ({attack})", [
        f"Audit blocks ranked by the share of the targets holding them whose {attack} score exceeds the 1 %-FPR "
        "threshold of all non-member rows, ties by the mean member score. Token ids: arrays/audit_ids.npy."], rows)


def setup_section(study: LMStudy, ft: FinetuneConfig, extra: list[str] = ()) -> Section:
    """How the study was built: corpora, tokenizer (where it is saved), base, reference, recipe."""
    cfg, lm = study.cfg, study.cfg.lm
    lines = [f"Private text: {lm.finetune_corpus}; {len(study.audit)} audit blocks of {lm.block_len} tokens under a half "
             f"keep-matrix ({study.n_models} models; each block a member of half of them), {len(study.population)} "
             "held-out blocks (validation, RMIA population).",
             f"Tokenizer: {study.tokenizer_path} (sha256 of its definition {study.tokenizer_digest[:16]}…).",
             f"Base: {study.base.source}.",
             f"Reference of {REF_RATIO if study.kind == CAUSAL else MLM_REF_RATIO}: "
             f"{study.reference_name or 'none (lm.reference=base)'}; "
             "the other ratio attacks compare with the base.",
             f"Fine-tuning: {ft.method}, {ft.epochs} epochs, {ft.optimizer} lr {ft.lr:g}, batch {ft.batch_size} blocks."]
    return Section("Setup", lines + list(extra))


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
