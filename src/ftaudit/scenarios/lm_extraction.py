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

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.canaries import (CanaryFormat, CanarySet, SkewNormalFit, draw_secrets, rank_exposure, secret_log_perplexity,
                                      skewnorm_exposure, tokenize_canaries)
from ftaudit.attacks.evaluate import PooledScores
from ftaudit.attacks.extraction import (RANKINGS, Candidates, SamplingSpec, any_sample_rate, candidates, extraction_rates,
                                        ranking_scores, sample_continuations, suffix_nll, top_candidates)
from ftaudit.config import FinetuneConfig, RunConfig
from ftaudit.data.text import TextBlocks
from ftaudit.errors import UserError
from ftaudit.finetune.methods import MethodOptions, get_method
from ftaudit.metrics import mean_ci
from ftaudit.scenarios.base import Context, Figure, Scenario, Section, Series, StudyOutput
from ftaudit.scenarios.lm_study import (CAUSAL, TINY, blocks_of, load_base, make_seeds, model_kind_check, perplexity,
                                        pretrain_base, query_lm, tokenizer_for, train_lms, lm_threads)
from ftaudit.seeding import derive_seed
from ftaudit.store.cache import content_key

SAMPLES_VERSION = "extraction-samples-v1"  # bump when the sampler changes: cached generations stop matching
SAMPLE_BATCH = 512  # prompt × sample rows per generation batch (part of the samples' cache key)
ATTACKS = {"canary-loss": "log-likelihood of the canary's secret under the fine-tuned model (−log-perplexity)",
           "canary-ratio": "log-perplexity drop of the secret from the pretrained base to the fine-tuned model"}
OWN = {"finetune.epochs": "extraction.finetune_epochs", "finetune.lr": "extraction.finetune_lr",
       "finetune.batch_size": "lm.batch_size", "pretrain.epochs": "lm.pretrain_epochs", "pretrain.lr": "lm.pretrain_lr",
       "pretrain.batch_size": "lm.batch_size"}


def check_config(cfg: RunConfig) -> None:
    """Refuse settings this scenario would silently ignore, and sizes that cannot fit a block."""
    for dotted, own in OWN.items():
        section, key = dotted.split(".")
        if key in getattr(cfg, section).model_fields_set:
            raise UserError(dotted, "the lm-extraction scenario does not read it", f"set {own} instead")
    if cfg.finetune.dp.enabled:
        raise UserError("finetune.dp.epsilon", "lm-extraction fine-tunes without DP", "leave it unset")
    lm, ex = cfg.lm, cfg.extraction
    if lm.pretrain_corpus == lm.finetune_corpus and lm.model in ("tiny", *TINY.values()):
        raise UserError("lm.pretrain_corpus", "is the fine-tuning corpus: the base would be pretrained on the private text",
                        "pretrain on other text, e.g. wikitext2 for wikitext2-test")
    if ex.prefix_len + ex.suffix_len > lm.block_len:
        raise UserError("extraction.suffix_len", f"prefix {ex.prefix_len} + suffix {ex.suffix_len} tokens exceed "
                        f"lm.block_len ({lm.block_len})", "shorten them or lengthen the blocks")


def recipe(cfg: RunConfig) -> FinetuneConfig:
    ex = cfg.extraction
    return cfg.finetune.model_copy(update={"epochs": ex.finetune_epochs, "lr": ex.finetune_lr,
                                           "batch_size": cfg.lm.batch_size, "augment": 0})


# ------------------------------------------------------------------------------------------ data


@dataclass
class World:
    canaries: CanarySet  # inserted first (canary j of count r at row r_index * k + j), then the references
    repetitions: np.ndarray  # int64 [n_canaries]: insertions of each (0 for a reference)
    train: TextBlocks  # the fine-tuning blocks: canaries spliced in, then the prompt blocks' extra copies
    prompt_rows: np.ndarray  # rows of `train` whose prefixes prompt the extraction (no canary)
    prompt_reps: np.ndarray  # [len(prompt_rows)] copies of each prompt block in `train`
    held_out: TextBlocks  # blocks of the same corpus never trained on (extraction control, validation)


