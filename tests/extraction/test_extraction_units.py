"""Extraction metrics on hand-checkable cases, and the sampler against a cache-free reference."""
import numpy as np
import pytest
import torch

from ftaudit.attacks.extraction import Candidates, any_sample_rate, candidates, extraction_rates, ranking_scores, suffix_nll
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.signals.generation import SamplingSpec, sample_continuations


def hand_case():
    """4 prompts; ranked by score: A(p0, hit) .9, C(p1) .8, E(p2) .7, D(p1, hit) .3, F(p3, hit) .2, B(p0) .1."""
    prompt = np.array([0, 0, 1, 1, 2, 3])
    hit = np.array([True, False, False, True, False, True])
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.2])
    return Candidates(prompt, np.zeros((6, 2), dtype=np.int64), hit, np.ones(6, dtype=np.int64), 4), scores


@pytest.mark.parametrize("per_prompt, precision, recall, kept", [
    (0.5, 1 / 2, 1 / 4, 2),  # A, C
    (1.0, 2 / 4, 2 / 4, 4),  # A, C, E, D
    (2.0, 3 / 6, 3 / 4, 6),  # budget 8 > 6 candidates: all kept
])
def test_precision_and_recall_by_hand(per_prompt, precision, recall, kept):
    cands, scores = hand_case()
    r = extraction_rates(scores, cands, per_prompt, n_boot=200, seed=0)
    assert r["precision"]["value"] == pytest.approx(precision) and r["recall"]["value"] == pytest.approx(recall)
    assert r["kept"] == kept and r["extracted"] == round(recall * 4)
    for m in ("precision", "recall"):
        assert r[m]["lo"] <= r[m]["value"] <= r[m]["hi"]


def test_bootstrap_matches_explicit_resampling_of_prompts():
    """Each replicate = the candidate list rebuilt from prompts drawn with replacement, re-ranked, top k."""
    rng = np.random.default_rng(3)
    n, per = 30, 4
    prompt = np.repeat(np.arange(n), per)
    hit = np.zeros(n * per, dtype=bool)
    hit[np.arange(n) * per + rng.integers(0, per, n)] = rng.random(n) < 0.5
    scores = rng.normal(size=n * per) + 1.5 * hit
    cands = Candidates(prompt, np.zeros((n * per, 1), dtype=np.int64), hit, np.ones(n * per, dtype=np.int64), n)
    got = extraction_rates(scores, cands, 0.5, n_boot=300, level=0.9, seed=7)
    draws = np.random.default_rng([7, 0xE7]).integers(0, n, size=(300, n))
    precisions, recalls = [], []
    for d in draws:
        rows = np.concatenate([np.flatnonzero(prompt == p) for p in d])
        top = rows[np.argsort(-scores[rows], kind="stable")][:15]
        precisions.append(hit[top].mean())
        recalls.append(hit[top].sum() / n)
    for name, reps in (("precision", precisions), ("recall", recalls)):
        lo, hi = np.quantile(reps, [0.05, 0.95])
        assert got[name]["lo"] == pytest.approx(lo) and got[name]["hi"] == pytest.approx(hi)


def test_candidates_dedupe_per_prompt_and_mark_the_suffix():
    gen = np.array([[[1, 2], [1, 2], [3, 4]], [[5, 6], [5, 7], [5, 6]]])
    cands = candidates(gen, np.array([[1, 2], [9, 9]]))
    assert cands.prompt.tolist() == [0, 0, 1, 1] and cands.n_prompts == 2
    assert cands.hit.tolist() == [True, False, False, False]
    assert cands.count.tolist() == [2, 1, 2, 1]
    assert any_sample_rate(cands, n_boot=50)["value"] == 0.5


def test_rankings_and_suffix_nll():
    logp = np.log(np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.5]]))
    assert suffix_nll(logp, 2) == pytest.approx([np.log(4), np.log(2)])
    s = ranking_scores(np.array([1.0, 2.0]), np.array([4.0, 2.0]), ["aaaa", "a b c d"])
    assert s["perplexity"].tolist() == [-1.0, -2.0] and s["ratio to base"].tolist() == [-0.25, -1.0]
    assert s["zlib"][0] > s["zlib"][1]


@pytest.fixture(scope="module")
def model():
    m = tiny_gpt2(50, 24, n_layer=1, n_embd=16, n_head=2, seed=0)
    return m, initial_state(m)


def test_greedy_sampling_equals_a_cache_free_argmax_loop(model):
    template, state = model
    prompts = np.random.default_rng(0).integers(0, 50, size=(3, 5))
    got = sample_continuations(template, state, prompts, SamplingSpec(samples=2, length=6, top_k=1), batch=4)
    x = torch.as_tensor(prompts)
    with torch.no_grad():
        for _ in range(6):
            x = torch.cat([x, template(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = x[:, 5:].numpy()
    assert (got == expected[:, None]).all()


def test_sampling_is_seeded_and_respects_top_k(model):
    template, state = model
    prompts = np.zeros((2, 3), dtype=np.int64)
    spec = SamplingSpec(samples=200, length=1, top_k=3, temperature=2.0, seed=1)
    a = sample_continuations(template, state, prompts, spec)
    assert (a == sample_continuations(template, state, prompts, spec)).all()
    assert not (a == sample_continuations(template, state, prompts, SamplingSpec(200, 1, 3, 2.0, seed=2))).all()
    with torch.no_grad():
        top3 = set(template(torch.as_tensor(prompts[:1]))[0, -1].topk(3).indices.tolist())
    assert set(np.unique(a).tolist()) == top3  # 400 draws at temperature 2 hit each of the 3, and nothing else
