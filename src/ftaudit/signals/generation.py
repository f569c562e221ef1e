"""Sampling continuations from a causal LM: the model-touching half of extraction by generation
(Carlini et al. 2021). The attacker's side — deduplicating, ranking and scoring the candidates —
is numpy only, in :mod:`ftaudit.attacks.extraction`."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SamplingSpec:
    """``samples`` continuations of ``length`` tokens per prompt, from the top ``top_k`` tokens
    (0 = all) at ``temperature``, drawn from one generator seeded ``seed``."""

    samples: int
    length: int
    top_k: int = 40
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.length < 1 or self.top_k < 0 or not self.temperature > 0:
            raise ValueError(f"invalid sampling spec {self}")


@torch.no_grad()
def sample_continuations(template, state: dict, prompts, spec: SamplingSpec, batch: int = 512,
                         device=None) -> np.ndarray:
    """Token ids [n, samples, length] continuing each prompt (ids [n, P]) under the causal LM
    ``template`` (an :class:`~ftaudit.models.lm.LMWrapper`) with weights ``state``.

    Batched over prompt × sample rows (``batch`` at a time) with the HF model's key/value cache, so
    each new token costs one position's forward. All rows draw from one generator in a fixed order:
    the result is a function of the inputs, the seed and ``batch`` (which cache keys must include).
    The model runs on ``device`` (default the CPU); the draws stay on the CPU generator, so a device
    changes the samples only through the logits' rounding."""
    x = torch.as_tensor(np.asarray(prompts), dtype=torch.int64)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"prompts must be [n, P] with P >= 1, got {tuple(x.shape)}")
    device = torch.device(device or "cpu")
    module = copy.deepcopy(template).eval().to(device)
    module.load_state_dict(state)
    rows = x.repeat_interleave(spec.samples, dim=0)  # prompt-major: row = prompt * samples + s
    gen = torch.Generator().manual_seed(spec.seed)
    out = torch.empty((len(rows), spec.length), dtype=torch.int64)
    for start in range(0, len(rows), batch):
        out[start:start + batch] = _sample_batch(module.lm, rows[start:start + batch], spec, gen)
    return out.reshape(len(x), spec.samples, spec.length).numpy()


def _sample_batch(lm, prompts: torch.Tensor, spec: SamplingSpec, gen: torch.Generator) -> torch.Tensor:
    device = lm.get_input_embeddings().weight.device
    out = lm(input_ids=prompts.to(device), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    tokens = []
    for step in range(spec.length):
        token = _draw(logits.cpu(), spec, gen)
        tokens.append(token)
        if step + 1 < spec.length:
            out = lm(input_ids=token[:, None].to(device), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
    return torch.stack(tokens, dim=1)


def _draw(logits: torch.Tensor, spec: SamplingSpec, gen: torch.Generator) -> torch.Tensor:
    logits = logits.to(torch.float64) / spec.temperature
    if 0 < spec.top_k < logits.shape[-1]:
        kth = torch.topk(logits, spec.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
