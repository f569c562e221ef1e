"""``tmi``: membership in the PRETRAINING set, inferred from queries to the fine-tuned model (digits).

TMI (Abascal et al., PETS 2024) on bundled digits: ``tmi.shadows`` models are each pretrained (from
their own random init) on a random half of a pool of digits of the pretraining classes — the pool is
the challenge set, under its own keep-matrix — then fine-tuned with a new head on the other classes.
The adversary only queries a fine-tuned model, on A views of each pretraining digit (the original,
then noisy / shifted copies), and reads the downstream head's K logits. Each shadow takes a turn as
victim; TMI, adapted LiRA and a global threshold score it (:mod:`ftaudit.scenarios.tmi_sweeps`).

A share of the pool (``tmi.mislabel``) carries a random wrong label: outliers a model fits only by
memorizing them. On this easy task the correctly labelled digits are learned from their class and
barely leak; the report shows both groups.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ftaudit.config import DataConfig, FinetuneConfig, ModelConfig, RunConfig
from ftaudit.data.augment import shift_images
from ftaudit.data.digits import DigitsTask, Split, load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.dp.spec import dp_spec
from ftaudit.errors import UserError
from ftaudit.finetune.methods import MethodOptions, get_method
from ftaudit.metrics import mean_ci
from ftaudit.scenarios.base import Context, Scenario, Section, StudyOutput
from ftaudit.scenarios.tmi_sweeps import (DESCRIPTIONS, Outputs, Tuned, attack_cell, augmentation_sweep, dp_sweep, fmt,
                                          low_fprs, method_sweep, metric_cells, restrict, shadow_sweep, study_threads,
                                          summarize, verdict)
from ftaudit.scenarios.vision import QuerySet, fresh_state, query_models, train_group, with_new_head
from ftaudit.seeding import derive_seed
from ftaudit.signals.classifier import batched_logits
from ftaudit.store.cache import content_key
from ftaudit.train.engine import TrainResult

# Fields whose generic defaults TMI replaces by its own tmi.* ones: setting them would be ignored.
OWN = {"model.arch": "tmi.arch", "pretrain.epochs": "tmi.pretrain_epochs", "pretrain.augment": "tmi.pretrain_augment",
       "finetune.method": "tmi.method", "finetune.epochs": "tmi.finetune_epochs", "finetune.lr": "tmi.lrs",
       "data.split": "data.pretrain_classes / data.finetune_classes", "data.audit_size": "tmi.finetune_size"}


def check_config(cfg: RunConfig) -> None:
    """Refuse the generic keys TMI does not read, naming the tmi.* key that sets the same thing."""
    for dotted, own in OWN.items():
        section, key = dotted.split(".")
        if key in getattr(cfg, section).model_fields_set:
            raise UserError(dotted, "the tmi scenario does not read it", f"set {own} instead")


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


def build_world(cfg: RunConfig) -> World:
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
                 model_cfg=cfg.model.model_copy(update={"arch": t.arch}), seeds=seeds)


# ---------------------------------------------------------------------------- train and query


def pretrain_shadows(ctx: Context, cfg: RunConfig, w: World) -> tuple[nn.Module, TrainResult]:
    """Every shadow from its own random init on its half of the pool (cached by content)."""
    t = cfg.tmi
    k = w.task.n_pretrain_classes
    optim = cfg.pretrain.model_copy(update={"epochs": t.pretrain_epochs, "augment": t.pretrain_augment})
    inits = [fresh_state(w.model_cfg, k, s)[1] for s in w.seeds["pretrain"]]
    return train_group(ctx, "TMI shadow pretraining", w.model_cfg, k, get_method("full"), optim, w.pool, inits,
                       [np.flatnonzero(r) for r in w.keep], w.seeds["pretrain"])


def finetune_config(cfg: RunConfig, t, method: str, epsilon: float | None) -> FinetuneConfig:
    """The fine-tuning recipe: finetune.* with TMI's (``t``: tmi or tmi_text) method, epochs and
    per-method lr; ``epsilon`` (when given) sets the DP target on top of finetune.dp."""
    dp = cfg.finetune.dp if epsilon is None else cfg.finetune.dp.model_copy(update={"epsilon": epsilon})
    return cfg.finetune.model_copy(update={"method": method, "epochs": t.finetune_epochs, "lr": t.lrs[method], "dp": dp})


def fine_tuned_logits(ctx: Context, template: nn.Module, result: TrainResult, w: World) -> np.ndarray:
    """Downstream-head logits [M, P, A, K] of every fine-tuned shadow on the views; cached per model."""
    cache = ctx.store.signals
    keys = [content_key(model=k, queries=w.views_digest, signals="logits-v1") for k in result.keys]
    missing = [i for i, k in enumerate(keys) if not cache.has(k, ["logits"])]
    if missing:
        a, p = w.views.shape[:2]
        flat = w.views.reshape(a * p, *w.views.shape[2:])
        fresh = batched_logits(template, result.states(missing), flat).reshape(len(missing), a, p, -1)
        for j, i in enumerate(missing):
            cache.save(keys[i], {"logits": fresh[j].permute(1, 0, 2).contiguous().numpy()})
    return np.stack([cache.load(k, ["logits"])["logits"] for k in keys])


@dataclass
class Shadows:
    """The pretrained shadows and what fine-tuning them needs."""

    template: nn.Module
    result: TrainResult
    ft_inits: list


def tune(ctx: Context, cfg: RunConfig, w: World, shadows: Shadows, method: str, epsilon: float | None) -> Tuned:
    """Fine-tune every shadow with ``method`` (DP at ``epsilon``), query it, and measure its accuracy."""
    ft = finetune_config(cfg, cfg.tmi, method, epsilon)
    m = get_method(method)
    name = f"TMI fine-tune ({method}{'' if not ft.dp.enabled else f', DP ε={ft.dp.epsilon:g}'})"
    task = w.task
    dp = dp_spec(ft.dp, len(task.audit), ft.batch_size, ft.epochs, field="tmi.epsilons" if epsilon else "finetune.dp")
    with ctx.stage("finetune"):
        template, result = train_group(ctx, name, w.model_cfg, task.n_finetune_classes, m, ft, task.audit,
                                       shadows.ft_inits, [np.arange(len(task.audit))] * len(shadows.ft_inits),
                                       w.seeds["finetune"], MethodOptions.from_config(ft), dp)
    with ctx.stage("queries"):
        logits = fine_tuned_logits(ctx, template, result, w)
        correct = query_models(ctx, template, result.keys, result.states, QuerySet.of(task.population, 0))["correct"]
    acc = correct[:, :, 0].mean(axis=1)
    est = mean_ci(acc, level=cfg.metrics.ci_level, seed=cfg.seed)
    return Tuned(outputs=Outputs(logits), columns={"downstream test accuracy": fmt(est, True), **dp_columns(result.dp)},
                 utility=est, utility_label="downstream test accuracy")


def dp_columns(record: dict | None) -> dict:
    """The engine's DP record as table cells: what was calibrated and what the accountants give."""
    if record is None:
        return {}
    return {"noise σ": f"{record['noise_multiplier']:.3g}", "steps": record["steps"],
            "ε (dp_accounting)": f"{record['epsilon_reference']:.3g}", "δ": f"{record['delta']:.2g}",
            "clip": record["clip"]}


