"""engine.dtype=bfloat16 on the CPU: autocast training with float32 weights, its own cache keys, models
close to float32's, and a headline AUC inside float32's CI."""
import torch

import ftaudit
from ftaudit.config import EngineConfig
from ftaudit.signals.classifier import batched_logits
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, TrainGroup
from tiny_groups import tiny_mlp_group

# bfloat16 keeps 8 bits of mantissa: over a short Adam run its models move away from float32's by a
# few per cent of the fine-tuning update (measured 0.3-4 % for these MLPs; 8-20 % for small CNNs,
# where Adam's sign-like steps amplify rounding), and their logits by a few hundredths.
UPDATE_TOLERANCE = 0.1  # |w_bf16 - w_f32| / |w_f32 - init|, L2 over all weights, per model
LOGIT_TOLERANCE = 0.1  # largest absolute logit gap on the training pool


def _group() -> TrainGroup:
    return tiny_mlp_group(64, epochs=3)


def test_bfloat16_trains_float32_weights_under_its_own_keys_close_to_float32(tmp_path):
    group = _group()
    cache = ModelCache(tmp_path)
    f32 = Engine(cache, EngineConfig(device="cpu")).train(group)
    bf16 = Engine(cache, EngineConfig(device="cpu", dtype="bfloat16")).train(group)
    assert bf16.trained == 4 and not set(bf16.keys) & set(f32.keys)  # never served for each other
    init = group.jobs[0].init
    for a, b in zip(f32.states(), bf16.states()):
        assert all(t.dtype == torch.float32 for t in b.values())
        assert any(not torch.equal(a[n], b[n]) for n in a)  # autocast did compute in bfloat16
        gap = torch.sqrt(sum(((a[n] - b[n]) ** 2).sum() for n in a))
        update = torch.sqrt(sum(((a[n] - init[n]) ** 2).sum() for n in a))
        assert gap / update < UPDATE_TOLERANCE
    logits = [batched_logits(group.template, r.states(), group.x) for r in (f32, bf16)]
    assert (logits[0] - logits[1]).abs().max() < LOGIT_TOLERANCE
    assert torch.equal(logits[0].argmax(-1), logits[1].argmax(-1))


def test_bfloat16_run_is_recorded_and_its_headline_auc_stays_inside_float32s_ci(tmp_path, tiny_overrides):
    f32 = ftaudit.run("finetune-mia", overrides=tiny_overrides)
    bf16 = ftaudit.run("finetune-mia", overrides=tiny_overrides + ["engine.dtype=bfloat16"])
    assert f32.results["engine"]["dtype"] == "float32" and bf16.results["engine"]["dtype"] == "bfloat16"
    assert bf16.results["engine"]["device"] == f32.results["engine"]["device"]
    a = {r["attack"]: r for r in f32.metrics}
    b = {r["attack"]: r for r in bf16.metrics}
    assert b["lira-online"]["auc"] != a["lira-online"]["auc"]  # other models, not the float32 ones from the cache
    for name in ("lira-online", "loss"):
        assert a[name]["auc_lo"] <= b[name]["auc"] <= a[name]["auc_hi"], (name, a[name], b[name])
