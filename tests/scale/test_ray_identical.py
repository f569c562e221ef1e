"""executor=ray on a local 2-CPU Ray gives bit-identical models and identical metrics to executor=local.

Bit for bit at the same torch thread count (a task runs engine.threads, default 1): on CPU some
reductions (the DP trainers' per-sample norms) round differently with more threads."""
import logging
import os

import numpy as np
import pytest
import torch

import ftaudit
from ftaudit.config import EngineConfig, OptimConfig
from ftaudit.dp.spec import DPSpec
from ftaudit.finetune.methods import MethodOptions, get_method, init_state
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.signals.jobs import SignalJob
from ftaudit.store.cache import ModelCache
from ftaudit.store.runs import Store
from ftaudit.studies.base import Context
from ftaudit.train.engine import Engine, Job, TrainGroup
from tiny_groups import tiny_mlp_world
from raylib import N_MODELS, RAY, TINY, assert_same_models, local_ray

pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the local runs: as many threads as a task


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray() as ray:
        yield ray


def test_a_study_on_ray_matches_the_local_run_bit_for_bit(ray_cluster, tmp_path, caplog):
    local = ftaudit.run("finetune-mia", overrides=TINY, out=str(tmp_path / "local"))
    with caplog.at_level(logging.DEBUG, logger="ftaudit.engine"):
        on_ray = ftaudit.run("finetune-mia", overrides=TINY + RAY, out=str(tmp_path / "ray"))
    assert_same_models(tmp_path / "local", tmp_path / "ray")
    assert on_ray.results["attacks"] == local.results["attacks"]
    assert on_ray.results["utility"] == local.results["utility"]
    assert on_ray.results["cache"] == local.results["cache"] == {"models_trained": N_MODELS, "models_loaded": 0}
    # every chunk (1 pretrain, 2 of fine-tunes, 1 control) came back from a worker process
    pids = [r.getMessage().split("pid ")[1].split(")")[0] for r in caplog.records if "trained on" in r.getMessage()]
    assert len(pids) == 4 and str(os.getpid()) not in pids
    # and so did every chunk of signals (the 4 fine-tunes on audit and population views, 2 per chunk)
    queried = [r.getMessage().split("pid ")[1].split(",")[0] for r in caplog.records if "queried on" in r.getMessage()]
    assert queried and str(os.getpid()) not in queried
    # a rerun on Ray loads everything and starts no task
    again = ftaudit.run("finetune-mia", overrides=TINY + RAY, out=str(tmp_path / "ray"))
    assert again.results["cache"] == {"models_trained": 0, "models_loaded": N_MODELS}
    assert again.results["attacks"] == local.results["attacks"]


