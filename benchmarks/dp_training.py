"""Vectorized DP-SGD vs an Opacus per-model loop: the same 16 DP fine-tunes on digits.

    python benchmarks/dp_training.py [--models 16] [--q 0.05] [--steps 300] [--epsilon 8] [--threads 1]

Every model trains from the same seeded init on its half of the 500 audit digits, on the same
Poisson schedule and with the same noise seeds in both paths (so the two must agree to float
precision, which is checked), with σ calibrated to (ε, δ = 1e-5) by the RDP accountant. Prints both
wall times, the ratio, and mean test accuracies. One run, one measurement: a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch

from ftaudit.config import DataConfig, ModelConfig, OptimConfig
from ftaudit.data.digits import load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.dp import DPParams, calibrate_noise, check_epsilon, poisson_schedule
from ftaudit.finetune.methods import get_method
from ftaudit.studies.vision import QuerySet, fresh_state
from ftaudit.signals.classifier import classifier_signals
from ftaudit.train.dp_trainers import train_dp_opacus, train_dp_vectorized


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--q", type=float, default=0.05, help="Poisson sample rate")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    ap.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--method", default="full")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook")  # Opacus hooks on the input layer
    logging.disable(logging.WARNING)  # dp_accounting logs each fractional RDP order it gives up on

    task = load_digits_task(DataConfig(), seed=0)
    template, init = fresh_state(ModelConfig(arch=args.arch), 10, seed=0)
    keep = half_keep_matrix(args.models, len(task.audit), seed=0)
    rows = [np.flatnonzero(k) for k in keep]
    delta = 1e-5
    sigma = calibrate_noise(args.epsilon, delta, args.q, args.steps)
    eps = check_epsilon(sigma, args.q, args.steps, delta)
    seeds = list(range(args.models))
    schedule = poisson_schedule(rows, args.q, args.steps, seeds)
    dp = DPParams.for_rows(sigma, args.clip, args.q, rows, [1000 + s for s in seeds])
    optim = OptimConfig(optimizer="adam", lr=args.lr)
    trainable = get_method(args.method).trainable(template)
    x, y = torch.from_numpy(task.audit.x), torch.from_numpy(task.audit.y)
    test = QuerySet.of(task.population, 0)
    inits = [init] * args.models
    print(f"{args.models} {args.arch} models, method {args.method}, {len(rows[0])} rows each, q={args.q}, "
          f"{args.steps} steps, sigma={sigma:.4f}, clip={args.clip}, eps={eps:.3f} at delta={delta} (rdp), "
          f"mean batch {schedule.mask.sum(-1).mean():.1f}, torch threads {torch.get_num_threads()}")

    # warm-up (first-call dispatch and allocator costs), not timed
    warm = poisson_schedule(rows[:2], args.q, 3, seeds[:2])
    train_dp_vectorized(template, inits[:2], trainable, optim, x, y, warm, dp.select([0, 1]))
    train_dp_opacus(template, inits[:2], trainable, optim, x, y, warm, dp.select([0, 1]))

    results = {}
    for name, trainer in (("vectorized", train_dp_vectorized), ("opacus loop", train_dp_opacus)):
        start = time.perf_counter()
        states = trainer(template, inits, trainable, optim, x, y, schedule, dp)
        seconds = time.perf_counter() - start
        acc = classifier_signals(template, states, test.views, test.y)["correct"][:, :, 0].mean(axis=1)
        results[name] = (seconds, acc, states)
        print(f"{name:>12}: {seconds:7.2f} s  test accuracy {acc.mean():.4f} "
              f"(min {acc.min():.4f}, max {acc.max():.4f})")
    (tv, av, sv), (tl, al, sl) = results["vectorized"], results["opacus loop"]
    drift = max(float((a[n] - b[n]).abs().max()) for a, b in zip(sv, sl) for n in a)
    print(f"largest parameter difference vectorized vs opacus: {drift:.2e}; "
          f"accuracy gap {abs(av.mean() - al.mean()) * 100:.2f} points")
    print(f"vectorized DP training, {args.models} models: {tv:.2f} s vs Opacus loop {tl:.2f} s -> ratio {tl / tv:.2f}")


if __name__ == "__main__":
    main()
