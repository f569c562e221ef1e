"""Membership scores of a user's model on its records, and their summary with bootstrap CIs.

Used by the ``audit`` study and by the Trainer callback (``ftaudit.integrations.transformers``).
Every score is "higher = member", one float64 per record. The per-token statistics come from
``ftaudit.signals.lm.next_token_stats`` and the scores from ``ftaudit.attacks.lm`` (LOSS, zlib,
Min-K %, Min-K %++, ratio) and ``ftaudit.signals.classifier.logit_signals`` (loss, confidence): the
same code as the studies, applied to the user's records of any length (padded batches with attention
masks, truncated to the context).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ftaudit import progress
from ftaudit.attacks.lm import loss_score, mean_nll, min_k_plus_plus_score, min_k_score, ratio_score, zlib_score
from ftaudit.devices import module_device
from ftaudit.errors import UserError
from ftaudit.metrics import summarize
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import logit_signals
from ftaudit.signals.lm import next_token_stats
from ftaudit.train.mlm import mask_tokens
from ftaudit.train.objectives import token_loss

if TYPE_CHECKING:
    from ftaudit.data.records import Records
    from ftaudit.models.load import LoadedModel

LOGITS_BUDGET = 1 << 25  # logits per forward (128 MB in float32), whatever the vocabulary
STATS_BUDGET = 1 << 22  # logits per float64 statistics chunk
MASKINGS = 4  # seeded random 15 % maskings per record (masked LMs)
MIN_K = 0.2

# The attack that compares the model with its base, per task (what a callback or a gate may single out).
BASE_ATTACK = {"causal-lm": "lm-ratio", "masked-lm": "mlm-ratio", "classification": "reference",
               "image-classification": "reference"}

DESCRIPTIONS = {
    "causal-lm": {
        "loss": "−mean token NLL under the model (LOSS, Yeom et al. 2018)",
        "zlib": "−mean NLL / zlib bytes of the text (Carlini et al. 2021)",
        "min-k": "mean of the lowest 20 % token log-probs (Min-K % Prob, Shi et al. 2024)",
        "min-k++": "mean of the lowest 20 % standardised token log-probs (Min-K %++, Zhang et al. 2024)",
        "lm-ratio": "mean NLL drop from the base to the model (reference attack; the base is a free reference)",
    },
    "masked-lm": {
        "loss": f"−masked-LM loss, mean over {MASKINGS} seeded random 15 % maskings",
        "mlm-ratio": "masked-LM loss drop from the base to the model (same maskings)",
    },
    "classification": {
        "loss": "−cross-entropy of the true label (LOSS)",
        "conf": "logit-scaled confidence of the true label, log p − log(1 − p) (LiRA's statistic)",
        "reference": "cross-entropy drop from the base to the model",
    },
}
DESCRIPTIONS["image-classification"] = DESCRIPTIONS["classification"]


def context_limit(target: "LoadedModel", base: "LoadedModel | None", max_length: int | None) -> int:
    limit = target.max_length if base is None else min(target.max_length, base.max_length)
    return limit if max_length is None else min(limit, max_length)


def tokenize(tokenizer, texts: Sequence[str], limit: int, special: bool) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids per text truncated to ``limit`` (special tokens kept at the ends when ``special``),
    the special-token mask of each, and how many texts were truncated."""
    enc = tokenizer(list(texts), add_special_tokens=special, truncation=False, return_special_tokens_mask=True,
                    verbose=False)
    ids, specials, truncated = [], [], 0
    for row, smask in zip(enc["input_ids"], enc["special_tokens_mask"]):
        if len(row) > limit:
            truncated += 1
            if special and smask[-1] and limit >= 2:  # keep [SEP] (or the closing special token)
                row, smask = row[:limit - 1] + row[-1:], smask[:limit - 1] + smask[-1:]
            else:
                row, smask = row[:limit], smask[:limit]
        ids.append(list(row))
        specials.append(list(smask))
    return ids, specials, truncated