# ------------------------------------------------------------------------------------ report


def pretraining_utility(ctx: Context, cfg: RunConfig, w: World, shadows: Shadows) -> list[dict]:
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


def group_section(ctx: Context, cfg: RunConfig, w: World, pooled, attacks: dict) -> Section | None:
    """Metrics on the mislabelled and the correctly labelled challenge points separately."""
    if not w.mislabelled.any() or w.mislabelled.all():
        return None
    rows = []
    for label, idx in (("all", np.arange(len(w.mislabelled))), ("mislabelled", np.flatnonzero(w.mislabelled)),
                       ("correctly labelled", np.flatnonzero(~w.mislabelled))):
        group = attacks if label == "all" else summarize(ctx, cfg, restrict(pooled, idx))
        rows.append({"challenge points": f"{label} ({len(idx)})", **metric_cells(group, low_fprs(cfg))})
    return Section("Mislabelled vs correctly labelled pretraining digits", [
        f"{int(w.mislabelled.sum())} of the {len(w.mislabelled)} pool digits were pretrained with a random wrong "
        "label; a model fits them only by memorizing them. The same pooled scores, split by group (each with its "
        "own bootstrap CI)."], rows)


def run(cfg: RunConfig, ctx: Context) -> StudyOutput:
    check_config(cfg)
    with study_threads(cfg):
        return study(cfg, ctx)


