"""Canaries and their exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a sentence of a fixed format with a random secret, "the secret number is 281394",
inserted r times into the fine-tuning text. How much the model memorised it is measured against
reference canaries: random secrets of the same format that were never inserted. With the model's
log-perplexity of each canary's secret (bits, given the shared prefix),

    rank exposure = log2 |R| - log2 rank

where R is the inserted canary plus the references and rank its position when R is sorted by
log-perplexity, lowest first (ties count against the canary, so the estimate is conservative). It
lies in [0, log2 |R|]. The skew-normal estimate fits ``scipy.stats.skewnorm`` to the references'
log-perplexities and reads the fraction of the secret space the canary beats off the fit:

    skew-normal exposure = -log2 CDF(canary's log-perplexity)

which keeps resolving canaries that beat every reference, beyond log2 |R|.

The ``canary-membership`` evaluator scores the inserted canaries against the references (one
model; members = inserted) by the secret's log-perplexity and its drop from the base.

Why the secret only: the prefix is the same for every candidate, so its log-perplexity is a
constant that changes neither estimate; leaving it out keeps the numbers the cost of the secret.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ftaudit.attacks.evaluators import register_evaluator
from ftaudit.attacks.leave_one_out import PooledScores
from ftaudit.errors import UserError

LN2 = float(np.log(2.0))


@dataclass(frozen=True)
class CanaryFormat:
    """``prefix`` + one space + ``digits`` random decimal digits."""

    prefix: str = "the secret number is"
    digits: int = 6

    def text(self, secret: str) -> str:
        return f"{self.prefix} {secret}"


def draw_secrets(n: int, digits: int, seed: int, field: str = "extraction.canary_digits") -> list[str]:
    """``n`` distinct secrets drawn uniformly without replacement from the 10**digits strings."""
    space = 10 ** digits
    if n > space:
        raise UserError(field, f"{n} distinct secrets asked of a space of {space}", "use more digits or fewer canaries")
    rng = np.random.default_rng([seed, 0xCA4A])
    return [str(int(v)).zfill(digits) for v in rng.choice(space, size=n, replace=False)]


@dataclass(frozen=True)
class CanarySet:
    """Tokenized canaries: every row is the prefix's tokens then the secret's, right-padded."""

    secrets: tuple[str, ...]
    ids: np.ndarray  # int64 [n, L]
    valid: np.ndarray  # bool [n, L]; False at padding
    start: int  # prefix tokens: the secret is positions start.. of each row

    def __len__(self) -> int:
        return len(self.secrets)

    def tokens(self, i: int) -> np.ndarray:
        """Row ``i``'s real tokens (prefix and secret)."""
        return self.ids[i, self.valid[i]]

    def digest(self) -> str:
        h = hashlib.sha256(str(self.start).encode())
        for arr in (self.ids, self.valid):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def tokenize_canaries(tokenizer, fmt: CanaryFormat, secrets: list[str], pad_id: int = 0,
                      field: str = "extraction.canary_prefix") -> CanarySet:
    """Encode each canary whole (as it appears in training text) and check that it starts with the
    prefix's own tokens, so the secret's tokens are well defined."""
    from ftaudit.data.text import encode

    prefix = encode(tokenizer, [fmt.prefix])[0]
    rows = encode(tokenizer, [fmt.text(s) for s in secrets])
    if not prefix:
        raise UserError(field, "the canary prefix is empty", "give a prefix such as 'the secret number is'")
    for secret, row in zip(secrets, rows):
        if row[:len(prefix)] != prefix or len(row) == len(prefix):
            raise UserError(field, f"the tokenizer merges the prefix {fmt.prefix!r} into the secret {secret!r}",
                            "end the prefix with a word, not a space or digit")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    valid = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        valid[i, :len(row)] = True
    return CanarySet(tuple(secrets), ids, valid, len(prefix))


def secret_log_perplexity(logp: np.ndarray, start: int) -> np.ndarray:
    """Bits: -log2 Pr(secret | prefix) per canary from next-token log-probs ``logp`` [..., n, L-1]
    (nats, NaN at padding, as ``ftaudit.signals.lm.causal_lm_signals`` returns them); position t-1
    of ``logp`` predicts token t, so the secret's tokens are ``logp[..., start-1:]``."""
    return -np.nansum(np.asarray(logp, dtype=np.float64)[..., start - 1:], axis=-1) / LN2


