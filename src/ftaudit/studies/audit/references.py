"""Fine-tuning-aware references of ``ftaudit audit`` (causal LMs): LiRA and RMIA with reference
models fine-tuned *from the user's base with the user's recipe* by ftaudit's engine.

The recipe (a YAML file: method and its options, optimizer, lr, epochs, batch_size, max_length) is
validated by :class:`Recipe` (the LM studies' fine-tune section plus ``max_length``). Records are
tokenized with the base's tokenizer like the audit's own scores (no special tokens, truncated to
``max_length``), right-padded into fixed-width blocks whose padding is marked invalid (IGNORE
targets: no loss; a causal model never attends forward, so padding never reaches a real token).

A quarter of the population (at least one record) is held out as RMIA's z-samples: no reference
trains on them, and the audited model never saw the population. The N references train on random
halves (a half keep-matrix) of the rest (offline) or of the rest ∪ the audited records (online:
each audited record is IN for exactly half of them). Reference models are cached by content
(``ctx.train``), their per-record signals by (model key, architecture, records) (``ctx.query``:
signal jobs through the engine's executor).
Per-record signal: the record's mean token NLL (the audit's LOSS signal; records differ in length, so
a summed NLL would make RMIA's offline Pr(x) ≈ a constant and its score a length-confounded LOSS);
LiRA's Gaussian is fitted to its negation, RMIA's probability is exp(−mean NLL). The attacks are the registered ones
(:mod:`ftaudit.attacks.membership`) on an :class:`AttackInput` whose target is the audited model.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, ValidationError

from ftaudit.attacks.base import AttackInput, reference_seed
from ftaudit.attacks.lm import mean_nll, sequence_signals
from ftaudit.data.keep import half_keep_matrix
from ftaudit.data.text import TextBlocks
from ftaudit.errors import UserError
from ftaudit.seeding import derive_seed
from ftaudit.studies.lm.config import LMFinetuneConfig

SIGNAL_VERSION = "audit-record-nll-v2"  # bump when the per-record signal changes
Z_SHARE = 0.25  # share of the population held out as RMIA's z-samples (never trained on)
DESCRIPTIONS = {
    "lira-offline": "LiRA offline: one-sided Gaussian test of the record's log-likelihood against N references "
                    "fine-tuned from the base with your recipe on population records (Carlini et al. 2022)",
    "lira-online": "LiRA online: Gaussian likelihood ratio, IN vs OUT references (each audited record is in the "
                   "fine-tuning data of half of them)",
    "rmia-offline": "RMIA offline: the record's likelihood ratio to the OUT references, against held-out population "
                    "records' (Zarifzadeh et al. 2024)",
}


class Recipe(LMFinetuneConfig):
    """The user's fine-tuning recipe (``--recipe`` YAML): the LM fine-tune section plus the length."""

    max_length: int = Field(default=128, ge=2, description="tokens per record in fine-tuning (longer ones are "
                                                           "truncated, shorter ones padded; padding carries no loss)")


