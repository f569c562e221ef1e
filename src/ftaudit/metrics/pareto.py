"""Pareto frontiers of (utility, leakage) points: more utility and less leakage are both better."""
from __future__ import annotations

import numpy as np


def pareto_front(utility, leakage) -> np.ndarray:
    """Indices of the points no other point dominates (≥ utility and ≤ leakage, one strictly),
    ordered by utility."""
    u, l = np.asarray(utility, float), np.asarray(leakage, float)
    if u.shape != l.shape or u.ndim != 1:
        raise ValueError("utility and leakage must be 1-D arrays of the same length")
    keep = []
    for i in range(u.size):
        dominated = (u >= u[i]) & (l <= l[i]) & ((u > u[i]) | (l < l[i]))
        if not dominated.any():
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: (u[i], l[i])), dtype=np.int64)


def matched(utility, leakage, groups, tolerance: float = 0.0) -> tuple[float, dict]:
    """Compare groups (e.g. fine-tuning methods) at matched utility: the target is the highest
    utility every group reaches (minus ``tolerance``); each group's least-leaking point at or above
    it is chosen. Returns (target, {group: index})."""
    u, l, g = np.asarray(utility, float), np.asarray(leakage, float), np.asarray(groups)
    names = list(dict.fromkeys(g.tolist()))
    target = min(u[g == name].max() for name in names) - tolerance
    chosen = {}
    for name in names:
        idx = np.flatnonzero((g == name) & (u >= target))
        chosen[name] = int(idx[np.argmin(l[idx])])
    return float(target), chosen
