"""Steps shared by the vision studies (digits transfer, TMI on digits, forgetting): fine-tune an
ensemble from a base through the engine, and query every model, both cached by content."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.data.augment import query_views
from ftaudit.data.digits import Split
from ftaudit.dp.spec import DPSpec
from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import Method, MethodOptions
from ftaudit.models.vision import arch_spec, fresh_state
from ftaudit.signals.jobs import SignalJob
from ftaudit.store.cache import content_key, state_digest
from ftaudit.studies.base import Context
from ftaudit.train.engine import TrainResult
from ftaudit.train.trainers import State

__all__ = ["QuerySet", "fresh_state", "query_models", "query_states", "train_group", "with_new_head"]


def train_group(ctx: Context, name: str, model_cfg: ModelConfig, n_classes: int, method: Method,
                optim: OptimConfig, data: Split, inits: list[State], rows: list[np.ndarray],
                seeds: list[int], *, run_seed: int, opts: MethodOptions | None = None,
                dp: DPSpec | list[DPSpec] | None = None) -> tuple[nn.Module, TrainResult]:
    """Fine-tune one model per (init, keep-row, seed) of a vision net with ``method``
    (:func:`ftaudit.finetune.groups.method_group`), through ``ctx.train``."""
    plain, _ = fresh_state(model_cfg, n_classes, 0)
    group = method_group(name, plain, arch_spec(model_cfg, n_classes), method, optim, data, inits, rows, seeds,
                         run_seed=run_seed, opts=opts, dp=dp)
    return group.template, ctx.train(group)


def with_new_head(base: State, model_cfg: ModelConfig, n_classes: int, seed: int) -> State:
    """The fine-tuning's starting point: the pretrained body with a fresh head for the new task."""
    _, fresh = fresh_state(model_cfg, n_classes, seed)
    return {k: (fresh[k] if k.startswith("head.") else base[k].clone()) for k in fresh}


@dataclass
class QuerySet:
    """Inputs the models are queried on: A views (original first) of n examples."""

    views: torch.Tensor  # [A, n, 1, H, W]
    y: torch.Tensor  # [n]
    digest: str

    @classmethod
    def of(cls, split: Split, max_shift: int) -> "QuerySet":
        views = query_views(torch.from_numpy(split.x), max_shift)
        return cls(views=views, y=torch.from_numpy(split.y),
                   digest=content_key(views=views.numpy(), y=split.y))


SIGNAL_NAMES = ["conf", "loss", "correct"]


def query_models(ctx: Context, template: nn.Module, keys: list[str], load_states, queries: QuerySet,
                 arch: dict | None = None) -> dict[str, np.ndarray]:
    """Signals [M, n, A] of each model (by cache key) on the query set, cached per (model,
    architecture, query set): a model key names weights, the architecture how they are read."""
    arch = arch if arch is not None else {"module": type(template).__name__,
                                          "params": {n: list(p.shape) for n, p in template.state_dict().items()}}
    skeys = [ctx.signal_key(model=k, arch=arch, queries=queries.digest, signals="classifier-v2") for k in keys]
    inputs = {"views": queries.views, "y": queries.y}
    per_model = ctx.query(skeys, lambda idx: SignalJob("classifier", template, load_states(idx), inputs))
    return {n: np.stack([p[n] for p in per_model]) for n in SIGNAL_NAMES}


def query_states(ctx: Context, template: nn.Module, states: list[State], queries: QuerySet) -> dict[str, np.ndarray]:
    """Like :func:`query_models` for states that are not in the model cache (e.g. an init checkpoint)."""
    keys = [content_key(state=state_digest(s)) for s in states]
    return query_models(ctx, template, keys, lambda idx: [states[i] for i in idx], queries)
