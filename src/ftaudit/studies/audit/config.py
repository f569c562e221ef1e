"""The config of the ``audit`` study: a user's own fine-tuned model, its members and non-members.

Section ``audit``: what to audit (``model``, ``members``, ``nonmembers``, optional ``base``), how
(``task``, ``max_records``, ``max_length``, ``batch_size``; the device is ``engine.device``), what the outputs may show
(``reveal``) and the gate (``fail_above``). ``demo: true`` builds, fine-tunes and audits ftaudit's
own tiny GPT-2 instead (offline, files under ``<out>/demo``).

Required keys are checked when the audit runs, not here: ``ftaudit config audit`` must print the
defaults. In-memory models and record lists (the Python API) are held in a process-local registry
and named ``memory:<id>`` in the config.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ftaudit.config import MAX_BATCH, MAX_EPSILON, MAX_REFERENCES, ConfigSection, StudyConfig, field_error
from ftaudit.errors import UserError

FIELD = "audit"
TASKS = ("auto", "causal-lm", "masked-lm", "classification", "image-classification")

# --------------------------------------------------------------------------------------- memory

MEMORY_PREFIX = "memory:"
_MEMORY: dict[str, Any] = {}
_NEXT = itertools.count(1)


def remember(obj: Any) -> str:
    """Hold an in-memory object (model, tokenizer, record list) for this process; its config name."""
    name = f"{MEMORY_PREFIX}{next(_NEXT)}-{id(obj):x}"
    _MEMORY[name] = obj
    return name


def is_memory(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(MEMORY_PREFIX)


def recall(spec: str, field: str) -> Any:
    """The object behind ``memory:<id>``; a stored config of another process cannot name one."""
    if spec not in _MEMORY:
        raise UserError(field, f"{spec!r} names an in-memory object that no longer exists",
                        "pass a directory or file path instead (an in-memory object is known only during the "
                        "ftaudit.audit(...) call it was given to, so a stored config naming one cannot re-run)")
    return _MEMORY[spec]


def forget(*specs: Any) -> None:
    for spec in specs:
        if is_memory(spec):
            _MEMORY.pop(spec, None)


# ----------------------------------------------------------------------------------------- gate

_GATE = re.compile(r"^\s*(auc|tpr@([0-9.eE+-]+))\s*=\s*([0-9.eE+-]+)\s*$")


def parse_gate(text: str) -> tuple[str, float | None, float]:
    """``"tpr@0.01=0.05"`` → ("tpr", 0.01, 0.05); ``"auc=0.6"`` → ("auc", None, 0.6)."""
    match = _GATE.match(text or "")
    if not match:
        raise ValueError(f"cannot parse {text!r}; write tpr@FPR=THRESHOLD (e.g. tpr@0.01=0.05) or auc=THRESHOLD "
                         "(e.g. auc=0.6)")
    try:
        fpr = float(match.group(2)) if match.group(2) else None
        threshold = float(match.group(3))
    except ValueError:
        raise ValueError(f"cannot parse the numbers of {text!r}; e.g. tpr@0.01=0.05") from None
    if fpr is not None and not 0 < fpr < 1:
        raise ValueError(f"the FPR of {text!r} must lie strictly between 0 and 1")
    if not 0 <= threshold <= 1:
        raise ValueError(f"the threshold of {text!r} must lie in [0, 1] (a rate, not a percentage)")
    return ("auc" if fpr is None else "tpr"), fpr, threshold


def gate_metric(text: str) -> str:
    """The metric key the gate reads (``auc`` or ``tpr@<fpr>``, as in ``attack_summary``)."""
    kind, fpr, _ = parse_gate(text)
    return "auc" if fpr is None else f"tpr@{fpr:g}"


# --------------------------------------------------------------------------------------- config


class AuditSection(ConfigSection):
    """What is audited and how (section ``audit``)."""

    model: str | None = Field(default=None, description="the fine-tuned model: a save_pretrained directory, a PEFT "
                                                         "adapter directory (adapter_config.json), or a hub id")
    members: str | None = Field(default=None, description="records the model was fine-tuned on: .txt (one per line), "
                                                           ".jsonl / .csv with `text` (and `label`), .npz (x, y) or a "
                                                           "datasets directory")
    nonmembers: str | None = Field(default=None, description="records of the same distribution the model never saw "
                                                              "(same formats)")
    base: str | None = Field(default=None, description="the pretrained model it was fine-tuned from (directory or hub "
                                                        "id): adds the base-ratio attack; null = none (for an adapter "
                                                        "it is read from adapter_config.json unless given)")
    tokenizer: str | None = Field(default=None, description="the model's tokenizer (a directory) when the model "
                                                             "directory has none; null = the model's own")
    task: Literal["auto", "causal-lm", "masked-lm", "classification", "image-classification"] = Field(
        default="auto", description="auto: from config.architectures")
    max_records: int = Field(default=2000, ge=2, le=10**7, description="records audited per set (a random subset by seed when "
                                                             "a set is larger)")
    max_length: int | None = Field(default=None, ge=2, le=1 << 17, description="tokens per record (longer ones are truncated); "
                                                                    "null = the model's context (at most 1024)")
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH, description="records per forward pass")
    reveal: bool = Field(default=False, description="write record text into records.csv (by default records are "
                                                    "identified by index and a salted hash only)")
    fail_above: str | None = Field(default=None, description="gate: e.g. tpr@0.01=0.05 or auc=0.6; the run exits 3 "
                                                             "when any attack's CI lower bound of that rate is above it")
    manifest: str | None = Field(default=None, description="canary manifest written by ftaudit.inject (causal LMs): "
                                                            "adds the canaries' exposure and the one-run empirical "
                                                            "epsilon lower bound; canary records are left out of the "
                                                            "membership audit")
    accounted_epsilon: float | None = Field(default=None, ge=0, le=MAX_EPSILON, description="the epsilon your DP accountant reported "
                                                                            "for the fine-tune: the one-run bound is "
                                                                            "checked against it (with manifest)")
    references: int = Field(default=0, ge=0, le=MAX_REFERENCES, description="fine-tuning-aware references (causal LMs): this many models "
                                                         "(even) fine-tuned from `base` with `recipe` on random halves "
                                                         "of `population`, for LiRA and RMIA; 0 = off")
    recipe: str | None = Field(default=None, description="references: YAML file of your fine-tuning recipe (method and "
                                                          "its options, optimizer, lr, epochs, batch_size, max_length)")
    population: str | None = Field(default=None, description="references: records of the same distribution that the "
                                                              "audited model never saw (same formats as members)")
    online: bool = Field(default=False, description="references: also train on the audited records (each is in half of "
                                                    "the references' data): adds LiRA online")
    regurgitation: bool | Literal["auto"] = Field(default="auto", description="prompt the model with each record's "
                                                  "first tokens and match its greedy and sampled continuations against "
                                                  "the true suffix, members vs the non-member control; auto: causal "
                                                  "LMs only")
    prefix_tokens: int = Field(default=32, ge=1, le=1 << 16, description="regurgitation: prompt tokens (at most half the record)")
    suffix_tokens: int = Field(default=16, ge=1, le=1 << 16, description="regurgitation: continuation tokens compared with the "
                                                             "record's suffix (shorter records are skipped, counted)")
    samples: int = Field(default=4, ge=0, le=1000, description="regurgitation: seeded top-40 sampled continuations per record "
                                                      "(besides the greedy one)")
    regurgitation_records: int = Field(default=200, ge=1, le=10**7, description="regurgitation: records prompted per set (a "
                                                                      "random subset of the long-enough ones)")
    demo: bool = Field(default=False, description="build, fine-tune and audit ftaudit's own tiny GPT-2 (offline; "
                                                  "model and record files under <out>/demo); model, members, "
                                                  "nonmembers and base must then be null")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        if isinstance(data, dict) and "device" in data:
            raise ValueError("audit.device is now engine.device (one setting for training and querying): set "
                             f"engine.device={data['device']} instead (`ftaudit audit --device` sets it)")
        return data

    @field_validator("fail_above")
    @classmethod
    def _gate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gate(value)
        return value

    @model_validator(mode="after")
    def _demo(self) -> "AuditSection":
        if self.accounted_epsilon is not None and self.manifest is None:
            raise field_error(("manifest",), "accounted_epsilon is checked against the canaries' one-run bound: give a "
                              "manifest too", None)
        if self.online and not self.references:
            raise field_error(("references",), "online trains references on the audited records: set references "
                              "(e.g. 8) too", self.references)
        if self.references:
            if self.references % 2:
                raise field_error(("references",), "must be even (each record is in half of them)", self.references)
            missing = [k for k in ("recipe", "population") if getattr(self, k) is None]
            missing += ["base"] if self.base is None and not self.demo else []
            if missing:
                raise field_error((missing[0],), f"references are fine-tuned from your base with your recipe on "
                                  f"population records: give {', '.join(missing)} too (--{' --'.join(missing)})", None)
        if self.demo:
            given = [k for k in ("model", "members", "nonmembers", "base") if getattr(self, k) is not None]
            if given:
                raise field_error((given[0],), f"demo builds its own model and records; do not also set "
                                  f"{', '.join(given)}", getattr(self, given[0]))
        return self


class AuditConfig(StudyConfig):
    study: Literal["audit"] = "audit"
    audit: AuditSection = AuditSection()

    @model_validator(mode="after")
    def _gate_fpr(self) -> "AuditConfig":
        """A gate at an FPR the metrics do not report adds that FPR to ``metrics.fprs``."""
        if self.audit.fail_above is not None:
            _, fpr, _ = parse_gate(self.audit.fail_above)
            if fpr is not None and not any(abs(fpr - f) <= 1e-12 for f in self.metrics.fprs):
                self.metrics.fprs = sorted([*self.metrics.fprs, fpr])
        return self
