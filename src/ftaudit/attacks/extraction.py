"""Extraction by generation (Carlini et al. 2021, "Extracting Training Data from Large Language Models").

The attacker prompts the fine-tuned model with prefixes of training text, samples continuations
(top-k and temperature, seeded; :mod:`ftaudit.signals.generation`), and must then pick which samples are memorised text: it ranks all
candidates by a membership score and keeps the top ones. A candidate counts as extracted when it is
verbatim the training text that followed its prefix (the suffix). Over the kept candidates,

    precision = extracted / kept        recall = prompts whose suffix was extracted / prompts

and because a prompt's candidates are deduplicated, each prompt contributes at most one extraction.
The budget is given as guesses per prompt (kept = budget × prompts). Confidence intervals resample
prompts (a cluster bootstrap: a prompt's candidates travel together) and re-rank each replicate.

Ranking scores, higher = more likely memorised, from each candidate's mean NLL per suffix token:
``perplexity`` (−NLL under the target), ``ratio to base`` (−NLL_target / NLL_base: Carlini's ratio of
log-perplexities, with the public pretrained base as the reference model) and ``zlib``
(−NLL_target / zlib bytes of the generated text).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.lm import zlib_entropy

RANKINGS = {
    "perplexity": "−mean NLL of the suffix under the fine-tuned model",
    "ratio to base": "−NLL(fine-tuned) / NLL(pretrained base): Carlini et al.'s ratio of log-perplexities",
    "zlib": "−NLL(fine-tuned) / zlib bytes of the generated text",
}


@dataclass(frozen=True)
class Candidates:
    """Distinct (prompt, continuation) pairs: what the attacker ranks."""

    prompt: np.ndarray  # int64 [C] prompt index
    tokens: np.ndarray  # int64 [C, L] the generated continuation
    hit: np.ndarray  # bool [C] the continuation is the prompt's true suffix, verbatim
    count: np.ndarray  # int64 [C] times it was sampled
    n_prompts: int


def candidates(generated: np.ndarray, suffixes: np.ndarray) -> Candidates:
    """Deduplicate each prompt's samples (generated [n, S, L]) and mark the true suffix (suffixes [n, L])."""
    generated, suffixes = np.asarray(generated), np.asarray(suffixes)
    if generated.ndim != 3 or suffixes.shape != (generated.shape[0], generated.shape[2]):
        raise ValueError(f"generated [n, S, L] and suffixes [n, L] expected, got {generated.shape} and {suffixes.shape}")
    prompt, tokens, hit, count = [], [], [], []
    for i, rows in enumerate(generated):
        unique, n = np.unique(rows, axis=0, return_counts=True)
        prompt += [i] * len(unique)
        tokens.append(unique)
        hit.append((unique == suffixes[i]).all(axis=1))
        count.append(n)
    return Candidates(np.asarray(prompt, dtype=np.int64), np.concatenate(tokens).astype(np.int64),
                      np.concatenate(hit), np.concatenate(count).astype(np.int64), len(generated))


def ranking_scores(nll: np.ndarray, base_nll: np.ndarray, texts) -> dict[str, np.ndarray]:
    """The three rankings (higher = more likely memorised) from mean NLLs per token [C]."""
    nll, base_nll = np.asarray(nll, dtype=np.float64), np.asarray(base_nll, dtype=np.float64)
    return {"perplexity": -nll, "ratio to base": -nll / base_nll, "zlib": -nll / zlib_entropy(texts)}


def suffix_nll(logp: np.ndarray, start: int) -> np.ndarray:
    """Mean NLL (nats per token) of positions start.. from next-token log-probs [..., n, T-1]."""
    return -np.nanmean(np.asarray(logp, dtype=np.float64)[..., start - 1:], axis=-1)


def _percentile(reps: np.ndarray, value: float, level: float) -> dict:
    reps = reps[np.isfinite(reps)]
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) if reps.size else (value, value)
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def top_candidates(scores: np.ndarray, n_prompts: int, guesses_per_prompt: float) -> np.ndarray:
    """bool [C]: the ``guesses_per_prompt × n_prompts`` best-scored candidates (ties: first listed)."""
    budget = max(1, int(round(guesses_per_prompt * n_prompts)))
    kept = np.zeros(len(scores), dtype=bool)
    kept[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:budget]] = True
    return kept


def extraction_rates(scores: np.ndarray, cands: Candidates, guesses_per_prompt: float, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Precision and recall of the top ``guesses_per_prompt × prompts`` candidates by ``scores``,
    each {"value", "lo", "hi"} (cluster bootstrap over prompts), plus ``kept`` and ``extracted``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != cands.hit.shape or not np.isfinite(scores).all():
        raise ValueError("one finite score per candidate expected")
    if np.bincount(cands.prompt[cands.hit], minlength=cands.n_prompts).max(initial=0) > 1:
        raise ValueError("a prompt has two candidates marked as its suffix: deduplicate first")
    if not guesses_per_prompt > 0:
        raise ValueError("guesses_per_prompt must be positive")
    n = cands.n_prompts
    budget = max(1, int(round(guesses_per_prompt * n)))
    order = np.argsort(-scores, kind="stable")
    prompt, hit = cands.prompt[order], cands.hit[order]
    rng = np.random.default_rng([seed, 0xE7])
    draws = rng.integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot + 1, n))
    weights[0] = 1.0  # row 0: the data as observed
    np.add.at(weights, (np.repeat(np.arange(1, n_boot + 1), n), draws.ravel()), 1.0)
    w = weights[:, prompt]  # [B+1, C] copies of each candidate in each replicate
    cum = np.cumsum(w, axis=1)
    kept_w = np.clip(budget - (cum - w), 0.0, w)  # the copies of each candidate that still fit the budget
    kept, found = kept_w.sum(axis=1), (kept_w * hit).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = found / kept
    recall = found / n
    return {"precision": _percentile(precision[1:], precision[0], level), "recall": _percentile(recall[1:], recall[0], level),
            "kept": int(kept[0]), "extracted": int(found[0])}


def any_sample_rate(cands: Candidates, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Share of prompts whose suffix is among any of their samples (no ranking: recall's ceiling)."""
    found = np.zeros(cands.n_prompts)
    found[cands.prompt[cands.hit]] = 1.0
    from ftaudit.metrics import mean_ci

    return mean_ci(found, level=level, n_boot=n_boot, seed=seed)
