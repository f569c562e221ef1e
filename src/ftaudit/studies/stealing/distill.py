"""Weight estimation: students distilled from a victim's answers, starting from the identified base,
a wrong base of the same architecture or random init; and pruning, where only the top p of the
encoder elements (ranked by gradient scores at the head-distilled point) are trained."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import MethodOptions, get_method, head_prefixes
from ftaudit.metrics import mean_ci
from ftaudit.models.lm import LMWrapper, bert_classifier, initial_state, lm_arch_spec, tiny_bert
from ftaudit.seeding import derive_seed
from ftaudit.studies.base import Context
from ftaudit.studies.stealing.candidates import Base, Labelled, recipe
from ftaudit.studies.stealing.config import StealingStudyConfig
from ftaudit.studies.stealing.identification import Identification
from ftaudit.studies.stealing.pruning import SCORES, change_recall, gradient_scores, relative_distance, top_fraction_masks
from ftaudit.studies.stealing.victims import Victim, answer, encoder_names, predictions

INITS = ("identified base", "wrong base", "random init")


@dataclass
class Student:
    agree: np.ndarray  # bool [held-out blocks]: the student's label equals the victim's
    agreement: dict  # mean of `agree` with its bootstrap CI over the blocks
    accuracy: float
    distance: float  # relative distance of the encoder to the victim's (nan for another architecture)
    state: dict
    model: LMWrapper
    names: list[str]  # encoder parameters


@dataclass
class Pruned:
    victim: Victim
    share: float  # p: share of encoder elements trained
    student: Student
    found: dict[str, float]  # score -> share of the victim's most-changed elements the score's top p holds
    # (empty when the identified base has another architecture than the victim)


@dataclass
class Estimates:
    chosen: list[Victim]
    students: dict[tuple[int, str, int], Student]  # (victim, start, queries) -> student
    base_dist: dict[int, float]  # victim -> its encoder's distance from its own base
    majority: dict[int, float]  # victim -> share of its most frequent held-out label
    pruned: list[Pruned] = field(default_factory=list)


def student_targets(cfg: StealingStudyConfig, answers: np.ndarray) -> tuple[str, np.ndarray]:
    """(objective, targets) for training on the API's answers: labels if top-1, else probabilities."""
    if cfg.stealing.top1:
        return "classification", answers.astype(np.int64)
    return "distillation", answers.astype(np.float32)


def distil(ctx: Context, cfg: StealingStudyConfig, v: Victim, init_name: str, base: LMWrapper, encoder: dict,
           queries: np.ndarray, answers: np.ndarray, test: Labelled, method: str = "full",
           masks: dict | None = None) -> Student:
    """One student: ``base``'s architecture, encoder ``encoder`` (a base's or a random one), a fresh
    head; trained on the victim's answers; measured against the victim."""
    st, m = cfg.stealing, cfg.metrics
    model, init = bert_classifier(base, st.classes, derive_seed(cfg.seed, "student-head"), pooling=st.pooling)
    init = {**init, **{k: w for k, w in encoder.items() if k in init}}
    objective, y = student_targets(cfg, answers)
    epochs = max(1, round(st.distill_steps * st.batch_size / len(queries)))
    names = encoder_names(init)
    trainable = None
    if masks is not None:
        trainable = [k for k in init if k.startswith(head_prefixes(model))] + sorted(masks)
    group = method_group(f"student of victim {v.index} ({init_name}, {len(queries)} queries)", model, lm_arch_spec(model),
                         get_method(method), recipe(st, st.distill_lr, epochs), Labelled(queries, y), [init],
                         [np.arange(len(queries))], [derive_seed(cfg.seed, "student", v.index)], run_seed=cfg.seed,
                         opts=MethodOptions.from_config(cfg.finetune), objective=objective, masks=masks,
                         trainable=trainable)
    state = ctx.train(group, vectorized=False).states()[0]
    pred = predictions(model, {k: w for k, w in state.items() if k in model.state_dict()}, test.x)
    same_arch = all(k in v.state and v.state[k].shape == state[k].shape for k in names)
    agree = pred == v.test_pred
    return Student(agree, mean_ci(agree.astype(np.float64), m.ci_level, m.bootstrap, cfg.seed),
                   float((pred == test.y).mean()), relative_distance(state, v.state, names) if same_arch else float("nan"),
                   state, model, names)


