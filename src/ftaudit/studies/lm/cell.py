"""The membership studies' world (``lm-mia``, ``mlm-ratio``, ``lm-methods``) and its fine-tuned ensembles.

Text → blocks (the membership unit) → a half keep-matrix over the audit blocks → the base → one or
more ensembles fine-tuned from it by the engine ("cells") → per-token signals → a :class:`SignalSet`
whose ``scores`` hold the LM attacks and whose block-level NLL feeds LOSS, LiRA and RMIA.

The reference of the ratio attacks is the pretrained base (free to an attacker: it is public), plus
by default a model fine-tuned from the base on *disjoint* blocks of the private corpus — the
reference the MLM study found strongest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ftaudit.attacks.lm import lm_score_set, mean_nll, mlm_ratio_score, ratio_score, sequence_signals
from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import TextBlocks
from ftaudit.data.tokenizer import load_tokenizer, tokenizer_digest
from ftaudit.errors import UserError
from ftaudit.finetune.methods import get_method
from ftaudit.models.lm import LMWrapper
from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet
from ftaudit.studies.base import Context
from ftaudit.studies.lm.base import (CAUSAL, Base, base_model, blocks_of, check_text, finetune_from_base, load_base,
                                    model_name, tokenizer_for)
from ftaudit.studies.lm.config import MLM_REF_RATIO, REF_RATIO, EnsembleFinetuneConfig, LMAuditConfig, LMFinetuneConfig
from ftaudit.studies.lm.signals import (Loader, audit_signal_names, population_signal_names, query_lm, sequence_nll,
                                        token_nll)
from ftaudit.train.engine import TrainResult


@dataclass
class LMStudy:
    lm: LMAuditConfig
    kind: str
    run_seed: int
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
    maskings: int = 0  # masked LMs: random maskings of the MLM-loss signal
    # Filled by setup once the base (and the reference) are queried:
    base_audit: dict[str, np.ndarray] = field(default_factory=dict)  # the base's audit signals ([n, ...])
    base_pop: np.ndarray | None = None  # [Z] the base's mean NLL per token on the population blocks
    reference_name: str | None = None  # what the ref-ratio attacks compare against (None: the base only)
    ref_audit: dict[str, np.ndarray] | None = None
    reference_key: str | None = None

    @property
    def n_models(self) -> int:
        return len(self.rows)

    def query(self, ctx: Context, template: LMWrapper, keys: list[str], load_states: Loader, blocks: TextBlocks,
              names: list[str]) -> dict[str, np.ndarray]:
        return query_lm(ctx, template, keys, load_states, blocks, names, self.base.mask_id, self.maskings,
                        self.seeds["maskings"])

    def train(self, ctx: Context, name: str, ft: LMFinetuneConfig, pool: TextBlocks, rows: list[np.ndarray],
              seeds: list[int]) -> tuple[LMWrapper, TrainResult]:
        """Fine-tune one model per keep-row from the base with ``ft`` (method, options, recipe)."""
        return finetune_from_base(ctx, self.base, name, ft, pool, rows, seeds, self.run_seed)


def make_seeds(seed: int, n_models: int) -> dict:
    d = lambda *labels: derive_seed(seed, "lm", *labels)  # noqa: E731
    return {"run": seed, "blocks": d("blocks"), "pretrain_blocks": d("pretrain-blocks"), "init": d("init"),
            "pretrain": d("pretrain"), "keep": d("keep"), "reference": d("reference"), "maskings": d("maskings"),
            "models": [d("finetune", m) for m in range(n_models)]}


def setup(ctx: Context, lm: LMAuditConfig, ft: EnsembleFinetuneConfig, kind: str, study: str, n_models: int,
          run_seed: int, maskings: int = 0, spare: int = 0) -> LMStudy:
    """Tokenizer, blocks, keep-matrix, the base (pretrained or loaded) and the reference model (the
    disjoint one fine-tuned with ``ft``); ``spare`` further private blocks, disjoint from all
    others, for the study's own use."""
    seeds = make_seeds(run_seed, n_models)
    name = model_name(lm, kind, study)
    with ctx.stage("data"):
        check_text(lm, lm.n_blocks + lm.population + (lm.n_blocks // 2 if lm.reference == "disjoint" else 0) + spare)
        if lm.reference not in ("base", "disjoint"):
            load_tokenizer(lm.reference, field="lm.reference")  # a missing reference fails before any cache write
        tok, tok_path = tokenizer_for(ctx, lm, name)
        n_ref = lm.n_blocks // 2 if lm.reference == "disjoint" else 0
        private = blocks_of(lm.finetune_corpus, "lm.finetune_corpus", "lm.n_blocks", tok, lm.block_len,
                            lm.n_blocks + lm.population + n_ref + spare, seeds["blocks"])
        audit = private.select(np.arange(lm.n_blocks))
        population = private.select(np.arange(lm.n_blocks, lm.n_blocks + lm.population))
        used = lm.n_blocks + lm.population
        ref_blocks = private.select(np.arange(used, used + n_ref)) if n_ref else None
        spare_blocks = private.select(np.arange(used + n_ref, len(private)))
        keep = half_keep_matrix(n_models, lm.n_blocks, seeds["keep"])
        named = named_reference(lm, kind, tok) if lm.reference not in ("base", "disjoint") else None  # fail early
    base = base_model(ctx, lm, name, kind, tok, seeds, run_seed)
    study = LMStudy(lm=lm, kind=kind, run_seed=run_seed, tokenizer=tok, tokenizer_path=tok_path,
                    tokenizer_digest=tokenizer_digest(tok), audit=audit, population=population, keep=keep,
                    rows=[np.flatnonzero(k) for k in keep], seeds=seeds, base=base, spare=spare_blocks,
                    maskings=maskings)
    with ctx.stage("signals"):
        study.base_audit = {k: v[0] for k, v in study.query(ctx, base.template, [base.key], base.load, audit,
                                                             audit_signal_names(kind)).items()}
        pop = study.query(ctx, base.template, [base.key], base.load, population, population_signal_names(kind))
        study.base_pop = token_nll(kind, pop)[0]
    if lm.reference != "base":
        add_reference(ctx, study, ft, ref_blocks, named)
    return study


def named_reference(lm: LMAuditConfig, kind: str, tok) -> Base:
    """lm.reference as a local directory / hub id: a model of the same kind and tokenizer."""
    other = load_base(lm, lm.reference, kind, tok, field="lm.reference")
    if tokenizer_digest(load_tokenizer(lm.reference, field="lm.reference")) != tokenizer_digest(tok):
        raise UserError("lm.reference", f"{lm.reference!r} has another tokenizer than the studied model",
                        "use a reference that shares the model's tokenizer, or disjoint / base")
    return other


def add_reference(ctx: Context, study: LMStudy, ft: EnsembleFinetuneConfig, ref_blocks: TextBlocks | None,
                  named: Base | None) -> None:
    """The second reference of the ratio attacks and its audit signals: fine-tuned from the base
    (same recipe as the targets) on disjoint private blocks, or a loaded model."""
    if ref_blocks is not None:
        template, result = study.train(ctx, "reference on disjoint blocks", ft, ref_blocks, [np.arange(len(ref_blocks))],
                                       [study.seeds["reference"]])
        key, load = result.keys[0], result.states
        study.reference_name = (f"a {ft.method} fine-tune of the base on {len(ref_blocks)} other "
                                f"{study.lm.finetune_corpus} blocks (disjoint from the audit pool and the population)")
    else:
        template, key, load = named.template, named.key, named.load
        study.reference_name = f"{study.lm.reference} (loaded)"
    with ctx.stage("signals"):
        names = ["logp"] if study.kind == CAUSAL else ["pll"]
        study.ref_audit = {k: v[0] for k, v in study.query(ctx, template, [key], load, study.audit, names).items()}
    study.reference_key = key


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


def finetune_cell(ctx: Context, study: LMStudy, ft: LMFinetuneConfig, name: str, extra: TextBlocks | None = None) -> LMCell:
    """Fine-tune the study's ensemble with ``ft`` from the base, query it, build its SignalSet.
    ``extra`` rows (e.g. canaries) are trained on by every model besides its keep-row."""
    pool, rows = study.audit, study.rows
    if extra is not None:
        pool = concat_blocks(study.audit, extra)
        rows = [np.concatenate([r, len(study.audit) + np.arange(len(extra))]) for r in rows]
    template, result = study.train(ctx, name, ft, pool, rows, study.seeds["models"])
    with ctx.stage("signals"):
        audit = study.query(ctx, template, result.keys, result.states, study.audit, audit_signal_names(study.kind))
        pop = study.query(ctx, template, result.keys, result.states, study.population, population_signal_names(study.kind))
    conf, loss = sequence_signals(sequence_nll(study.kind, audit, study.audit))
    pop_conf, pop_loss = sequence_signals(sequence_nll(study.kind, pop, study.population))
    base_conf, base_loss = sequence_signals(sequence_nll(study.kind, {k: v[None] for k, v in study.base_audit.items()},
                                                         study.audit)[0])
    nll, val_nll = token_nll(study.kind, audit), token_nll(study.kind, pop).mean(axis=1)
    signals = SignalSet(conf=conf, loss=loss, keep=study.keep, pop_conf=pop_conf, pop_loss=pop_loss,
                        base_conf=base_conf, base_loss=base_loss, scores=cell_scores(study, audit))
    train_nll = np.array([nll[m, study.keep[m]].mean() for m in range(study.n_models)])
    method = get_method(ft.method)
    n_trainable = sum(int(template.get_parameter(n).numel()) for n in method.trainable(template, ft.options))
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
