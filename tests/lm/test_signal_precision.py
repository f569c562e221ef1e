"""The causal-LM statistics in float32 (the default) against the float64 reference path: the
per-token signals, the LM attack scores built on them and the metrics of a study must agree to
the stated tolerances."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftaudit.attacks.lm import mean_nll, min_k_plus_plus_score, min_k_score
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.signals import lm as lm_signals
from ftaudit.signals.lm import causal_lm_signals

V, T = 509, 24
TOKEN_ATOL = 2e-5  # logp, mu, sigma (nats) per position
SCORE_ATOL = 1e-4  # mean NLL, Min-K %, Min-K %++ per block
TINY_LM_MIA = ["lm.vocab_size=300", "lm.block_len=16", "lm.n_blocks=48", "lm.population=8", "lm.pretrain_blocks=48",
               "lm.pretrain_epochs=1", "lm.n_layer=1", "lm.n_embd=16", "lm.pretrain_batch_size=8", "finetune.batch_size=8",
               "finetune.references=3", "metrics.bootstrap=200"]


def _states(model, n=3):
    init = initial_state(model)
    g = torch.Generator().manual_seed(4)
    return [{k: v + 0.2 * i * torch.randn(v.shape, generator=g) for k, v in init.items()} for i in range(n)]


def test_float32_statistics_match_the_float64_path():
    model = tiny_gpt2(V, T, n_embd=32, seed=1)
    x = torch.randint(5, V, (12, T), generator=torch.Generator().manual_seed(2)).numpy()
    states = _states(model)
    f32 = causal_lm_signals(model, states, x)
    f64 = causal_lm_signals(model, states, x, dtype=torch.float64)
    assert lm_signals.STATS_DTYPE == torch.float32 and f32["logp"].dtype == np.float64
    for name in ("logp", "mu", "sigma"):
        np.testing.assert_allclose(f32[name], f64[name], rtol=0, atol=TOKEN_ATOL, err_msg=name)
        assert not np.array_equal(f32[name], f64[name])  # the two paths really differ
    for m in range(len(states)):
        for i in range(len(x)):
            a, b = (f32[k][m, i] for k in ("logp", "mu", "sigma")), (f64[k][m, i] for k in ("logp", "mu", "sigma"))
            a, b = list(a), list(b)
            assert mean_nll(a[0]) == pytest.approx(mean_nll(b[0]), abs=SCORE_ATOL)
            assert min_k_score(a[0], 0.2) == pytest.approx(min_k_score(b[0], 0.2), abs=SCORE_ATOL)
            assert min_k_plus_plus_score(*a, 0.2) == pytest.approx(min_k_plus_plus_score(*b, 0.2), abs=SCORE_ATOL)


def test_a_study_reports_the_same_metrics_in_either_precision(tmp_path, monkeypatch):
    """lm-mia at a tiny size, once per precision (separate stores, so nothing is shared): every
    attack's AUC and TPR at 1 % FPR agree far inside their CIs."""
    import ftaudit

    runs = {}
    for dtype in (torch.float32, torch.float64):
        monkeypatch.setattr(lm_signals, "STATS_DTYPE", dtype)
        runs[dtype] = ftaudit.run("lm-mia", overrides=TINY_LM_MIA + [f"out={tmp_path / str(dtype)}"])
    a, b = (runs[d].results["attacks"] for d in (torch.float32, torch.float64))
    assert [x["name"] for x in a] == [x["name"] for x in b]
    for x, y in zip(a, b):
        width = x["auc"]["hi"] - x["auc"]["lo"]
        assert abs(x["auc"]["value"] - y["auc"]["value"]) <= 0.05 * width, x["name"]
        for tx, ty in zip(x["tpr_at_fpr"], y["tpr_at_fpr"]):
            assert abs(tx["value"] - ty["value"]) <= 0.25 * (tx["hi"] - tx["lo"]), (x["name"], tx["fpr"])
