"""Canaries for a one-run audit of a user's own fine-tune.

Before training, :func:`inject` draws ``n`` random canaries ("the secret number is 281394", each a
fresh secret), flips a fair coin per canary, and inserts the canaries whose coin came up heads
among the user's records, once each, at random positions. The manifest records every canary's
text, secret and coin, and the seed of the *reference* secrets: same-format secrets that no canary
uses, so nothing the model saw.

After training, :func:`canary_audit` scores every canary's secret by the model's log-perplexity
(bits of the secret given the shared prefix, ``ftaudit.attacks.canaries``) and reports

* rank exposure (Carlini et al. 2019) of the included and of the excluded canaries against
  ``references`` reference secrets: log2(references + 1) - log2(rank), mean with a bootstrap CI.
  Excluded canaries were never seen either, so their exposure is the no-memorisation baseline: a
  uniform rank, whose exposure averages about 1/ln 2 = 1.44 bits whatever the number of references.
* the one-run empirical lower bound on epsilon (Steinke, Nasr & Jagielski 2023,
  ``ftaudit.empirical.one_run``): guess "included" for the lowest log-perplexities, "excluded" for the
  highest; the coins make the guesses a hypothesis test of (epsilon, delta)-DP. The bound holds at
  confidence ``level`` for each canary as one record (a canary inserted r times is a group of r).
  Where the user states the epsilon their DP accounting gave, a bound above it is flagged: the
  accounting, its implementation, or the training pipeline (canaries seen more than once) is wrong.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ftaudit.attacks.canaries import (
    CanaryFormat,
    draw_secrets,
    rank_exposure,
    secret_log_perplexity,
    skewnorm_exposure,
    tokenize_canaries,
)
from ftaudit.errors import UserError

MANIFEST_FORMAT = "ftaudit-canaries"
MANIFEST_VERSION = 1
_REFERENCE_STREAM = 0x4EFE  # rng stream of the reference secrets (beside draw_secrets' own)


# ------------------------------------------------------------------------------------ injection

def _check_format(prefix, digits, field: str) -> CanaryFormat:
    if not isinstance(prefix, str) or not prefix.strip():
        raise UserError(f"{field}prefix", "the canary prefix is empty", "give a prefix such as 'the secret number is'")
    if prefix != prefix.strip() or prefix[-1].isdigit():
        raise UserError(f"{field}prefix", f"the prefix {prefix!r} ends in a space or a digit",
                        "end it with a word: the secret follows after one space")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 18:
        raise UserError(f"{field}digits", f"{digits!r} is not a number of digits from 1 to 18", "use e.g. 6")
    return CanaryFormat(prefix, digits)


def inject(records: list[str], n: int, seed: int, manifest: str | Path | None = None,
           prefix: str = "the secret number is", digits: int = 6) -> tuple[list[str], dict]:
    """The records with canaries inserted, and the manifest (also written as JSON to ``manifest``).

    ``n`` canaries get distinct random secrets of ``digits`` digits; each is included with
    probability 1/2 (an independent fair coin, recorded), and the included ones are inserted once
    each at random positions among the records (their positions are recorded too). Everything is
    a function of ``seed``. Train on the returned records, then audit with :func:`canary_audit`.
    """
    if isinstance(records, (str, bytes)) or not isinstance(records, (list, tuple)):
        raise UserError("records", f"expected a list of strings, got {type(records).__name__}",
                        "pass the fine-tuning records as a list of str")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, str)), None)
    if bad is not None:
        raise UserError("records", f"record {bad} is a {type(records[bad]).__name__}, not a str",
                        "pass text records only")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError("n", f"{n!r} canaries", "ask for at least 1 (hundreds for a useful one-run bound)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError("seed", f"{seed!r} is not a non-negative integer", "use e.g. 0")
    fmt = _check_format(prefix, digits, "")
    secrets = draw_secrets(n, digits, seed, field="n")
    rng = np.random.default_rng([seed, 0x1C0A])
    coins = rng.random(n) < 0.5
    included = np.flatnonzero(coins)
    total = len(records) + included.size
    slots = np.sort(rng.choice(total, size=included.size, replace=False))
    order = rng.permutation(included)  # which included canary goes to which slot
    position = {int(c): int(s) for c, s in zip(order, slots)}
    out: list[str] = []
    it = iter(records)
    by_slot = {s: c for c, s in position.items()}
    for slot in range(total):
        out.append(fmt.text(secrets[by_slot[slot]]) if slot in by_slot else next(it))
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "seed": seed,
        "prefix": prefix,
        "digits": digits,
        "reference_seed": int(np.random.default_rng([seed, _REFERENCE_STREAM]).integers(2 ** 31)),
        "records": len(records),
        "canaries": [{"index": i, "text": fmt.text(s), "secret": s, "included": bool(coins[i]),
                      "position": position.get(i)} for i, s in enumerate(secrets)],
    }
    if manifest is not None:
        from ftaudit.store.atomic import atomic_write_text

        atomic_write_text(manifest, json.dumps(doc, indent=1) + "\n")
    return out, doc


# ------------------------------------------------------------------------------------- manifest

def _bad(field: str, problem: str) -> UserError:
    return UserError(field, problem, "pass the manifest file that ftaudit.inject wrote for this training set")


def check_manifest(doc, field: str = "--manifest") -> dict:
    """The manifest if it is well formed (the structure :func:`inject` writes), else a UserError."""
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise _bad(field, "not an ftaudit canary manifest (no \"format\": \"ftaudit-canaries\")")
    if doc.get("version") != MANIFEST_VERSION:
        raise UserError(field, f"canary manifest version {doc.get('version')!r}, this ftaudit reads version "
                               f"{MANIFEST_VERSION}", "inject the canaries again with this version of ftaudit")
    for key, kind in (("seed", int), ("reference_seed", int), ("digits", int), ("prefix", str), ("canaries", list)):
        if isinstance(doc.get(key), bool) or not isinstance(doc.get(key), kind):
            raise _bad(field, f"its {key!r} is missing or not a{'n' if kind is int else ''} {kind.__name__}")
    fmt = _check_format(doc["prefix"], doc["digits"], f"{field} ")
    if not doc["canaries"]:
        raise _bad(field, "it lists no canaries")
    seen = set()
    for i, c in enumerate(doc["canaries"]):
        if not isinstance(c, dict) or not isinstance(c.get("secret"), str) or not isinstance(c.get("included"), bool):
            raise _bad(field, f"canary {i} lacks a string 'secret' or a true/false 'included'")
        s = c["secret"]
        if len(s) != fmt.digits or not s.isascii() or not s.isdigit():
            raise _bad(field, f"canary {i}'s secret {s!r} is not {fmt.digits} digits")
        if c.get("text", fmt.text(s)) != fmt.text(s):
            raise _bad(field, f"canary {i}'s text {c.get('text')!r} is not the prefix and its secret")
        if s in seen:
            raise _bad(field, f"canary {i}'s secret {s} appears twice")
        seen.add(s)
    return doc


def read_manifest(path, field: str = "--manifest") -> dict:
    """Load and check a manifest written by :func:`inject`; every problem is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(field, f"{str(p)!r} does not exist or is not a file"
                        if not p.is_dir() else f"{str(p)!r} is a directory",
                        "pass the manifest file that ftaudit.inject wrote")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(field, f"cannot read {str(p)!r} as JSON ({exc})") from exc
    return check_manifest(doc, field)


