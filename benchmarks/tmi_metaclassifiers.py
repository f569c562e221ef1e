"""TMI's P per-point metaclassifiers: one batched network vs the per-point ``nn.Sequential`` loop.

    python benchmarks/tmi_metaclassifiers.py [--points 1000] [--models 32] [--queries 8] [--classes 5]
                                             [--loop-points N] [--threads T]

One victim's training (the unit leave-one-out repeats per victim) on a synthetic world
(:func:`ftaudit.attacks.tmi.shifted_logits_world`), with the study's settings (64 hidden units,
dropout 0.5, 20 epochs of batch 64). Both paths consume the same random draws, so their scores
must agree (max |difference| printed). ``--loop-points N`` times the loop on the first N points
only (batched is rerun on the same N for the comparison) and scales its time by points / N,
saying so. Prints wall and process-CPU times (the machine may be shared). One run, one
measurement: a benchmark, not a timed test.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ftaudit.attacks.tmi import (
    MetaConfig,
    shifted_logits_world,
    tmi_features,
    train_metaclassifiers,
    train_metaclassifiers_loop,
    victim_training_set,
)
from ftaudit.metrics import auc


def timed(fn, *args) -> tuple[np.ndarray, np.ndarray]:
    """(wall s, process CPU s) and the result: on a shared machine CPU time is the steadier one."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return np.array([time.perf_counter() - wall, time.process_time() - cpu]), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--effect", type=float, default=1.0)
    ap.add_argument("--loop-points", type=int, default=None, help="time the loop on this many points and scale")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    logits, keep = shifted_logits_world(args.models, args.points, args.queries, args.classes, args.effect, seed=0)
    x, y, use, q = victim_training_set(tmi_features(logits), keep, victim=0)
    cfg = MetaConfig()
    print(f"P={args.points} points, M={args.models} models (victim 0, {use[0].sum()} of {x.shape[1]} rows "
          f"used per point), A={args.queries}, K={args.classes}; {cfg}; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # warm-up: torch.optim's first step imports its compile machinery (~2 s), not timed
    warm = MetaConfig(epochs=1)
    train_metaclassifiers(x[:2], y[:2], use[:2], q[:2], warm)
    train_metaclassifiers_loop(x[:2], y[:2], use[:2], q[:2], warm)

    t_batched, s_batched = timed(train_metaclassifiers, x, y, use, q, cfg)
    n_loop = min(args.loop_points or args.points, args.points)
    sub = (x[:n_loop], y[:n_loop], use[:n_loop], q[:n_loop])
    t_loop, s_loop = timed(train_metaclassifiers_loop, *sub, cfg)
    if n_loop < args.points:
        s_ref = train_metaclassifiers(*sub, cfg)  # same points, same draws as the loop run
        print(f"per-point loop timed on {n_loop} of {args.points} points ({t_loop[0]:.2f} s), "
              f"scaled linearly by {args.points / n_loop:.1f}")
        t_loop *= args.points / n_loop
    else:
        s_ref = s_batched
    gap = np.abs(s_ref - s_loop)
    diff = gap.max()
    print(f"scores: max |batched - loop| = {diff:.2e}, median {np.median(gap):.1e} "
          f"({'equal' if diff < 1e-3 else 'NOT equal'} within float32 rounding); "
          f"victim-0 AUC of the batched scores {auc(s_batched, keep[0]):.3f}")
    print(f"CPU time: batched {t_batched[1]:.2f} s vs per-point loop {t_loop[1]:.2f} s -> ratio "
          f"{t_loop[1] / t_batched[1]:.1f}")
    print(f"TMI metaclassifiers, {args.points} points: batched {t_batched[0]:.2f} s vs per-point loop "
          f"{t_loop[0]:.2f} s -> ratio {t_loop[0] / t_batched[0]:.1f}")


if __name__ == "__main__":
    main()
