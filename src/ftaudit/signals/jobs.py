"""Signal jobs: what querying a chunk of models needs, and nothing of the study that asked.

A study's signals are each model's statistics on a query set (losses of image views, per-token
log-probabilities of text blocks). A :class:`SignalJob` names a registered signal function and
carries the template, the models' states, the query tensors and JSON-able parameters, so an
executor can run it in this process or ship it to a Ray worker (``engine.executor``,
docs/scale.md) — a name travels, a closure would not. Every registered function is
``fn(template, states, inputs, device, **params) -> {name: array [M, ...]}``, one row per state,
CPU numpy, whatever ``device`` the models ran on.

The registry maps names to ``module:function`` paths, imported when first used, so a worker needs
only this module to find a study's own signal (and the signals modules never import the studies).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ftaudit.devices import Placement
from ftaudit.train.trainers import State

Arrays = dict[str, np.ndarray]
SignalFn = Callable[..., Arrays]

SIGNALS: dict[str, str] = {
    "classifier": "ftaudit.signals.jobs:classifier_job",  # conf, loss, correct [M, n, A] of views [A, n, ...]
    "logits": "ftaudit.signals.jobs:logits_job",  # logits [M, n, C] of inputs x [n, ...]
    "causal-lm": "ftaudit.signals.jobs:causal_job",  # logp, mu, sigma [M, n, T-1]
    "pll": "ftaudit.signals.jobs:pll_job",  # pseudo-log-likelihood [M, n, T] of a masked LM
    "mlm-loss": "ftaudit.signals.jobs:mlm_loss_job",  # random-masking loss [M, n]
    "token-phi": "ftaudit.studies.tmi.text_world:phi_job",  # TMI's per-position logit-scaled probability
    "audit-nll": "ftaudit.studies.audit.references:nll_job",  # an audit reference's mean token NLL [M, n]
}


@dataclass
class SignalJob:
    """The signal ``signal`` of ``states`` (read through ``template``) on ``inputs``."""

    signal: str
    template: nn.Module
    states: list[State]
    inputs: dict[str, torch.Tensor]
    params: dict = field(default_factory=dict)  # numbers, strings and booleans only (they travel as JSON)


def signal_fn(name: str) -> SignalFn:
    if name not in SIGNALS:
        raise ValueError(f"unknown signal {name!r}; registered: {', '.join(sorted(SIGNALS))}")
    module, _, attr = SIGNALS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def run_signal_job(job: SignalJob, place: Placement) -> Arrays:
    """The job's arrays, one row per state, computed on ``place.device`` (queries run in float32)."""
    with torch.no_grad():
        out = signal_fn(job.signal)(job.template, job.states, job.inputs, place.device, **job.params)
    bad = {n: a.shape for n, a in out.items() if a.shape[:1] != (len(job.states),)}
    if bad:
        raise RuntimeError(f"signal {job.signal!r} returned arrays without one row per model: {bad}")
    return out


def per_model(arrays: Arrays) -> list[Arrays]:
    """{name: [M, ...]} -> M dicts {name: [...]} (one cache entry per model)."""
    m = len(next(iter(arrays.values())))
    return [{n: a[j] for n, a in arrays.items()} for j in range(m)]


def classifier_job(template, states, inputs, device) -> Arrays:
    from ftaudit.signals.classifier import classifier_signals

    return classifier_signals(template, states, inputs["views"], inputs["y"], device=device)


def logits_job(template, states, inputs, device) -> Arrays:
    from ftaudit.signals.classifier import batched_logits

    return {"logits": batched_logits(template, states, inputs["x"], device=device).numpy()}


def causal_job(template, states, inputs, device, budget: int) -> Arrays:
    from ftaudit.signals.lm import causal_lm_signals

    return causal_lm_signals(template, states, inputs["ids"], inputs["valid"], budget=budget, device=device)


def pll_job(template, states, inputs, device, mask_id: int, budget: int) -> Arrays:
    from ftaudit.signals.lm import pseudo_log_likelihood

    return {"pll": pseudo_log_likelihood(template, states, inputs["ids"], inputs["valid"], mask_id, budget,
                                         device=device)}


def mlm_loss_job(template, states, inputs, device, mask_id: int, maskings: int, seed: int, budget: int) -> Arrays:
    from ftaudit.signals.lm import masked_lm_loss

    return {"mlm_loss": masked_lm_loss(template, states, inputs["ids"], inputs["valid"], mask_id, maskings, seed,
                                       budget=budget, device=device)}
