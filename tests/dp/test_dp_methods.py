"""DP-SGD works with every fine-tuning method, LoRA and adapters included (cf. Opacus issue #820:
LoRA under DP silently not learning): trainable weights move, frozen ones do not, accuracy beats chance."""
import numpy as np
import pytest
import torch
from torch.func import functional_call

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.dp import DPParams, calibrate_noise, poisson_schedule
from ftaudit.finetune.methods import METHODS, MethodOptions, check_frozen, get_method, init_state
from ftaudit.models.vision import build_model
from ftaudit.train.dp_trainers import train_dp_vectorized

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Optimal order is the")


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    centers = 0.6 * torch.randn(2, 64, generator=torch.Generator().manual_seed(99))
    return (centers[y] + 0.5 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8), y


@pytest.mark.parametrize("name", sorted(METHODS))
def test_dp_training_learns_with_every_method(name):
    torch.manual_seed(0)
    base = build_model(ModelConfig(arch="mlp", hidden=[32]), 2)
    method = get_method(name)
    model = method.build(base, MethodOptions(lora_rank=4, adapter_size=8))
    trainable = method.trainable(model, MethodOptions(lora_rank=4, adapter_size=8))
    init = init_state(model, {k: v.clone() for k, v in base.state_dict().items()})
    x, y = _blobs(200, 0)
    x_test, y_test = _blobs(400, 1)
    q, steps = 0.1, 80
    sigma = calibrate_noise(4.0, 1e-5, q, steps)
    rows = [np.arange(200)]
    dp = DPParams.for_rows(sigma, 1.0, q, rows, [5])
    state = train_dp_vectorized(model, [init], trainable, OptimConfig(optimizer="adam", lr=0.02), x, y,
                                poisson_schedule(rows, q, steps, [1]), dp)[0]
    check_frozen(init, state, trainable)  # frozen bit-identical, trainable moved
    with torch.no_grad():
        acc = (functional_call(model, state, (x_test,)).argmax(-1) == y_test).float().mean().item()
    assert acc > 0.75, (name, acc)  # chance is 0.5
