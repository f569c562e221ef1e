"""The audit's inputs: every cheap check before any weights are read, then the models.

:func:`prepare` inspects the model directories (HF or PEFT adapter, safetensors only), compares the
model's and the base's tokenizers, reads the member and non-member records (labels for classifiers,
in the model's range), reads a canary manifest, drops canary texts and duplicates (counted) and
samples ``max_records`` per set — all before :func:`load_models` loads anything, so bad input fails
in a second with one line. An adapter's base comes for free: the adapter switched off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftaudit.errors import UserError
from ftaudit.seeding import derive_seed
from ftaudit.studies.audit import outputs
from ftaudit.studies.audit.config import AuditConfig, is_memory, recall

FLAGS = {"model": "--model", "members": "--members", "nonmembers": "--nonmembers", "base": "--base"}
CLASSIFIERS = ("classification", "image-classification")


@dataclass
class Inputs:
    spec: dict  # model, base, members, nonmembers: paths / hub ids / in-memory objects
    tokenizer: Any
    info: dict | None  # inspect_model_dir of the model (None: in memory or a hub id)
    members: Any  # Records, deduplicated and sampled
    nonmembers: Any
    where: dict[str, dict[bytes, int]]  # set -> record key -> position in its loaded file
    counts: dict = field(default_factory=dict)
    manifest: dict | None = None

    @property
    def adapter(self) -> bool:
        return self.info is not None and self.info["kind"] == "adapter"


class AdapterOff(torch.nn.Module):
    """A PEFT model with its adapter switched off: the base it was fine-tuned from, for free."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft = peft_model

    @property
    def config(self):
        return self.peft.get_base_model().config

    def get_output_embeddings(self):
        return self.peft.get_base_model().get_output_embeddings()

    def forward(self, **inputs):
        with self.peft.disable_adapter():
            return self.peft(**inputs)


def _inspect(spec, key: str) -> dict | None:
    """inspect_model_dir for a local path (None for an in-memory model or a hub id); a path that does
    not exist and cannot be a hub id is refused here."""
    from ftaudit.models.load import HUB_ID, inspect_model_dir

    if not isinstance(spec, (str, Path)) or (not Path(spec).expanduser().exists() and HUB_ID.match(str(spec))):
        return None
    return inspect_model_dir(str(spec), FLAGS[key])


def _config_classes(info: dict | None) -> int | None:
    if info is None or info["kind"] != "model":
        return None
    cfg = info["config"]
    if isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
        return len(cfg["id2label"])
    if isinstance(cfg.get("num_labels"), int):
        return cfg["num_labels"]
    return 2 if info["task"] in CLASSIFIERS else None  # transformers' default, not written to config.json


def _positions(records) -> dict[bytes, int]:
    """Record key → its first position in the loaded file (for records.csv after dedup and sampling)."""
    first: dict[bytes, int] = {}
    for i in range(len(records)):
        first.setdefault(outputs.record_key(records.texts, records.images, i), i)
    return first


def _sample(records, limit: int, seed: int, which: str):
    if len(records) <= limit:
        return records
    rng = np.random.default_rng(derive_seed(seed, "audit-sample", which))
    return records.subset(np.sort(rng.choice(len(records), size=limit, replace=False)))


def _without(records, texts: set[str]):
    if records.texts is None or not texts:
        return records, 0
    keep = np.array([i for i, t in enumerate(records.texts) if t not in texts], dtype=np.int64)
    return records.subset(keep), len(records) - len(keep)


def concat(members, nonmembers):
    from ftaudit.data.records import Records

    join = (lambda a, b: None if a is None else np.concatenate([a, b]))
    return Records(texts=None if members.texts is None else members.texts + nonmembers.texts,
                   labels=join(members.labels, nonmembers.labels), images=join(members.images, nonmembers.images),
                   source=f"{members.source} + {nonmembers.source}")


def _same_tokenizers(a, b) -> None:
    from ftaudit.models.load import same_tokenizer

    if a is not None and b is not None and not same_tokenizer(a, b):
        raise UserError("--base", "its tokenizer (vocabulary, merges or special tokens) differs from the model's",
                        "give the base the model was fine-tuned from")


def _check_tokenizers(model_spec, base_spec) -> None:
    """A base with another tokenizer makes the ratio meaningless: refuse it before loading weights."""
    from ftaudit.data.tokenizer import load_tokenizer

    specs = [model_spec, base_spec]
    if all(isinstance(s, (str, Path)) and (Path(s).expanduser() / "tokenizer.json").is_file() for s in specs):
        _same_tokenizers(*(load_tokenizer(str(s), field=FLAGS[k]) for s, k in zip(specs, ("model", "base"))))


