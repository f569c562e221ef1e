"""``tmi``: membership in the PRETRAINING set, inferred from queries to the fine-tuned model (digits).

TMI (Abascal et al., PETS 2024) on bundled digits: ``tmi.shadows`` models are each pretrained (from
their own random init) on a random half of a pool of digits of the pretraining classes — the pool is
the challenge set, under its own keep-matrix — then fine-tuned with a new head on the other classes.
The adversary only queries a fine-tuned model, on A views of each pretraining digit (the original,
then noisy / shifted copies), and reads the downstream head's K logits. Each shadow takes a turn as
victim; TMI, adapted LiRA and a global threshold score it (the ``tmi-metaclassifiers``
evaluator, :mod:`ftaudit.attacks.tmi`; sweeps: :mod:`ftaudit.studies.tmi.sweeps`).

A share of the pool (``tmi.mislabel``) carries a random wrong label: outliers a model fits only by
memorizing them. On this easy task the correctly labelled digits are learned from their class and
barely leak; the report shows both groups.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ftaudit.config import DataConfig, ModelConfig, OptimConfig
from ftaudit.data.augment import shift_images
from ftaudit.data.digits import DigitsTask, Split, load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.errors import UserError
from ftaudit.finetune.methods import get_method
from ftaudit.metrics import mean_ci
from ftaudit.report.blocks import ReportSection
from ftaudit.seeding import derive_seed
from ftaudit.signals.jobs import SignalJob
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.tmi.common import dp_columns, finetune_recipe, template_arch
from ftaudit.studies.tmi.config import TMIStudyConfig
from ftaudit.studies.tmi.scoring import DESCRIPTIONS, Outputs, Scorer, fmt, metric_cells, study_threads, verdict
from ftaudit.studies.tmi.sweeps import Tuned, all_sweeps
from ftaudit.studies.vision import QuerySet, fresh_state, query_models, train_group, with_new_head
from ftaudit.train.engine import TrainResult


# ---------------------------------------------------------------------------------- the world


@dataclass
class World:
    """Everything fixed before training: data, labels, keep-matrix, query views, seeds."""

    task: DigitsTask
    pool: Split  # the challenge points with the labels pretraining uses (some wrong)
    true_y: np.ndarray  # [P] the digits' real classes (relabelled 0..k-1)
    mislabelled: np.ndarray  # [P] bool
    keep: np.ndarray  # [M, P] bool
    views: torch.Tensor  # [A, P, 1, 8, 8], view 0 the original
    views_digest: str
    model_cfg: ModelConfig
    seeds: dict


def query_views(x: torch.Tensor, n_views: int, max_shift: int, noise: float, seed: int) -> torch.Tensor:
    """[A, n, ...] views: the original first, then per view and image an independent random shift of
    up to ``max_shift`` pixels (zero-filled) and Gaussian pixel noise, clipped to the pixel range [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    views = [x]
    for _ in range(n_views - 1):
        offsets = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=g)
        v = torch.empty_like(x)
        for dy, dx in {tuple(o) for o in offsets.tolist()}:
            rows = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            v[rows] = shift_images(x[rows], dy, dx)
        views.append((v + noise * torch.randn(x.shape, generator=g)).clamp_(0.0, 1.0))
    return torch.stack(views)


