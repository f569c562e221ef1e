import math

import numpy as np
import pytest
import torch

from ftaudit.attacks.lm import mean_nll, min_k_plus_plus_score
from ftaudit.data.tokenizer import MASK_ID, PAD_ID
from ftaudit.models.lm import initial_state, tiny_bert, tiny_gpt2
from ftaudit.signals.lm import causal_lm_signals, masked_lm_loss, pseudo_log_likelihood
from ftaudit.train.mlm import MLM_VIEWS, mask_tokens, masked_lm_objective
from ftaudit.train.objectives import IGNORE, get_objective

V, T = 61, 12


def _blocks(n, seed):
    return torch.randint(5, V, (n, T), generator=torch.Generator().manual_seed(seed))


def _two_states(model):
    """The init and a visibly different state, to check that each model is run with its own."""
    init = initial_state(model)
    g = torch.Generator().manual_seed(9)
    return [init, {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in init.items()}]


def _naive_min_k_plus_plus(logits_row, tokens, k):
    """Min-K %++ for one block from scratch: softmax by hand, mean/variance of log p by summation."""
    z = []
    for t in range(len(tokens) - 1):
        row = [float(v) for v in logits_row[t]]
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        logq = [v - log_norm for v in row]
        mu = sum(math.exp(lq) * lq for lq in logq)
        var = sum(math.exp(lq) * (lq - mu) ** 2 for lq in logq)
        z.append((logq[tokens[t + 1]] - mu) / math.sqrt(var))
    lowest = sorted(z)[: max(1, int(len(z) * k))]
    return sum(lowest) / len(lowest)


def test_causal_signals_match_hf_loss_and_a_naive_min_k_plus_plus():
    model = tiny_gpt2(V, T, n_embd=32, seed=0)
    x = _blocks(5, 1)
    states = _two_states(model)
    sig = causal_lm_signals(model, states, x.numpy(), budget=2 * T * V, dtype=torch.float64)  # chunks of 2 blocks
    assert sig["logp"].shape == (2, 5, T - 1) and sig["logp"].dtype == np.float64
    for m, state in enumerate(states):
        model.load_state_dict(state)
        with torch.no_grad():
            logits = model(x).double()
            for i in range(len(x)):  # HF's own shifted loss is the mean NLL
                hf = model.lm(input_ids=x[i:i + 1], labels=x[i:i + 1]).loss.item()
                assert mean_nll(sig["logp"][m, i]) == pytest.approx(hf, abs=1e-5)
                for k in (0.2, 0.5, 1.0):
                    expected = _naive_min_k_plus_plus(logits[i], x[i].tolist(), k)
                    got = min_k_plus_plus_score(sig["logp"][m, i], sig["mu"][m, i], sig["sigma"][m, i], k)
                    assert got == pytest.approx(expected, abs=1e-6)
    assert not np.allclose(sig["logp"][0], sig["logp"][1])


def test_causal_signals_are_nan_at_padding():
    model = tiny_gpt2(V, T, n_embd=32, seed=0)
    x = _blocks(3, 2)
    valid = np.ones((3, T), dtype=bool)
    valid[1, 7:] = False
    full = causal_lm_signals(model, [initial_state(model)], x.numpy())
    part = causal_lm_signals(model, [initial_state(model)], x.numpy(), valid)
    for name in ("logp", "mu", "sigma"):
        assert np.isnan(part[name][0, 1, 6:]).all() and not np.isnan(part[name][0, 1, :6]).any()
        np.testing.assert_array_equal(part[name][0, [0, 2]], full[name][0, [0, 2]])


def test_pll_matches_a_per_position_loop():
    model = tiny_bert(V, T, n_embd=32, seed=0)
    x = _blocks(3, 3)
    x[2, 9:] = PAD_ID
    valid = (x != PAD_ID).numpy()
    states = _two_states(model)
    pll = pseudo_log_likelihood(model, states, x.numpy(), valid, budget=5 * T * V)  # chunks cut across blocks
    assert pll.shape == (2, 3, T)
    for m, state in enumerate(states):
        model.load_state_dict(state)
        for i in range(3):
            for t in range(T):
                if not valid[i, t]:
                    assert np.isnan(pll[m, i, t])
                    continue
                masked = x[i].clone()
                masked[t] = MASK_ID
                with torch.no_grad():
                    expected = torch.log_softmax(model(masked[None])[0, t].double(), -1)[x[i, t]].item()
                assert pll[m, i, t] == pytest.approx(expected, abs=1e-5)


def test_mlm_loss_matches_hf_masked_lm_loss():
    model = tiny_bert(V, T, n_embd=32, seed=0)
    x = _blocks(4, 4)
    ok = torch.ones_like(x, dtype=torch.bool)
    got = masked_lm_loss(model, [initial_state(model)], x.numpy(), maskings=3, seed=11, budget=V * T)
    inputs, targets = mask_tokens(x, ok, 3, 11, MASK_ID, mask_share=1.0, random_share=0.0)
    with torch.no_grad():
        expected = [[model.lm(input_ids=inputs[v, i:i + 1], labels=targets[v, i:i + 1]).loss.item() for i in range(4)]
                    for v in range(3)]
    np.testing.assert_allclose(got[0], np.mean(expected, 0), atol=1e-5)


def test_bert_masking_rule():
    x = torch.randint(5, 1000, (400, 40), generator=torch.Generator().manual_seed(0))
    counted = torch.ones_like(x, dtype=torch.bool)
    counted[::3, 30:] = False  # padding
    inputs, targets = mask_tokens(x, counted, 10, seed=1, mask_id=MASK_ID)
    picked = targets != IGNORE
    expected = np.rint(0.15 * counted.sum(-1).numpy()).astype(int)
    assert (picked.sum(-1).numpy() == expected).all()  # round(15 %) of each block's real tokens
    assert not (picked & ~counted).any()
    assert torch.equal(targets[picked], x.expand_as(targets)[picked])
    assert torch.equal(inputs[~picked], x.expand_as(inputs)[~picked])  # only picked tokens change
    share = inputs[picked] == MASK_ID
    same = inputs[picked] == x.expand_as(inputs)[picked]
    assert 0.78 < share.float().mean() < 0.82 and 0.085 < same.float().mean() < 0.115  # 80 / 10 / 10
    again = mask_tokens(x, counted, 10, seed=1, mask_id=MASK_ID)
    assert torch.equal(again[0], inputs) and not torch.equal(mask_tokens(x, counted, 10, 2, MASK_ID)[0], inputs)
    assert len({tuple(p.flatten().tolist()) for p in picked[:, 0]}) == 10  # views differ


def test_masked_lm_objective_registration():
    objective = get_objective("masked-lm")
    assert objective.n_views(0) == MLM_VIEWS == objective.n_views(2)
    x = torch.randint(5, 50, (6, 20))
    y = x.clone()
    y[0, 10:] = IGNORE
    inputs, targets, per_view = objective.views(x, y, 0, 3)
    assert per_view and inputs.shape == targets.shape == (MLM_VIEWS, 6, 20)
    assert (targets[:, 0, 10:] == IGNORE).all() and (inputs == MASK_ID).any()
    name = masked_lm_objective(103)
    assert name == "masked-lm[mask=103]" and masked_lm_objective(103) == name
    assert (get_objective(name).views(x, y, 0, 3)[0] == 103).any()
