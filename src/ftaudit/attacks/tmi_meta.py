"""TMI's metaclassifiers: one small MLP per challenge point, all trained at once.

:func:`train_metaclassifiers` trains P networks K -> hidden -> 2 as one batched network (weights
[P, K, H] and [P, H, 2]); :func:`train_metaclassifiers_loop`, one ``nn.Sequential`` per point, is the
reference it must equal. They classify feature arrays of the audited models (what the attack read
from them); they never touch an audited model. The leave-one-out use: :mod:`ftaudit.attacks.tmi`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

@dataclass(frozen=True)
class MetaConfig:
    """The per-point MLP K -> hidden -> 2 and its training; defaults follow the study's code
    (ReLU, dropout 0.5, Adam lr 5e-3 with L2 5e-4, 20 epochs of batch 64, lr x0.9 every 7 epochs)."""

    hidden: int = 64
    dropout: float = 0.5
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 5e-4
    lr_decay: float = 0.9
    decay_every: int = 7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.batch_size < 1 or self.decay_every < 1:
            raise ValueError("hidden, epochs, batch_size and decay_every must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class _Draws:
    """Every random draw of one training run, in one fixed order from one seeded generator.

    The batched trainer and the per-point loop both consume the same sequence (initial weights,
    then per epoch one row order, then per step one dropout mask), so they train identical nets.
    """

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def uniform(self, shape, bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=self.g) * 2 - 1) * bound

    def init(self, p: int, k: int, h: int) -> list[torch.Tensor]:
        """W1 [P, K, H], b1 [P, 1, H], W2 [P, H, 2], b2 [P, 1, 2], as nn.Linear initialises them."""
        return [self.uniform((p, k, h), k ** -0.5), self.uniform((p, 1, h), k ** -0.5),
                self.uniform((p, h, 2), h ** -0.5), self.uniform((p, 1, 2), h ** -0.5)]

    def order(self, use: torch.Tensor) -> torch.Tensor:
        """Per point, a random order of its rows [P, N] with the rows it trains on first."""
        key = torch.rand(use.shape, generator=self.g, dtype=torch.float64) + (~use) * 2.0
        return key.argsort(dim=1)

    def dropout(self, p: int, n: int, h: int, rate: float) -> torch.Tensor | None:
        """Inverted-dropout multipliers [P, n, H]: 0 with probability ``rate``, else 1 / (1 - rate);
        None (and no draw) without dropout."""
        if rate == 0.0:
            return None
        return torch.rand((p, n, h), generator=self.g).ge_(rate).div_(1.0 - rate)


def _batches(n_used: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per step of an epoch, each point's [start, end) into its row order.

    Every point takes the same number of steps, B = ceil(max rows / batch_size), and splits its own
    rows into B near-equal batches, so points with different row counts still step in lockstep.
    """
    b = max(1, -(-int(n_used.max()) // batch_size))
    return [((i * n_used) // b, ((i + 1) * n_used) // b) for i in range(b)]


def _as_inputs(x, y, use, queries):
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=bool))
    use = torch.ones_like(y) if use is None else torch.as_tensor(np.asarray(use, dtype=bool))
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    if x.ndim != 3 or y.shape != x.shape[:2] or use.shape != y.shape or q.ndim != 3 or \
            q.shape[0] != x.shape[0] or q.shape[2] != x.shape[2]:
        raise ValueError(f"need x [P, N, K], y and use [P, N], queries [P, Q, K]; got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}, use {tuple(use.shape)}, queries {tuple(q.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(q).all()):
        raise ValueError("metaclassifier rows and queries must be finite (a masked-out NaN still poisons bmm)")
    informative = (use & y).any(dim=1) & (use & ~y).any(dim=1)
    return x, y.long(), use, q, informative


def _finish(p_in: torch.Tensor, informative: torch.Tensor) -> np.ndarray:
    """Float64 scores; a point without both IN and OUT training rows gets the uninformative 0.5."""
    return torch.where(informative, p_in.double(), 0.5).numpy()


def train_metaclassifiers(x, y, use, queries, config: MetaConfig = MetaConfig(), device=None) -> np.ndarray:
    """Train P metaclassifiers at once and return each one's mean P(IN) over its queries, float64 [P].

    x [P, N, K] training rows of every point; y [P, N] bool (True = IN); use [P, N] bool, rows to
    train on (None = all); queries [P, Q, K] the victim's rows. One network with weights
    [P, K, H] and [P, H, 2] (batched matmuls); the loss is the sum over points of each point's
    mean cross-entropy, so every point's gradient, and Adam's elementwise update, is exactly what
    training it alone gives (see :func:`train_metaclassifiers_loop`). The networks train on
    ``device`` (default the CPU); every random draw comes from the CPU generator, so only float
    rounding depends on the device.
    """
    device = torch.device(device or "cpu")
    x, y, use, q, informative = _as_inputs(x, y, use, queries)
    n_points, _, k = x.shape
    draws = _Draws(config.seed)
    params = [t.to(device).requires_grad_() for t in draws.init(n_points, k, config.hidden)]
    w1, b1, w2, b2 = params
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, config.decay_every, config.lr_decay)
    batches = _batches(use.sum(dim=1), config.batch_size)
    x, y, q = x.to(device), y.to(device), q.to(device)
    for _ in range(config.epochs):
        order = draws.order(use).to(device)
        xo = x.gather(1, order[:, :, None].expand(-1, -1, k))
        yo = y.gather(1, order)
        for start, end in batches:
            lo, hi = int(start.min()), int(end.max())  # the window every point's batch lies in
            drop = draws.dropout(n_points, hi - lo, config.hidden, config.dropout)
            drop = None if drop is None else drop.to(device)
            pos = torch.arange(lo, hi)
            in_batch = ((pos >= start[:, None]) & (pos < end[:, None])).to(device)
            start, end = start.to(device), end.to(device)
            h = torch.relu(torch.baddbmm(b1, xo[:, lo:hi], w1))
            out = torch.baddbmm(b2, h if drop is None else h * drop, w2)
            ce = F.cross_entropy(out.reshape(-1, 2), yo[:, lo:hi].reshape(-1), reduction="none")
            ce = ce.view(n_points, hi - lo) * in_batch
            loss = (ce.sum(dim=1) / (end - start).clamp(min=1)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        out = torch.baddbmm(b2, torch.relu(torch.baddbmm(b1, q, w1)), w2)
        return _finish(out.softmax(dim=-1)[..., 1].mean(dim=1).cpu(), informative)


def train_metaclassifiers_loop(x, y, use, queries, config: MetaConfig = MetaConfig()) -> np.ndarray:
    """Reference for :func:`train_metaclassifiers`: one ``nn.Sequential`` and one Adam per point.

    Same arguments, same result. The points are independent, so the loop runs step-major (each
    step, every point's own network takes its own step) only to consume the shared random draws
    (weights, row orders, dropout masks) in the batched trainer's order.
    """
    x, y, use, q, informative = _as_inputs(x, y, use, queries)
    n_points, _, k = x.shape
    draws = _Draws(config.seed)
    init = draws.init(n_points, k, config.hidden)
    nets, opts, scheds = {}, {}, {}
    for p in np.flatnonzero(informative.numpy()):
        net = nn.Sequential(nn.Linear(k, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 2))
        with torch.no_grad():
            for layer, w, b in ((net[0], init[0][p], init[1][p]), (net[2], init[2][p], init[3][p])):
                layer.weight.copy_(w.T)
                layer.bias.copy_(b[0])
        nets[p] = net
        opts[p] = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheds[p] = torch.optim.lr_scheduler.StepLR(opts[p], config.decay_every, config.lr_decay)
    batches = _batches(use.sum(dim=1), config.batch_size)
    for _ in range(config.epochs):
        order = draws.order(use)
        for start, end in batches:
            lo, hi = int(start.min()), int(end.max())
            drop = draws.dropout(n_points, hi - lo, config.hidden, config.dropout)
            for p, net in nets.items():
                s, e = int(start[p]), int(end[p])
                rows = order[p, s:e]
                h = net[:2](x[p, rows])
                out = net[2](h if drop is None else h * drop[p, s - lo:e - lo])
                loss = F.cross_entropy(out, y[p, rows], reduction="sum") / max(e - s, 1)
                opts[p].zero_grad()
                loss.backward()
                opts[p].step()
        for sched in scheds.values():
            sched.step()
    p_in = torch.full((n_points,), 0.5)
    with torch.no_grad():
        for p, net in nets.items():
            p_in[p] = net(q[p]).softmax(dim=-1)[:, 1].mean()
    return _finish(p_in, informative)
