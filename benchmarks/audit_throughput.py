"""Audit throughput: records per second of the model-only + base-ratio audit of a tiny GPT-2 on CPU.

    python benchmarks/audit_throughput.py [--records 400] [--threads 0]

Our batched path (``ftaudit.studies.audit.scoring.record_scores``: length-sorted padded batches,
float64 statistics over the real tokens only) against a plain per-record loop — one
``model(input_ids)`` per record for the model and for its base, NLL / Min-K % from its log-softmax —
on the same records. Prints both rates, the ratio and the load average beside them, and checks
that both paths give the same LOSS and ratio scores. One measurement, not a timed test.

Not measured here: training fine-tuning-aware references (packed LoRA vs sequential peft), because
the audit's reference tier is not built yet; benchmarks/packed_lora.py measures the packed trainer.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ftaudit.data.records import load_records
from ftaudit.data.text import load_corpus
from ftaudit.data.tokenizer import train_tokenizer
from ftaudit.models.load import load_model
from ftaudit.studies.audit.scoring import record_scores


def tiny_gpt2(vocab: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                      bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0)).eval()


@torch.no_grad()
def per_record_loop(model, base, tokenizer, texts: list[str], limit: int) -> dict[str, np.ndarray]:
    loss, ratio = [], []
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:limit]])
        nll = {}
        for name, m in (("model", model), ("base", base)):
            logp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].double(), dim=-1)
            nll[name] = -logp.gather(-1, ids[0, 1:, None]).mean().item()
        loss.append(-nll["model"])
        ratio.append(nll["base"] - nll["model"])
    return {"loss": np.array(loss), "lm-ratio": np.array(ratio)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    docs = [d for d in load_corpus("shakespeare").documents if len(d) > 40][: args.records]
    tok = train_tokenizer(docs, vocab_size=512)
    model, base = tiny_gpt2(len(tok), 0), tiny_gpt2(len(tok), 1)
    target, reference = load_model(model, tokenizer=tok), load_model(base, tokenizer=tok)
    records = load_records(docs, "records")
    limit = target.max_length

    record_scores(target, load_records(docs[:8], "records"), reference)  # warm-up, not timed
    per_record_loop(model, base, tok, docs[:4], limit)
    start = time.perf_counter()
    batched, _ = record_scores(target, records, reference)
    t_batched = time.perf_counter() - start
    load_batched = os.getloadavg()[0]
    start = time.perf_counter()
    loop = per_record_loop(model, base, tok, docs, limit)
    t_loop = time.perf_counter() - start
    load_loop = os.getloadavg()[0]

    for name in ("loss", "lm-ratio"):
        assert np.allclose(batched[name], loop[name], atol=1e-4), f"{name}: the two paths disagree"
    n = len(docs)
    print(f"{n} records, tiny GPT-2 (2 x 64) + its base, torch threads {torch.get_num_threads()}")
    print(f"batched audit (loss, zlib, min-k, min-k++, lm-ratio): {t_batched:6.2f} s  {n / t_batched:7.1f} records/s"
          f"  (load average {load_batched:.2f})")
    print(f"per-record loop (loss, lm-ratio only):               {t_loop:6.2f} s  {n / t_loop:7.1f} records/s"
          f"  (load average {load_loop:.2f})")
    print("scores equal (loss, lm-ratio): True")
    print(f"ratio: {t_loop / t_batched:.2f}")


if __name__ == "__main__":
    main()
