"""Membership scores of language models from per-token signals (``ftaudit.signals.lm``).

Pure numpy. Every function works over any leading dimensions (one model [N, T] or many [M, N, T])
and returns one score per block, higher = more likely a member. NaN marks positions that are not
tokens (padding) and is skipped. The scenario computes these scores into ``SignalSet.scores`` with
:func:`lm_score_set`; the registered ``precomputed`` attacks below read them from there.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from ftaudit.attacks.registry import register_precomputed


def mean_nll(logp: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood per block (nats per token): the log-perplexity."""
    return -np.nanmean(logp, axis=-1)


def loss_score(logp: np.ndarray) -> np.ndarray:
    """LOSS (Yeom et al. 2018): -mean NLL."""
    return -mean_nll(logp)


def zlib_entropy(texts: Sequence[str]) -> np.ndarray:
    """Length in bytes of each text's zlib compression (default level), as in Carlini et al. 2021."""
    return np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)


def zlib_score(logp: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """zlib ratio (Carlini et al. 2021, "Extracting Training Data from Large Language Models"):
    log-perplexity over zlib entropy, mean NLL / zlib bytes. Their extraction ranks samples by the
    lowest ratio; here the sign is flipped, -mean NLL / zlib bytes, so higher = member. Text that is
    simply easy (repetitive: low NLL and small zlib size) is discounted, memorised text is not.
    With fixed-length blocks this ranks like total NLL / zlib bytes."""
    entropy = zlib_entropy(texts)
    if entropy.shape[0] != np.shape(logp)[-2]:
        raise ValueError(f"{entropy.shape[0]} texts for {np.shape(logp)[-2]} blocks")
    return -mean_nll(logp) / entropy


def _lowest_mean(values: np.ndarray, k: float) -> np.ndarray:
    """Mean of the lowest fraction ``k`` of each row's non-NaN values (at least one value)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    values = np.asarray(values, dtype=np.float64)
    count = np.maximum(1, np.floor(k * (~np.isnan(values)).sum(-1))).astype(np.int64)  # int(len * k), as the papers
    ordered = np.sort(values, axis=-1)  # NaN last
    take = np.arange(values.shape[-1]) < count[..., None]
    return np.where(take, ordered, 0.0).sum(-1) / count


def min_k_score(logp: np.ndarray, k: float = 0.2) -> np.ndarray:
    """Min-K % Prob (Shi et al. 2024): mean of the lowest k fraction of token log-probs."""
    return _lowest_mean(logp, k)


def min_k_plus_plus_score(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float = 0.2) -> np.ndarray:
    """Min-K %++ (Zhang et al. 2024): each token's log-prob standardised by the mean and std of log p
    under the model's next-token distribution, (logp - mu) / sigma, then the mean of the lowest k."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return _lowest_mean((np.asarray(logp) - mu) / np.where(sigma > 0, sigma, np.finfo(np.float64).tiny), k)


def ratio_score(target_nll: np.ndarray, reference_nll: np.ndarray) -> np.ndarray:
    """Reference attack (Carlini et al. 2021; Mireshghallah et al. 2022): reference NLL - target NLL,
    how much more likely the target finds the block than a reference model does. With the pretrained
    base as reference it is free: the fine-tuner's starting point is public."""
    return np.asarray(reference_nll, dtype=np.float64) - np.asarray(target_nll, dtype=np.float64)


def pll_score(pll: np.ndarray) -> np.ndarray:
    """Masked LM: mean pseudo-log-likelihood per token (Salazar et al. 2020); higher = member."""
    return np.nanmean(pll, axis=-1)


def mlm_ratio_score(target_pll: np.ndarray, reference_pll: np.ndarray) -> np.ndarray:
    """Masked LM reference attack (Mireshghallah et al. 2022): target mean PLL - reference mean PLL."""
    return pll_score(target_pll) - pll_score(reference_pll)


def sequence_signals(nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-level signals for the SignalSet's conf/loss ([M, N] -> [M, N, 1], A = 1 query): conf is
    the log-likelihood -NLL (higher on members), loss the NLL, so LiRA/RMIA/LOSS run on blocks."""
    nll = np.asarray(nll, dtype=np.float64)[..., None]
    return -nll, nll


PRECOMPUTED = {
    "zlib": "LM: -log-perplexity / zlib entropy of the text (Carlini et al. 2021)",
    "min-k": "LM: mean of the lowest k (default 20 %) token log-probs (Min-K % Prob)",
    "min-k++": "LM: mean of the lowest k (default 20 %) standardised token log-probs (Min-K %++)",
    "lm-ratio": "LM: NLL drop from a reference model (the pretrained base) to the target",
    "mlm-pll": "masked LM: mean pseudo-log-likelihood per token",
    "mlm-ratio": "masked LM: PLL gain of the target over a reference model (the pretrained base)",
}


def lm_score_set(*, logp: np.ndarray | None = None, mu: np.ndarray | None = None, sigma: np.ndarray | None = None,
                 texts: Sequence[str] | None = None, reference_logp: np.ndarray | None = None,
                 pll: np.ndarray | None = None, reference_pll: np.ndarray | None = None,
                 k: float = 0.2) -> dict[str, np.ndarray]:
    """``SignalSet.scores`` {name: [M, N]} from per-model arrays (logp/mu/sigma [M, N, T-1], pll
    [M, N, T]); each score is computed when its inputs are given. A reference's arrays may be one
    model's ([N, ...], e.g. the base, shared by all targets) or per target ([M, N, ...])."""
    scores: dict[str, np.ndarray] = {}
    if logp is not None:
        scores["min-k"] = min_k_score(logp, k)
        if texts is not None:
            scores["zlib"] = zlib_score(logp, texts)
        if mu is not None and sigma is not None:
            scores["min-k++"] = min_k_plus_plus_score(logp, mu, sigma, k)
        if reference_logp is not None:
            scores["lm-ratio"] = ratio_score(mean_nll(logp), mean_nll(reference_logp))
    if pll is not None:
        scores["mlm-pll"] = pll_score(pll)
        if reference_pll is not None:
            scores["mlm-ratio"] = mlm_ratio_score(pll, reference_pll)
    shapes = {name: s.shape for name, s in scores.items()}
    if any(len(shape) != 2 for shape in shapes.values()) or len(set(shapes.values())) > 1:
        raise ValueError(f"scores must all be [M, N]; got {shapes}")
    return scores


for _name, _description in PRECOMPUTED.items():
    register_precomputed(_name, _description)
