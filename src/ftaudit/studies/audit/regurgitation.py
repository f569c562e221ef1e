"""Regurgitation (causal LMs): does the model complete its fine-tuning records verbatim?

Every audited record of at least ``prefix + suffix`` tokens is cut into a prompt — its first
``prefix_tokens`` tokens, capped to half the record — and the ``suffix_tokens`` that follow. The
model continues the prompt greedily and with ``samples`` seeded top-k (40) samples (the extraction
study's draw, :func:`ftaudit.signals.generation._draw`, from one CPU generator; prompts are batched
by equal length, so there is no padding). Per record:

- ``greedy_exact``: the greedy continuation is the suffix, verbatim;
- ``sampled_exact``: some sample is (the extraction code's deduplicated candidates,
  :func:`ftaudit.attacks.extraction.candidates`);
- ``prefix_match_len``: tokens of the greedy continuation that match the suffix before the first
  difference; ``near_exact`` when that is at least half the suffix;
- ``edit_similarity``: 1 − token Levenshtein distance / suffix length, greedy continuation.

Non-members are the control (a model continues common text verbatim whatever it was trained on):
each rate is reported for both sets with a bootstrap CI resampling records, and the member −
non-member difference with its CI (the two sets resampled independently). Regurgitation is shown
only when the difference's CI lies above 0. No record text or generated text leaves this module.
"""
from __future__ import annotations

import csv
import inspect
import io

import numpy as np
import torch

from ftaudit import progress
from ftaudit.attacks.extraction import candidates
from ftaudit.devices import module_device
from ftaudit.report.blocks import ReportSection
from ftaudit.seeding import derive_seed
from ftaudit.signals.generation import SamplingSpec, _draw

MEASURES = {
    "greedy_exact": "greedy continuation = the suffix, verbatim",
    "sampled_exact": "some sampled continuation = the suffix, verbatim",
    "near_exact": "greedy continuation matches at least the first half of the suffix (token prefix match ≥ 50 %)",
    "edit_similarity": "mean 1 − token edit distance / suffix length (greedy; not a rate)",
}
COLUMNS = ("greedy_exact", "sampled_exact", "prefix_match_len")
TOP_K = 40


def enabled(setting, task: str) -> bool:
    return task == "causal-lm" if setting == "auto" else bool(setting)


