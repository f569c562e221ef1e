"""Batched (vmapped, many models per forward) vs per-model inference of classifier signals.

    python benchmarks/batched_inference.py [--models 32] [--queries 4500] [--device cpu] [--repeat 3]

For a few model sizes (MLPs and CNNs on 8×8 digits, as the digits studies query them) times
``ftaudit.signals.classifier.batched_logits`` both ways on the same states and inputs, checks the
logits agree, and prints ``ratio`` = per-model time / batched time (> 1: batching pays) with the
load average beside each figure, and what the automatic rule (``batched_pays``) picks. One run, one
measurement per size (best of ``--repeat``, the two paths alternating so that a change of load hits
both): a benchmark, not a timed test.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ftaudit.config import ModelConfig
from ftaudit.signals.classifier import batched_logits, batched_pays
from ftaudit.studies.vision import fresh_state

SIZES = [("mlp", [32]), ("mlp", [128, 64]), ("mlp", [512, 512]), ("cnn", [8, 16]), ("cnn", [32, 64])]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--queries", type=int, default=4500, help="inputs per model (the default study: 9 views x 500)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="all", help="comma-separated indices into the size list, or all")
    args = ap.parse_args()
    device = torch.device(args.device)
    sizes = SIZES if args.sizes == "all" else [SIZES[int(i)] for i in args.sizes.split(",")]
    x = torch.rand(args.queries, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    print(f"{args.models} models x {args.queries} inputs on {device}, torch threads {torch.get_num_threads()}")
    for arch, widths in sizes:
        cfg = ModelConfig(arch=arch, hidden=widths) if arch == "mlp" else ModelConfig(arch=arch, channels=widths)
        template, _ = fresh_state(cfg, 10, seed=0)
        states = [fresh_state(cfg, 10, seed=s)[1] for s in range(args.models)]
        n_params = sum(t.numel() for t in states[0].values())
        for batched in (False, True):  # warm-up: dispatch, allocator, CUDA context
            batched_logits(template, states[:2], x[:64], device=device, batched=batched)
        t_one = t_vec = float("inf")
        for _ in range(args.repeat):
            t_one = min(t_one, timed(lambda: batched_logits(template, states, x, device=device, batched=False)))
            load_one = os.getloadavg()[0]
            t_vec = min(t_vec, timed(lambda: batched_logits(template, states, x, device=device, batched=True)))
            load_vec = os.getloadavg()[0]
        a = batched_logits(template, states, x, device=device, batched=False)
        b = batched_logits(template, states, x, device=device, batched=True)
        gap = (a - b).abs().max().item()
        auto = "batched" if batched_pays(states[0], device) else "per-model"
        print(f"{arch} {widths} ({n_params:,} params): per-model {t_one:6.3f} s (load {load_one:.2f}), "
              f"batched {t_vec:6.3f} s (load {load_vec:.2f}), max |logit gap| {gap:.1e}, "
              f"ratio: {t_one / t_vec:.2f}, rule picks {auto}")


if __name__ == "__main__":
    main()
