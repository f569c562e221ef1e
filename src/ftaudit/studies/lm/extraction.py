"""``lm-extraction``: what a fine-tuned causal LM gives away verbatim — canaries and training text.

A tiny GPT-2 pretrained on ``lm.pretrain_corpus`` (the same cached base as ``lm-mia``) is fine-tuned
once by the engine on ``extraction.finetune_blocks`` blocks of ``lm.finetune_corpus`` into which
canaries were spliced: for each count r in ``extraction.repetitions``, ``extraction.canaries``
secrets, each written over the start of r blocks. Then:

* exposure (Carlini et al. 2019) of every canary against ``extraction.references`` never-inserted
  secrets, rank-based and skew-normal, for the fine-tuned model and (control) the base;
* extraction by generation (Carlini et al. 2021): continuations sampled from prefixes of
  fine-tuning blocks without a canary, ranked by perplexity, ratio to the base and zlib; precision
  and recall of verbatim suffixes, with the same attack on held-out blocks as the control. Like the
  canaries, the prompted blocks come in groups present r times in the data (exact copies), because
  verbatim extraction is known to be driven by duplication (Kandpal et al. 2022);
* the headline: membership of the canaries (inserted vs reference secrets) by their log-perplexity
  and its drop from the base — TPR at low FPR over 5,000 non-members.

Canaries go at the start of a block so that they are scored (after the prefix, at position 0) in the
context they were trained in; each insertion gets its own block, so the text seen is otherwise the
same whatever the repetitions.
"""
from __future__ import annotations

import numpy as np

from ftaudit.attacks.canaries import (CANARY_ATTACKS, CanaryFormat, CanaryMembership, SkewNormalFit, draw_secrets,
                                      rank_exposure, secret_log_perplexity, skewnorm_exposure, tokenize_canaries)
from ftaudit.attacks.evaluators import EvaluationRequest
from ftaudit.attacks.extraction import candidates, ranking_scores, suffix_nll
from ftaudit.data.text import TextBlocks
from ftaudit.errors import UserError
from ftaudit.seeding import derive_seed
from ftaudit.signals.generation import SamplingSpec, sample_continuations
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.lm.base import CAUSAL, base_model, blocks_of, finetune_from_base, lm_threads, model_name, tokenizer_for
from ftaudit.studies.lm.cell import make_seeds
from ftaudit.studies.lm.config import LMExtractionConfig
from ftaudit.studies.lm.extraction_report import (Extraction, World, canary_table, duplicates_section, exposure_section,
                                                  extraction_section, setup_section, summary)
from ftaudit.studies.lm.report import perplexity
from ftaudit.studies.lm.signals import Loader, query_lm, signal_arch

SAMPLES_VERSION = "extraction-samples-v1"  # bump when the sampler changes: cached generations stop matching
SAMPLE_BATCH = 512  # prompt × sample rows per generation batch (part of the samples' cache key)


# ------------------------------------------------------------------------------------------ data


