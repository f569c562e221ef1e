"""Reference training on Ray against the local executor: wall time, ratios, and Ray's overhead per task.

    python benchmarks/ray_scaling.py [--references 16] [--chunks 4] [--study finetune-mia] [--set KEY=VALUE ...]
    python benchmarks/ray_scaling.py --quick          # a tiny size, to check the script runs
    python benchmarks/ray_scaling.py --cost-model     # docs/scale.md's measured inputs (GPT-2-small LoRA)

The study's fine-tune group (its reference models) is captured once — the study runs until it hands
that group to the engine — and the same group is then trained from an empty cache by: the local
executor with 1 torch thread and with all cores, a local Ray with 1 worker (num_cpus=1) and with 2
workers (num_cpus=2), one CPU and one torch thread per task. The group is cut into ``--chunks`` chunks
(engine.chunk), i.e. Ray tasks. Every model is checked bit-identical to the local 1-thread run's.

Also printed: Ray's start and its workers' first task (cold: a worker imports torch and ftaudit), the
round trip of an empty task, the overhead per chunk task (Ray, 1 worker, minus local, 1 thread, per
task), and the same for a study whose jobs are tiny (the 32 reference models of a 2-epoch, 8-unit MLP,
one task each), where that overhead is all there is. Signal jobs likewise: the causal-LM signals
(logp, mu, sigma) of 16 LoRA models of a small GPT-2 on 64 blocks, 4 models per job, through
``ctx.query`` on each executor, checked bit-identical to the local 1-thread arrays. One run, one measurement each; run it on an
otherwise idle machine: the 1-minute load average is printed beside every figure.

``--cost-model`` measures, for a GPT-2-small-sized model (12 layers, 768 wide, 1024 positions, the
50,257-token vocabulary, head untied as the engine trains it) with peft LoRA (rank 8 on every
projection), what docs/scale.md's cost model takes from this machine: the bytes and seconds to ship
the template to a worker (skeleton + safetensors, and back), the bytes a trained model returns (its
adapters), and the seconds per LoRA training step on this CPU (batch 4 x 128 tokens, one thread per
core), with the FLOP rate that implies (about 4 x parameters x tokens per step: forward, and a
backward without the frozen weights' gradients).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from ftaudit.config_build import build_config
from ftaudit.store.cache import ModelCache
from ftaudit.store.runs import Store
from ftaudit.studies import Context, get_study
from ftaudit.train.engine import Engine, TrainGroup

TINY = ["data.audit_size=40", "data.population_size=20", "pretrain.epochs=1", "finetune.epochs=2",
        "model.arch=mlp", "model.hidden=[8]", "pretrain.augment=0", "finetune.augment=0"]


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


class _Captured(Exception):
    pass


class CapturingEngine(Engine):
    """Trains what the study asks until it hands over its fine-tune group, which it keeps and stops."""

    group: TrainGroup | None = None

    def train(self, group, vectorized=None):
        if group.name.startswith("fine-tune"):
            self.group, self.vectorized = group, vectorized
            raise _Captured
        return super().train(group, vectorized)


def capture(study: str, overrides: list[str], out: Path) -> tuple[TrainGroup, bool | None]:
    cfg = build_config(study, None, [*overrides, f"out={out}"])
    store = Store(cfg.out)
    engine = CapturingEngine(store.models, cfg.engine, None)
    try:
        get_study(cfg.study).run(cfg, Context(store=store, engine=engine))
    except _Captured:
        return engine.group, engine.vectorized
    raise SystemExit(f"study {study} trained no group named 'fine-tune…'")


def train(group: TrainGroup, vectorized: bool | None, out: Path, **engine) -> tuple[float, list[dict]]:
    """Wall seconds to train the group from an empty cache, and the models."""
    cfg = build_config("finetune-mia", None, []).engine.model_copy(update=engine)
    eng = Engine(ModelCache(out), cfg)
    start = time.perf_counter()
    result = eng.train(group, vectorized)
    seconds = time.perf_counter() - start
    assert result.trained == len(group.jobs), result.trained
    return seconds, result.states()


def same(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x) for x, y in zip(a, b))


def start_ray(workers: int):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    t = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    return ray, time.perf_counter() - t


def empty_task_round_trip(ray, n: int = 200) -> float:
    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    ray.get([noop.remote(i) for i in range(8)])  # workers up
    t = time.perf_counter()
    for i in range(n):
        ray.get(noop.remote(i))
    return (time.perf_counter() - t) / n


def cost_model(steps: int = 2, batch: int = 4, tokens: int = 128) -> None:
    import pickle

    import numpy as np

    from ftaudit.config import OptimConfig
    from ftaudit.finetune.methods import MethodOptions, get_method, init_state
    from ftaudit.models.lm import initial_state, tiny_gpt2
    from ftaudit.train.executor_wire import changes, fill_skeleton, pack, prefixed, skeleton, strip, unpack
    from ftaudit.train.schedule import make_schedule
    from ftaudit.train.trainers import train_loop

    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    t = time.perf_counter()
    base = tiny_gpt2(50257, 1024, n_layer=12, n_embd=768, n_head=12, seed=0)
    lora, opts = get_method("lora"), MethodOptions(lora_rank=8, lora_alpha=16.0)
    template = lora.build(base, opts)
    trainable = lora.trainable(template, opts)
    init = init_state(template, initial_state(base))
    n_params = sum(v.numel() for v in init.values())
    n_train = sum(init[n].numel() for n in trainable)
    print(f"GPT-2-small-sized LoRA template: {n_params / 1e6:.1f} M parameters, {n_train / 1e6:.2f} M trainable; "
          f"built in {time.perf_counter() - t:.1f} s ({load()})", flush=True)

    t = time.perf_counter()
    bare, weights = skeleton(template)
    blob, bare_blob = pack(prefixed("template/", weights)), pickle.dumps(bare)
    packed = time.perf_counter() - t
    t = time.perf_counter()
    fill_skeleton(pickle.loads(bare_blob), strip("template/", unpack(blob)))
    unpacked = time.perf_counter() - t
    print(f"ship the template: {len(blob) / 2**20:.0f} MiB safetensors + {len(bare_blob) / 2**10:.0f} KiB skeleton; "
          f"pack {packed:.2f} s, unpack {unpacked:.2f} s ({len(blob) / 2**20 / packed:.0f} / "
          f"{len(blob) / 2**20 / unpacked:.0f} MiB/s) ({load()})", flush=True)

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 50257, size=(batch * steps, tokens)))
    schedule = make_schedule([np.arange(len(x))], [0], 1, batch)
    t = time.perf_counter()
    (state,) = train_loop(template, [init], trainable, OptimConfig(optimizer="adam", lr=1e-4, epochs=1,
                                                                   batch_size=batch), x, x, schedule,
                          objective="causal-lm")
    per_step = (time.perf_counter() - t) / schedule.steps
    changed = changes(init, state)
    back, adapters = pack(changed), pack({n: t for n, t in changed.items() if "lora_" in n})
    flops = 4 * n_params * batch * tokens
    print(f"a trained model returns {len(back) / 2**20:.2f} MiB (its adapters and the head, trained by default; "
          f"{len(adapters) / 2**20:.2f} MiB of adapters alone); a LoRA step of {batch} x {tokens} tokens on this CPU: "
          f"{per_step:.1f} s, {batch * tokens / per_step:.0f} tokens/s, ~{flops / per_step / 1e9:.0f} GFLOP/s achieved "
          f"({load()})", flush=True)
    cache = ModelCache(Path(tempfile.mkdtemp(prefix="ray-scaling-cache-")))
    t = time.perf_counter()
    cache.save("0" * 64, state)
    print(f"the driver saves one trained model (digest + safetensors write of the whole state) in "
          f"{time.perf_counter() - t:.2f} s ({load()})", flush=True)


def lm_signal_world(models: int, blocks: int):
    """A LoRA GPT-2 (4 layers, 128 wide, 4096-token vocabulary, 128 positions), ``models`` states
    differing in their adapters, and ``blocks`` random blocks of 128 tokens."""
    import numpy as np

    from ftaudit.finetune.methods import MethodOptions, get_method, init_state
    from ftaudit.models.lm import initial_state, tiny_gpt2

    base = tiny_gpt2(4096, 128, n_layer=4, n_embd=128, n_head=4, seed=0)
    torch.manual_seed(0)
    template = get_method("lora").build(base, MethodOptions(lora_rank=8, lora_alpha=16.0))
    start = init_state(template, initial_state(base))
    states = [{k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(m)) if "lora_" in k else v
               for k, v in start.items()} for m in range(models)]
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 4096, size=(blocks, 128)))
    return template, states, {"ids": ids, "valid": torch.ones_like(ids, dtype=torch.bool)}


def query(world, out: Path, chunk: int, **engine) -> tuple[float, list[dict]]:
    """Wall seconds of ``ctx.query`` for every model's causal-LM signals from an empty cache, and the arrays."""
    from ftaudit.signals.jobs import SignalJob

    template, states, inputs = world
    cfg = build_config("finetune-mia", None, []).engine.model_copy(update={"chunk": chunk, **engine})
    store = Store(out)
    ctx = Context(store=store, engine=Engine(store.models, cfg))
    keys = [ctx.signal_key(model=f"m{m}") for m in range(len(states))]
    start = time.perf_counter()
    entries = ctx.query(keys, lambda idx: SignalJob("causal-lm", template, [states[i] for i in idx], inputs,
                                                    {"budget": 1 << 20}))
    return time.perf_counter() - start, entries


