"""Keep-matrices: which model trains on which example (LiRA's design).

Every example is IN for exactly half of the models, chosen independently per example, so each
example has as many IN as OUT references and models are exchangeable.
"""
from __future__ import annotations

import numpy as np


def half_keep_matrix(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """bool [n_models, n_examples]; each column has exactly n_models // 2 True entries."""
    if n_models < 2 or n_models % 2:
        raise ValueError(f"a half keep-matrix needs an even number of models >= 2, got {n_models}")
    rng = np.random.default_rng([seed, 0x6B656570])
    order = rng.random((n_models, n_examples)).argsort(axis=0)
    return order < n_models // 2