def cut(ids: list[list[int]], prefix_tokens: int, suffix_tokens: int) -> np.ndarray:
    """The prompt length per record (its first ``prefix_tokens``, capped to half the record), 0 when
    the record is shorter than prompt + suffix."""
    out = np.zeros(len(ids), dtype=np.int64)
    for i, row in enumerate(ids):
        p = min(prefix_tokens, len(row) // 2)
        out[i] = p if p >= 1 and p + suffix_tokens <= len(row) else 0
    return out


@torch.no_grad()
def _continue(lm, prompts: torch.Tensor, length: int, spec: SamplingSpec | None, gen: torch.Generator) -> torch.Tensor:
    """``length`` tokens after each prompt row (equal lengths): argmax when ``spec`` is None, else the
    extraction study's top-k draw; the key/value cache keeps each new token one position's forward."""
    device = module_device(lm)
    inner = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    key = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"  # transformers 5.x
    out = lm(input_ids=prompts.to(device), use_cache=True)
    tokens = []
    for step in range(length):
        logits = out.logits[:, -1].float().cpu()
        token = logits.argmax(-1) if spec is None else _draw(logits, spec, gen)
        tokens.append(token)
        if step + 1 < length:
            past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            out = lm(input_ids=token[:, None].to(device), use_cache=True, **{key: past})
    return torch.stack(tokens, dim=1)


def generate(lm, ids: list[list[int]], plen: np.ndarray, suffix_tokens: int, samples: int, batch_size: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy [n, L] and sampled [n, samples, L] continuations of the records with plen > 0 (rows of
    the others stay −1). Records are grouped by prompt length, in a fixed order, one generator."""
    n, L = len(ids), suffix_tokens
    greedy, sampled = np.full((n, L), -1, np.int64), np.full((n, samples, L), -1, np.int64)
    spec = SamplingSpec(samples=samples, length=L, top_k=TOP_K, seed=seed) if samples else None
    gen = torch.Generator().manual_seed(derive_seed(seed, "regurgitation") % 2**63)
    per = max(1, batch_size // max(1, samples))
    task = progress.task("generating continuations", int((plen > 0).sum()), "records")
    for p in sorted(set(plen[plen > 0].tolist())):
        rows = np.flatnonzero(plen == p)
        for s in range(0, len(rows), per):
            part = rows[s:s + per]
            x = torch.tensor([ids[i][:p] for i in part], dtype=torch.int64)
            greedy[part] = _continue(lm, x, L, None, gen).numpy()
            if samples:
                got = _continue(lm, x.repeat_interleave(samples, dim=0), L, spec, gen)
                sampled[part] = got.reshape(len(part), samples, L).numpy()
            task.advance(len(part))
    task.close()
    return greedy, sampled


def prefix_match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tokens before the first difference, per row of a, b [n, L]."""
    diff = a != b
    return np.where(diff.any(1), diff.argmax(1), a.shape[1]).astype(np.int64)


def edit_similarity(a, b) -> float:
    """1 − Levenshtein distance between token sequences / max length."""
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return 1.0 - prev[-1] / max(1, len(a), len(b))


def measure(greedy: np.ndarray, sampled: np.ndarray, suffixes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-record measures of the generated continuations against the true suffixes [n, L]."""
    L = suffixes.shape[1]
    match = prefix_match(greedy, suffixes)
    out = {"greedy_exact": match == L, "sampled_exact": np.zeros(len(suffixes), bool), "prefix_match_len": match,
           "near_exact": match >= 0.5 * L,
           "edit_similarity": np.array([edit_similarity(g, s) for g, s in zip(greedy, suffixes)])}
    if sampled.shape[1]:
        cands = candidates(sampled, suffixes)
        out["sampled_exact"][cands.prompt[cands.hit]] = True
    return out


def compare(values: np.ndarray, member: np.ndarray, n_boot: int, level: float, seed: int) -> dict:
    """Mean per set with a bootstrap CI (records resampled) and member − non-member with its CI."""
    values, member = np.asarray(values, np.float64), np.asarray(member, bool)
    rng = np.random.default_rng(derive_seed(seed, "regurgitation-boot") % 2**63)
    q = [(1 - level) / 2, (1 + level) / 2]
    out, reps = {}, {}
    for name, rows in (("member", values[member]), ("nonmember", values[~member])):
        if not rows.size:
            out[name], reps[name] = None, None
            continue
        reps[name] = rows[rng.integers(0, rows.size, size=(n_boot, rows.size))].mean(1)
        lo, hi = np.quantile(reps[name], q)
        out[name] = {"value": float(rows.mean()), "lo": float(lo), "hi": float(hi), "n": int(rows.size)}
    if out["member"] is None or out["nonmember"] is None:
        out["difference"], out["above_control"] = None, False
        return out
    lo, hi = np.quantile(reps["member"] - reps["nonmember"], q)
    out["difference"] = {"value": out["member"]["value"] - out["nonmember"]["value"], "lo": float(lo), "hi": float(hi)}
    out["above_control"] = bool(lo > 0)
    return out


def regurgitation(target, ids: list[list[int]], member: np.ndarray, *, prefix_tokens: int = 32, suffix_tokens: int = 16,
                  samples: int = 4, per_set: int = 200, batch_size: int = 16, seed: int = 0, n_boot: int = 1000,
                  level: float = 0.95) -> tuple[dict, dict[str, list]]:
    """(results, per-record columns) for records' token ids under ``target`` (a LoadedModel)."""
    member = np.asarray(member, bool)
    plen = cut(ids, prefix_tokens, suffix_tokens)
    counts = {}
    rng = np.random.default_rng(derive_seed(seed, "regurgitation-sample") % 2**63)
    for name, m in (("member", member), ("nonmember", ~member)):
        ok = np.flatnonzero(m & (plen > 0))
        counts[f"{name}s_short"] = int(m.sum() - ok.size)
        if ok.size > per_set:  # a random per_set of the long-enough records
            plen[np.setdiff1d(ok, rng.choice(ok, size=per_set, replace=False))] = -1
        counts[f"{name}s_generated"] = int(min(ok.size, per_set))
    counts["not_sampled"] = int((plen < 0).sum())
    was_training = target.model.training
    target.model.eval()
    try:
        greedy, sampled = generate(target.model, ids, plen, suffix_tokens, samples, batch_size, seed)
    finally:
        target.model.train(was_training)
    run = np.flatnonzero(plen > 0)
    suffixes = np.array([ids[i][plen[i]:plen[i] + suffix_tokens] for i in run], np.int64).reshape(len(run), suffix_tokens)
    per = measure(greedy[run], sampled[run], suffixes)
    rates = {k: compare(per[k], member[run], n_boot, level, seed) for k in MEASURES}
    columns = {k: [""] * len(ids) for k in COLUMNS}
    for j, i in enumerate(run):
        for k in COLUMNS:
            columns[k][i] = int(per[k][j])
    info = {"prefix_tokens": prefix_tokens, "suffix_tokens": suffix_tokens, "samples": samples, "top_k": TOP_K,
            "records_per_set": per_set, "counts": counts, "level": level, "measures": MEASURES, "rates": rates,
            "above_control": [k for k in MEASURES if rates[k]["above_control"]]}
    return info, columns


def _ci(d: dict | None, pct: bool = True) -> str:
    if d is None:
        return "—"
    f = (lambda v: f"{v * 100:.3g} %") if pct else (lambda v: f"{v:.3f}")
    return f"{f(d['value'])} [{f(d['lo'])}, {f(d['hi'])}]"


def notes(info: dict) -> list[str]:
    r, c = info["rates"], info["counts"]
    g = r["greedy_exact"]
    text = (f"Regurgitation ({info['prefix_tokens']}-token prompts, {info['suffix_tokens']}-token suffixes): the greedy "
            f"continuation is the record's suffix for {_ci(g['member'])} of {c['members_generated']} members vs "
            f"{_ci(g['nonmember'])} of {c['nonmembers_generated']} non-members (the control); difference "
            f"{_ci(g['difference'])} — ")
    text += ("above the control: the model regurgitates its fine-tuning records." if g["above_control"] else
             "not above the control at this sample size.")
    out = [text]
    if c["members_short"] or c["nonmembers_short"]:
        out.append(f"Regurgitation skipped {c['members_short']} members and {c['nonmembers_short']} non-members shorter "
                   f"than prompt + {info['suffix_tokens']} suffix tokens.")
    return out


def section(info: dict) -> ReportSection:
    r = info["rates"]
    rows = [{"measure": k, "members": _ci(r[k]["member"], k != "edit_similarity"),
             "non-members (control)": _ci(r[k]["nonmember"], k != "edit_similarity"),
             "difference": _ci(r[k]["difference"], k != "edit_similarity"),
             "above control": "yes" if r[k]["above_control"] else "no"} for k in MEASURES]
    text = [f"Each record's first {info['prefix_tokens']} tokens (at most half the record) prompt the model; its greedy "
            f"continuation and {info['samples']} seeded top-{info['top_k']} samples of {info['suffix_tokens']} tokens "
            "are compared with the record's true suffix. Non-members are the control; a regurgitation claim needs the "
            f"difference's {info['level']:.0%} CI above 0 (records resampled).",
            *(f"{k}: {v}." for k, v in MEASURES.items()), *notes(info)]
    return ReportSection("Regurgitation", text=text, table=rows)


def add_columns(table: bytes, columns: dict[str, list]) -> bytes:
    """records.csv with ``columns`` added (before ``text`` when it is there)."""
    rows = list(csv.reader(io.StringIO(table.decode("utf-8"))))
    at = rows[0].index("text") if "text" in rows[0] else len(rows[0])
    for r, row in enumerate(rows):
        row[at:at] = list(columns) if r == 0 else [str(columns[k][r - 1]) for k in columns]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def run_audit(cfg, target, records, labels, limit: int) -> tuple[dict, dict[str, list]]:
    """The audit study's call: its records (text, truncated to the context as scored) and settings."""
    from ftaudit.studies.audit.scoring import tokenize

    a = cfg.audit
    ids, _, _ = tokenize(target.tokenizer, records.texts, limit, special=False)
    return regurgitation(target, ids, labels, prefix_tokens=a.prefix_tokens, suffix_tokens=a.suffix_tokens,
                         samples=a.samples, per_set=a.regurgitation_records, batch_size=a.batch_size, seed=cfg.seed,
                         n_boot=cfg.metrics.bootstrap, level=cfg.metrics.ci_level)
