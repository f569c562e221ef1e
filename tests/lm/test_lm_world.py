"""Attack direction on worlds with known members: two tiny LMs, each trained (by the engine's
vectorized trainer) on one half of 64 Shakespeare blocks until it memorises them. Every LM attack
must rank a model's own members above its non-members."""
import numpy as np
import pytest
import torch

from ftaudit.attacks.lm import lm_score_set, loss_score
from ftaudit.config import OptimConfig
from ftaudit.data.text import make_blocks
from ftaudit.metrics import auc
from ftaudit.models.lm import initial_state, tiny_bert, tiny_gpt2
from ftaudit.signals.lm import causal_lm_signals, masked_lm_signals
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_vectorized

N, T = 64, 32
KEEP = np.zeros((2, N), dtype=bool)
KEEP[0, : N // 2] = True  # model 0 trains on the first half, model 1 on the second
KEEP[1, N // 2:] = True


@pytest.fixture(scope="module")
def blocks(shakespeare, small_tok):
    return make_blocks(shakespeare, small_tok, block_len=T, n_blocks=N, seed=0)


def _train(model, blocks, objective, epochs):
    init = initial_state(model)
    optim = OptimConfig(optimizer="adam", lr=1e-2, epochs=epochs, batch_size=8)
    schedule = make_schedule([np.flatnonzero(k) for k in KEEP], [0, 1], epochs, optim.batch_size,
                             n_views=10 if objective == "masked-lm" else 1)
    states = train_vectorized(model, [init, init], [n for n, _ in model.named_parameters()], optim,
                              torch.from_numpy(blocks.x), torch.from_numpy(blocks.y), schedule, objective=objective)
    return init, states


def _aucs(scores):
    return {name: [auc(s[m], KEEP[m]) for m in range(2)] for name, s in scores.items()}


def test_causal_lm_attacks_rank_members_higher(blocks, small_tok):
    model = tiny_gpt2(len(small_tok), T, seed=0)
    init, states = _train(model, blocks, "causal-lm", epochs=12)
    sig = causal_lm_signals(model, states + [init], blocks.ids, blocks.valid)
    target = {k: v[:2] for k, v in sig.items()}
    scores = lm_score_set(logp=target["logp"], mu=target["mu"], sigma=target["sigma"], texts=blocks.texts,
                          reference_logp=sig["logp"][2])  # ratio to the (public) initialisation
    scores["loss"] = loss_score(target["logp"])
    aucs = _aucs(scores)
    assert set(aucs) == {"loss", "zlib", "min-k", "min-k++", "lm-ratio"}
    assert all(a > 0.6 for a in sum(aucs.values(), [])), aucs
    # the init saw nothing: its loss says nothing about either model's members
    assert all(abs(auc(loss_score(sig["logp"][2]), KEEP[m]) - 0.5) < 0.25 for m in range(2))


def test_masked_lm_attacks_rank_members_higher(blocks, small_tok):
    model = tiny_bert(len(small_tok), T, seed=0)
    init, states = _train(model, blocks, "masked-lm", epochs=25)
    sig = masked_lm_signals(model, states + [init], blocks.ids, blocks.valid, maskings=4)
    scores = lm_score_set(pll=sig["pll"][:2], reference_pll=sig["pll"][2])
    scores["mlm-loss"] = -sig["mlm_loss"][:2]
    aucs = _aucs(scores)
    assert set(aucs) == {"mlm-pll", "mlm-ratio", "mlm-loss"}
    assert all(a > 0.6 for a in sum(aucs.values(), [])), aucs
