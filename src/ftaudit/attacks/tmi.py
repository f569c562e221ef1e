"""TMI: membership in the PRETRAINING set, inferred from queries to the FINE-TUNED model.

Setting (Abascal et al., "TMI! Finetuned Models Leak Private Information from their Pretraining
Data", PETS 2024): M shadow models, each pretrained on a random half of a pool (``keep [M, P]``
over P challenge points) and then fine-tuned with their own K-class downstream head. Each model is
queried on A augmentations of every challenge point: ``logits [M, P, A, K]`` (query 0 = the
original input). Leave-one-out: every victim in turn is attacked with the other M - 1 models as
shadows. Every score is higher = member.

* TMI: one small MLP per challenge point, trained on the shadows' clipped per-class logit-scaled
  outputs labelled IN/OUT; the victim's score is the mean P(IN) over its A queries. All P MLPs are
  trained at once as one batched network (:func:`train_metaclassifiers`); the per-point
  ``nn.Sequential`` loop is the reference it must equal.
* Adapted LiRA: a Gaussian likelihood ratio over the A queries of the victim's predicted class.
* Global threshold: the victim's own mean max-class confidence, no shadows.

Deviation from the released code: by default the shadows used for one point are balanced (equally
many IN and OUT, :func:`~ftaudit.attacks.base.balanced_references`). In leave-one-out with a
half keep-matrix the victim's own label otherwise leaves its point with one IN shadow fewer when it
is IN, and a classifier learns that base rate: with no leakage at all, members score lower than
non-members (measured on :func:`shifted_logits_world`, 12 models, 150 points, 4 victims: TMI AUC
0.00 without leakage and 0.17 with a strong one, against 0.52 and 0.93 balanced).
``balance=False`` reproduces the paper (all other models).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ftaudit.attacks.base import balanced_references
from ftaudit.attacks.evaluate import PooledScores
from ftaudit.attacks.membership import VAR_FLOOR
from ftaudit.seeding import derive_seed

TMI = "tmi"
ADAPTED_LIRA = "adapted-lira"
GLOBAL_THRESHOLD = "global-threshold"


# ------------------------------------------------------------------------------------ features


def logit_scale(logits) -> np.ndarray:
    """phi_k = log p_k - log(1 - p_k) = z_k - logsumexp_{j != k} z_j for every class, float64.

    Stable for extreme logits in O(K) memory: for a non-argmax class the argmax term keeps
    sum_{j != k} exp(z_j - z_max) >= 1, so subtracting exp(z_k - z_max) from the full sum loses
    nothing; the argmax class takes the logsumexp of the others directly. (The released code's
    log(p + 1e-15) saturates near +-35.)
    """
    z = np.asarray(logits, dtype=np.float64)
    top = z.argmax(axis=-1)[..., None]
    z_max = np.take_along_axis(z, top, axis=-1)
    e = np.exp(z - z_max)
    masked = z.copy()
    np.put_along_axis(masked, top, -np.inf, axis=-1)
    with np.errstate(divide="ignore"):  # log(0) only where put_along_axis overwrites it (or K = 1)
        lse_others = z_max + np.log(e.sum(axis=-1, keepdims=True) - e)  # right for non-argmax classes
        lse_not_top = np.logaddexp.reduce(masked, axis=-1, keepdims=True)
    np.put_along_axis(lse_others, top, lse_not_top, axis=-1)
    return z - lse_others


def clip_rows(x, max_norm: float = 1.0) -> np.ndarray:
    """Scale each last-axis vector down to L2 norm <= ``max_norm``; shorter ones stay unchanged."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x * np.minimum(1.0, max_norm / np.maximum(norm, np.finfo(np.float64).tiny))


def tmi_features(logits) -> np.ndarray:
    """TMI's metaclassifier input [M, P, A, K] float32: per-query logit-scaled vectors clipped to norm 1.

    Clipping bounds the input scale of the metaclassifier (phi of confident models reaches
    hundreds) while keeping the direction, as in the study's code.
    """
    return clip_rows(logit_scale(logits)).astype(np.float32)


# ---------------------------------------------------------------------------- metaclassifiers


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


