"""lm-methods' canaries (Carlini et al. 2019): secrets every model of every cell also trains on, so
each cell gets an exposure — how far the inserted secrets rank ahead of never-inserted ones."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.canaries import (CanaryFormat, draw_secrets, rank_exposure, secret_log_perplexity,
                                      skewnorm_exposure, tokenize_canaries)
from ftaudit.config import MetricsConfig
from ftaudit.data.text import TextBlocks
from ftaudit.errors import UserError
from ftaudit.metrics import mean_ci
from ftaudit.seeding import derive_seed
from ftaudit.studies.base import Context
from ftaudit.studies.lm.cell import LMStudy
from ftaudit.studies.lm.config import LMSweepConfig
from ftaudit.studies.lm.signals import Loader

EXPOSURE = "canary exposure (rank, bits)"


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


def make_canaries(sweep: LMSweepConfig, block_len: int, tok, run_seed: int) -> Canaries | None:
    """sweep.canaries random secrets to insert and sweep.canary_references to compare them with (None: off)."""
    if not sweep.canaries:
        return None
    fmt = CanaryFormat()
    seed = derive_seed(run_seed, "lm-methods", "canaries")
    secrets = draw_secrets(sweep.canaries + sweep.canary_references, fmt.digits, seed, field="sweep.canary_references")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0  # as make_blocks pads
    probe = tokenize_canaries(tok, fmt, secrets, pad_id=pad, field="sweep.canaries")
    width = probe.ids.shape[1]
    if width > block_len:
        raise UserError("lm.block_len", f"a canary takes {width} tokens, a block {block_len}", f"use lm.block_len >= {width}")
    blocks = TextBlocks(probe.ids, probe.valid, tuple(fmt.text(s) for s in secrets), np.arange(len(secrets)), "documents", pad)
    return Canaries(blocks, probe.start, sweep.canaries, sweep.canary_repeats)


def exposures(ctx: Context, study: LMStudy, canaries: Canaries, template, keys: list[str], load: Loader) -> dict[str, np.ndarray]:
    """Rank and skew-normal exposure (bits) [M, inserted] of each model's inserted canaries."""
    logp = study.query(ctx, template, keys, load, canaries.probe, ["logp"])["logp"]
    bits = secret_log_perplexity(logp, canaries.start)  # [M, inserted + references]
    k = canaries.inserted
    return {"rank": np.stack([rank_exposure(b[:k], b[k:]) for b in bits]),
            "skew-normal": np.stack([skewnorm_exposure(b[:k], b[k:]) for b in bits])}


def exposure_columns(exp: dict[str, np.ndarray], metrics: MetricsConfig, seed: int) -> dict:
    """Mean exposure of the inserted canaries (mean over models first), CI over canaries."""
    rank = mean_ci(exp["rank"].mean(axis=0), level=metrics.ci_level, seed=seed)
    skew = mean_ci(exp["skew-normal"].mean(axis=0), level=metrics.ci_level, seed=seed)
    return {EXPOSURE: rank["value"], "exposure lo": rank["lo"], "exposure hi": rank["hi"],
            "canary exposure (skew-normal, bits)": skew["value"]}


def highest(rows: list[dict], value: str, lo: str, hi: str, what: str, *, lowest: bool = False) -> str:
    """The cell (or method) with the highest ``value`` — said resolved only when its CI lies entirely
    above every other's. The cells are different ensembles, so no paired bootstrap applies; the rule
    is non-overlapping CIs, a conservative one. ``lowest`` asks for the lowest instead."""
    label = lambda r: f"{r['method']} lr={r['lr']:g}" if what == "cell" else r["method"]  # noqa: E731
    order = sorted(rows, key=lambda r: r[value], reverse=not lowest)
    top, rest = order[0], order[1:]
    if not rest:
        return f"{label(top)} (the only {what})"
    overlap = [r for r in rest if (r[lo] <= top[hi] if lowest else r[hi] >= top[lo])]
    if not overlap:
        return (f"{label(top)} — resolved: its CI lies {'below' if lowest else 'above'} every other {what}'s "
                "(non-overlapping CIs)")
    return (f"not resolved — {label(top)} has the {'lowest' if lowest else 'highest'} estimate (picked after the fact "
            f"among {len(order)}), but its CI overlaps that of {', '.join(label(r) for r in overlap)} (rule: "
            "non-overlapping CIs, as the cells are different ensembles)")


def canary_text(ctx: Context, sweep: LMSweepConfig, study: LMStudy, canaries: Canaries | None, rows: list[dict],
                metrics: MetricsConfig) -> str:
    """What the exposure column means, with the base (which never saw the canaries) as the control."""
    if not canaries:
        return "No canaries (sweep.canaries = 0): no exposure column."
    base = study.base
    with ctx.stage("signals"):
        control = exposure_columns(exposures(ctx, study, canaries, base.template, [base.key], base.load), metrics,
                                   study.run_seed)
    return (f"Canary exposure: every model also trained on {sweep.canaries} canaries (\"{CanaryFormat().prefix} "
            f"<6 random digits>\"), each {sweep.canary_repeats} times, each copy written over the start of its own extra "
            "block of private text (not an audit block). Rank exposure = log2(|R|) − log2(rank) of the secret's "
            f"log-perplexity among {sweep.canary_references} never-inserted secrets (at most "
            f"{np.log2(sweep.canary_references + 1):.2f} bits); the skew-normal estimate extrapolates past the references. "
            "Mean over models, then over canaries (CI over canaries). The pretrained base, which never saw them, is the "
            f"control: {control[EXPOSURE]:.2f} bits [{control['exposure lo']:.2f}, {control['exposure hi']:.2f}]. "
            f"Highest exposure: {highest(rows, EXPOSURE, 'exposure lo', 'exposure hi', 'cell')}.")
