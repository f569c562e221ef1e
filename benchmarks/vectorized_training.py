"""Vectorized engine vs a per-model loop: the same 32 fine-tunes on digits, same schedule and seeds.

    python benchmarks/vectorized_training.py [--models 32] [--epochs 20] [--arch mlp] [--threads auto|N]
        [--device cpu|cuda]

Prints models/s for both paths, their mean test accuracies (which must agree within 1 point) and
``ratio: X`` (vectorized speed-up). One run, one measurement: a benchmark, not a timed test.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ftaudit.config import DataConfig, ModelConfig, OptimConfig
from ftaudit.data.digits import load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.finetune.methods import get_method
from ftaudit.studies.vision import QuerySet, fresh_state
from ftaudit.signals.classifier import classifier_signals
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import n_training_views, train_loop, train_vectorized


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--method", default="full")
    ap.add_argument("--augment", type=int, default=0, help="random pixel shifts in training (as the default study uses)")
    ap.add_argument("--device", default="cpu", help="where both paths train (cpu, cuda, …; the trainers follow their inputs)")
    ap.add_argument("--threads", default="default",
                    help="torch threads: default (torch's: one per core), auto (ftaudit's rule: the free cores) or N")
    args = ap.parse_args()
    if args.threads == "auto":
        from ftaudit.threads import auto_threads

        torch.set_num_threads(auto_threads())
    elif args.threads != "default":
        torch.set_num_threads(int(args.threads))

    task = load_digits_task(DataConfig(), seed=0)
    model_cfg = ModelConfig(arch=args.arch)
    template, init = fresh_state(model_cfg, 10, seed=0)
    device = torch.device(args.device)
    template, init = template.to(device), {n: t.to(device) for n, t in init.items()}
    keep = half_keep_matrix(args.models, len(task.audit), seed=0)
    rows = [np.flatnonzero(k) for k in keep]
    optim = OptimConfig(epochs=args.epochs, batch_size=32, lr=1e-3, augment=args.augment)
    schedule = make_schedule(rows, list(range(args.models)), optim.epochs, optim.batch_size,
                             n_views=n_training_views(optim))
    trainable = get_method(args.method).trainable(template)
    x, y = torch.from_numpy(task.audit.x).to(device), torch.from_numpy(task.audit.y).to(device)
    test = QuerySet.of(task.population, 0)
    inits = [init] * args.models
    print(f"{args.models} {args.arch} models, method {args.method}, augment {args.augment}, {schedule.steps} steps each, "
          f"batch {optim.batch_size}, on {device}, torch threads {torch.get_num_threads()}")

    # warm-up (first-call dispatch and allocator costs), not timed
    warm = make_schedule(rows[:2], [0, 1], 1, optim.batch_size)
    train_vectorized(template, inits[:2], trainable, optim, x, y, warm)
    train_loop(template, inits[:1], trainable, optim, x, y, warm)

    results = {}
    for name, trainer in (("vectorized", train_vectorized), ("per-model loop", train_loop)):
        start = time.perf_counter()
        states = trainer(template, inits, trainable, optim, x, y, schedule)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        acc = classifier_signals(template, states, test.views, test.y, device=device)["correct"][:, :, 0].mean(axis=1)
        results[name] = (seconds, acc)
        print(f"{name:>15}: {seconds:7.2f} s  {args.models / seconds:7.2f} models/s  "
              f"test accuracy {acc.mean():.4f} (min {acc.min():.4f}, max {acc.max():.4f})")
    (tv, av), (tl, al) = results["vectorized"], results["per-model loop"]
    gap = abs(av.mean() - al.mean()) * 100
    print(f"accuracy gap: {gap:.2f} points ({'within' if gap <= 1 else 'NOT within'} 1 point)")
    print(f"ratio: {tl / tv:.2f}")


if __name__ == "__main__":
    main()