def _group(trainer: str) -> TrainGroup:
    """A small group for each trainer path: per-model loop, masked, DP (vectorized and Opacus)."""
    x, y, model, init = tiny_mlp_world(48)
    trainable = get_method("full").trainable(model)
    dp = DPSpec(epsilon=4.0, delta=1e-5, clip=1.0, accountant="rdp", sample_rate=0.25, epochs=1) \
        if trainer.startswith("dp") else None
    masks = {"head.weight": (torch.rand(init["head.weight"].shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()} \
        if trainer == "masked" else None
    jobs = [Job(init=init, rows=np.arange(8 * m, 8 * m + 24), seed=m) for m in range(3)]
    return TrainGroup(name=f"g-{trainer}", template=model, arch={"t": "mlp"}, method="full", trainable=trainable,
                      optim=OptimConfig(lr=0.05, epochs=2, batch_size=8), x=x, y=y, data_digest="ab" * 8, jobs=jobs,
                      dp=dp, masks=masks)


@pytest.mark.parametrize("trainer,vectorized", [("loop", False), ("masked", True), ("dp-vectorized", True),
                                                ("dp-opacus", False)])
def test_every_trainer_gives_the_same_bits_on_ray(trainer, vectorized, ray_cluster, tmp_path):
    cfg = dict(chunk=2, vectorized=vectorized)
    local = Engine(ModelCache(tmp_path / "l"), EngineConfig(**cfg)).train(_group(trainer))
    remote = Engine(ModelCache(tmp_path / "r"), EngineConfig(**cfg, executor="ray")).train(_group(trainer))
    assert remote.keys == local.keys and remote.trained == local.trained == 3
    assert remote.dp == local.dp
    for a, b in zip(local.states(), remote.states()):
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("packed", [False, True])
def test_lora_references_of_a_tiny_gpt2_on_ray(packed, ray_cluster, tmp_path, caplog):
    """peft LoRA on a GPT-2 (tied embeddings, causal-mask buffers): the template travels as a
    skeleton, the frozen base once, and only the adapters come back; the models are the local ones."""
    base = tiny_gpt2(97, 16, n_layer=2, n_embd=32, n_head=2, seed=0)
    lora, opts = get_method("lora"), MethodOptions(lora_rank=4, lora_alpha=8.0)
    torch.manual_seed(0)
    template = lora.build(base, opts)
    start = init_state(template, initial_state(base))
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 97, size=(24, 16)))
    group = TrainGroup(name="lora", template=template, arch={"t": "gpt2"}, method="lora", method_options={},
                       trainable=lora.trainable(template, opts), optim=OptimConfig(optimizer="adam", lr=1e-2, epochs=1,
                                                                                   batch_size=4),
                       x=x, y=x, data_digest="0" * 16, objective="causal-lm",
                       jobs=[Job(init=start, rows=np.arange(6 * m, 6 * m + 12), seed=m) for m in range(3)])
    cfg = dict(chunk=2, vectorized=False, packed_lora=packed, pack_rows=4)
    local = Engine(ModelCache(tmp_path / "l"), EngineConfig(**cfg)).train(group)
    with caplog.at_level(logging.DEBUG, logger="ftaudit.engine"):
        remote = Engine(ModelCache(tmp_path / "r"), EngineConfig(**cfg, executor="ray")).train(group)
    assert remote.keys == local.keys and remote.trained == 3
    back = sorted(int(r.getMessage().split(", ")[1].split()[0]) for r in caplog.records if "tensors back" in r.getMessage())
    assert back == [len(group.trainable), 2 * len(group.trainable)]  # the adapters, not the base
    for a, b in zip(local.states(), remote.states()):
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _query(tmp_path, executor: str, job, n: int) -> list[dict[str, np.ndarray]]:
    store = Store(tmp_path / executor)
    ctx = Context(store=store, engine=Engine(store.models, EngineConfig(chunk=2, executor=executor)))
    return ctx.query([ctx.signal_key(model=f"m{m}") for m in range(n)], job)


def _lora_gpt2_models(n: int):
    """A LoRA GPT-2 template and ``n`` states that differ only in their adapters (the frozen base
    travels once, as the template's)."""
    base = tiny_gpt2(97, 16, n_layer=2, n_embd=32, n_head=2, seed=0)
    torch.manual_seed(0)
    template = get_method("lora").build(base, MethodOptions(lora_rank=4, lora_alpha=8.0))
    start = init_state(template, initial_state(base))
    states = [{k: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(m)) if "lora_" in k else v
               for k, v in start.items()} for m in range(n)]
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 97, size=(6, 16)))
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, 12:] = False
    return template, states, {"ids": ids, "valid": valid}


@pytest.mark.parametrize("signal,params", [("causal-lm", {"budget": 1 << 12}), ("token-phi", {}),
                                           ("audit-nll", {"batch_size": 4, "max_length": 16})])
def test_lm_signal_jobs_on_ray_match_the_local_arrays(signal, params, ray_cluster, tmp_path, caplog):
    template, states, inputs = _lora_gpt2_models(3)
    inputs = {"ids": inputs["ids"]} if signal == "token-phi" else inputs
    job = lambda idx: SignalJob(signal, template, [states[i] for i in idx], inputs, params)  # noqa: E731
    local = _query(tmp_path, "local", job, 3)
    with caplog.at_level(logging.DEBUG, logger="ftaudit.engine"):
        remote = _query(tmp_path, "ray", job, 3)
    assert len([r for r in caplog.records if "queried on" in r.getMessage()]) == 2  # 2 chunks, as Ray tasks
    for a, b in zip(local, remote):
        assert a.keys() == b.keys() and all(a[n].dtype == b[n].dtype and np.array_equal(a[n], b[n], equal_nan=True)
                                            for n in a)