def as_blocks(ids: np.ndarray, valid: np.ndarray, tok, pad_id: int) -> TextBlocks:
    """Token rows as TextBlocks (so signals go through the LM study's cached query)."""
    texts = tuple(tok.decode(r[v].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
                  for r, v in zip(ids, valid))
    return TextBlocks(ids, valid, texts, np.arange(len(ids), dtype=np.int64), "documents", pad_id)


def build_world(cfg: RunConfig, tok, seed: int) -> World:
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


def token_logp(ctx: Context, template, key: str, load, blocks: TextBlocks) -> np.ndarray:
    """Next-token log-probs [n, T-1] of one model on ``blocks`` (cached per model and blocks)."""
    return query_lm(ctx, template, [key], load, blocks, ["logp"])["logp"][0]


def generate(ctx: Context, template, key: str, load, prompts: np.ndarray, spec: SamplingSpec) -> np.ndarray:
    """Sampled continuations [n, samples, length], cached per (model, prompts, sampling spec)."""
    skey = content_key(kind=SAMPLES_VERSION, model=key, prompts=prompts, spec=spec.__dict__, batch=SAMPLE_BATCH)
    if not ctx.store.signals.has(skey, ["tokens"]):
        tokens = sample_continuations(template, load([0])[0], prompts, spec, batch=SAMPLE_BATCH)
        ctx.store.signals.save(skey, {"tokens": tokens})
    return ctx.store.signals.load(skey, ["tokens"])["tokens"]


@dataclass
class Extraction:
    cands: Candidates
    scores: dict[str, np.ndarray]


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


# ------------------------------------------------------------------------------------- reporting


def fmt_ci(est: dict, digits: int = 2, pct: bool = False) -> str:
    if pct:
        return f"{est['value']:.1%} [{est['lo']:.1%}, {est['hi']:.1%}]"
    return f"{est['value']:.{digits}f} [{est['lo']:.{digits}f}, {est['hi']:.{digits}f}]"


def exposure_section(cfg: RunConfig, world: World, exp: dict[str, np.ndarray], n_refs: int) -> tuple[Section, list[dict]]:
    """Mean exposure per repetition count (CI over its canaries), as a figure and a table."""
    reps, level, seed, boot = list(cfg.extraction.repetitions), cfg.metrics.ci_level, cfg.seed, cfg.metrics.bootstrap
    ceiling = float(np.log2(n_refs + 1))
    series_of = {"rank": "rank, fine-tuned", "skew": "skew-normal, fine-tuned", "base_rank": "rank, pretrained base (control)"}
    stats = {name: [mean_ci(exp[name][world.repetitions == r], level, boot, seed) for r in reps] for name in series_of}
    series = [Series(label, [float(r) for r in reps], [s["value"] for s in stats[name]], [s["lo"] for s in stats[name]],
                     [s["hi"] for s in stats[name]]) for name, label in series_of.items()]
    series.append(Series(f"log2 |R| = {ceiling:.1f} (the rank estimate's ceiling)", [float(reps[0]), float(reps[-1])],
                         [ceiling, ceiling]))
    figure = Figure("Canary exposure vs insertions", "insertions r (log scale)", "exposure (bits)", series, xlog=True,
                    caption=f"Mean over the {cfg.extraction.canaries} canaries inserted r times, {level:.0%} bootstrap CI over "
                            f"canaries; exposure against {n_refs} reference secrets (rank) or a skew-normal fitted to them.")
    rows = []
    for i, r in enumerate(reps):
        first = (world.repetitions == r) & (exp["rank"] >= ceiling - 1e-9)
        rows.append({"insertions r": r, "rank exposure (bits)": fmt_ci(stats["rank"][i]),
                     "skew-normal exposure (bits)": fmt_ci(stats["skew"][i]),
                     "base, rank (bits)": fmt_ci(stats["base_rank"][i]),
                     "ranked first of |R|": f"{int(first.sum())}/{cfg.extraction.canaries}"})
    text = [f"Exposure = log2|R| − log2 rank of the canary among itself and {n_refs} never-inserted secrets by log-perplexity "
            f"of the secret given the prefix (at most {ceiling:.2f} bits); the skew-normal estimate, −log2 CDF under a fit to "
            "the references, keeps resolving canaries that beat them all. A random secret has expected exposure "
            f"1/ln 2 ≈ {1 / np.log(2):.2f} bits: the base never saw the canaries and is the control."]
    return Section("Canary exposure vs repetitions", text, rows, [figure]), stats["rank"]


def canary_table(cfg: RunConfig, world: World, exp: dict[str, np.ndarray], ppl: dict[str, np.ndarray]) -> Section:
    n = int((world.repetitions > 0).sum())
    rows = [{"secret": world.canaries.secrets[c], "insertions r": int(world.repetitions[c]),
             "log-perplexity (bits)": f"{ppl['target'][c]:.2f}", "base log-perplexity (bits)": f"{ppl['base'][c]:.2f}",
             "rank exposure": f"{exp['rank'][c]:.2f}", "skew-normal exposure": f"{exp['skew'][c]:.2f}"}
            for c in range(n)]
    return Section("Inserted canaries", [f"Every inserted canary, \"{cfg.extraction.canary_prefix} <secret>\", by insertions."],
                   rows)


def extraction_section(cfg: RunConfig, member: Extraction, control: Extraction) -> tuple[Section, dict]:
    """Precision and recall of each ranking at each budget, over all training prompts and the control."""
    ex, m = cfg.extraction, cfg.metrics
    rows, headline = [], {}
    for label, run in (("training prefixes", member), ("held-out prefixes (control)", control)):
        oracle = any_sample_rate(run.cands, m.bootstrap, m.ci_level, cfg.seed)
        rows.append({"prompts": label, "ranking": "none: any of the samples", "kept per prompt": f"all ({ex.samples} sampled)",
                     "precision": "", "recall": fmt_ci(oracle, pct=True), "extracted": int(run.cands.hit.sum())})
        for name in RANKINGS:
            for budget in ex.budgets:
                r = extraction_rates(run.scores[name], run.cands, budget, m.bootstrap, m.ci_level, cfg.seed)
                rows.append({"prompts": label, "ranking": name, "kept per prompt": f"{budget:g}",
                             "precision": fmt_ci(r["precision"], pct=True), "recall": fmt_ci(r["recall"], pct=True),
                             "extracted": r["extracted"]})
                if run is member:
                    headline[(name, budget)] = r
    text = [f"Prompts: the first {ex.prefix_len} tokens of {member.cands.n_prompts} fine-tuning blocks without a canary "
            f"({ex.prompts} per repetition count, each block present r times in the data). {ex.samples} continuations of "
            f"{ex.suffix_len} tokens sampled per prompt (top-k {ex.top_k or 'off'}, temperature {ex.temperature:g}) and "
            f"deduplicated per prompt: {len(member.cands.hit)} candidates. A candidate is extracted when it equals the "
            "block's next tokens verbatim. The attacker ranks all candidates by one score and keeps budget × prompts of "
            "them: precision = extracted / kept, recall = prompts extracted / prompts "
            f"({m.ci_level:.0%} CIs: bootstrap over prompts, re-ranked per replicate). The control runs the same attack "
            f"on {control.cands.n_prompts} held-out blocks of the same corpus: text the model can only predict, not recall.",
            *[f"Ranking {name}: {desc}." for name, desc in RANKINGS.items()]]
    return Section("Extraction by generation", text, rows), headline


def recall_by_group(run: Extraction, groups: np.ndarray, kept: np.ndarray | None, cfg: RunConfig) -> dict:
    """{group: mean_ci of "prompt extracted"} — by any sample (kept None) or by a kept candidate."""
    chosen = run.cands.hit if kept is None else run.cands.hit & kept
    found = np.zeros(run.cands.n_prompts)
    found[run.cands.prompt[chosen]] = 1.0
    m = cfg.metrics
    return {g: mean_ci(found[groups == g], m.ci_level, m.bootstrap, cfg.seed) for g in np.unique(groups)}


def duplicates_section(cfg: RunConfig, world: World, member: Extraction, control: Extraction) -> Section:
    """Recall of the training prompts by how many copies of their block were trained on."""
    ex = cfg.extraction
    ranking, budget = "ratio to base", max(ex.budgets)
    reps = [float(r) for r in ex.repetitions]
    any_r = recall_by_group(member, world.prompt_reps, None, cfg)
    kept_r = recall_by_group(member, world.prompt_reps,
                             top_candidates(member.scores[ranking], member.cands.n_prompts, budget), cfg)
    ctrl = recall_by_group(control, np.zeros(control.cands.n_prompts, dtype=np.int64), None, cfg)[0]
    label = f"ranked by {ranking}, {budget:g} kept per prompt"
    series = [Series("any of the samples", reps, [any_r[r]["value"] for r in ex.repetitions],
                     [any_r[r]["lo"] for r in ex.repetitions], [any_r[r]["hi"] for r in ex.repetitions]),
              Series(label, reps, [kept_r[r]["value"] for r in ex.repetitions],
                     [kept_r[r]["lo"] for r in ex.repetitions], [kept_r[r]["hi"] for r in ex.repetitions]),
              Series("held-out blocks, any sample (control)", [reps[0], reps[-1]], [ctrl["value"]] * 2)]
    figure = Figure("Extraction recall vs copies in the fine-tuning data", "copies of the block r (log scale)",
                    "share of prompts whose suffix is extracted", series, xlog=True,
                    caption=f"{ex.prompts} prompts per r; {cfg.metrics.ci_level:.0%} bootstrap CI over prompts.")
    rows = [{"copies r": r, "recall, any sample": fmt_ci(any_r[r], pct=True), f"recall, {label}": fmt_ci(kept_r[r], pct=True)}
            for r in ex.repetitions]
    rows.append({"copies r": "held-out (0)", "recall, any sample": fmt_ci(ctrl, pct=True), f"recall, {label}": ""})
    return Section("Extraction vs repetitions", ["Verbatim extraction of training text by how often its block was "
                                                 "trained on (the same counts as the canaries')."], rows, [figure])


# ------------------------------------------------------------------------------------------- run


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_config(cfg)
    ex, lm = cfg.extraction, cfg.lm
    seeds = make_seeds(cfg.seed, 0)  # the LM study's seeds: the same cached base as lm-mia
    seeds["finetune"] = derive_seed(cfg.seed, "extraction", "finetune")
    seeds["sampling"] = derive_seed(cfg.seed, "extraction", "sampling")
    with lm_threads(cfg):
        name = model_kind_check(cfg, CAUSAL, "lm-extraction")
        with ctx.stage("data"):
            tok, tok_path = tokenizer_for(ctx, cfg, name)
            world = build_world(cfg, tok, cfg.seed)
        with ctx.stage("pretrain"):
            base = pretrain_base(ctx, cfg, name, tok, seeds) if name in TINY.values() else load_base(cfg, name, CAUSAL, tok)
        ft = recipe(cfg)
        with ctx.stage("finetune"):
            template, result = train_lms(ctx, cfg, "fine-tune with canaries", base.template, get_method(ft.method),
                                         MethodOptions.from_config(ft), ft, world.train, [base.state],
                                         [np.arange(len(world.train))], [seeds["finetune"]], CAUSAL)
        models = {"target": (template, result.keys[0], result.states),
                  "base": (base.template, base.key, lambda idx: [base.state for _ in idx])}
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
    dup_section = duplicates_section(cfg, world, member, control)
    pooled = PooledScores(scores={"canary-loss": -ppl["target"], "canary-ratio": ppl["base"] - ppl["target"]},
                          labels=inserted.copy(), example=np.arange(len(inserted), dtype=np.int64),
                          target=np.zeros(len(inserted), dtype=np.int64))
    level = cfg.metrics.ci_level
    utility = [{**perplexity(val["target"], cfg.seed, level), "name": "fine-tuned validation perplexity",
                "note": f"on {len(world.held_out)} held-out {lm.finetune_corpus} blocks (CI over blocks)"},
               {**perplexity(val["base"], cfg.seed, level), "name": "pretrained base validation perplexity",
                "note": "the base alone on the same blocks"}]
    setup = Section("Setup", [
        f"Base: {base.source}. Tokenizer: {tok_path}.",
        f"Fine-tuning: {ft.method}, {ft.epochs} epochs, {ft.optimizer} lr {ft.lr:g}, batch {ft.batch_size}, on "
        f"{len(world.train)} blocks of {lm.block_len} tokens of {lm.finetune_corpus} (one model): {ex.finetune_blocks} "
        f"distinct blocks plus {len(world.train) - ex.finetune_blocks} extra copies of the extraction prompts' blocks.",
        f"Canaries: \"{ex.canary_prefix} \" + {ex.canary_digits} random digits; {ex.canaries} per insertion count r ∈ "
        f"{list(ex.repetitions)}, each insertion written over the first tokens of its own block "
        f"({int(world.repetitions.sum())} blocks carry one); {ex.references} reference secrets never inserted."])
    reps = list(ex.repetitions)
    ratio = "; ".join(f"{b:g} kept per prompt: precision {fmt_ci(ext[('ratio to base', b)]['precision'], pct=True)}, recall "
                      f"{fmt_ci(ext[('ratio to base', b)]['recall'], pct=True)}" for b in ex.budgets)
    notes = [f"Canaries inserted {reps[-1]}× reach a mean rank exposure of {fmt_ci(rank_stats[-1])} bits (ceiling "
             f"{np.log2(len(refs['target']) + 1):.1f}); inserted {reps[0]}×, {fmt_ci(rank_stats[0])} bits.",
             f"Extraction by generation from {member.cands.n_prompts} training prefixes, ranked by the ratio to the base: "
             f"{ratio}."]
    return StudyOutput(
        title=f"Extraction from a GPT-2 fine-tuned on {lm.finetune_corpus}: canary exposure and verbatim generation",
        signals=None, pooled=pooled, descriptions=ATTACKS, member_rate=inserted.astype(np.float64), references=0,
        utility=utility, audit_arrays={"canary_ids": world.canaries.ids, "canary_repetitions": world.repetitions},
        models=[("pretrain", 0, base.key, seeds["pretrain"]), ("finetune", 0, result.keys[0], seeds["finetune"])],
        seeds=seeds, sections=[setup, exp_section, ext_section, dup_section, canary_table(cfg, world, exp, ppl)], notes=notes)


SCENARIO = Scenario("lm-extraction", "causal LM: canary exposure vs insertions (rank and skew-normal) and extraction of "
                                     "training text by generation (precision / recall)", run)