def weight_estimation(ctx: Context, cfg: StealingStudyConfig, cands: dict[str, Base], vics: list[Victim],
                      ident: Identification, pool: np.ndarray, test: Labelled) -> Estimates:
    """For ``distill_victims`` victims of the first candidate per method: students from each start at
    every budget, then pruning at the largest."""
    st = cfg.stealing
    chosen = [v for v in vics if v.base == st.candidates[0] and v.seed < st.distill_victims]
    students: dict = {}
    pruned: list[Pruned] = []
    for v in chosen:
        picked = ident.pick(cands, v, max(st.id_budgets))
        c_id = cands[picked].candidate
        wrong = next((s for s in cands if s not in (v.base, picked) and cands[s].candidate.arch == c_id.arch), None)
        rnd = tiny_bert(st.vocab_size, st.block_len, n_layer=c_id.n_layer, n_embd=c_id.n_embd, n_head=2,
                        seed=derive_seed(cfg.seed, "random-student"))
        starts = {"identified base": (cands[picked].model, cands[picked].state), "random init": (rnd, initial_state(rnd))}
        if wrong:
            starts["wrong base"] = (cands[wrong].model, cands[wrong].state)
        answers = answer(v, st, pool[:max(st.budgets)])
        for budget in st.budgets:
            for init_name, (model, encoder) in starts.items():
                students[(v.index, init_name, budget)] = distil(ctx, cfg, v, init_name, model, encoder, pool[:budget],
                                                                answers[:budget], test)
        pruned += prune(ctx, cfg, v, cands[picked], cands[v.base], pool, answers, test, students)
    base_dist = {v.index: relative_distance(cands[v.base].state, v.state, encoder_names(v.state)) for v in chosen}
    majority = {v.index: float(np.bincount(v.test_pred).max() / len(v.test_pred)) for v in chosen}
    return Estimates(chosen, students, base_dist, majority, pruned)


def prune(ctx: Context, cfg: StealingStudyConfig, v: Victim, picked: Base, true_base: Base, pool: np.ndarray,
          answers: np.ndarray, test: Labelled, students: dict) -> list[Pruned]:
    """Head-only distillation, gradient scores of the encoder there, then the top-p students."""
    st = cfg.stealing
    budget = max(st.budgets)
    queries, ans = pool[:budget], answers[:budget]
    head = distil(ctx, cfg, v, "identified base, head only", picked.model, picked.state, queries, ans, test, method="head")
    objective, y = student_targets(cfg, ans)
    scores = gradient_scores(head.model, head.state, head.names, torch.from_numpy(queries), torch.from_numpy(y),
                             objective, batch=st.batch_size)
    # the truth (which elements fine-tuning moved) exists only where the pick has the victim's architecture
    comparable = all(n in v.state and v.state[n].shape == head.state[n].shape for n in head.names)
    out = []
    for p in st.prune_fractions:
        masks = {score: top_fraction_masks(scores[score], p) for score in SCORES} if 0 < p < 1 else {}
        if p == 0:
            est = head
        elif p == 1:
            est = students[(v.index, "identified base", budget)]
        else:
            est = distil(ctx, cfg, v, f"identified base, top {p:.0%} by {st.prune_score}", picked.model, picked.state,
                         queries, ans, test, masks=masks[st.prune_score])
        found = {score: change_recall(m, true_base.state, v.state, head.names)
                 for score, m in masks.items() if comparable}
        out.append(Pruned(v, p, est, found))
    return out
