"""The identification step over every victim: its architecture from latency, its base from outputs.
What it measures becomes the inputs of the ``base-identification`` evaluator (numpy arrays)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from ftaudit.attacks.identify import BaseIdentification
from ftaudit.devices import module_device
from ftaudit.models.lm import bert_classifier
from ftaudit.studies.stealing.blackbox import BlackBox
from ftaudit.studies.stealing.candidates import Base
from ftaudit.studies.stealing.config import StealingConfig
from ftaudit.studies.stealing.identify import encoder_features, identify_base
from ftaudit.studies.stealing.latency import LatencyGrid, clock, identify_architecture, latency_profile
from ftaudit.store.cache import content_key, state_digest
from ftaudit.studies.stealing.victims import Victim, answer


@dataclass
class Identification:
    arch_found: dict[int, str]  # victim index -> architecture latency identified
    arch_dist: dict[int, dict[str, float]]  # victim index -> {architecture: profile distance}
    probe: dict[tuple[int, int], tuple[str, dict[str, float]]]  # (victim, queries) -> (best candidate, every score)

    def inputs(self, cands: dict[str, Base], vics: list[Victim], budget: int) -> BaseIdentification:
        """The evaluator's arrays at ``budget`` queries, [victims, candidates] in candidate order."""
        specs = list(cands)
        arch = [cands[s].candidate.arch for s in specs]
        return BaseIdentification(
            probe=np.array([[self.probe[(v.index, budget)][1][s] for s in specs] for v in vics]),
            latency=np.array([[self.arch_dist[v.index][a] for a in arch] for v in vics]),
            same_arch=np.array([[a == self.arch_found[v.index] for a in arch] for v in vics]),
            base=np.array([specs.index(v.base) for v in vics], dtype=np.int64))

    def pick(self, cands: dict[str, Base], v: Victim, budget: int) -> str:
        """The attacker's pick: the best probe fit among the candidates of the latency-identified
        architecture (all candidates if none has it)."""
        scores = self.probe[(v.index, budget)][1]
        same = {s: sc for s, sc in scores.items() if cands[s].candidate.arch == self.arch_found[v.index]} or scores
        return max(same, key=same.get)


Cached = Callable[[str, str, Callable[[], dict]], dict]


def latency_identification(st: StealingConfig, cands: dict[str, Base], vics: list[Victim],
                           seed: int, cached: Cached) -> tuple[dict, dict]:
    """({victim index: identified arch}, {victim index: {arch: distance}}). The attacker times its
    own calls of ``query()``; the profile of every architecture is measured the same way on its own
    copy (a classifier with a random head behind the same API wrapper).

    Timings are measurements, not functions of the config: each profile is measured once and kept
    in the array cache (keyed by the model, the grid and the API settings), so a stored config
    re-runs to the same result. Delete ``<out>/cache/latency`` to measure again."""
    grid = LatencyGrid(tuple(st.latency_lengths), tuple(st.latency_batches), st.latency_repeats, st.vocab_size, seed)
    # the attacker's copies run on the victims' hardware (as the paper's GPU timing assumed)
    device = module_device(vics[0].module) if vics else torch.device("cpu")
    api = {"grid": asdict(grid), "top1": st.top1, "max_batch": max(st.latency_batches), "version": "latency-v1",
           **({"device": device.type} if device.type != "cpu" else {})}  # timings of one device only

    def profile(model_key: str, make_box: Callable[[], BlackBox]) -> np.ndarray:
        key = content_key(model=model_key, **api)
        return cached("latency", key, lambda: {"median_s": latency_profile(clock(make_box().query), grid)})["median_s"]

    def local_copy(cand: Base) -> BlackBox:
        model, init = bert_classifier(cand.model, st.classes, seed, pooling=st.pooling)
        model.load_state_dict(init)
        return BlackBox(model.to(device).eval(), top1=st.top1, max_batch=max(st.latency_batches))

    first = {}
    for cand in cands.values():
        first.setdefault(cand.candidate.arch, cand)
    profiles = {arch: profile(content_key(local_copy=state_digest(cand.state), classes=st.classes, pooling=st.pooling, seed=seed),
                              lambda cand=cand: local_copy(cand))
                for arch, cand in first.items()}
    found, dists = {}, {}
    for v in vics:
        measured = profile(v.key, lambda v=v: BlackBox(v.module, top1=st.top1, max_batch=max(st.latency_batches)))
        found[v.index], dists[v.index] = identify_architecture(measured, profiles)
    return found, dists


def identify_victims(st: StealingConfig, cands: dict[str, Base], vics: list[Victim], pool: np.ndarray,
                     latency_seed: int, cached: Cached) -> Identification:
    arch_found, arch_dist = latency_identification(st, cands, vics, latency_seed, cached)
    n = max(st.id_budgets)
    feats = {spec: encoder_features(c.model, c.state, pool[:n]) for spec, c in cands.items()}
    answers = {v.index: answer(v, st, pool[:n]) for v in vics}
    probe = {(v.index, k): identify_base({s: f[:k] for s, f in feats.items()}, answers[v.index][:k], st.classes)
             for v in vics for k in st.id_budgets}
    return Identification(arch_found, arch_dist, probe)
