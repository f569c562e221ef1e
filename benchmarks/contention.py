"""Training next to a busy process: slowdown against an idle machine, torch's default threads vs ftaudit's.

    python benchmarks/contention.py [--models 32] [--epochs 20] [--competitor torch|spin|nice-spin]

Runs benchmarks/vectorized_training.py (the vectorized path and the per-model loop) four times, each in
its own process: idle and next to one competing busy process (``--competitor``: another torch program
using every core, a Python spin loop, or the loop under ``nice``), with torch's
default thread count (one per core) and with ``--threads auto`` (ftaudit.threads.auto_threads: the cores
free when it starts). Prints each time, the slowdown against idle, and the share of cores the spinner
takes — the aim is a slowdown no worse than cores / (cores − 1). One run, one measurement; run it on an
otherwise idle machine (the load average is printed beside every figure).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).with_name("vectorized_training.py")
SPIN = [sys.executable, "-c", "while True: pass"]
TORCH_LOOP = [sys.executable, "-c", "import torch\nx = torch.rand(512, 512)\nwhile True: x = (x @ x).tanh()"]
COMPETITORS = {"spin": SPIN, "nice-spin": ["nice", "-n", "10", *SPIN], "torch": TORCH_LOOP}


def run_bench(threads: str, models: int, epochs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(BENCH), "--threads", threads, "--models", str(models),
                          "--epochs", str(epochs)], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"^\s*(vectorized|per-model loop):\s+([\d.]+) s", out, re.M))
    threads_line = re.search(r"torch threads (\d+)", out)
    return {**{k: float(v) for k, v in found.items()}, "threads": int(threads_line.group(1)) if threads_line else -1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--competitor", choices=sorted(COMPETITORS), default="torch",
                    help="the busy process: torch (another torch program on all cores, e.g. a second audit), "
                         "spin (a Python loop) or nice-spin (the same loop under nice 10)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores; {args.models} models x {args.epochs} epochs (benchmarks/vectorized_training.py); "
          f"competitor: {args.competitor}")
    results = {}
    for busy in (False, True):
        spinner = subprocess.Popen(COMPETITORS[args.competitor]) if busy else None
        try:
            if spinner:
                time.sleep(1.0)
            for threads in ("default", "auto"):
                load = os.getloadavg()[0]
                r = results[(busy, threads)] = run_bench(threads, args.models, args.epochs)
                print(f"{'busy' if busy else 'idle':>4}, threads {threads:>7} ({r['threads']}): vectorized "
                      f"{r['vectorized']:7.2f} s, per-model loop {r['per-model loop']:7.2f} s   (load {load:.2f})")
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    fair = cores / max(1, cores - 1)
    print(f"slowdown next to one busy process (fair share: {fair:.2f}x):")
    for threads in ("default", "auto"):
        for path in ("vectorized", "per-model loop"):
            ratio = results[(True, threads)][path] / results[(False, threads)][path]
            print(f"  threads {threads:>7}, {path:>14}: {ratio:6.2f}x")
    for path in ("vectorized", "per-model loop"):
        gain = results[(True, "default")][path] / results[(True, "auto")][path]
        print(f"ratio ({path}, busy, default / auto threads): {gain:.2f}")


if __name__ == "__main__":
    main()
