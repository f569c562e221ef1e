"""The report of ``lm-extraction``: exposure by insertions, extraction by generation and by copies."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.canaries import CanarySet
from ftaudit.attacks.extraction import RANKINGS, Candidates, any_sample_rate, extraction_rates, top_candidates
from ftaudit.data.text import TextBlocks
from ftaudit.metrics import mean_ci
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.studies.lm.config import LMExtractionConfig
from ftaudit.wording import plural


@dataclass
class World:
    canaries: CanarySet  # inserted first (canary j of count r at row r_index * k + j), then the references
    repetitions: np.ndarray  # int64 [n_canaries]: insertions of each (0 for a reference)
    train: TextBlocks  # the fine-tuning blocks: canaries spliced in, then the prompt blocks' extra copies
    prompt_rows: np.ndarray  # rows of `train` whose prefixes prompt the extraction (no canary)
    prompt_reps: np.ndarray  # [len(prompt_rows)] copies of each prompt block in `train`
    held_out: TextBlocks  # blocks of the same corpus never trained on (extraction control, validation)


@dataclass
class Extraction:
    cands: Candidates
    scores: dict[str, np.ndarray]


def fmt_ci(est: dict, digits: int = 2, pct: bool = False) -> str:
    if pct:
        return f"{est['value']:.1%} [{est['lo']:.1%}, {est['hi']:.1%}]"
    return f"{est['value']:.{digits}f} [{est['lo']:.{digits}f}, {est['hi']:.{digits}f}]"


def exposure_section(cfg: LMExtractionConfig, world: World, exp: dict[str, np.ndarray], n_refs: int) -> tuple[ReportSection, list[dict]]:
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
    return ReportSection("Canary exposure vs repetitions", text, rows, [figure]), stats["rank"]


def canary_table(cfg: LMExtractionConfig, world: World, exp: dict[str, np.ndarray], ppl: dict[str, np.ndarray]) -> ReportSection:
    n = int((world.repetitions > 0).sum())
    rows = [{"secret": world.canaries.secrets[c], "insertions r": int(world.repetitions[c]),
             "log-perplexity (bits)": f"{ppl['target'][c]:.2f}", "base log-perplexity (bits)": f"{ppl['base'][c]:.2f}",
             "rank exposure": f"{exp['rank'][c]:.2f}", "skew-normal exposure": f"{exp['skew'][c]:.2f}"}
            for c in range(n)]
    return ReportSection("Inserted canaries", [f"Every inserted canary, \"{cfg.extraction.canary_prefix} <secret>\", by insertions."],
                   rows)


def extraction_section(cfg: LMExtractionConfig, member: Extraction, control: Extraction) -> tuple[ReportSection, dict]:
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
    return ReportSection("Extraction by generation", text, rows), headline


def recall_by_group(run: Extraction, groups: np.ndarray, kept: np.ndarray | None, cfg: LMExtractionConfig) -> dict:
    """{group: mean_ci of "prompt extracted"} — by any sample (kept None) or by a kept candidate."""
    chosen = run.cands.hit if kept is None else run.cands.hit & kept
    found = np.zeros(run.cands.n_prompts)
    found[run.cands.prompt[chosen]] = 1.0
    m = cfg.metrics
    return {g: mean_ci(found[groups == g], m.ci_level, m.bootstrap, cfg.seed) for g in np.unique(groups)}


def duplicates_section(cfg: LMExtractionConfig, world: World, member: Extraction, control: Extraction) -> ReportSection:
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
    return ReportSection("Extraction vs repetitions", ["Verbatim extraction of training text by how often its block was "
                                                 "trained on (the same counts as the canaries')."], rows, [figure])


def setup_section(cfg: LMExtractionConfig, world: World, base_source: str, tok_path: str) -> ReportSection:
    lm, ft, ex = cfg.lm, cfg.finetune, cfg.extraction
    return ReportSection("Setup", [
        f"Base: {base_source}. Tokenizer: {tok_path}.",
        f"Fine-tuning: {ft.method}, {plural(ft.epochs, 'epoch')}, {ft.optimizer} lr {ft.lr:g}, batch {ft.batch_size}, on "
        f"{len(world.train)} blocks of {lm.block_len} tokens of {lm.finetune_corpus} (one model): {ex.finetune_blocks} "
        f"distinct blocks plus {len(world.train) - ex.finetune_blocks} extra copies of the extraction prompts' blocks.",
        f"Canaries: \"{ex.canary_prefix} \" + {ex.canary_digits} random digits; {ex.canaries} per insertion count r ∈ "
        f"{list(ex.repetitions)}, each insertion written over the first tokens of its own block "
        f"({int(world.repetitions.sum())} blocks carry one); {ex.references} reference secrets never inserted."])


def summary(cfg: LMExtractionConfig, rank_stats: list[dict], n_refs: int, member: Extraction, ext: dict) -> list[str]:
    """The run's notes: exposure at the fewest and most insertions, extraction ranked by the ratio to the base."""
    ex = cfg.extraction
    reps = list(ex.repetitions)
    ratio = "; ".join(f"{b:g} kept per prompt: precision {fmt_ci(ext[('ratio to base', b)]['precision'], pct=True)}, recall "
                      f"{fmt_ci(ext[('ratio to base', b)]['recall'], pct=True)}" for b in ex.budgets)
    return [f"Canaries inserted {reps[-1]}× reach a mean rank exposure of {fmt_ci(rank_stats[-1])} bits (ceiling "
            f"{np.log2(n_refs + 1):.1f}); inserted {reps[0]}×, {fmt_ci(rank_stats[0])} bits.",
            f"Extraction by generation from {member.cands.n_prompts} training prefixes, ranked by the ratio to the base: "
            f"{ratio}."]