def train_metaclassifiers(x, y, use, queries, config: MetaConfig = MetaConfig()) -> np.ndarray:
    """Train P metaclassifiers at once and return each one's mean P(IN) over its queries, float64 [P].

    x [P, N, K] training rows of every point; y [P, N] bool (True = IN); use [P, N] bool, rows to
    train on (None = all); queries [P, Q, K] the victim's rows. One network with weights
    [P, K, H] and [P, H, 2] (batched matmuls); the loss is the sum over points of each point's
    mean cross-entropy, so every point's gradient, and Adam's elementwise update, is exactly what
    training it alone gives (see :func:`train_metaclassifiers_loop`).
    """
    x, y, use, q, informative = _as_inputs(x, y, use, queries)
    n_points, _, k = x.shape
    draws = _Draws(config.seed)
    params = [t.requires_grad_() for t in draws.init(n_points, k, config.hidden)]
    w1, b1, w2, b2 = params
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, config.decay_every, config.lr_decay)
    batches = _batches(use.sum(dim=1), config.batch_size)
    for _ in range(config.epochs):
        order = draws.order(use)
        xo = x.gather(1, order[:, :, None].expand(-1, -1, k))
        yo = y.gather(1, order)
        for start, end in batches:
            lo, hi = int(start.min()), int(end.max())  # the window every point's batch lies in
            drop = draws.dropout(n_points, hi - lo, config.hidden, config.dropout)
            pos = torch.arange(lo, hi)
            in_batch = (pos >= start[:, None]) & (pos < end[:, None])
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
        return _finish(out.softmax(dim=-1)[..., 1].mean(dim=1), informative)


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


# ------------------------------------------------------------------------- leave-one-out


def _check(stack: np.ndarray, keep: np.ndarray, victims) -> np.ndarray:
    keep = np.asarray(keep)
    if stack.ndim != 4 or keep.dtype != np.bool_ or keep.shape != stack.shape[:2]:
        raise ValueError(f"need [M, P, A, K] arrays and a bool keep [M, P]; got {stack.shape} and "
                         f"{keep.shape} {keep.dtype}")
    if not np.isfinite(stack).all():
        raise ValueError("model outputs must be finite (logit_scale of finite logits with K >= 2 is)")
    v = np.asarray(list(victims), dtype=np.int64)
    m = keep.shape[0]
    if v.size == 0 or (v < 0).any() or (v >= m).any() or np.unique(v).size != v.size:
        raise ValueError(f"victims must be distinct model indices in [0, {m}), got {v.tolist()}")
    return v