def rank_exposure(canary: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """log2(|R|) - log2(rank), |R| = references + 1, rank = 1 + references at or below the canary."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    canary = np.asarray(canary, dtype=np.float64)
    if ref.size == 0 or not np.isfinite(ref).all() or not np.isfinite(canary).all():
        raise ValueError("exposure needs finite log-perplexities and at least one reference")
    rank = 1 + np.searchsorted(ref, canary, side="right")
    return np.log2(ref.size + 1) - np.log2(rank)


@dataclass(frozen=True)
class SkewNormalFit:
    """scipy's skewnorm(a, loc, scale) fitted to the references' log-perplexities."""

    a: float
    loc: float
    scale: float

    @classmethod
    def of(cls, reference: np.ndarray) -> "SkewNormalFit":
        from scipy.stats import skewnorm

        ref = np.asarray(reference, dtype=np.float64)
        if ref.size < 3 or not np.isfinite(ref).all() or ref.std() == 0:
            raise ValueError("the skew-normal fit needs at least 3 finite, not all equal, log-perplexities")
        return cls(*map(float, skewnorm.fit(ref)))

    def log2_cdf(self, x: np.ndarray) -> np.ndarray:
        """log2 CDF(x); where the double-precision log-CDF underflows (beyond ~1,000 bits), it is
        integrated in arbitrary precision instead (mpmath, which torch's sympy brings along)."""
        from scipy.stats import skewnorm

        x = np.asarray(x, dtype=np.float64)
        out = np.atleast_1d(skewnorm.logcdf(x, self.a, self.loc, self.scale) / LN2).astype(np.float64)
        flat = np.atleast_1d(x)
        for i in np.flatnonzero(~np.isfinite(out)):
            out[i] = _log2_cdf_mp((flat[i] - self.loc) / self.scale, self.a)
        return out.reshape(x.shape)


def _log2_cdf_mp(z: float, a: float) -> float:
    """log2 of the standard skew-normal CDF, ∫_{-∞}^z 2 φ(t) Φ(a t) dt, in 60-digit arithmetic."""
    import mpmath

    with mpmath.workdps(60):
        pdf = lambda t: 2 * mpmath.npdf(t) * mpmath.ncdf(a * t)  # noqa: E731
        # Far in the tail the mass sits within ~1/|z| of z: geometric breakpoints resolve it.
        value = mpmath.quad(pdf, [-mpmath.inf, *(z - 2.0 ** -k for k in range(-3, 14)), z])
        return float(mpmath.log(value, 2))


def skewnorm_exposure(canary: np.ndarray, reference: np.ndarray, fit: SkewNormalFit | None = None) -> np.ndarray:
    """-log2 CDF(canary's log-perplexity) under the skew-normal fitted to the references."""
    fit = fit or SkewNormalFit.of(reference)
    return -fit.log2_cdf(np.asarray(canary, dtype=np.float64))


# ------------------------------------------------------------------------------- the evaluator

CANARY_ATTACKS = {"canary-loss": "log-likelihood of the canary's secret under the fine-tuned model (−log-perplexity)",
                  "canary-ratio": "log-perplexity drop of the secret from the pretrained base to the fine-tuned model"}


@dataclass(frozen=True)
class CanaryMembership:
    """Inputs of the ``canary-membership`` evaluator: each canary's secret log-perplexity (bits)
    under the fine-tuned model and under the base, and whether it was inserted (the members; the
    never-inserted reference secrets are the non-members)."""

    target: np.ndarray  # float [C]
    base: np.ndarray  # float [C]
    inserted: np.ndarray  # bool [C]


@register_evaluator("canary-membership", "inserted canaries against never-inserted reference secrets, one model: "
                                         "canary-loss and canary-ratio")
def canary_membership(inp: CanaryMembership) -> PooledScores:
    target, base = np.asarray(inp.target, dtype=np.float64), np.asarray(inp.base, dtype=np.float64)
    labels = np.asarray(inp.inserted, dtype=bool)
    if not (target.shape == base.shape == labels.shape) or target.ndim != 1:
        raise ValueError("one log-perplexity under each model and one label per canary expected")
    return PooledScores(scores={"canary-loss": -target, "canary-ratio": base - target}, labels=labels.copy(),
                        example=np.arange(len(labels), dtype=np.int64), target=np.zeros(len(labels), dtype=np.int64))
