"""Canary exposure: the rank estimate against a brute-force count, the skew-normal one against
numerical integration, and the two against each other where the rank resolves the canary."""
import numpy as np
import pytest
from scipy import integrate, stats

from ftaudit.attacks.canaries import (CanaryFormat, SkewNormalFit, draw_secrets, rank_exposure, secret_log_perplexity,
                                      skewnorm_exposure, tokenize_canaries)
from ftaudit.errors import UserError


def test_secrets_are_distinct_formatted_and_seeded():
    a = draw_secrets(5000, 6, seed=1)
    assert len(set(a)) == 5000 and all(len(s) == 6 and s.isdigit() for s in a)
    assert a == draw_secrets(5000, 6, seed=1) and a != draw_secrets(5000, 6, seed=2)
    assert any(s.startswith("0") for s in a)  # leading zeros are kept
    with pytest.raises(UserError, match="space of 100"):
        draw_secrets(101, 2, seed=0)


def test_tokenized_canaries_start_with_the_prefix(small_tok):
    fmt = CanaryFormat("the secret number is", 6)
    secrets = draw_secrets(50, 6, seed=0)
    cs = tokenize_canaries(small_tok, fmt, secrets)
    prefix = cs.ids[0, :cs.start]
    for i, s in enumerate(secrets):
        assert (cs.ids[i, :cs.start] == prefix).all()
        assert small_tok.decode(cs.tokens(i).tolist()) == fmt.text(s)
    assert cs.valid.sum(1).min() > cs.start


class MergingTokenizer:
    """Characters as tokens, except that "s " is one token: it glues "is" to the secret's space."""

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[999 if t.startswith("s ") else ord(t[0]) for t in _pieces(x)] for x in texts]}


def _pieces(text):
    i = 0
    while i < len(text):
        step = 2 if text.startswith("s ", i) else 1
        yield text[i:i + step]
        i += step


def test_a_prefix_merged_into_the_secret_is_refused():
    with pytest.raises(UserError, match="merges the prefix"):
        tokenize_canaries(MergingTokenizer(), CanaryFormat("the secret number is", 6), ["123456"])
    ok = tokenize_canaries(MergingTokenizer(), CanaryFormat("the secret number:", 6), ["123456"])
    assert ok.start == len("the secret number:") and ok.ids.shape == (1, ok.start + 7)


def test_secret_log_perplexity_sums_the_secret_positions_in_bits():
    logp = np.log(np.array([[[0.5, 0.5, 0.25, 0.5]], [[0.5, 0.5, 0.5, np.nan]]]))  # [M=2, n=1, T-1=4]
    # start=2: positions 2.. of the row, i.e. logp[..., 1:]
    assert secret_log_perplexity(logp, 2) == pytest.approx(np.array([[1 + 2 + 1], [1 + 1]]))


def brute_rank_exposure(canary, refs):
    out = []
    for c in canary:
        rank = 1 + sum(1 for r in refs if r <= c)  # candidates at or below the canary, the canary first
        out.append(np.log2(len(refs) + 1) - np.log2(rank))
    return np.array(out)


def test_rank_exposure_matches_a_brute_force_count_and_is_bounded():
    rng = np.random.default_rng(0)
    refs = rng.gamma(5.0, 2.0, size=5000)
    canary = np.concatenate([rng.gamma(5.0, 2.0, size=50), [refs.min() - 1, refs.max() + 1, refs[7]]])
    got = rank_exposure(canary, refs)
    assert got == pytest.approx(brute_rank_exposure(canary, refs), abs=1e-12)
    assert got.max() <= np.log2(5001) + 1e-12 and got.min() >= 0
    assert got[-3] == pytest.approx(np.log2(5001)) and got[-2] == 0.0
    assert got[-1] < np.log2(5001)  # a tie ranks behind the reference


def test_skewnorm_exposure_matches_numerical_integration_of_the_fit():
    refs = stats.skewnorm.rvs(4.0, loc=30, scale=5, size=5000, random_state=1)
    fit = SkewNormalFit.of(refs)
    assert fit.a == pytest.approx(4.0, rel=0.35) and fit.loc == pytest.approx(30, abs=1) and fit.scale == pytest.approx(5, rel=0.1)
    canary = np.array([29.0, 31.0, 35.0, 24.0])

    def pdf(x):  # the skew-normal density written out: 2/s φ(z) Φ(a z)
        z = (x - fit.loc) / fit.scale
        return 2 / fit.scale * stats.norm.pdf(z) * stats.norm.cdf(fit.a * z)

    expected = [-np.log2(integrate.quad(pdf, -np.inf, c, epsabs=0, epsrel=1e-11)[0]) for c in canary]
    assert skewnorm_exposure(canary, refs, fit) == pytest.approx(np.array(expected), rel=1e-7)


def test_deep_tail_falls_back_to_arbitrary_precision():
    fit = SkewNormalFit(3.0, 0.0, 1.0)
    # -8: scipy's log-CDF is finite (and checked against quad); -40: it underflows, the fallback answers.
    finite = fit.log2_cdf(np.array([-8.0]))[0]
    assert finite == pytest.approx(-328.7096441434198 / np.log(2), rel=1e-9)
    from ftaudit.attacks.canaries import _log2_cdf_mp

    assert _log2_cdf_mp(-8.0, 3.0) == pytest.approx(finite, rel=1e-9)
    deep = fit.log2_cdf(np.array([-40.0, -8.0]))
    assert np.isfinite(deep).all() and deep[0] < -10000 and deep[1] == pytest.approx(finite)


def test_skewnorm_agrees_with_rank_mid_range_and_extends_beyond_it():
    refs = stats.skewnorm.rvs(3.0, loc=40, scale=6, size=20000, random_state=2)
    canary = np.quantile(refs, [0.5, 0.1, 0.01])  # exposures of about 1, 3.3 and 6.6 bits
    rank, skew = rank_exposure(canary, refs), skewnorm_exposure(canary, refs)
    assert rank == pytest.approx(-np.log2([0.5, 0.1, 0.01]), abs=0.05)
    assert skew == pytest.approx(rank, abs=0.2)
    beyond = np.array([refs.min() - 3.0])
    assert rank_exposure(beyond, refs)[0] == pytest.approx(np.log2(20001))
    assert skewnorm_exposure(beyond, refs)[0] > np.log2(20001) + 1
