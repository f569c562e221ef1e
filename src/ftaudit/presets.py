"""Named presets: documented sets of config overrides of one study, for the regime a claim was made in.

A preset is not a fork of a study's code: it is a handful of keys of the study's own config, with a
name and the reason for each choice. ``ftaudit run STUDY --preset NAME`` merges it between the
study's defaults and the config file (defaults < preset < file < ``--set``), and the run's saved
``config.yaml`` records the preset's name beside every resolved value, so the file alone re-runs to
the same result. ``ftaudit presets`` lists them; ``ftaudit reproduce`` runs each claim's study with
its preset (:mod:`ftaudit.reproduce.claims`).

Importing this module imports nothing heavy (``ftaudit presets`` stays torch-free).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ftaudit.errors import UserError


@dataclass(frozen=True)
class Preset:
    """``overrides``: dotted config key → value, exactly as ``--set key=value`` would give it."""

    study: str
    name: str
    summary: str  # one line: what the preset changes
    why: str      # the regime it reproduces and why each setting is there (compute cuts named as such)
    overrides: dict[str, Any] = field(default_factory=dict)

    def tree(self) -> dict:
        """The overrides as a nested config tree (as ``--set`` builds one)."""
        from ftaudit.config_input import set_path

        tree: dict = {}
        for key, value in self.overrides.items():
            set_path(tree, key.split("."), copy.deepcopy(value))
        return tree


ALL_RMIA_LIRA = ["loss", "lira-online", "lira-online-global", "lira-offline", "lira-offline-global",
                 "rmia-online", "rmia-offline", "rmia-paper-online", "rmia-paper-offline"]

PRESETS: list[Preset] = [
    Preset("finetune-mia", "few-references",
           "the attacks use 2 references per audit example (1 IN + 1 OUT, drawn from the target's 16); LiRA and both RMIA implementations",
           "RMIA's paper claims its advantage over LiRA is largest with few reference models; the default study "
           "uses 16. The ensemble stays the default 18 models (the same cache entries). A 4-model ensemble "
           "(finetune.references=2) is no substitute: on synthetic null worlds lira-online's per-example variance "
           "from 2 references scores AUC 0.629 with 4 models (0.528 with 18, 0.511 with 34), where the offline and "
           "global variants and RMIA stay at 0.5.",
           {"attack.references": 2, "attack.names": ALL_RMIA_LIRA}),
    Preset("dp-finetune", "class-gap",
           "pretrain on digits 0-4, fine-tune a new head on 5-9 (data.split=classes)",
           "Cattan et al.'s claim is about a transfer with a gap to close (CIFAR-100 from ImageNet); on the default "
           "split the base already classifies the private digits at 97.5 %. With disjoint classes a linear probe on "
           "the pretrained features is far from a fine-tuned network. audit_size 496 (not 500): digits 5-9 are 896 "
           "images, and audit + population must fit in them.",
           {"data.split": "classes", "data.audit_size": 496, "data.population_size": 400}),
    Preset("lm-methods", "large-head",
           "vocabulary 4096 (untied LM head of 262k parameters, 42 % of the model, was 28 %); learning rates 1e-3 and 3e-3",
           "Mireshghallah et al. fine-tuned GPT-2, whose untied output matrix is a large share of the weights; the "
           "head-only method can only memorise through that matrix. A 4096-token BPE makes the head 4096 × 64. The "
           "1e-2 cells are dropped to save time: in the default grid they cost perplexity (100-110) and were never "
           "on the frontier, so the matched-perplexity comparison does not use them.",
           {"lm.vocab_size": 4096, "sweep.lrs": [1e-3, 3e-3]}),
    Preset("forgetting", "deterministic-sparse",
           "inject schedule only, both determinism settings, 16 digits seen 8 times each",
           "Jagielski et al.'s deterministic models differ (IN vs OUT) only by the examples under test. Under a "
           "keep-matrix two models also differ in about half of the other injected digits, and training amplifies "
           "those differences; 16 injected digits instead of 200 keeps that to ~8 (one repetition count, r = 8, the "
           "most memorised). Data order, initialisation and augmentation draws are identical across the "
           "deterministic models (one shared seed) and torch runs its deterministic kernels.",
           {"forgetting.schedules": ["inject"], "forgetting.determinism": "both", "forgetting.repetitions": [8],
            "forgetting.per_repetition": 16}),
    Preset("tmi", "paper-shadows",
           "64 shadow models (the paper's count); shadow-count sweep 16/32/64 only",
           "Abascal et al. train 64 shadow models; the default study trains 32. The method, DP and query-count "
           "sweeps are switched off to pay for the extra shadows; the headline (linear-probe fine-tuning, 8 "
           "queries per point) is unchanged.",
           {"tmi.shadows": 64, "tmi.shadow_counts": [16, 32, 64], "tmi.methods": [], "tmi.epsilons": [],
            "tmi.augmentation_counts": []}),
    Preset("stealing", "many-queries",
           "query budgets up to 1,700 (what the query corpus holds) and 4x the distillation steps",
           "Al Rafi et al.'s > 94 % agreement uses the victim's own base and many queries; the default study stops "
           "at 1,024 queries and 200 distillation steps, where the head-only student still under-fits. Only the "
           "distillation grows (1,700 of the 1,733 natural query blocks of 64 tokens WikiText-2 holds); the "
           "candidates and victims are the default study's.",
           {"stealing.budgets": [256, 1024, 1700], "stealing.distill_steps": 800}),
]

_BY_KEY: dict[tuple[str, str], Preset] = {(p.study, p.name): p for p in PRESETS}


def presets_of(study: str) -> list[Preset]:
    return [p for p in PRESETS if p.study == study]


def get_preset(study: str, name: str) -> Preset:
    """The preset ``name`` of ``study``; a UserError (with "did you mean") otherwise."""
    if not isinstance(name, str):
        raise UserError("preset", f"must be a preset name, got {type(name).__name__}", "see `ftaudit presets`")
    preset = _BY_KEY.get((study, name))
    if preset is not None:
        return preset
    from ftaudit.config_input import did_you_mean

    own = [p.name for p in presets_of(study)]
    elsewhere = [p.study for p in PRESETS if p.name == name]
    if elsewhere:
        fix = f"{name!r} is a preset of {', '.join(elsewhere)}; run that study, or choose one of " \
              f"{', '.join(own) or 'none'}"
    else:
        fix = did_you_mean(name, own) + (f"presets of {study}: {', '.join(own)}" if own else f"{study} has no presets")
    raise UserError("preset", f"unknown preset {str(name)[:80]!r} of study {study!r}",
                    fix + " (`ftaudit presets` lists them)")


def merge_under(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section (a new tree; neither input is changed)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_under(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_preset(tree: dict, study: str, name: str | None) -> dict:
    """The config tree with preset ``name`` of ``study`` underneath it (the tree's own keys win) and
    ``preset`` recorded; ``tree`` unchanged when ``name`` is None."""
    if name is None:
        return tree
    merged = merge_under(get_preset(study, name).tree(), tree)
    merged["preset"] = name
    return merged
