"""Building blocks shared by vision studies: pretrain a base, fine-tune an ensemble from it,
query every model. Each is a thin composition of data, engine and signals, cached by content."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.data.augment import query_views
from ftaudit.data.digits import Split
from ftaudit.dp.spec import DPSpec
from ftaudit.finetune.methods import Method, MethodOptions, init_state
from ftaudit.models.vision import arch_spec, build_model
from ftaudit.scenarios.base import Context
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import classifier_signals
from ftaudit.store.cache import content_key, state_digest
from ftaudit.train.engine import Job, TrainGroup, TrainResult
from ftaudit.train.trainers import State


def fresh_state(model_cfg: ModelConfig, n_classes: int, seed: int) -> tuple[nn.Module, State]:
    """A randomly initialised model (PyTorch's default init, seeded) and a copy of its state."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, n_classes)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_group(ctx: Context, name: str, model_cfg: ModelConfig, n_classes: int, method: Method,
                optim: OptimConfig, data: Split, inits: list[State], rows: list[np.ndarray],
                seeds: list[int], opts: MethodOptions | None = None,
                dp: DPSpec | list[DPSpec] | None = None) -> tuple[nn.Module, TrainResult]:
    """Fine-tune one model per (init, keep-row, seed) with ``method``. Inits are base checkpoints:
    the method's extra parameters (LoRA, adapters) are added to them here, seeded by the run.
    ``dp`` is one DP-SGD spec for every model, or one per model (a privacy sweep in one group)."""
    per_job = dp if isinstance(dp, list) else [None] * len(inits)
    opts = opts or MethodOptions()
    plain, _ = fresh_state(model_cfg, n_classes, 0)
    torch.manual_seed(derive_seed(0, "method-init", method.name))
    template = method.build(plain, opts)
    inits = [init_state(template, i) for i in inits]
    group = TrainGroup(
        name=name, template=template, arch=arch_spec(model_cfg, n_classes), method=method.name,
        method_options=method.spec(opts), trainable=method.trainable(template, opts), optim=optim,
        x=torch.from_numpy(data.x), y=torch.from_numpy(data.y), data_digest=data.digest(),
        jobs=[Job(init=i, rows=r, seed=s, dp=d) for i, r, s, d in zip(inits, rows, seeds, per_job)],
        dp=None if isinstance(dp, list) else dp)
    result = ctx.engine.train(group)
    ctx.models_trained += result.trained
    ctx.models_loaded += result.loaded
    return template, result


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


def query_models(ctx: Context, template: nn.Module, keys: list[str], load_states, queries: QuerySet) -> dict[str, np.ndarray]:
    """Signals [M, n, A] of each model (by cache key) on the query set; cached per (model, query set)."""
    cache = ctx.store.signals
    skeys = [content_key(model=k, queries=queries.digest, signals="classifier-v1") for k in keys]
    missing = [i for i, sk in enumerate(skeys) if not cache.has(sk, SIGNAL_NAMES)]
    if missing:
        states = load_states(missing)
        fresh = classifier_signals(template, states, queries.views, queries.y)
        for j, i in enumerate(missing):
            cache.save(skeys[i], {n: fresh[n][j] for n in SIGNAL_NAMES})
    per_model = [cache.load(sk, SIGNAL_NAMES) for sk in skeys]
    return {n: np.stack([p[n] for p in per_model]) for n in SIGNAL_NAMES}


def query_states(ctx: Context, template: nn.Module, states: list[State], queries: QuerySet) -> dict[str, np.ndarray]:
    """Like :func:`query_models` for states that are not in the model cache (e.g. an init checkpoint)."""
    keys = [content_key(state=state_digest(s)) for s in states]
    return query_models(ctx, template, keys, lambda idx: [states[i] for i in idx], queries)
