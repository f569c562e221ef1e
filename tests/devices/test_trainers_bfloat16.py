"""Every trainer runs under the engine's bfloat16 autocast (on the CPU here): float32 weights that
moved from their init, finite, and near the float32 run's — DP (vmapped and Opacus) and packed LoRA
included. The device side of the trainers (tensors on their inputs' device) needs a GPU to test:
benchmarks/gpu.sh runs every trainer there."""
import numpy as np
import pytest
import torch

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.devices import Placement
from ftaudit.dp import DPParams, poisson_schedule
from ftaudit.finetune.methods import MethodOptions, get_method, init_state
from ftaudit.finetune.packed_lora import train_packed_lora
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.models.vision import build_model
from ftaudit.train.dp_trainers import train_dp_opacus, train_dp_vectorized
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Optimal order is the")
BF16 = Placement(dtype=torch.bfloat16)
# |w_bf16 - w_f32| / |w_f32 - init| (L2 over the trainable weights) after a few SGD steps: measured
# 0.003-0.06 (vectorized, DP, packed LoRA) and 0.13-0.22 (loop: nn.Linear adds its bias in bfloat16
# where the vmapped path adds it in float32). Adam is not used here: its sign-like first steps turn bfloat16 rounding of
# near-zero gradients into whole steps (loop: 0.87 on this toy problem).
RELATIVE_GAP = 0.35


def _digits():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", hidden=[16]), 2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()
    rows = [np.arange(0, 32), np.arange(16, 48)]
    return model, [init, init], get_method("full").trainable(model), x, y, rows


def _lora():
    base = tiny_gpt2(97, 16, n_layer=1, n_embd=32, n_head=2, seed=0)
    opts = MethodOptions(lora_rank=4, lora_alpha=8.0)
    torch.manual_seed(0)
    template = get_method("lora").build(base, opts)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 97, size=(24, 16)))
    init = init_state(template, initial_state(base))
    return template, [init, init], get_method("lora").trainable(template, opts), x, x, [np.arange(12), np.arange(8, 20)]


def _run(trainer: str):
    if trainer == "packed-lora":
        template, inits, trainable, x, y, rows = _lora()
        optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=2, batch_size=4)
        sch = make_schedule(rows, [0, 1], optim.epochs, optim.batch_size)
        return inits, trainable, lambda: train_packed_lora(template, inits, trainable, optim, x, y, sch,
                                                            objective="causal-lm")
    template, inits, trainable, x, y, rows = _digits()
    optim = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.9, epochs=2, batch_size=8)
    if trainer.startswith("dp-"):
        sch = poisson_schedule(rows, 0.25, 8, [3, 4])
        dp = DPParams.for_rows(0.5, 1.0, 0.25, rows, [11, 12])
        fn = train_dp_vectorized if trainer == "dp-vectorized" else train_dp_opacus
        return inits, trainable, lambda: fn(template, inits, trainable, optim, x, y, sch, dp)
    sch = make_schedule(rows, [0, 1], optim.epochs, optim.batch_size)
    fn = train_vectorized if trainer == "vectorized" else train_loop
    return inits, trainable, lambda: fn(template, inits, trainable, optim, x, y, sch)


@pytest.mark.parametrize("trainer", ["vectorized", "loop", "dp-vectorized", "dp-opacus", "packed-lora"])
def test_every_trainer_trains_float32_weights_under_bfloat16_autocast(trainer):
    inits, trainable, train = _run(trainer)
    f32 = train()
    with BF16.autocast():
        bf16 = train()
    for init, a, b in zip(inits, f32, bf16):
        assert all(b[n].dtype == torch.float32 and torch.isfinite(b[n]).all() for n in b)
        assert any(not torch.equal(a[n], b[n]) for n in trainable)  # autocast did compute in bfloat16
        gap = torch.sqrt(sum(((a[n] - b[n]) ** 2).sum() for n in trainable))
        update = torch.sqrt(sum(((a[n] - init[n]) ** 2).sum() for n in trainable))
        assert update > 0 and gap / update < RELATIVE_GAP, (trainer, float(gap / update))