def same_arrays(a: list[dict], b: list[dict]) -> bool:
    import numpy as np

    return all(x.keys() == y.keys() and all(np.array_equal(x[n], y[n], equal_nan=True) for n in x) for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="finetune-mia")
    ap.add_argument("--references", type=int, default=16)
    ap.add_argument("--chunks", type=int, default=4, help="chunks (Ray tasks) the reference group is cut into")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more study overrides")
    ap.add_argument("--quick", action="store_true", help="a tiny size (checks that the script runs)")
    ap.add_argument("--cost-model", action="store_true", help="only docs/scale.md's measured inputs (GPT-2-small LoRA)")
    args = ap.parse_args()
    if args.cost_model:
        return cost_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    refs = 2 if args.quick else args.references
    overrides = [*(TINY if args.quick else []), f"finetune.references={refs}", *args.set]
    tmp = Path(tempfile.mkdtemp(prefix="ray-scaling-"))

    t = time.perf_counter()
    group, vectorized = capture(args.study, overrides, tmp / "capture")
    n = len(group.jobs)
    chunk = -(-n // args.chunks)
    print(f"{args.study} {' '.join(overrides)}: reference group {group.name!r}, {n} models, {group.steps} steps, "
          f"chunks of {chunk} ({-(-n // chunk)} tasks); {cores} cores; captured in "
          f"{time.perf_counter() - t:.1f} s ({load()})", flush=True)

    times, models = {}, {}
    world = lm_signal_world(4 if args.quick else 16, 8 if args.quick else 64)
    signals: dict[str, tuple[float, list[dict]]] = {}
    for name, threads in [("local, 1 thread", 1), (f"local, {cores} threads", cores)]:
        torch.set_num_threads(threads)
        times[name], models[name] = train(group, vectorized, tmp / name, chunk=chunk)
        signals[name] = query(world, tmp / f"signals {name}", chunk=4)
        print(f"  {name:<22} {times[name]:7.2f} s; signal jobs {signals[name][0]:6.2f} s  ({load()})", flush=True)
    torch.set_num_threads(1)

    tiny_group, tiny_vec = capture("finetune-mia", [*TINY, "finetune.references=30"], tmp / "tiny-capture")
    tiny = {"local": train(tiny_group, tiny_vec, tmp / "tiny-local", chunk=1)}
    for workers in (1, 2):
        ray, started = start_ray(workers)
        print(f"  ray with {workers} worker(s): started in {started:.2f} s ({load()})", flush=True)
        t = time.perf_counter()
        train(tiny_group, tiny_vec, tmp / f"warm-{workers}", chunk=-(-len(tiny_group.jobs) // workers),
              executor="ray")
        print(f"    first tasks (cold workers: import torch, ftaudit) {time.perf_counter() - t:.2f} s ({load()})",
              flush=True)
        name = f"ray, {workers} worker(s)"
        times[name], models[name] = train(group, vectorized, tmp / name, chunk=chunk, executor="ray")
        signals[name] = query(world, tmp / f"signals {name}", chunk=4, executor="ray")
        print(f"  {name:<22} {times[name]:7.2f} s; signal jobs {signals[name][0]:6.2f} s  ({load()})", flush=True)
        tiny[workers] = train(tiny_group, tiny_vec, tmp / f"tiny-{workers}", chunk=1, executor="ray")
        if workers == 1:
            rtt = empty_task_round_trip(ray)
            print(f"    empty task round trip {rtt * 1e3:.2f} ms ({load()})", flush=True)
        ray.shutdown()

    base = "local, 1 thread"
    tasks = -(-n // chunk)
    print("\nratios (one run):")
    for name, seconds in times.items():
        print(f"  {name:<22} {seconds:7.2f} s   local 1 thread / this = {times[base] / seconds:5.2f}x   "
              f"bit-identical: {same(models[base], models[name])}")
    print(f"  ray 2 workers vs ray 1 worker: {times['ray, 1 worker(s)'] / times['ray, 2 worker(s)']:.2f}x "
          f"(ideal {min(2, tasks)}x with {tasks} tasks)")
    print(f"  ray 2 workers vs local, {cores} threads: {times[f'local, {cores} threads'] / times['ray, 2 worker(s)']:.2f}x")
    print(f"  Ray overhead per task (ray 1 worker − local 1 thread, per chunk): "
          f"{(times['ray, 1 worker(s)'] - times[base]) / tasks * 1e3:.0f} ms")
    m = len(world[1])
    print(f"signal jobs ({m} LoRA GPT-2 models, causal-LM signals on {len(world[2]['ids'])} blocks of 128 tokens, "
          f"{-(-m // 4)} jobs of 4 models):")
    for name, (seconds, arrays) in signals.items():
        print(f"  {name:<22} {seconds:7.2f} s   local 1 thread / this = {signals[base][0] / seconds:5.2f}x   "
              f"bit-identical: {same_arrays(signals[base][1], arrays)}")
    nt = len(tiny_group.jobs)
    print(f"tiny jobs ({nt} models of a {tiny_group.steps}-step MLP, one task each): local {tiny['local'][0]:.2f} s, "
          f"ray 1 worker {tiny[1][0]:.2f} s, ray 2 workers {tiny[2][0]:.2f} s; overhead per task "
          f"{(tiny[1][0] - tiny['local'][0]) / nt * 1e3:.0f} ms (1 worker); bit-identical: "
          f"{same(tiny['local'][1], tiny[1][1]) and same(tiny['local'][1], tiny[2][1])}  ({load()})")


if __name__ == "__main__":
    main()
