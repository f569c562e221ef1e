import numpy as np
import torch

from ftaudit.signals.classifier import logit_signals


def test_logit_signals_match_naive_formula_where_it_is_stable():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 5, generator=g)
    y = torch.randint(0, 5, (50,), generator=g)
    conf, loss = logit_signals(logits, y)
    p = torch.softmax(logits.double(), -1).gather(-1, y.expand(3, 50).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(conf, torch.log(p) - torch.log1p(-p))
    torch.testing.assert_close(loss, -torch.log(p))
    assert conf.dtype == torch.float64


def test_logit_signals_stay_finite_when_confident():
    logits = torch.tensor([[[60.0, 0.0, 0.0], [-60.0, 0.0, 0.0]]])
    y = torch.tensor([0, 0])
    conf, loss = logit_signals(logits, y)
    assert torch.isfinite(conf).all() and torch.isfinite(loss).all()
    assert conf[0, 0] > 55 and conf[0, 1] < -55  # the naive float32 formula gives inf here
    assert np.isclose(loss[0, 1].item(), 60 + np.log(2), atol=1e-9)