def study(cfg: RunConfig, ctx: Context) -> StudyOutput:
    t = cfg.tmi
    with ctx.stage("data"):
        w = build_world(cfg)
    with ctx.stage("pretrain"):
        pre_template, pre = pretrain_shadows(ctx, cfg, w)
        k = w.task.n_finetune_classes
        ft_inits = [with_new_head(s, w.model_cfg, k, seed) for s, seed in zip(pre.states(), w.seeds["head"])]
    shadows = Shadows(pre_template, pre, ft_inits)
    headline = tune(ctx, cfg, w, shadows, t.method, None)
    victims = list(range(t.victims or t.shadows))
    with ctx.stage("attacks"):
        pooled = attack_cell(ctx, cfg, t, headline.outputs, w.keep, victims)
        attacks = summarize(ctx, cfg, pooled)
    sections = []
    with ctx.stage("sweeps"):
        group = group_section(ctx, cfg, w, pooled, attacks)
        if group:
            sections.append(group)
        retune = lambda method, eps: tune(ctx, cfg, w, shadows, method, eps)  # noqa: E731
        if t.shadow_counts:
            sections.append(shadow_sweep(ctx, cfg, t, headline.outputs, w.keep))
        if t.methods:
            sections.append(method_sweep(ctx, cfg, t, w.keep, retune))
        if t.epsilons:
            sections.append(dp_sweep(ctx, cfg, t, w.keep, retune, headline.outputs))
        if t.augmentation_counts:
            sections.append(augmentation_sweep(ctx, cfg, t, headline.outputs, w.keep))
    task = w.task
    utility = pretraining_utility(ctx, cfg, w, shadows) + [
        {**headline.utility, "name": f"downstream test accuracy ({t.method})",
         "note": f"mean over {t.shadows} fine-tuned shadows, classes {list(task.finetune_classes)}, "
                 f"{len(task.population)} held-out digits (CI over shadows)"}]
    models = [("pretrain", m, key, s) for m, (key, s) in enumerate(zip(pre.keys, w.seeds["pretrain"]))]
    return StudyOutput(
        title=f"TMI: pretraining membership through the fine-tuned model — digits {list(task.pretrain_classes)} → "
              f"{list(task.finetune_classes)}, {t.arch}, {t.shadows} shadows, fine-tuning {t.method}",
        signals=None, references=t.shadows - 1, utility=utility,
        audit_arrays={"audit_x": w.pool.x[:, 0].astype(np.float32),
                      "audit_y": np.array(task.pretrain_classes)[w.pool.y].astype(np.int64)},
        models=models, seeds=w.seeds, sections=sections, pooled=pooled, descriptions=DESCRIPTIONS,
        member_rate=w.keep.mean(axis=0),
        notes=[f"Challenge points: the {t.pool} pretraining digits; each of {len(victims)} victims is attacked with the "
               f"other {t.shadows - 1} shadows; {t.augmentations} queries per point. Labels shown with exposed digits are "
               "the labels pretraining used (wrong for mislabelled digits).", verdict(attacks)])


SCENARIO = Scenario("tmi", "TMI: membership of the PRETRAINING digits, from queries to the fine-tuned model "
                           "(metaclassifiers vs adapted LiRA and a threshold; sweeps over shadows, method, DP ε, queries)",
                    run)