def _shadows(keep: np.ndarray, victim: int, balance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The victim's shadows (every other model), their keep [R, P] and which to use [R, P]."""
    others = np.delete(np.arange(keep.shape[0]), victim)
    k = keep[others]
    use = balanced_references(k) if balance else np.ones_like(k)
    return others, k, use


def _pooled(name: str, scores: list[np.ndarray], keep: np.ndarray, victims: np.ndarray) -> PooledScores:
    """Victim-major rows (row = i * P + point), the layout :func:`~ftaudit.attacks.leave_one_out` uses."""
    n = keep.shape[1]
    return PooledScores(
        scores={name: np.concatenate(scores).astype(np.float64)},
        labels=keep[victims].reshape(-1).copy(),
        example=np.tile(np.arange(n, dtype=np.int64), victims.size),
        target=np.repeat(victims, n),
    )


def victim_training_set(features, keep, victim: int, balance: bool = True):
    """What victim ``victim``'s P metaclassifiers see: (x [P, R*A, K], y [P, R*A], use [P, R*A], queries [P, A, K]).

    Rows are every (other model, query) pair, model-major, labelled with that model's membership;
    ``use`` marks the balanced shadows (all with ``balance=False``). The victim's own outputs are
    only the queries.
    """
    features = np.asarray(features, dtype=np.float32)
    _, n, a, k = features.shape
    others, k_others, use = _shadows(np.asarray(keep), victim, balance)
    x = features[others].transpose(1, 0, 2, 3).reshape(n, -1, k)
    return x, np.repeat(k_others.T, a, axis=1), np.repeat(use.T, a, axis=1), features[victim]


def tmi_scores(features, keep, victims, config: MetaConfig = MetaConfig(), balance: bool = True) -> PooledScores:
    """TMI against each victim, pooled: scores {"tmi": mean P(IN)} over (victim, point) rows.

    features [M, P, A, K] from :func:`tmi_features`; keep [M, P] bool. For victim v, point p's
    metaclassifier trains on the (model, query) rows of the other models only
    (:func:`victim_training_set`); one batched training per victim, seeded from ``config.seed`` and v.
    """
    features = np.asarray(features, dtype=np.float32)
    v_all = _check(features, keep, victims)
    out = [train_metaclassifiers(*victim_training_set(features, keep, int(v), balance),
                                 replace(config, seed=derive_seed(config.seed, "tmi", int(v))))
           for v in v_all]
    return _pooled(TMI, out, keep, v_all)


def ledoit_wolf(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [P, A] and Ledoit-Wolf shrunk covariance [P, A, A] of rows x [R, P, A] weighted w [R, P] in {0, 1}.

    Per point the same estimate as ``sklearn.covariance.ledoit_wolf`` on its selected rows (MLE
    covariance shrunk towards mu * I with the analytic intensity), vectorised over points; the
    few shadows a point has (often fewer than A) make the raw sample covariance singular.
    """
    n = np.maximum(w.sum(axis=0), 1)[:, None]  # [P, 1]
    wx = w[:, :, None]
    mean = (wx * x).sum(axis=0) / n
    xc = wx * (x - mean)
    a = x.shape[2]
    cov = np.einsum("rpa,rpb->pab", xc, xc) / n[:, :, None]
    trace = np.einsum("paa->p", cov)
    mu = trace / a
    beta_ = ((xc ** 2).sum(axis=2) ** 2).sum(axis=0)  # sum of the entries of X2^T X2
    delta_ = (cov ** 2).sum(axis=(1, 2))
    beta = (beta_ / n[:, 0] - delta_) / (a * n[:, 0])
    delta = (delta_ - 2 * mu * trace + a * mu ** 2) / a
    shrink = np.where(delta > 0, np.minimum(beta, delta) / np.where(delta > 0, delta, 1.0), 0.0)
    eye = np.eye(a)
    return mean, (1 - shrink)[:, None, None] * cov + (shrink * mu)[:, None, None] * eye


def _log_gauss(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) up to the shared constant, for x, mean [P, A] and cov [P, A, A]."""
    d = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (logdet + (d * np.linalg.solve(cov, d[:, :, None])[:, :, 0]).sum(axis=1))


def adapted_lira_scores(phi, keep, victims, balance: bool = True) -> PooledScores:
    """Adapted LiRA (the study's baseline) against each victim, pooled: scores {"adapted-lira"}.

    phi [M, P, A, K] logit-scaled outputs (:func:`logit_scale`, unclipped). Per point, c = the class
    the victim predicts for the original query (index 0); each model's A values phi[m, p, :, c]
    form one sample. IN and OUT shadows each get a mean and a Ledoit-Wolf covariance (+ VAR_FLOOR
    on the diagonal, so identical shadows stay finite); score = log N(x_v; IN) - log N(x_v; OUT).
    A point lacking IN or OUT shadows scores 0. (The released code picks the victim's argmax
    per augmentation instead of once per point.)
    """
    phi = np.asarray(phi, dtype=np.float64)
    v_all = _check(phi, keep, victims)
    _, n, a, _ = phi.shape
    out = []
    for v in v_all:
        cls = phi[v, :, 0].argmax(axis=-1)  # [P]
        x = np.take_along_axis(phi, cls[None, :, None, None], axis=3)[..., 0]  # [M, P, A]
        others, k_others, use = _shadows(keep, int(v), balance)
        fits = [ledoit_wolf(x[others], (side & use).astype(np.float64)) for side in (k_others, ~k_others)]
        floor = VAR_FLOOR * np.eye(a)
        (m_in, c_in), (m_out, c_out) = fits
        score = _log_gauss(x[v], m_in, c_in + floor) - _log_gauss(x[v], m_out, c_out + floor)
        both = (k_others & use).any(axis=0) & (~k_others & use).any(axis=0)
        out.append(np.where(both, score, 0.0))
    return _pooled(ADAPTED_LIRA, out, keep, v_all)


def global_threshold_scores(phi, keep, victims) -> PooledScores:
    """The victim's mean over queries of its max-class logit-scaled confidence: no shadows, one
    threshold for all points. Scores {"global-threshold"}; the floor any shadow attack must beat."""
    phi = np.asarray(phi, dtype=np.float64)
    v_all = _check(phi, keep, victims)
    return _pooled(GLOBAL_THRESHOLD, [phi[v].max(axis=-1).mean(axis=-1) for v in v_all], keep, v_all)


def tmi_attacks(logits, keep, victims, config: MetaConfig = MetaConfig(), balance: bool = True) -> PooledScores:
    """TMI, adapted LiRA and the global threshold on the same victims from logits [M, P, A, K]."""
    phi = logit_scale(logits)
    parts = [tmi_scores(clip_rows(phi).astype(np.float32), keep, victims, config, balance),
             adapted_lira_scores(phi, keep, victims, balance),
             global_threshold_scores(phi, keep, victims)]
    return PooledScores(scores={k: s for p in parts for k, s in p.scores.items()}, labels=parts[0].labels,
                        example=parts[0].example, target=parts[0].target)


# ------------------------------------------------------------------------------- synthetic


def shifted_logits_world(n_models: int, n_points: int, n_queries: int, n_classes: int, effect: float,
                         seed: int, sigma: float = 1.0, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits [M, P, A, K] float32 and keep [M, P] where membership is a known shift, for tests
    and benchmarks: logits = spread * b_p + effect * keep[m, p] * d_p + sigma * noise, with b_p
    a point's own N(0, I) logit profile, d_p a random unit direction per point and noise iid over
    (model, point, query, class). Every point is IN for exactly half the models. effect = 0: no leak.
    """
    rng = np.random.default_rng(seed)
    m, p, a, k = n_models, n_points, n_queries, n_classes
    keep = np.argsort(rng.random((m, p)), axis=0) < m // 2
    base = spread * rng.normal(size=(p, k))
    d = rng.normal(size=(p, k))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    logits = base[None, :, None] + effect * keep[:, :, None, None] * d[None, :, None] + \
        sigma * rng.normal(size=(m, p, a, k))
    return logits.astype(np.float32), keep
