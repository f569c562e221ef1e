"""Packed LoRA vs M sequential peft fine-tunes: the same M LoRA fine-tunes of one tiny GPT-2.

    python benchmarks/packed_lora.py [--models 16] [--epochs 3] [--threads 1] [--device cpu|cuda]

Both paths train the same jobs — peft LoRA (rank 4 on every projection, head trained too) on halves
of 256 wikitext2-test blocks of 64 tokens (a LiRA keep-matrix), batch 16, Adam, one schedule and
seeds — once with ``train_packed_lora`` (one base forward per step for all M) and once with
``train_loop`` (plain PyTorch on the peft model, one fine-tune after another: the engine's per-model
trainer, which the LM scenarios use). Prints one line per packed variant (``--pack-rows``: all rows in one forward, or groups of at most
R rows) ``packed LoRA, M=16, …: X s vs sequential peft Y s -> ratio Z (final losses equal within …)``.
One run, one measurement: a benchmark, not a timed test. The base is HF's random init (timing does
not depend on the weights).
"""
from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from ftaudit.config import OptimConfig
from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import load_corpus, make_blocks
from ftaudit.data.tokenizer import train_tokenizer
from ftaudit.finetune.methods import MethodOptions, get_method, init_state
from ftaudit.finetune.packed_lora import train_packed_lora
from ftaudit.models.lm import initial_state, tiny_gpt2
from ftaudit.train.objectives import token_loss
from ftaudit.train.schedule import make_schedule
from ftaudit.train.trainers import train_loop, train_vectorized


@torch.no_grad()
def final_losses(template, states, x, rows) -> np.ndarray:
    """Each model's mean next-token loss on its own training blocks."""
    out = []
    for state, r in zip(states, rows):
        template.load_state_dict(state)
        ids = x[torch.from_numpy(r).to(x.device)]
        out.append(token_loss(template(ids)[:, :-1], ids[:, 1:]).mean().item())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the LM scenarios use 1 on CPU)")
    ap.add_argument("--batch", type=int, default=16, help="blocks per model and step")
    ap.add_argument("--block", type=int, default=64, help="tokens per block")
    ap.add_argument("--pack-rows", type=int, nargs="+", default=[0, 64],
                    help="rows per packed forward (0 = all M models in one); one packed timing per value")
    ap.add_argument("--vmapped", action="store_true", help="also time the engine's vmapped trainer (train_vectorized)")
    ap.add_argument("--device", default="cpu", help="where every path trains (cpu, cuda, …; the trainers follow their inputs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    docs = list(load_corpus("wikitext2").documents) + list(load_corpus("wikitext2-test").documents)
    tok = train_tokenizer(docs, 1024)
    blocks = make_blocks(load_corpus("wikitext2-test"), tok, args.block, 256, seed=0)
    base = tiny_gpt2(len(tok), args.block, n_layer=2, n_embd=64, n_head=2, seed=0)
    lora, opts = get_method("lora"), MethodOptions(lora_rank=4, lora_alpha=8.0)
    torch.manual_seed(0)
    template = lora.build(base, opts)
    trainable = lora.trainable(template, opts)
    init = init_state(template, initial_state(base))
    device = torch.device(args.device)
    template, init = template.to(device), {n: t.to(device) for n, t in init.items()}
    inits = [init] * args.models
    rows = [np.flatnonzero(k) for k in half_keep_matrix(args.models, len(blocks), seed=0)]
    optim = OptimConfig(optimizer="adam", lr=3e-3, epochs=args.epochs, batch_size=args.batch)
    schedule = make_schedule(rows, list(range(args.models)), optim.epochs, optim.batch_size)
    x = torch.from_numpy(blocks.x).to(device)
    y = torch.from_numpy(blocks.y).to(device)
    n_lora = sum(init[n].numel() for n in trainable if ".lora_" in n)
    print(f"{args.models} LoRA fine-tunes of GPT-2 2×64 (vocab {len(tok)}), {n_lora} LoRA weights + the head each, "
          f"{schedule.steps} steps of batch {optim.batch_size} × {args.block} tokens, on {device}, "
          f"torch threads {torch.get_num_threads()}")

    warm = make_schedule(rows[:2], [0, 1], 1, optim.batch_size)  # first-call costs, not timed
    train_packed_lora(template, inits[:2], trainable, optim, x, y, warm)
    train_loop(template, inits[:1], trainable, optim, x, y, warm, objective="causal-lm")

    times, states = {}, {}
    trainers = [(f"packed/{r}" if r else "packed", partial(train_packed_lora, pack_rows=r or None)) for r in args.pack_rows]
    trainers.append(("sequential", train_loop))
    if args.vmapped:
        train_vectorized(template, inits[:2], trainable, optim, x, y, warm, objective="causal-lm")
        trainers.append(("vmapped", train_vectorized))
    for name, trainer in trainers:
        start = time.perf_counter()
        states[name] = trainer(template, inits, trainable, optim, x, y, schedule, objective="causal-lm")
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[name] = time.perf_counter() - start
        print(f"{name}: {times[name]:.2f} s")
    before = final_losses(template, inits, x, rows)
    losses = {name: final_losses(template, s, x, rows) for name, s in states.items()}
    print(f"mean training loss: {before.mean():.4f} before, {losses['sequential'].mean():.4f} sequential")
    if args.vmapped:
        vdiff = np.abs(losses["vmapped"] - losses["sequential"]).max()
        print(f"vmapped (train_vectorized) {times['vmapped']:.2f} s; vs sequential final losses within {vdiff:.1e} "
              "(float rounding, amplified by Adam)")
    for name, _ in trainers[:len(args.pack_rows)]:
        diff = np.abs(losses[name] - losses["sequential"]).max()
        weights = max((states[name][m][n] - states["sequential"][m][n]).abs().max().item()
                      for m in range(args.models) for n in trainable)
        rows_per = f"{name.split('/')[1]} rows" if "/" in name else f"all {args.models * optim.batch_size} rows"
        print(f"packed LoRA, M={args.models}, {rows_per} per forward: {times[name]:.2f} s vs sequential peft "
              f"{times['sequential']:.2f} s -> ratio {times['sequential'] / times[name]:.2f} (final losses equal within "
              f"{diff:.1e}, largest weight difference {weights:.1e})")

if __name__ == "__main__":
    main()
