"""The victims: classifiers fine-tuned from every candidate with every victim method, LoRA merged
for serving, reachable by the attacker only through :class:`BlackBox`."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ftaudit.devices import module_device
from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import MethodOptions, get_method
from ftaudit.models.lm import LMWrapper, bert_classifier, lm_arch_spec
from ftaudit.seeding import derive_seed
from ftaudit.studies.base import Context
from ftaudit.studies.stealing.blackbox import BlackBox
from ftaudit.studies.stealing.candidates import Base, Labelled, recipe
from ftaudit.studies.stealing.config import StealingConfig, StealingStudyConfig


@dataclass
class Victim:
    index: int
    base: str  # candidate spec
    method: str
    seed: int
    key: str  # model cache key
    state: dict  # effective weights (LoRA merged), plain classifier names
    module: LMWrapper  # served (merged), never handed to the attacker: only BlackBox(module)
    test_pred: np.ndarray  # its labels on the held-out blocks (the ground truth agreement is measured against)


def encoder_names(state: dict) -> list[str]:
    """The encoder's parameters (``lm.bert.*`` but the pooler, which is part of the head)."""
    return [k for k in state if k.startswith("lm.bert.") and not k.startswith("lm.bert.pooler.")]


def predictions(model: LMWrapper, state: dict, x: np.ndarray) -> np.ndarray:
    """Labels on ``x`` of ``model`` with ``state``, computed where the model lives."""
    model.load_state_dict(state)
    device = module_device(model)
    with torch.no_grad():
        return model(torch.from_numpy(x).to(device)).argmax(-1).cpu().numpy()


def effective(built: LMWrapper, state: dict, device: torch.device | str = "cpu") -> tuple[LMWrapper, dict]:
    """The served model, on ``device``: LoRA merged into its base layers (as deployments do); its
    weights with plain names, on the CPU."""
    served = copy.deepcopy(built)
    served.load_state_dict(state)
    for module in served.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    names = {k.replace(".base_layer", ""): v.detach().clone() for k, v in served.state_dict().items() if "lora_" not in k}
    return served.to(device).eval(), names


def answer(v: Victim, st: StealingConfig, queries: np.ndarray) -> np.ndarray:
    """The victim's API answers on ``queries`` (probabilities, or labels if top-1)."""
    return BlackBox(v.module, top1=st.top1, max_batch=len(queries)).query(queries)


def train_victims(ctx: Context, cfg: StealingStudyConfig, cands: dict[str, Base], train_set: Labelled,
                  test_set: Labelled) -> list[Victim]:
    """Every candidate × victim method × ``victim_seeds`` (head init and data order), on all of
    ``train_set``."""
    st = cfg.stealing
    opts = MethodOptions.from_config(cfg.finetune)
    out = []
    for spec, cand in cands.items():
        for method in st.victim_methods:
            inits, seeds = [], []
            for s in range(st.victim_seeds):
                model, init = bert_classifier(cand.model, st.classes, derive_seed(cfg.seed, "victim-head", spec, method, s),
                                              pooling=st.pooling)
                inits.append(init)
                seeds.append(derive_seed(cfg.seed, "victim", spec, method, s))
            group = method_group(f"victims {spec} {method}", model, lm_arch_spec(model), get_method(method),
                                 recipe(st, st.victim_lrs[method], st.victim_epochs), train_set, inits,
                                 [np.arange(len(train_set.x))] * len(inits), seeds, run_seed=cfg.seed, opts=opts)
            trained = ctx.train(group, vectorized=False)
            for s, state in enumerate(trained.states()):
                served, eff = effective(group.template, state, ctx.engine.placement.device)
                out.append(Victim(len(out), spec, method, s, trained.keys[s], eff, served,
                                  predictions(served, served.state_dict(), test_set.x)))
    return out