def as_blocks(ids: np.ndarray, valid: np.ndarray, tok, pad_id: int) -> TextBlocks:
    """Token rows as TextBlocks (so signals go through the LM study's cached query)."""
    texts = tuple(tok.decode(r[v].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
                  for r, v in zip(ids, valid))
    return TextBlocks(ids, valid, texts, np.arange(len(ids), dtype=np.int64), "documents", pad_id)


def build_world(cfg: LMExtractionConfig, tok, seed: int) -> World:
    """Blocks, canaries and where they go: for each count r, ``canaries`` secrets each written over
    the start of r distinct blocks, and ``prompts`` intact blocks each present r times."""
    lm, ex = cfg.lm, cfg.extraction
    reps, k, p = list(ex.repetitions), ex.canaries, ex.prompts
    secrets = draw_secrets(k * len(reps) + ex.references, ex.canary_digits, derive_seed(seed, "extraction", "secrets"))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    canaries = tokenize_canaries(tok, CanaryFormat(ex.canary_prefix, ex.canary_digits), secrets, pad_id)
    if canaries.ids.shape[1] >= lm.block_len:
        raise UserError("extraction.canary_prefix", f"a canary takes {canaries.ids.shape[1]} tokens, a block {lm.block_len}",
                        "shorten the prefix or lengthen lm.block_len")
    private = blocks_of(lm.finetune_corpus, "lm.finetune_corpus", "extraction.finetune_blocks", tok, lm.block_len,
                        ex.finetune_blocks + p * len(reps), derive_seed(seed, "extraction", "blocks"))
    held_out = private.select(np.arange(ex.finetune_blocks, len(private)))
    order = np.random.default_rng([derive_seed(seed, "extraction", "placement"), 0x5B1]).permutation(ex.finetune_blocks)
    prompt_rows, free = order[:p * len(reps)], list(order[p * len(reps):])
    prompt_reps = np.repeat(reps, p)
    ids = private.ids[:ex.finetune_blocks].copy()
    repetitions = np.zeros(len(canaries), dtype=np.int64)
    for c, r in enumerate(np.repeat(reps, k)):
        rows, free = free[:r], free[r:]
        tokens = canaries.tokens(c)
        ids[rows, :len(tokens)] = tokens
        repetitions[c] = r
    copies = np.repeat(prompt_rows, prompt_reps - 1)  # a block present r times: r - 1 extra rows
    ids = np.concatenate([ids, ids[copies]])
    valid = np.ones(ids.shape, dtype=bool)
    train = as_blocks(ids, valid, tok, private.pad_id)
    return World(canaries, repetitions, train, prompt_rows, prompt_reps, held_out)


# --------------------------------------------------------------------------------------- signals


def token_logp(ctx: Context, template, key: str, load: Loader, blocks: TextBlocks) -> np.ndarray:
    """Next-token log-probs [n, T-1] of one model on ``blocks`` (cached per model and blocks)."""
    return query_lm(ctx, template, [key], load, blocks, ["logp"])["logp"][0]


def generate(ctx: Context, template, key: str, load: Loader, prompts: np.ndarray, spec: SamplingSpec) -> np.ndarray:
    """Sampled continuations [n, samples, length], cached per (model, architecture, prompts, sampling spec)."""
    place = ctx.engine.placement
    skey = content_key(kind=SAMPLES_VERSION, model=key, arch=signal_arch(template), prompts=prompts, spec=spec.__dict__,
                       batch=SAMPLE_BATCH, **place.query_key())
    return ctx.cached("samples", skey, lambda: {"tokens": sample_continuations(template, load([0])[0], prompts, spec,
                                                                               batch=SAMPLE_BATCH,
                                                                               device=place.device)})["tokens"]


def extraction_attack(ctx: Context, models: dict, blocks: TextBlocks, spec: SamplingSpec, prefix_len: int, tok) -> Extraction:
    """Sample from the fine-tuned model on the blocks' prefixes, dedupe, and score every candidate
    under the fine-tuned model and the base."""
    target, base = models["target"], models["base"]
    generated = generate(ctx, *target, blocks.ids[:, :prefix_len], spec)
    cands = candidates(generated, blocks.ids[:, prefix_len:prefix_len + spec.length])
    ids = np.concatenate([blocks.ids[cands.prompt, :prefix_len], cands.tokens], axis=1)
    rows = as_blocks(ids, np.ones(ids.shape, dtype=bool), tok, blocks.pad_id)
    nll = suffix_nll(token_logp(ctx, *target, rows), prefix_len)
    base_nll = suffix_nll(token_logp(ctx, *base, rows), prefix_len)
    texts = [tok.decode(t.tolist(), clean_up_tokenization_spaces=False) for t in cands.tokens]
    return Extraction(cands, ranking_scores(nll, base_nll, texts))


# ------------------------------------------------------------------------------------------- run


def run(cfg: LMExtractionConfig, ctx: Context) -> StudyOutput:
    lm, ft, ex = cfg.lm, cfg.finetune, cfg.extraction
    seeds = make_seeds(cfg.seed, 0)  # the LM studies' seeds: the same cached base as lm-mia
    seeds["finetune"] = derive_seed(cfg.seed, "extraction", "finetune")
    seeds["sampling"] = derive_seed(cfg.seed, "extraction", "sampling")
    with lm_threads(cfg):
        name = model_name(lm, CAUSAL, "lm-extraction")
        with ctx.stage("data"):
            tok, tok_path = tokenizer_for(ctx, lm, name)
            world = build_world(cfg, tok, cfg.seed)
        base = base_model(ctx, lm, name, CAUSAL, tok, seeds, cfg.seed)
        template, result = finetune_from_base(ctx, base, "fine-tune with canaries", ft, world.train,
                                              [np.arange(len(world.train))], [seeds["finetune"]], cfg.seed)
        models = {"target": (template, result.keys[0], result.states), "base": (base.template, base.key, base.load)}
        with ctx.stage("signals"):
            canary_blocks = as_blocks(world.canaries.ids, world.canaries.valid, tok, world.train.pad_id)
            ppl = {k: secret_log_perplexity(token_logp(ctx, *models[k], canary_blocks), world.canaries.start) for k in models}
            val = {k: -np.nanmean(token_logp(ctx, *models[k], world.held_out), axis=1) for k in models}
        with ctx.stage("extraction"):
            spec = SamplingSpec(ex.samples, ex.suffix_len, ex.top_k, ex.temperature, seeds["sampling"])
            member = extraction_attack(ctx, models, world.train.select(world.prompt_rows), spec, ex.prefix_len, tok)
            control = extraction_attack(ctx, models, world.held_out, spec, ex.prefix_len, tok)

    inserted = world.repetitions > 0
    refs = {k: v[~inserted] for k, v in ppl.items()}
    fit = SkewNormalFit.of(refs["target"])
    exp = {"rank": rank_exposure(ppl["target"], refs["target"]), "skew": skewnorm_exposure(ppl["target"], refs["target"], fit),
           "base_rank": rank_exposure(ppl["base"], refs["base"])}
    exp_section, rank_stats = exposure_section(cfg, world, exp, len(refs["target"]))
    ext_section, ext = extraction_section(cfg, member, control)
    level = cfg.metrics.ci_level
    utility = [{**perplexity(val["target"], cfg.seed, level), "name": "fine-tuned validation perplexity",
                "note": f"on {len(world.held_out)} held-out {lm.finetune_corpus} blocks (CI over blocks)"},
               {**perplexity(val["base"], cfg.seed, level), "name": "pretrained base validation perplexity",
                "note": "the base alone on the same blocks"}]
    sections = [setup_section(cfg, world, base.source, tok_path), exp_section, ext_section,
                duplicates_section(cfg, world, member, control), canary_table(cfg, world, exp, ppl)]
    return StudyOutput(
        title=f"Extraction from a GPT-2 fine-tuned on {lm.finetune_corpus}: canary exposure and verbatim generation",
        evaluation=EvaluationRequest("canary-membership", CanaryMembership(ppl["target"], ppl["base"], inserted),
                                     CANARY_ATTACKS),
        member_rate=inserted.astype(np.float64), utility=utility,
        audit_arrays={"canary_ids": world.canaries.ids, "canary_repetitions": world.repetitions},
        models=[("pretrain", 0, base.key, seeds["pretrain"]), ("finetune", 0, result.keys[0], seeds["finetune"])],
        seeds=seeds, sections=sections, notes=summary(cfg, rank_stats, len(refs["target"]), member, ext))


STUDY = Study("lm-extraction", "causal LM: canary exposure vs insertions (rank and skew-normal) and extraction of "
                               "training text by generation (precision / recall)", LMExtractionConfig, run)
