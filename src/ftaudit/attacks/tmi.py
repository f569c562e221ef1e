"""TMI: membership in the PRETRAINING set, inferred from queries to the FINE-TUNED model.

Setting (Abascal et al., "TMI! Finetuned Models Leak Private Information from their Pretraining
Data", PETS 2024): M shadow models, each pretrained on a random half of a pool (``keep [M, P]``
over P challenge points) and then fine-tuned with their own K-class downstream head. Each model is
queried on A augmentations of every challenge point: ``logits [M, P, A, K]`` (query 0 = the
original input). Leave-one-out: every victim in turn is attacked with the other M - 1 models as
shadows. Every score is higher = member.

* TMI: one small MLP per challenge point, trained on the shadows' clipped per-class logit-scaled
  outputs labelled IN/OUT; the victim's score is the mean P(IN) over its A queries. All P MLPs are
  trained at once as one batched network (:mod:`ftaudit.attacks.tmi_meta`).
* Adapted LiRA: a Gaussian likelihood ratio over the A queries of the victim's predicted class.
* Global threshold: the victim's own mean max-class confidence, no shadows.

The studies hand their query outputs to the registered evaluator ``tmi-metaclassifiers``
(:class:`MetaclassifierInputs`). Everything here reads arrays: the metaclassifiers are torch
networks trained on those arrays, never the audited models (the studies query those).

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
from typing import Callable, Sequence

import numpy as np

from ftaudit.attacks.base import balanced_references
from ftaudit.attacks.evaluators import register_evaluator
from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.attacks.membership import VAR_FLOOR
from ftaudit.attacks.tmi_meta import MetaConfig, train_metaclassifiers, train_metaclassifiers_loop
from ftaudit.seeding import derive_seed
from ftaudit.threads import torch_threads

__all__ = ["ADAPTED_LIRA", "GLOBAL_THRESHOLD", "TMI", "MetaConfig", "MetaclassifierInputs", "adapted_lira_scores",
           "clip_rows", "global_threshold_scores", "ledoit_wolf", "logit_scale", "score_metaclassifiers",
           "shifted_logits_world", "text_features", "tmi_attacks", "tmi_features", "tmi_scores",
           "train_metaclassifiers", "train_metaclassifiers_loop", "victim_scores", "victim_training_set"]

TMI = "tmi"
ADAPTED_LIRA = "adapted-lira"
GLOBAL_THRESHOLD = "global-threshold"
ATTACK_NAMES = (TMI, ADAPTED_LIRA, GLOBAL_THRESHOLD)


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


def tmi_scores(features, keep, victims, config: MetaConfig = MetaConfig(), balance: bool = True,
               device=None) -> PooledScores:
    """TMI against each victim, pooled: scores {"tmi": mean P(IN)} over (victim, point) rows.

    features [M, P, A, K] from :func:`tmi_features`; keep [M, P] bool. For victim v, point p's
    metaclassifier trains on the (model, query) rows of the other models only
    (:func:`victim_training_set`); one batched training per victim, seeded from ``config.seed`` and v,
    on ``device`` (default the CPU).
    """
    features = np.asarray(features, dtype=np.float32)
    v_all = _check(features, keep, victims)
    out = [train_metaclassifiers(*victim_training_set(features, keep, int(v), balance),
                                 replace(config, seed=derive_seed(config.seed, "tmi", int(v))), device)
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


def tmi_attacks(logits, keep, victims, config: MetaConfig = MetaConfig(), balance: bool = True,
                device=None) -> PooledScores:
    """TMI, adapted LiRA and the global threshold on the same victims from logits [M, P, A, K]
    (the metaclassifiers train on ``device``)."""
    phi = logit_scale(logits)
    parts = [tmi_scores(clip_rows(phi).astype(np.float32), keep, victims, config, balance, device),
             adapted_lira_scores(phi, keep, victims, balance),
             global_threshold_scores(phi, keep, victims)]
    return PooledScores(scores={k: s for p in parts for k, s in p.scores.items()}, labels=parts[0].labels,
                        example=parts[0].example, target=parts[0].target)


# ------------------------------------------------------------------------------- evaluator


def text_features(phi) -> np.ndarray:
    """TMI's input for text: summary vectors [M, P, A, K] divided by the 99th percentile of their
    norms over all models, points and queries, then clipped to norm 1.

    Clipping the raw vectors (as for classifier outputs) would put nearly every one on the unit sphere
    (entries of |phi| ~ 5) and erase their length, which carries most of the membership signal of a
    language model (its loss); one shared scale keeps it. The scale uses no membership labels, only
    outputs the attacker already holds."""
    norms = np.linalg.norm(phi, axis=-1)
    scale = max(float(np.quantile(norms, 0.99)), np.finfo(np.float64).tiny)
    return clip_rows(phi / scale).astype(np.float32)


OUTPUT_KINDS = ("logits", "token-summary")


def victim_scores(outputs, kind: str, keep, victim: int, meta: MetaConfig = MetaConfig(),
                  balance: bool = True, device=None) -> dict[str, np.ndarray]:
    """Every TMI attack against one victim: {attack: scores [P]}.

    ``kind`` "logits": a classifier's K class logits [M, P, A, K]. "token-summary": a summary of the
    per-token logit-scaled probabilities of a text block (its first entry the mean over positions),
    which TMI reads rescaled by :func:`text_features` and the baselines through the mean alone — one
    confidence per query, as a classifier's predicted class gives them. The attacks seed their
    randomness per victim, so the result depends only on the arguments."""
    if kind == "logits":
        return tmi_attacks(outputs, keep, [victim], meta, balance, device).scores
    if kind != "token-summary":
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(OUTPUT_KINDS)}")
    values = np.asarray(outputs, dtype=np.float64)
    mean = values[..., :1]
    parts = [tmi_scores(text_features(values), keep, [victim], meta, balance, device),
             adapted_lira_scores(mean, keep, [victim], balance), global_threshold_scores(mean, keep, [victim])]
    return {k: v for p in parts for k, v in p.scores.items()}


def single_thread():
    """Run the metaclassifiers on one thread: their tensors are tiny, and on a shared 2-core machine a
    second thread only adds synchronisation (measured 5-10x slower)."""
    return torch_threads(1)


VictimScores = list[dict[str, np.ndarray]]
# memo(victims, compute) -> one score dict per victim; compute(missing indices into victims) scores those
Memo = Callable[[list[int], Callable[[list[int]], VictimScores]], VictimScores]


@dataclass(frozen=True, eq=False)
class MetaclassifierInputs:
    """Inputs of the ``tmi-metaclassifiers`` evaluator: the query outputs of every model, the
    keep-matrix, which models take a turn as victim, and the metaclassifiers' recipe. ``memo``, when
    given, stores and reloads per-victim scores (a study passes its content-addressed cache)."""

    outputs: np.ndarray  # [M, P, A, K]
    keep: np.ndarray  # [M, P] bool
    victims: Sequence[int]
    meta: MetaConfig = MetaConfig()
    balance: bool = True
    kind: str = "logits"
    memo: Memo | None = None
    device: str = "cpu"  # where the metaclassifiers train (the engine's placement)

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; one of {', '.join(OUTPUT_KINDS)}")


@register_evaluator("tmi-metaclassifiers", "each victim in turn against the other models as shadows: TMI's per-point "
                                           "metaclassifiers, adapted LiRA and a global threshold")
def score_metaclassifiers(inp: MetaclassifierInputs) -> PooledScores:
    """TMI, adapted LiRA and the global threshold against each victim, pooled victim-major."""
    keep = np.asarray(inp.keep)
    v = _check(np.asarray(inp.outputs), keep, inp.victims)

    def compute(missing: list[int]) -> VictimScores:
        with single_thread():
            return [victim_scores(inp.outputs, inp.kind, keep, int(v[i]), inp.meta, inp.balance, inp.device)
                    for i in missing]

    per_victim = inp.memo(v.tolist(), compute) if inp.memo else compute(list(range(v.size)))
    n = keep.shape[1]
    return PooledScores(scores={a: np.concatenate([s[a] for s in per_victim]) for a in ATTACK_NAMES},
                        labels=keep[v].reshape(-1).copy(), example=np.tile(np.arange(n, dtype=np.int64), v.size),
                        target=np.repeat(v, n))


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
