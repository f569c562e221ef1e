import logging

import numpy as np
import pytest
import torch

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.dp import DPParams, calibrate_noise, check_epsilon, poisson_schedule
from ftaudit.finetune.methods import check_frozen, get_method
from ftaudit.models.vision import build_model
from ftaudit.train.dp_trainers import train_dp_opacus, train_dp_vectorized

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Optimal order is the")


def _model(arch="mlp", seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, hidden=[16], channels=[4, 8]), 2)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _blobs(n, seed=0):
    """Two well-separated Gaussian classes of 8×8 'images'."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    centers = 0.3 * torch.randn(2, 64, generator=g)
    return (centers[y] + 0.5 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8), y


@pytest.mark.parametrize("arch,method,optimizer", [("mlp", "full", "adam"), ("cnn", "head", "sgd")])
def test_vectorized_dp_equals_opacus_noise_included(arch, method, optimizer):
    model, init = _model(arch)
    x, y = _blobs(64)
    rows = [np.arange(0, 40), np.arange(24, 64)]
    q = 0.05
    sch = poisson_schedule(rows, q, 12, [3, 4])
    empty = sch.mask.sum(-1) == 0  # [steps, models]
    assert empty.any(0).all() and not empty.all(1).any()  # each model meets an empty batch, alone
    dp = DPParams.for_rows(1.1, 0.8, q, rows, [11, 12])
    trainable = get_method(method).trainable(model)
    optim = OptimConfig(optimizer=optimizer, lr=0.05, momentum=0.5)
    vec = train_dp_vectorized(model, [init, init], trainable, optim, x, y, sch, dp)
    ref = train_dp_opacus(model, [init, init], trainable, optim, x, y, sch, dp)
    for a, b in zip(vec, ref):
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    assert not torch.equal(vec[0]["head.weight"], vec[1]["head.weight"])


def test_models_train_independently_of_their_group():
    # different inits per model (so frozen tensors are stacked, not shared), head-only
    (model, init_a), (_, init_b) = _model(seed=0), _model(seed=1)
    x, y = _blobs(80)
    rows = [np.arange(0, 50), np.arange(30, 80)]
    sch = poisson_schedule(rows, 0.1, 15, [3, 4])
    dp = DPParams.for_rows(1.0, 1.0, 0.1, rows, [21, 22])
    trainable = get_method("head").trainable(model)
    optim = OptimConfig(optimizer="adam", lr=0.01)
    pair = train_dp_vectorized(model, [init_a, init_b], trainable, optim, x, y, sch, dp)
    for m, init in enumerate([init_a, init_b]):
        (alone,) = train_dp_vectorized(model, [init], trainable, optim, x, y,
                                       poisson_schedule(rows[m:m + 1], 0.1, 15, [3 + m]), dp.select([m]))
        for name in alone:
            torch.testing.assert_close(pair[m][name], alone[name], atol=1e-6, rtol=1e-5)


def test_dp_training_learns_and_keeps_frozen_weights():
    logging.disable(logging.WARNING)
    model, init = _model()
    x, y = _blobs(800)
    n, q, steps, delta = 400, 0.1, 100, 1e-5
    sigma = calibrate_noise(4.0, delta, q, steps)
    assert 3.96 <= check_epsilon(sigma, q, steps, delta) <= 4.0
    logging.disable(logging.NOTSET)
    rows = [np.arange(n)]
    dp = DPParams.for_rows(sigma, 1.0, q, rows, [5])
    trainable = get_method("head").trainable(model)
    (state,) = train_dp_vectorized(model, [init], trainable, OptimConfig(optimizer="sgd", lr=0.5, momentum=0.5),
                                   x, y, poisson_schedule(rows, q, steps, [0]), dp)
    check_frozen(init, state, trainable)  # frozen bit-identical, trainable moved
    assert all(not torch.equal(state[k], init[k]) for k in trainable)
    model.load_state_dict(state)
    with torch.no_grad():
        accuracy = (model(x[n:]).argmax(-1) == y[n:]).float().mean().item()
    assert accuracy > 0.8  # chance is 0.5; the untrained head scores ~0.5 here


def test_per_model_noise_and_clipping_equal_opacus_model_by_model():
    """A privacy sweep trains several (σ, C) in one group: each model must get exactly its own."""
    model, init = _model()
    x, y = _blobs(64)
    rows = [np.arange(0, 40), np.arange(24, 64), np.arange(0, 64)]
    sch = poisson_schedule(rows, 0.1, 10, [3, 4, 5])
    dp = DPParams((0.0, 0.7, 2.0), (0.5, 1.0, 3.0), tuple(DPParams.for_rows(1, 1, 0.1, rows, [0, 0, 0]).expected_batch_size),
                  (7, 8, 9))
    trainable = get_method("full").trainable(model)
    optim = OptimConfig(optimizer="sgd", lr=0.05)
    vec = train_dp_vectorized(model, [init] * 3, trainable, optim, x, y, sch, dp)
    ref = train_dp_opacus(model, [init] * 3, trainable, optim, x, y, sch, dp)
    for a, b in zip(vec, ref):
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