def mislabel(y: np.ndarray, share: float, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mask): a random ``share`` of the rows get a uniformly random wrong class."""
    rng = np.random.default_rng([seed, 0x7A1])
    mask = np.zeros(len(y), dtype=bool)
    mask[rng.choice(len(y), size=int(round(share * len(y))), replace=False)] = True
    out = y.copy()
    out[mask] = (y[mask] + rng.integers(1, n_classes, size=int(mask.sum()))) % n_classes
    return out, mask


def build_world(cfg: TMIStudyConfig) -> World:
    t = cfg.tmi
    data = DataConfig(split="classes", pretrain_classes=cfg.data.pretrain_classes,
                      finetune_classes=cfg.data.finetune_classes, audit_size=t.finetune_size,
                      population_size=cfg.data.population_size)
    try:
        task = load_digits_task(data, cfg.seed)
    except UserError as exc:
        raise UserError("tmi.finetune_size", exc.problem.replace("audit_size", "finetune_size"),
                        "lower tmi.finetune_size or data.population_size") from None
    if t.pool > len(task.pretrain):
        raise UserError("tmi.pool", f"{t.pool} challenge points but the pretraining classes "
                        f"{list(task.pretrain_classes)} have {len(task.pretrain)} training digits",
                        f"use at most {len(task.pretrain)}, or add pretraining classes")
    head = Split(x=task.pretrain.x[:t.pool], y=task.pretrain.y[:t.pool], source_index=task.pretrain.source_index[:t.pool])
    y, wrong = mislabel(head.y, t.mislabel, task.n_pretrain_classes, cfg.seed)
    seeds = {
        "run": cfg.seed,
        "keep": derive_seed(cfg.seed, "tmi-keep"),
        "views": derive_seed(cfg.seed, "tmi-views"),
        "pretrain": [derive_seed(cfg.seed, "tmi-pretrain", m) for m in range(t.shadows)],
        "head": [derive_seed(cfg.seed, "tmi-head", m) for m in range(t.shadows)],
        "finetune": [derive_seed(cfg.seed, "tmi-finetune", m) for m in range(t.shadows)],
    }
    views = query_views(torch.from_numpy(head.x), t.augmentations, t.query_shift, t.query_noise, seeds["views"])
    return World(task=task, pool=replace(head, y=y), true_y=head.y, mislabelled=wrong,
                 keep=half_keep_matrix(t.shadows, t.pool, seeds["keep"]), views=views,
                 views_digest=content_key(views=views.numpy()),
                 model_cfg=ModelConfig(arch=t.arch, hidden=cfg.model.hidden, channels=cfg.model.channels), seeds=seeds)


# ---------------------------------------------------------------------------- train and query


@dataclass
class Shadows:
    """The pretrained shadows and what fine-tuning them needs."""

    template: nn.Module
    result: TrainResult
    ft_inits: list


def pretrain_shadows(ctx: Context, cfg: TMIStudyConfig, w: World) -> Shadows:
    """Every shadow from its own random init on its half of the pool (cached by content), and its
    fine-tuning start: the pretrained body with a fresh head for the downstream classes."""
    t = cfg.tmi
    k = w.task.n_pretrain_classes
    optim = OptimConfig(**cfg.pretrain.model_dump(), epochs=t.pretrain_epochs, augment=t.pretrain_augment)
    inits = [fresh_state(w.model_cfg, k, s)[1] for s in w.seeds["pretrain"]]
    template, result = train_group(ctx, "TMI shadow pretraining", w.model_cfg, k, get_method("full"), optim, w.pool,
                                   inits, [np.flatnonzero(r) for r in w.keep], w.seeds["pretrain"], run_seed=cfg.seed)
    n_new = w.task.n_finetune_classes
    ft_inits = [with_new_head(s, w.model_cfg, n_new, seed) for s, seed in zip(result.states(), w.seeds["head"])]
    return Shadows(template, result, ft_inits)


def fine_tuned_logits(ctx: Context, template: nn.Module, result: TrainResult, w: World) -> np.ndarray:
    """Downstream-head logits [M, P, A, K] of every fine-tuned shadow on the views; cached per
    (model, architecture, views)."""
    arch = template_arch(template)
    keys = [ctx.signal_key(model=k, arch=arch, queries=w.views_digest, signals="logits-v2") for k in result.keys]
    a, p = w.views.shape[:2]
    inputs = {"x": w.views.reshape(a * p, *w.views.shape[2:])}

    def split(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:  # [m, A*P, K] -> m x [P, A, K]
        return [{"logits": np.ascontiguousarray(f.reshape(a, p, -1).transpose(1, 0, 2))} for f in arrays["logits"]]

    entries = ctx.query(keys, lambda idx: SignalJob("logits", template, result.states(idx), inputs), split)
    return np.stack([e["logits"] for e in entries])


def tune(ctx: Context, cfg: TMIStudyConfig, w: World, shadows: Shadows, method: str, epsilon: float | None) -> Tuned:
    """Fine-tune every shadow with ``method`` (DP at ``epsilon``), query it, and measure its accuracy."""
    task = w.task
    r = finetune_recipe(cfg, method, epsilon, len(task.audit), cfg.finetune.batch_size, cfg.finetune.augment)
    name = f"TMI fine-tune ({method}{'' if r.dp is None else f', DP ε={r.dp.epsilon:g}'})"
    with ctx.stage("finetune"):
        template, result = train_group(ctx, name, w.model_cfg, task.n_finetune_classes, get_method(method), r.optim,
                                       task.audit, shadows.ft_inits,
                                       [np.arange(len(task.audit))] * len(shadows.ft_inits), w.seeds["finetune"],
                                       run_seed=cfg.seed, opts=r.opts, dp=r.dp)
    with ctx.stage("queries"):
        logits = fine_tuned_logits(ctx, template, result, w)
        correct = query_models(ctx, template, result.keys, result.states, QuerySet.of(task.population, 0))["correct"]
    acc = correct[:, :, 0].mean(axis=1)
    est = mean_ci(acc, level=cfg.metrics.ci_level, seed=cfg.seed)
    return Tuned(outputs=Outputs(logits), columns={"downstream test accuracy": fmt(est, True), **dp_columns(result.dp)},
                 utility=est, utility_label="downstream test accuracy")


# ------------------------------------------------------------------------------------ report


def pretraining_utility(ctx: Context, cfg: TMIStudyConfig, w: World, shadows: Shadows) -> list[dict]:
    """How well the shadows learned the pretraining task, and how hard they memorized their halves."""
    task, keep = w.task, w.keep
    q = lambda split: query_models(ctx, shadows.template, shadows.result.keys, shadows.result.states,  # noqa: E731
                                   QuerySet.of(split, 0))["correct"][:, :, 0]
    test = q(task.pretrain_test).mean(axis=1)
    fit = q(w.pool)  # [M, P]: predicts the label it was (or would have been) trained with
    rows = [{**mean_ci(test, level=cfg.metrics.ci_level, seed=cfg.seed), "name": "pretraining test accuracy",
             "note": f"mean over {len(test)} shadows, classes {list(task.pretrain_classes)}, {len(task.pretrain_test)} "
                     "held-out digits (CI over shadows)"}]
    for label, group in (("correctly labelled", ~w.mislabelled), ("mislabelled", w.mislabelled)):
        if not group.any():
            continue
        for side, mask in (("members", keep), ("non-members", ~keep)):
            share = np.array([fit[m, mask[m] & group].mean() for m in range(len(fit)) if (mask[m] & group).any()])
            rows.append({**mean_ci(share, level=cfg.metrics.ci_level, seed=cfg.seed),
                         "name": f"pretraining fit of {label} pool digits, {side}",
                         "note": "share predicted as their pretraining label (the wrong one for mislabelled digits)"})
    return rows


def group_section(scorer: Scorer, w: World, headline) -> ReportSection | None:
    """Metrics on the mislabelled and the correctly labelled challenge points separately."""
    if not w.mislabelled.any() or w.mislabelled.all():
        return None
    rows = []
    for label, idx in (("all", np.arange(len(w.mislabelled))), ("mislabelled", np.flatnonzero(w.mislabelled)),
                       ("correctly labelled", np.flatnonzero(~w.mislabelled))):
        group = headline if label == "all" else scorer.rows(headline, idx)
        rows.append({"challenge points": f"{label} ({len(idx)})", **metric_cells(group, scorer.low_fprs)})
    return ReportSection("Mislabelled vs correctly labelled pretraining digits", [
        f"{int(w.mislabelled.sum())} of the {len(w.mislabelled)} pool digits were pretrained with a random wrong "
        "label; a model fits them only by memorizing them. The same pooled scores, split by group (each with its "
        "own bootstrap CI)."], rows)


def run(cfg: TMIStudyConfig, ctx: Context) -> StudyOutput:
    with study_threads(cfg):
        return study(cfg, ctx)


def study(cfg: TMIStudyConfig, ctx: Context) -> StudyOutput:
    t = cfg.tmi
    with ctx.stage("data"):
        w = build_world(cfg)
    with ctx.stage("pretrain"):
        shadows = pretrain_shadows(ctx, cfg, w)
    headline = tune(ctx, cfg, w, shadows, t.method, None)
    victims = list(range(t.victims or t.shadows))
    scorer = Scorer(ctx, cfg, DESCRIPTIONS)
    with ctx.stage("attacks"):
        request = scorer.request(headline.outputs, w.keep, victims)
        ev = scorer.evaluate(request)  # the pipeline reuses these scores (the request keeps them)
    sections = []
    with ctx.stage("sweeps"):
        group = group_section(scorer, w, ev)
        if group:
            sections.append(group)
        retune = lambda method, eps: tune(ctx, cfg, w, shadows, method, eps)  # noqa: E731
        sections += all_sweeps(scorer, t, headline.outputs, w.keep, retune)
    task = w.task
    utility = pretraining_utility(ctx, cfg, w, shadows) + [
        {**headline.utility, "name": f"downstream test accuracy ({t.method})",
         "note": f"mean over {t.shadows} fine-tuned shadows, classes {list(task.finetune_classes)}, "
                 f"{len(task.population)} held-out digits (CI over shadows)"}]
    pre = shadows.result
    models = [("pretrain", m, key, s) for m, (key, s) in enumerate(zip(pre.keys, w.seeds["pretrain"]))]
    return StudyOutput(
        title=f"TMI: pretraining membership through the fine-tuned model — digits {list(task.pretrain_classes)} → "
              f"{list(task.finetune_classes)}, {t.arch}, {t.shadows} shadows, fine-tuning {t.method}",
        evaluation=request, member_rate=w.keep.mean(axis=0), utility=utility,
        audit_arrays={"audit_x": w.pool.x[:, 0].astype(np.float32),
                      "audit_y": np.array(task.pretrain_classes)[w.pool.y].astype(np.int64)},
        models=models, seeds=w.seeds, sections=sections,
        notes=[f"Challenge points: the {t.pool} pretraining digits; each of {len(victims)} victims is attacked with the "
               f"other {t.shadows - 1} shadows; {t.augmentations} queries per point. Labels shown with exposed digits are "
               "the labels pretraining used (wrong for mislabelled digits).", verdict(ev)])


STUDY = Study("tmi", "TMI: membership of the PRETRAINING digits, from queries to the fine-tuned model "
                     "(metaclassifiers vs adapted LiRA and a threshold; sweeps over shadows, method, DP ε, queries)",
              TMIStudyConfig, run)