def read_recipe(path: str) -> Recipe:
    """The recipe file, validated: one line naming the file (and the key) on any problem."""
    from ftaudit.config_input import read_yaml_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError("--recipe", f"no such file: {path!r}", "give a YAML file with method, lr, epochs, "
                                                                 "batch_size, max_length (and the method's options, "
                                                                 "e.g. lora_rank)")
    data = read_yaml_file(p, "--recipe")  # a mapping, bounded: size, depth, no anchors or aliases
    try:
        return Recipe(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(file)"
        known = ", ".join(Recipe.model_fields)
        fix = f"known keys: {known}" if err["type"] == "extra_forbidden" else "fix that value"
        raise UserError("--recipe", f"{path}: {where}: {err['msg']}", fix) from None


def check(cfg, inp) -> dict:
    """Everything that needs no weights: the recipe, the base and the population (records present in
    the audit are dropped from it and counted). Returns {recipe, population, dropped, base}."""
    from ftaudit.data.records import load_records

    a = cfg.audit
    recipe = read_recipe(a.recipe)
    if not isinstance(inp.spec["base"], (str, Path)) or inp.adapter:
        raise UserError("--references", "references are fine-tuned from your base: give --base as a causal LM "
                        "directory (or hub id), and a full model, not an adapter, as --model",
                        "add --base DIR, or drop --references")
    from ftaudit.studies.audit.inputs import _inspect

    base_info = _inspect(inp.spec["base"], "base")
    if base_info is not None and base_info.get("task") not in ("causal-lm", None):
        raise UserError("--base", f"references are fine-tuned from a causal LM base; {inp.spec['base']} is a "
                        f"{base_info.get('task')} model", "give the causal LM the model was fine-tuned from")
    task = inp.info["task"] if inp.info else a.task
    if task not in ("causal-lm", "auto", None):
        raise UserError("--references", f"references are built for causal LMs; the model is a {task} model",
                        "drop --references")
    population = load_records(a.population, "--population")
    audited = set((inp.members.texts or ()) + (inp.nonmembers.texts or ()))
    keep = [t for t in dict.fromkeys(population.texts) if t not in audited]
    if len(keep) < 4:
        raise UserError("--population", f"{len(keep)} records left that are not audited records (at least 4 needed)",
                        "give more records of the same distribution that the model never saw")
    return {"recipe": recipe, "population": keep, "dropped": len(population.texts) - len(keep),
            "base": inp.spec["base"]}


def _blocks(ids: list[list[int]], texts, pad: int) -> TextBlocks:
    width = max(len(r) for r in ids)
    x = np.full((len(ids), width), pad, dtype=np.int64)
    valid = np.zeros(x.shape, dtype=bool)
    for i, r in enumerate(ids):
        x[i, :len(r)], valid[i, :len(r)] = r, True
    return TextBlocks(x, valid, tuple(texts), np.arange(len(ids), dtype=np.int64), "documents", int(pad))


def _pad_to(blocks: TextBlocks, width: int) -> TextBlocks:
    extra = width - blocks.block_len
    if extra <= 0:
        return blocks
    return replace(blocks, ids=np.pad(blocks.ids, ((0, 0), (0, extra)), constant_values=blocks.pad_id),
                   valid=np.pad(blocks.valid, ((0, 0), (0, extra))))


def _rows(blocks: TextBlocks) -> list[list[int]]:
    return [row[ok].tolist() for row, ok in zip(blocks.ids, blocks.valid)]


def _nll(loaded, rows: list[list[int]], batch_size: int) -> np.ndarray:
    """Mean token NLL per record [n] (the audit's LOSS signal), with the audit's own batched scoring."""
    from ftaudit.studies.audit.scoring import causal_stats

    return mean_nll(causal_stats(loaded, rows, batch_size)["logp"])


def nll_job(template, states, inputs: dict[str, torch.Tensor], device, batch_size: int,
            max_length: int) -> dict[str, np.ndarray]:
    """The ``audit-nll`` signal job (:mod:`ftaudit.signals.jobs`): each reference's :func:`_nll`
    [M, n] on the records ``inputs`` holds (ids and valid, right-padded)."""
    from ftaudit.models.load import LoadedModel

    rows = [row[ok].tolist() for row, ok in zip(inputs["ids"].numpy(), inputs["valid"].numpy())]
    module = copy.deepcopy(template).eval().to(device)
    out = []
    for state in states:
        module.load_state_dict(state)
        out.append(_nll(LoadedModel(module.lm, None, "causal-lm", "reference", None, max_length, False), rows,
                        batch_size))
    return {"nll": np.stack(out)}


def reference_scores(ctx, cfg, target, base, records, checked: dict) -> tuple[dict[str, np.ndarray], dict]:
    """({attack: float64 [n] over ``records``}, info) for the references tier."""
    from ftaudit.attacks.registry import ATTACKS
    from ftaudit.models.lm import lm_arch_spec, load_pretrained
    from ftaudit.signals.jobs import SignalJob
    from ftaudit.store.cache import content_key, state_digest
    from ftaudit.studies.audit.scoring import _causal_ids, context_limit
    from ftaudit.studies.lm.base import Base, finetune_from_base
    from ftaudit.studies.lm.signals import signal_arch

    a, recipe, seed = cfg.audit, checked["recipe"], cfg.seed
    n_refs = a.references
    tok = target.tokenizer
    limit = min(recipe.max_length, context_limit(target, base, a.max_length))
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    audit_ids, _ = _causal_ids(tok, records.texts, limit)
    pop_texts = checked["population"]
    pop_ids, _ = _causal_ids(tok, pop_texts, limit)
    rng = np.random.default_rng(derive_seed(seed, "audit-references", "z"))
    order = rng.permutation(len(pop_ids))
    n_z = max(1, int(round(Z_SHARE * len(pop_ids))))
    z_rows, train_rows = np.sort(order[:n_z]), np.sort(order[n_z:])
    width = max(len(r) for r in audit_ids + pop_ids)
    audit = _pad_to(_blocks(audit_ids, records.texts, pad), width)
    zs = _pad_to(_blocks([pop_ids[i] for i in z_rows], [pop_texts[i] for i in z_rows], pad), width)
    pool = _pad_to(_blocks([pop_ids[i] for i in train_rows], [pop_texts[i] for i in train_rows], pad), width)
    n = len(audit)
    if a.online:
        pool = TextBlocks(np.concatenate([audit.ids, pool.ids]), np.concatenate([audit.valid, pool.valid]),
                          audit.texts + pool.texts, np.arange(n + len(pool)), "documents", int(pad))
    keep = half_keep_matrix(n_refs, len(pool), derive_seed(seed, "audit-references", "keep"))
    ref_keep = keep[:, :n] if a.online else np.zeros((n_refs, n), dtype=bool)

    with ctx.stage("references"):
        model = load_pretrained(str(checked["base"]), kind="causal-lm", field="--base")
        if int(np.max(pool.ids)) >= model.vocab_size:
            raise UserError("--base", "the records' token ids exceed the base's vocabulary",
                            "give the base the model was fine-tuned from")
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ref_base = Base(model, state, content_key(arch=lm_arch_spec(model), state=state_digest(state)),
                        str(checked["base"]), 0)
        seeds = [derive_seed(seed, "audit-reference", m) for m in range(n_refs)]
        template, result = finetune_from_base(ctx, ref_base, "audit references", recipe, pool,
                                              [np.flatnonzero(k) for k in keep], seeds, seed)
    arch = signal_arch(template)
    params = {"batch_size": a.batch_size, "max_length": limit}

    def signal(blocks: TextBlocks) -> np.ndarray:
        keys = [ctx.signal_key(model=k, arch=arch, records=blocks.digest(), signal=SIGNAL_VERSION) for k in result.keys]
        inputs = {"ids": torch.from_numpy(np.ascontiguousarray(blocks.ids)),
                  "valid": torch.from_numpy(np.ascontiguousarray(blocks.valid))}
        entries = ctx.query(keys, lambda idx: SignalJob("audit-nll", template, result.states(idx), inputs, params))
        return np.stack([v["nll"] for v in entries])

    with ctx.stage("reference-signals"), torch.no_grad():
        ref_x, ref_z = signal(audit), signal(zs)
        tgt_x, tgt_z = _nll(target, _rows(audit), a.batch_size), _nll(target, _rows(zs), a.batch_size)
    conf, loss = sequence_signals(np.concatenate([tgt_x[None], ref_x]))
    _, pop_loss = sequence_signals(np.concatenate([tgt_z[None], ref_z]))
    inp = AttackInput(target_conf=conf[0], target_loss=loss[0], ref_conf=conf[1:], ref_loss=loss[1:],
                      ref_keep=ref_keep, target_pop_loss=pop_loss[0], ref_pop_loss=pop_loss[1:],
                      ref_seed=reference_seed(seed, 0))
    names = ["lira-offline", "lira-online", "rmia-offline"] if a.online else ["lira-offline", "rmia-offline"]
    scores = {name: np.asarray(ATTACKS[name].fn(inp, **dict(ATTACKS[name].defaults)), dtype=np.float64)
              for name in names}
    info = {"references": n_refs, "online": a.online, "recipe": str(a.recipe), "method": recipe.method,
            "max_length": limit, "population": a.population, "population_records": len(pop_texts),
            "population_dropped": checked["dropped"], "z_samples": int(n_z), "pool": len(pool),
            "trained": result.trained, "loaded": result.loaded}
    return scores, info


def notes(info: dict | None) -> list[str]:
    if not info:
        return []
    mode = "online: population ∪ audited records" if info["online"] else "offline: population records"
    return [f"References: {info['references']} models fine-tuned from the base with {info['recipe']} "
            f"({info['method']}, {info['max_length']} tokens) by ftaudit's engine on random halves of {info['pool']} "
            f"records ({mode}); {info['z_samples']} population records held out as RMIA's z-samples; "
            f"{info['trained']} trained, {info['loaded']} loaded from the cache."
            + (f" Dropped {info['population_dropped']} population records (duplicates or audited records)."
               if info["population_dropped"] else "")]
