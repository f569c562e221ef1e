"""Signal arrays: what every model said about every audit example, as plain float64 arrays.

This is the hand-off between the models (engine, signals) and the attacks, which never touch a
model. Shapes use M models, N audit examples, A queries per example (index 0 is the original input,
1.. are augmentations) and Z population examples that no model trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SignalSet:
    """Signals of M fine-tuned models (plus their common base) on the audit and population sets.

    conf  : [M, N, A] logit-scaled confidence of the true class, phi = log p_y - log(1 - p_y)
    loss  : [M, N, A] cross-entropy of the true class, -log p_y
    keep  : [M, N] bool, model m trained on audit example n (the keep-matrix)
    base_conf, base_loss : [N, A] the same signals from the pretrained base (the fine-tuning's
            starting point), or None when there is no base
    pop_conf, pop_loss   : [M, Z, A] signals on population examples (non-members of every model)
    scores : name -> [M, N] per-model scores computed by the scenario from richer signals than
            these arrays hold (e.g. an LM's per-token log-probs: zlib, Min-K %), higher = member;
            the ``precomputed`` attacks read them
    """

    conf: np.ndarray
    loss: np.ndarray
    keep: np.ndarray
    pop_conf: np.ndarray
    pop_loss: np.ndarray
    base_conf: np.ndarray | None = None
    base_loss: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, n, a = self.conf.shape
        for name, arr in self.scores.items():
            if arr.shape != (m, n):
                raise ValueError(f"scores[{name!r}] shape {arr.shape} != {(m, n)}")
        if self.loss.shape != (m, n, a):
            raise ValueError(f"loss shape {self.loss.shape} != conf shape {(m, n, a)}")
        if self.keep.shape != (m, n) or self.keep.dtype != np.bool_:
            raise ValueError(f"keep must be a bool array of shape {(m, n)}, got {self.keep.dtype} {self.keep.shape}")
        if self.pop_conf.shape[0] != m or self.pop_conf.shape[2] != a or self.pop_conf.shape != self.pop_loss.shape:
            raise ValueError("pop_conf/pop_loss must both be [M, Z, A] with the audit arrays' M and A")
        for name in ("base_conf", "base_loss"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (n, a):
                raise ValueError(f"{name} shape {arr.shape} != {(n, a)}")

    @property
    def n_models(self) -> int:
        return self.conf.shape[0]

    @property
    def n_examples(self) -> int:
        return self.conf.shape[1]

    @property
    def n_queries(self) -> int:
        return self.conf.shape[2]