def prepare(cfg: AuditConfig, spec: dict) -> Inputs:
    """Every check that needs no weights, and the records to audit."""
    from ftaudit.data.records import check_label_range, deduplicate, load_records

    a = cfg.audit
    for key in ("model", "members", "nonmembers"):
        if spec[key] is None:
            raise UserError(FLAGS[key], "not given", "ftaudit audit --model DIR --members FILE --nonmembers FILE "
                                                     "(or --demo to try it on a tiny model)")
    spec = {k: recall(v, f"audit.{k}") if is_memory(v) else v for k, v in spec.items()}
    tokenizer = recall(a.tokenizer, "audit.tokenizer") if is_memory(a.tokenizer) else a.tokenizer
    info, base_info = _inspect(spec["model"], "model"), _inspect(spec["base"], "base")
    if base_info is not None and base_info["kind"] == "adapter":
        raise UserError("--base", "the base is a PEFT adapter directory", "pass the full base model's directory")
    if spec["base"] is not None and info is not None and info["kind"] == "model":
        _check_tokenizers(spec["model"], spec["base"])
    task = a.task if a.task != "auto" else (info or {}).get("task")
    manifest = None
    if a.manifest is not None:
        from ftaudit.empirical.canaries import read_manifest

        manifest = read_manifest(a.manifest, "--manifest")
        if task not in (None, "causal-lm"):
            raise UserError("--manifest", f"canaries are scored by a causal LM; the model is a {task} model",
                            "drop --manifest for this model")
    need_labels = task in CLASSIFIERS
    members = load_records(spec["members"], "--members", need_labels=need_labels)
    nonmembers = load_records(spec["nonmembers"], "--nonmembers", need_labels=need_labels)
    classes = _config_classes(info)
    if classes is not None and need_labels:
        check_label_range(members, classes, "--members")
        check_label_range(nonmembers, classes, "--nonmembers")
    where = {"member": _positions(members), "nonmember": _positions(nonmembers)}
    counts = {"members_loaded": len(members), "nonmembers_loaded": len(nonmembers)}
    canary_texts = {c["text"] for c in manifest["canaries"]} if manifest else set()
    members, dropped_m = _without(members, canary_texts)
    nonmembers, dropped_n = _without(nonmembers, canary_texts)
    if manifest:
        counts["canary_records_dropped"] = dropped_m + dropped_n
    members, nonmembers, dup = deduplicate(members, nonmembers)
    if len(members) == 0 or len(nonmembers) == 0:
        raise UserError("--members" if len(members) == 0 else "--nonmembers",
                        "no records left after dropping those present in both sets",
                        "give members and non-members that do not overlap")
    counts.update(dup, members_unique=len(members), nonmembers_unique=len(nonmembers))
    members = _sample(members, a.max_records, cfg.seed, "members")
    nonmembers = _sample(nonmembers, a.max_records, cfg.seed, "nonmembers")
    counts.update(members=len(members), nonmembers=len(nonmembers))
    return Inputs(spec, tokenizer, info, members, nonmembers, where, counts, manifest)


def load_models(cfg: AuditConfig, inp: Inputs):
    """(target, base or None) as LoadedModels; the checks that need the loaded model."""
    from ftaudit.data.records import check_label_range
    from ftaudit.models.load import LoadedModel, load_model

    a, spec = cfg.audit, inp.spec
    target = load_model(spec["model"], task=a.task, base=spec["base"] if inp.adapter else None, field="--model",
                        device=cfg.engine.device, tokenizer=inp.tokenizer)
    if target.task in CLASSIFIERS:
        for which, records in (("--members", inp.members), ("--nonmembers", inp.nonmembers)):
            if records.labels is None:
                raise UserError(which, f"a {target.task} audit needs a label for every record",
                                "add an integer `label` field")
            check_label_range(records, target.num_labels, which)
    if inp.manifest is not None and target.task != "causal-lm":
        raise UserError("--manifest", f"canaries are scored by a causal LM; the model is a {target.task} model",
                        "drop --manifest for this model")
    if target.is_adapter:
        return target, LoadedModel(AdapterOff(target.model), target.tokenizer, target.task,
                                   f"{target.source} with the adapter off", target.num_labels, target.max_length, False)
    if spec["base"] is None:
        return target, None
    base = load_model(spec["base"], task=target.task, field="--base", device=cfg.engine.device,
                      tokenizer=target.tokenizer if isinstance(spec["base"], torch.nn.Module) else None)
    _same_tokenizers(target.tokenizer, base.tokenizer)
    return target, base
