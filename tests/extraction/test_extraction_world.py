"""A tiny GPT-2 trained by the engine until it memorises a few short blocks: extraction by generation
must recover some of their suffixes from their prefixes, and (almost) none of held-out blocks'."""
import numpy as np
import pytest
import torch

from ftaudit.attacks.extraction import candidates, extraction_rates, ranking_scores, suffix_nll
from ftaudit.signals.generation import SamplingSpec, sample_continuations
from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.data.text import load_corpus, make_blocks
from ftaudit.finetune.methods import get_method
from ftaudit.models.lm import initial_state, lm_arch_spec, tiny_gpt2
from ftaudit.signals.lm import causal_lm_signals
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, Job, TrainGroup

PREFIX, SUFFIX = 4, 8


@pytest.fixture(scope="module")
def world(small_tok, tmp_path_factory):
    blocks = make_blocks(load_corpus("shakespeare"), small_tok, 16, 12, seed=0)
    members, held_out = blocks.select(np.arange(6)), blocks.select(np.arange(6, 12))
    model = tiny_gpt2(len(small_tok), 16, n_layer=1, n_embd=32, n_head=2, seed=0)
    init = initial_state(model)
    group = TrainGroup(name="memorise", template=model, arch=lm_arch_spec(model), method="full",
                       trainable=get_method("full").trainable(model),
                       optim=OptimConfig(optimizer="adam", lr=1e-2, epochs=80, batch_size=6),
                       x=torch.from_numpy(members.x), y=torch.from_numpy(members.y), data_digest=members.digest(),
                       jobs=[Job(init=init, rows=np.arange(6), seed=0)], objective="causal-lm")
    engine = Engine(ModelCache(tmp_path_factory.mktemp("models")), EngineConfig(vectorized=False))
    trained = engine.train(group).states()[0]
    return model, init, trained, members, held_out


def extract(model, state, base_state, blocks, seed=0):
    spec = SamplingSpec(samples=4, length=SUFFIX, top_k=10, temperature=1.0, seed=seed)
    gen = sample_continuations(model, state, blocks.ids[:, :PREFIX], spec)
    cands = candidates(gen, blocks.ids[:, PREFIX:PREFIX + SUFFIX])
    ids = np.concatenate([blocks.ids[cands.prompt, :PREFIX], cands.tokens], axis=1)
    logp = causal_lm_signals(model, [state, base_state], ids)["logp"]
    nll, base_nll = suffix_nll(logp, PREFIX)
    return cands, ranking_scores(nll, base_nll, [str(t) for t in cands.tokens.tolist()])


def test_extraction_recovers_memorised_suffixes_and_not_unseen_ones(world):
    model, init, trained, members, held_out = world
    cands, scores = extract(model, trained, init, members)
    assert cands.hit.sum() >= 3  # at least half of the six memorised suffixes are sampled verbatim
    rates = extraction_rates(scores["ratio to base"], cands, 1.0, n_boot=200)
    assert rates["extracted"] >= 3 and rates["precision"]["value"] >= 0.5
    assert rates["recall"]["value"] == pytest.approx(rates["extracted"] / 6)
    # the memorised suffix outranks the prompt's other samples
    for p in np.unique(cands.prompt[cands.hit]):
        mine = cands.prompt == p
        assert scores["perplexity"][mine & cands.hit].max() == scores["perplexity"][mine].max()
    unseen, _ = extract(model, trained, init, held_out)
    assert unseen.hit.sum() == 0
    untrained, _ = extract(model, init, init, members)
    assert untrained.hit.sum() == 0
