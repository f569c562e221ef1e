"""The forgetting study's checkpointed runs (train/inject.py) follow the engine's placement: a bfloat16
run has its own key, trains under autocast, and still measures its checkpoints in float32."""
import numpy as np
import torch

from ftaudit.config import ModelConfig, OptimConfig
from ftaudit.devices import Placement
from ftaudit.models.vision import build_model
from ftaudit.store.runs import Store
from ftaudit.studies.base import Context
from ftaudit.train.inject import epochs_for, train_checkpointed


def test_a_bfloat16_checkpointed_run_is_keyed_apart_and_measured_in_float32(tmp_path):
    torch.manual_seed(0)
    template = build_model(ModelConfig(arch="mlp", hidden=[16]), 10)
    inits = [{k: v.detach().clone() for k, v in template.state_dict().items()}] * 2
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    sched = epochs_for([np.arange(40), np.arange(20, 40)], [1, 2], 10, 8)
    seen = []

    def measure(states):
        with torch.no_grad():
            logits = template.to(torch.float32)(x[:4])  # what a signal path computes
        seen.append(logits.dtype)
        return {"w": torch.stack([s["head.weight"] for s in states]).cpu().numpy()}

    ctx = Context(store=Store(tmp_path), engine=None)
    cached = lambda keys, compute: ctx.cached("signals", keys, compute)  # noqa: E731
    run = lambda place: train_checkpointed(cached, template, {"arch": "mlp"}, inits, list(inits[0]),  # noqa: E731
                                           OptimConfig(lr=0.01, batch_size=8, epochs=1), x, y, "ab" * 32, sched, [5, 10],
                                           measure, "m", ["w"], False, placement=place)
    f32, bf16 = run(None), run(Placement(dtype=torch.bfloat16))
    assert f32.trained and bf16.trained and f32.key != bf16.key
    assert run(Placement()).key == f32.key and not run(Placement()).trained  # CPU float32: the key of before
    assert seen == [torch.float32] * 4  # autocast is off while measuring
    assert all(s.dtype == torch.float32 and s.device.type == "cpu" for st in bf16.final for s in st.values())
    assert not np.array_equal(f32.signals[1]["w"], bf16.signals[1]["w"])
