"""The causal-LM softmax statistics (logp, mu, sigma of ``signals/lm.py``) in float32 vs float64:
time of ``next_token_stats`` alone and of a whole ``causal_lm_signals`` query, one run, with the
load average beside each figure (docs/performance.md).

    python benchmarks/signal_precision.py [--vocab 8192] [--blocks 64] [--block-len 64] [--threads 2]
"""
import argparse
import os
import time

import torch

from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.signals.lm import causal_lm_signals, next_token_stats


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--blocks", type=int, default=64)
    p.add_argument("--block-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.blocks, args.block_len - 1, args.vocab, generator=g)
    targets = torch.randint(0, args.vocab, (args.blocks, args.block_len - 1), generator=g)
    for name, fn in [("next_token_stats", lambda d: next_token_stats(logits, targets, d))]:
        t64, t32 = best_of(lambda: fn(torch.float64)), best_of(lambda: fn(torch.float32))
        print(f"{name} [{args.blocks}x{args.block_len - 1}x{args.vocab}]: float64 {t64:.3f}s  float32 {t32:.3f}s  "
              f"ratio {t64 / t32:.2f}x  (load {os.getloadavg()[0]:.2f})")
    model = tiny_gpt2(args.vocab, args.block_len, n_embd=64, seed=0)
    states = [initial_state(model)] * 2
    ids = targets.new_zeros(args.blocks, args.block_len).random_(0, args.vocab, generator=g).numpy()
    t64 = best_of(lambda: causal_lm_signals(model, states, ids, dtype=torch.float64), 2)
    t32 = best_of(lambda: causal_lm_signals(model, states, ids, dtype=torch.float32), 2)
    print(f"causal_lm_signals, 2 models (tiny GPT-2, 64 wide, 2 layers): float64 {t64:.3f}s  float32 {t32:.3f}s  "
          f"ratio {t64 / t32:.2f}x  (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
