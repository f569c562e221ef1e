"""``ftaudit audit --demo``: a user's situation, made offline in seconds.

Builds what an engineer would bring to an audit — a pretrained base, a model fine-tuned from it on
private records with a plain PyTorch loop (not ftaudit's engine), the member records and records of
the same distribution it never saw — and saves them as they would: ``save_pretrained`` directories
and ``.txt`` files, under ``<dir>`` (``<out>/demo``). The audit then reads them like any user's files.

The base is a tiny GPT-2 (2 layers, 64 wide) with a byte-level BPE, both trained here on public text:
the bundled WikiText-2 and the Shakespeare paragraphs that are not audited. The private records are
other Shakespeare paragraphs, split at random into members and non-members; the model is the base
fine-tuned on the members for a few epochs. A finished demo directory is reused (``COMPLETE`` holds its version).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ftaudit.seeding import derive_seed
from ftaudit.threads import torch_threads

VERSION = "audit-demo-v1"  # bump when the demo changes: a stored demo is rebuilt
RECORDS = 150  # per set
MIN_CHARS, MAX_CHARS = 60, 200
BLOCK = 64  # tokens per pretraining block
CONTEXT = 128  # the model's context (n_positions); longer records are truncated
PRETRAIN_STEPS, PRETRAIN_BATCH = 150, 16
FINETUNE_EPOCHS, FINETUNE_BATCH, LR = 4, 10, 3e-3


def one_thread():
    """The demo builds and scores its tiny models with one torch thread (restored afterwards)."""
    return torch_threads(1)


def demo_paths(root: Path) -> dict[str, str]:
    return {"model": str(root / "model"), "base": str(root / "base"), "members": str(root / "members.txt"),
            "nonmembers": str(root / "nonmembers.txt")}


def demo_records(seed: int) -> tuple[list[str], list[str], list[str]]:
    """Two disjoint random sets of Shakespeare paragraphs (one line each), members and non-members,
    and the other paragraphs: public text of the same kind, which the base is pretrained on."""
    from ftaudit.data.text import load_corpus

    paragraphs = sorted({" ".join(d.split()) for d in load_corpus("shakespeare").documents})
    pool = [p for p in paragraphs if MIN_CHARS <= len(p) <= MAX_CHARS]
    pick = np.random.default_rng(derive_seed(seed, "demo-records")).permutation(len(pool))[:2 * RECORDS]
    chosen = [pool[i] for i in pick]
    private = set(chosen)
    return chosen[:RECORDS], chosen[RECORDS:], [p for p in paragraphs if p not in private]


def _batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask, ids.masked_fill(mask == 0, -100)


def _train(model, batches, lr: float) -> None:
    """The plain loop a user would write: AdamW, mean token loss, one step per batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for ids, mask, labels in batches:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_demo(root: str | Path, seed: int = 0) -> dict[str, str]:
    """Build (or reuse) the demo under ``root``; the paths to audit: model, base, members, nonmembers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ftaudit.data.text import load_corpus
    from ftaudit.data.tokenizer import train_tokenizer
    from ftaudit.models.lm import _quiet_hf

    root = Path(root)
    paths = demo_paths(root)
    marker = root / "COMPLETE"
    stamp = json.dumps({"version": VERSION, "seed": seed})
    if marker.is_file() and marker.read_text() == stamp:
        return paths
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    members, nonmembers, other = demo_records(seed)
    public = [*load_corpus("wikitext2").documents, "\n".join(other)]
    tok = train_tokenizer(public, vocab_size=512)
    with torch.random.fork_rng(devices=[]), one_thread(), _quiet_hf():
        torch.manual_seed(derive_seed(seed, "demo-model") % 2**31)
        config = GPT2Config(vocab_size=len(tok), n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=2,
                            bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
        stream = tok("\n\n".join(public), verbose=False)["input_ids"]
        blocks = [stream[i:i + BLOCK] for i in range(0, len(stream) - BLOCK, BLOCK)]
        rng = np.random.default_rng(derive_seed(seed, "demo-pretrain"))
        order = rng.choice(len(blocks), size=(PRETRAIN_STEPS, PRETRAIN_BATCH))
        _train(model, (_batch([blocks[i] for i in row]) for row in order), LR)
        model.save_pretrained(paths["base"], safe_serialization=True)
        tok.save_pretrained(paths["base"])
        rows = [r[:CONTEXT] for r in tok(members, verbose=False)["input_ids"]]
        batches = []
        for _ in range(FINETUNE_EPOCHS):
            perm = rng.permutation(len(rows))
            batches += [_batch([rows[i] for i in perm[s:s + FINETUNE_BATCH]]) for s in range(0, len(rows), FINETUNE_BATCH)]
        _train(model, batches, LR)
        model.save_pretrained(paths["model"], safe_serialization=True)
        tok.save_pretrained(paths["model"])
    Path(paths["members"]).write_text("\n".join(members) + "\n", encoding="utf-8")
    Path(paths["nonmembers"]).write_text("\n".join(nonmembers) + "\n", encoding="utf-8")
    marker.write_text(stamp)
    return paths
