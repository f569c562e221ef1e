"""Per-token signals of language models, computed once per (model, architecture, block set) and cached.

Causal LMs give ``logp``, ``mu``, ``sigma`` [n, T-1] per block from one forward (cached together);
masked LMs the pseudo-log-likelihood ``pll`` [n, T] (one forward per token: the expensive signal,
so the studies compute it on the audit blocks only) and the random-masking loss ``mlm_loss`` [n].
From them, the block-level signal of LOSS, LiRA and RMIA (:func:`sequence_nll`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ftaudit.attacks.lm import mean_nll
from ftaudit.data.text import TextBlocks
from ftaudit.data.tokenizer import MASK_ID
from ftaudit.models.lm import LMWrapper, lm_arch_spec
from ftaudit.signals.jobs import SignalJob
from ftaudit.signals.lm import CAUSAL_SIGNALS
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context
from ftaudit.studies.lm.base import CAUSAL
from ftaudit.train.mlm import MASK_RATE
from ftaudit.train.trainers import State

SIGNALS_VERSION = "lm-signals-v3"  # bump when a signal's definition changes: cached signals stop matching
BUDGET = 1 << 20  # logits per forward chunk: 8 MB in float64 stays in cache (3x faster than 1 << 24 here)
PLL_BUDGET = 1 << 22  # PLL keeps one position's logits per row, so larger chunks pay (1.3x faster than 1 << 20)

Loader = Callable[[list[int]], list[State]]


def signal_arch(template: LMWrapper) -> dict:
    """How a model's weights are read: the HF architecture and the parameters of the template (a
    LoRA or adapter template has more than its base)."""
    return {"lm": lm_arch_spec(template),
            "params": content_key(shapes={n: list(p.shape) for n, p in template.state_dict().items()})}


def _signal_group(name: str) -> str:
    return "causal" if name in CAUSAL_SIGNALS else name


def query_lm(ctx: Context, template: LMWrapper, keys: list[str], load_states: Loader, blocks: TextBlocks,
             names: list[str], mask_id: int = MASK_ID, maskings: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Signals {name: [M, n, ...]} of each model (by model key) on ``blocks``, cached per (model,
    architecture, blocks, signal). Causal: logp/mu/sigma [M, n, T-1]; masked: pll [M, n, T],
    mlm_loss [M, n]."""
    arch = signal_arch(template)
    inputs = {"ids": torch.from_numpy(np.ascontiguousarray(blocks.ids)),
              "valid": torch.from_numpy(np.ascontiguousarray(blocks.valid))}
    out: dict[str, np.ndarray] = {}
    for group in dict.fromkeys(_signal_group(n) for n in names):
        params = {"maskings": maskings, "seed": seed} if group == "mlm_loss" else {}
        skeys = [ctx.signal_key(model=k, arch=arch, blocks=blocks.digest(), signal=group, version=SIGNALS_VERSION,
                                mask_id=mask_id, **params) for k in keys]
        signal, job_params = {"causal": ("causal-lm", {"budget": BUDGET}),
                              "pll": ("pll", {"mask_id": mask_id, "budget": PLL_BUDGET}),
                              "mlm_loss": ("mlm-loss", {"mask_id": mask_id, "budget": BUDGET, **params})}[group]
        per_model = ctx.query(skeys, lambda idx, signal=signal, job_params=job_params: SignalJob(
            signal, template, load_states(idx), inputs, job_params))
        for name in names:
            if _signal_group(name) == group:
                out[name] = np.stack([p[name] for p in per_model])
    return out


def audit_signal_names(kind: str) -> list[str]:
    return list(CAUSAL_SIGNALS) if kind == CAUSAL else ["pll", "mlm_loss"]


def population_signal_names(kind: str) -> list[str]:
    """The cheap signal of the held-out blocks: what validation and RMIA's population need."""
    return ["logp"] if kind == CAUSAL else ["mlm_loss"]


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