def reference_secrets(manifest: dict, references: int) -> list[str]:
    """``references`` distinct secrets of the manifest's format that no canary uses (seeded by its
    ``reference_seed``)."""
    digits, used = manifest["digits"], {c["secret"] for c in manifest["canaries"]}
    space = 10 ** digits
    if references + len(used) > space:
        raise UserError("references", f"{references} reference secrets besides {len(used)} canaries do not fit in "
                                      f"the {space} secrets of {digits} digits", "ask for fewer references")
    rng = np.random.default_rng([manifest["reference_seed"], _REFERENCE_STREAM])
    # at most len(used) of the draws are canaries' secrets, so one draw always leaves enough
    draws = (str(int(v)).zfill(digits) for v in rng.choice(space, size=references + len(used), replace=False))
    out = [s for s in draws if s not in used][:references]
    return out


# ---------------------------------------------------------------------------------------- audit

def _secret_bits(model, tokenizer, fmt: CanaryFormat, secrets: list[str], batch_size: int) -> np.ndarray:
    """-log2 Pr(secret | prefix) under a causal LM, per secret (float64)."""
    import torch

    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    cs = tokenize_canaries(tokenizer, fmt, secrets, pad_id=pad, field="--manifest prefix")
    try:
        device = next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    logp = np.full((len(cs), cs.ids.shape[1] - 1), np.nan)
    try:
        with torch.no_grad():
            for lo in range(0, len(cs), batch_size):
                ids = torch.as_tensor(cs.ids[lo:lo + batch_size], device=device)
                ok = torch.as_tensor(cs.valid[lo:lo + batch_size], device=device)
                logits = model(input_ids=ids, attention_mask=ok.long()).logits[:, :-1]
                lp = torch.log_softmax(logits.double(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                logp[lo:lo + ids.shape[0]] = lp.cpu().numpy()
    finally:
        model.train(was_training)
    logp[~cs.valid[:, 1:]] = np.nan
    return secret_log_perplexity(logp, cs.start)


def _ci(values: np.ndarray, level: float, seed: int) -> dict:
    from ftaudit.metrics.roc import mean_ci

    if values.size == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    return {**mean_ci(values, level=level, n_boot=1000, seed=seed), "n": int(values.size)}


def canary_audit(model, tokenizer, manifest: dict, *, references: int = 1000, delta: float = 1e-5,
                 level: float = 0.95, accounted_epsilon: float | None = None, batch_size: int = 16) -> dict:
    """Exposure of the manifest's canaries and the one-run empirical epsilon lower bound.

    ``model``: a causal LM called as ``model(input_ids=, attention_mask=).logits`` (transformers /
    peft; a ``LoadedModel`` is unwrapped), ``tokenizer`` its tokenizer. Returns a JSON-able dict:
    ``canaries``, ``included``, ``exposure`` ({"included" / "excluded": mean with CI, "max"}),
    ``exposure_skewnorm`` (same, from a skew-normal fit), ``epsilon_lower_bound`` and its
    ``one_run`` guess counts, ``accounted_epsilon``, ``consistent`` (bound <= accounted; None when
    no accounted epsilon is given) and ``warning`` (None, or why the bound is not consistent), plus
    per-canary ``log_perplexity`` (bits) and ``exposure`` in ``per_canary``.
    """
    from ftaudit.empirical.one_run import default_grid, one_run_epsilon

    if hasattr(model, "model") and hasattr(model, "task") and hasattr(model, "tokenizer"):  # LoadedModel
        if getattr(model, "task") not in (None, "causal-lm"):
            raise UserError("--manifest", f"canaries are scored by a causal LM, the model is a {model.task} model",
                            "drop --manifest for this model")
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.model
    if tokenizer is None:
        raise UserError("tokenizer", "no tokenizer for the canary audit", "pass the model's tokenizer")
    manifest = check_manifest(manifest)
    if isinstance(references, bool) or not isinstance(references, int) or references < 1:
        raise UserError("references", f"{references!r} reference secrets", "use at least 1 (1000 by default)")
    if not 0.0 <= float(delta) < 1.0:
        raise UserError("delta", f"{delta!r} is not in [0, 1)", "use e.g. 1e-5")
    if not 0.0 < float(level) < 1.0:
        raise UserError("level", f"{level!r} is not in (0, 1)", "use e.g. 0.95")
    if accounted_epsilon is not None and not (math.isfinite(accounted_epsilon) and accounted_epsilon >= 0):
        raise UserError("accounted_epsilon", f"{accounted_epsilon!r} is not a finite epsilon >= 0",
                        "give the epsilon your DP accountant reported, or leave it out")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError("batch_size", f"{batch_size!r}", "use a positive integer")

    fmt = CanaryFormat(manifest["prefix"], manifest["digits"])
    secrets = [c["secret"] for c in manifest["canaries"]]
    included = np.array([c["included"] for c in manifest["canaries"]], dtype=bool)
    refs = reference_secrets(manifest, references)
    bits = _secret_bits(model, tokenizer, fmt, secrets + refs, batch_size)
    canary_bits, ref_bits = bits[:len(secrets)], bits[len(secrets):]
    exposure = rank_exposure(canary_bits, ref_bits)
    try:
        skew = skewnorm_exposure(canary_bits, ref_bits)
    except ValueError:  # fewer than 3 references, or all equal
        skew = None

    m = len(secrets)
    if default_grid(m):
        bound = one_run_epsilon(-canary_bits, included, delta=float(delta), level=float(level))
        eps, one_run = bound.epsilon_lb, {"r": bound.r, "v": bound.v, "k_plus": bound.k_plus,
                                          "k_minus": bound.k_minus, "candidates": bound.n_candidates}
    else:  # a single canary: no guess pair to make
        eps, one_run = 0.0, None
    consistent, warning = None, None
    if accounted_epsilon is not None:
        consistent = bool(eps <= accounted_epsilon)
        if not consistent:
            warning = (f"the one-run lower bound epsilon >= {eps:.3g} (at {level:.0%} confidence, delta={delta:g}) "
                       f"exceeds the accounted epsilon = {accounted_epsilon:g}: the DP accounting, its "
                       f"implementation, or the training data (canaries seen more than once) is wrong")
            warnings.warn(warning, stacklevel=2)

    def split(values):
        return None if values is None else {"included": _ci(values[included], level, 0),
                                            "excluded": _ci(values[~included], level, 1)}

    return {
        "canaries": m,
        "included": int(included.sum()),
        "references": references,
        "exposure": {**split(exposure), "max": float(np.log2(references + 1))},
        "exposure_skewnorm": split(skew),
        "epsilon_lower_bound": float(eps),
        "delta": float(delta),
        "level": float(level),
        "one_run": one_run,
        "accounted_epsilon": None if accounted_epsilon is None else float(accounted_epsilon),
        "consistent": consistent,
        "warning": warning,
        "per_canary": {"included": included.tolist(), "log_perplexity": canary_bits.tolist(),
                       "exposure": exposure.tolist()},
    }
