"""A user's world, built the way a user builds it: tiny HF models fine-tuned by a plain PyTorch loop
(not ftaudit's engine), saved with save_pretrained, and records in files."""
import json
from pathlib import Path

import numpy as np
import torch

GPT = dict(n_positions=64, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
N = 40  # records per set


def record_sets(shakespeare, sets: int = 3, seed: int = 0) -> list[list[str]]:
    """Disjoint random sets of short one-line Shakespeare paragraphs (members, non-members, others),
    stratified by length: records are drawn in groups of similar length, one of each group to each
    set at random. Otherwise a chance length difference between 40-record sets is a real signal for
    length-sensitive scores (zlib), present in a model that never saw either set."""
    rng = np.random.default_rng(seed)
    pool = sorted({" ".join(d.split()) for d in shakespeare.documents})
    pool = [p for p in pool if 40 <= len(p) <= 140]
    pool = sorted((pool[i] for i in rng.permutation(len(pool))[:sets * N]), key=len)
    groups = [rng.permutation(pool[g * sets:(g + 1) * sets]) for g in range(N)]
    return [[str(group[k]) for group in groups] for k in range(sets)]


def write_txt(path: Path, records: list[str]) -> str:
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    return str(path)


def write_jsonl(path: Path, records: list[str], labels) -> str:
    path.write_text("".join(json.dumps({"text": t, "label": int(y)}) + "\n" for t, y in zip(records, labels)),
                    encoding="utf-8")
    return str(path)


def gpt2(tok, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                        pad_token_id=tok.pad_token_id, **GPT)
    return GPT2LMHeadModel(config).eval()


def bert_classifier(tok, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=2, pad_token_id=0, **BERT)).eval()


def save(model, tok, where: Path) -> str:
    model.save_pretrained(where, safe_serialization=True)
    tok.save_pretrained(where)
    return str(where)


def _batch(tok, texts: list[str]):
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def finetune_lm(model, tok, texts: list[str], epochs: int, lr: float, batch: int = 8, seed: int = 0):
    """The loop a user writes: AdamW on the causal-LM loss (padding ignored), shuffled batches."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for s in range(0, len(texts), batch):
            ids, mask = _batch(tok, [texts[i] for i in order[s:s + batch]])
            loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def finetune_classifier(model, tok, texts: list[str], labels, epochs: int, lr: float, batch: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for s in range(0, len(texts), batch):
            rows = order[s:s + batch]
            ids, mask = _batch(tok, [texts[i] for i in rows])
            loss = model(input_ids=ids, attention_mask=mask, labels=y[rows]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