def _batches(lengths: np.ndarray, batch_size: int, vocab: int) -> list[np.ndarray]:
    """Record indices grouped by similar length (little padding), each batch within the logits budget."""
    order = np.argsort(lengths, kind="stable")
    out, start = [], 0
    while start < len(order):
        width = int(lengths[order[min(len(order) - 1, start + batch_size - 1)]])
        rows = max(1, min(batch_size, LOGITS_BUDGET // max(1, width * vocab)))
        out.append(order[start:start + rows])
        start += rows
    return out


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, :len(r)] = 1
    return x, mask


def _vocab(loaded: "LoadedModel") -> int:
    emb = loaded.model.get_output_embeddings() if hasattr(loaded.model, "get_output_embeddings") else None
    return int(emb.weight.shape[0]) if emb is not None else int(getattr(loaded.model.config, "vocab_size", 50_000))


@torch.no_grad()
def causal_stats(loaded: "LoadedModel", ids: list[list[int]], batch_size: int) -> dict[str, np.ndarray]:
    """logp, mu, sigma: float64 [n, Tmax − 1], NaN past each record's end (``next_token_stats``)."""
    n, width = len(ids), max(len(r) for r in ids)
    out = {k: np.full((n, max(1, width - 1)), np.nan) for k in ("logp", "mu", "sigma")}
    device, model = module_device(loaded.model), loaded.model
    lengths = np.array([len(r) for r in ids])
    for batch in progress.track(_batches(lengths, batch_size, _vocab(loaded)), f"scoring records with {loaded.source}",
                                n, "records", size=len):
        x, mask = _pad([ids[i] for i in batch], 0)
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits[:, :-1]
        targets, real = x[:, 1:].to(device), mask[:, 1:].bool().to(device)
        rows, cols = torch.nonzero(real, as_tuple=True)
        flat_logits, flat_targets = logits[rows, cols], targets[rows, cols]
        step = max(1, STATS_BUDGET // flat_logits.shape[-1])
        stats = [torch.cat(parts) for parts in zip(*(next_token_stats(flat_logits[s:s + step], flat_targets[s:s + step])
                                                    for s in range(0, len(flat_targets), step)))]
        r, c = batch[rows.cpu().numpy()], cols.cpu().numpy()
        for name, value in zip(("logp", "mu", "sigma"), stats):
            out[name][r, c] = value.cpu().numpy()
    return out


def _causal_ids(tokenizer, texts: Sequence[str], limit: int) -> tuple[list[list[int]], int]:
    ids, _, truncated = tokenize(tokenizer, texts, limit, special=False)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for i, row in enumerate(ids):
        if len(row) < 2:  # one token predicts nothing: condition it on the start token when there is one
            if start is None:
                raise UserError("records", f"record {i} has fewer than 2 tokens, which a causal LM cannot score",
                                "drop records of one token or less")
            ids[i] = [start, *row][:max(2, limit)]
    return ids, truncated


def _causal_scores(target, records, base, batch_size, limit) -> tuple[dict[str, np.ndarray], int]:
    ids, truncated = _causal_ids(target.tokenizer, records.texts, limit)
    texts = list(records.texts)
    if truncated:
        texts = [target.tokenizer.decode(r) for r in ids]  # zlib of what was scored
    st = causal_stats(target, ids, batch_size)
    scores = {"loss": loss_score(st["logp"]), "zlib": zlib_score(st["logp"], texts),
              "min-k": min_k_score(st["logp"], MIN_K), "min-k++": min_k_plus_plus_score(st["logp"], st["mu"], st["sigma"], MIN_K)}
    if base is not None:
        scores["lm-ratio"] = ratio_score(mean_nll(st["logp"]), mean_nll(causal_stats(base, ids, batch_size)["logp"]))
    return scores, truncated


@torch.no_grad()
def mlm_loss(loaded: "LoadedModel", x: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Masked-LM loss per row, inputs x [K, b, T] with targets (IGNORE elsewhere) → mean over K: [b]."""
    device = module_device(loaded.model)
    k, b, t = x.shape
    logits = loaded.model(input_ids=x.reshape(k * b, t).to(device),
                          attention_mask=mask.repeat(k, 1).to(device)).logits.to(torch.float64)
    return token_loss(logits, targets.reshape(k * b, t).to(device)).reshape(k, b).mean(0).cpu().numpy()


def _masked_scores(target, records, base, batch_size, limit, seed) -> tuple[dict[str, np.ndarray], int]:
    tok = target.tokenizer
    if tok.mask_token_id is None:
        raise UserError("--model", "the tokenizer has no mask token, so a masked-LM audit cannot mask records",
                        "use --task causal-lm or classification, or a tokenizer with a [MASK] token")
    ids, specials, truncated = tokenize(tok, records.texts, limit, special=True)
    n = len(ids)
    loss, base_loss = np.empty(n), np.empty(n)
    lengths = np.array([len(r) for r in ids])
    for batch in progress.track(_batches(lengths, max(1, batch_size // MASKINGS), MASKINGS * _vocab(target)),
                                f"scoring records with {target.source}" + (" and its base" if base is not None else ""),
                                n, "records", size=len):
        x, mask = _pad([ids[i] for i in batch], tok.pad_token_id or 0)
        counted = mask.bool() & (_pad([specials[i] for i in batch], 1)[0] == 0)
        # seeded per batch (batches are fixed by the records' lengths), the same maskings for model and base
        inputs, targets = mask_tokens(x, counted, MASKINGS, derive_seed(seed, "mlm", int(batch[0])), tok.mask_token_id,
                                      mask_share=1.0, random_share=0.0)
        loss[batch] = mlm_loss(target, inputs, targets, mask)
        if base is not None:
            base_loss[batch] = mlm_loss(base, inputs, targets, mask)
    scores = {"loss": -loss}
    if base is not None:
        scores["mlm-ratio"] = base_loss - loss
    return scores, truncated


@torch.no_grad()
def class_logits(loaded: "LoadedModel", records: "Records", batch_size: int, limit: int) -> tuple[torch.Tensor, int]:
    """Logits [n, C] (CPU) of a sequence or image classifier, and how many texts were truncated."""
    device, model = module_device(loaded.model), loaded.model
    if records.texts is None:
        x = torch.as_tensor(records.images)
        return torch.cat([model(pixel_values=x[s:s + batch_size].to(device)).logits.cpu()
                          for s in range(0, len(x), batch_size)]), 0
    tok = loaded.tokenizer
    ids, _, truncated = tokenize(tok, records.texts, limit, special=True)
    out = torch.empty((len(ids), loaded.num_labels or model.config.num_labels))
    for batch in progress.track(_batches(np.array([len(r) for r in ids]), batch_size, 1),
                                f"scoring records with {loaded.source}", len(ids), "records", size=len):
        x, mask = _pad([ids[i] for i in batch], tok.pad_token_id or 0)
        out[torch.as_tensor(batch)] = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    return out, truncated


def _class_scores(target, records, base, batch_size, limit) -> tuple[dict[str, np.ndarray], int]:
    if records.labels is None:
        raise UserError("records", "classification needs a label for every record", "add a `label` column")
    y = torch.as_tensor(np.asarray(records.labels, dtype=np.int64))
    logits, truncated = class_logits(target, records, batch_size, limit)
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[-1]:
        raise UserError("records", f"labels must lie in [0, {logits.shape[-1]}) for this {logits.shape[-1]}-class model, "
                                   f"got {int(y.min())}..{int(y.max())}", "map the labels to the model's label ids")
    conf, loss = (v.numpy() for v in logit_signals(logits, y))
    scores = {"loss": -loss, "conf": conf}
    if base is not None:
        base_loss = logit_signals(class_logits(base, records, batch_size, limit)[0], y)[1].numpy()
        scores["reference"] = base_loss - loss
    return scores, truncated


def record_scores(target: "LoadedModel", records: "Records", base: "LoadedModel | None" = None,
                  batch_size: int = 16, max_length: int | None = None, seed: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """({attack: float64 [n], higher = member}, number of records truncated to the context).

    causal-lm: loss, zlib, min-k, min-k++, + base: lm-ratio. masked-lm: loss (−MLM loss over a few
    seeded maskings), + base: mlm-ratio. classification (text or images): loss, conf, + base:
    reference. The base must share the model's tokenizer (the study checks it)."""
    if base is not None and base.task != target.task:
        raise UserError("--base", f"the base is a {base.task} model but the audited model is {target.task}",
                        "give the base the audited model was fine-tuned from, with the same task")
    limit = context_limit(target, base, max_length)
    was_training = [m.model.training for m in (target, base) if m is not None]
    for m in (target, base):
        if m is not None:
            m.model.eval()
    try:
        if target.task == "causal-lm":
            scores, truncated = _causal_scores(target, records, base, batch_size, limit)
        elif target.task == "masked-lm":
            scores, truncated = _masked_scores(target, records, base, batch_size, limit, seed)
        elif target.task in ("classification", "image-classification"):
            scores, truncated = _class_scores(target, records, base, batch_size, limit)
        else:
            raise ValueError(f"unknown task {target.task!r}")
    finally:
        for m, mode in zip([m for m in (target, base) if m is not None], was_training):
            m.model.train(mode)
    scores = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    bad = [k for k, v in scores.items() if not np.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"non-finite membership scores from {', '.join(bad)}: is the model's output finite?")
    return scores, truncated


def attack_summary(scores: dict[str, np.ndarray], labels: np.ndarray, fprs: Sequence[float] = (0.001, 0.01, 0.1),
                   n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """{attack: {"auc": (v, lo, hi), "tpr@<fpr>": (v, lo, hi)}}, row bootstrap (ftaudit.metrics.summarize);
    the same numbers as the pipeline's for the same scores, metrics settings and seed."""
    out = {}
    for name, s in scores.items():
        m = summarize(s, np.asarray(labels, dtype=bool), fprs=tuple(fprs), n_boot=n_boot, level=level, seed=seed)
        out[name] = {"auc": tuple(m.auc), **{f"tpr@{r.fpr:g}": (r.value, r.lo, r.hi) for r in m.tpr_at_fpr}}
    return out
