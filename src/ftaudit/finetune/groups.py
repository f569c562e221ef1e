"""One way to turn "fine-tune these checkpoints with this method" into an engine :class:`TrainGroup`.

Every study builds its groups here (vision and language models, plain, DP and masked), then hands
them to ``ctx.train``: the method's extra parameters (LoRA, adapters) are added to the template,
seeded by the run, and every initial checkpoint is mapped onto the built model.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ftaudit.config import OptimConfig
from ftaudit.dp.spec import DPSpec
from ftaudit.finetune.methods import Method, MethodOptions, init_state
from ftaudit.seeding import derive_seed
from ftaudit.train.engine import Job, TrainGroup
from ftaudit.train.trainers import State


class TrainingPool(Protocol):
    """A training pool: inputs ``x``, targets ``y`` (numpy) and a content digest."""

    x: np.ndarray
    y: np.ndarray

    def digest(self) -> str: ...


def method_group(name: str, model: nn.Module, arch: dict, method: Method, optim: OptimConfig, pool: TrainingPool,
                 inits: Sequence[State], rows: Sequence[np.ndarray], seeds: Sequence[int], *, run_seed: int,
                 opts: MethodOptions | None = None, objective: str = "classification",
                 dp: DPSpec | Sequence[DPSpec] | None = None, masks: dict[str, torch.Tensor] | None = None,
                 trainable: list[str] | None = None) -> TrainGroup:
    """A group fine-tuning one model per (init, rows, seed) of ``model`` with ``method``.

    ``inits`` are checkpoints of ``model`` (the base); ``dp`` is one DP-SGD spec for every job, or
    one per job (a privacy sweep in one group); ``trainable`` overrides the method's selection
    (e.g. a pruned subset with ``masks``). The method's new parameters are drawn from a seed
    derived from ``run_seed`` and the method, without touching torch's global RNG.
    """
    opts = opts or MethodOptions()
    if not (len(inits) == len(rows) == len(seeds)):
        raise ValueError(f"group {name!r}: {len(inits)} inits, {len(rows)} keep-rows and {len(seeds)} seeds")
    per_job = list(dp) if isinstance(dp, (list, tuple)) else [None] * len(inits)
    template = method.build(model, opts, seed=derive_seed(run_seed, "method-init", method.name))
    jobs = [Job(init=init_state(template, i), rows=np.asarray(r), seed=s, dp=d)
            for i, r, s, d in zip(inits, rows, seeds, per_job)]
    return TrainGroup(name=name, template=template, arch=arch, method=method.name, method_options=method.spec(opts),
                      trainable=trainable or method.trainable(template, opts), optim=optim,
                      x=torch.from_numpy(pool.x), y=torch.from_numpy(pool.y), data_digest=pool.digest(),
                      jobs=jobs, objective=objective, dp=None if isinstance(dp, (list, tuple)) else dp,
                      masks=masks)
