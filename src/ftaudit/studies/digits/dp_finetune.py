"""``dp-finetune``: DP fine-tuning — which layers to train, the privacy–utility frontier, MIA under
DP, and an empirical audit of the accounted ε.

1. **Frontier.** For every ε of ``sweep.epsilons`` and every layer subset (fine-tuning method) of
   ``sweep.subsets``, a small learning-rate × clipping search (``sweep.lrs`` × ``sweep.clips``) trains one DP model per configuration
   (all ε and clipping norms of one subset and learning rate train together in one vectorized group).
   Each cell keeps the configuration with the best *validation* accuracy and reports its *test*
   accuracy (disjoint halves of the held-out population).
2. **The search costs privacy.** Releasing the best of k runs on the same data is a k-fold
   composition: the report gives each cell's ε for one run, for its k-run search, and for the whole
   grid at that ε — all from the accountant (σ, q and k·steps), not from a rule of thumb.
3. **MIA under DP.** At every ε an ensemble of ``finetune.method`` models (with that cell's
   chosen learning rate and clipping) is attacked leave-one-out, like ``finetune-mia``.
4. **Empirical ε.** The attack's scores on the mislabelled canaries (IN vs OUT over the ensemble)
   give a Clopper–Pearson lower bound on ε; the one-run audit (Steinke, Nasr & Jagielski 2023) uses
   one model and its inclusion coins over the whole audit pool. A lower bound above the accounted ε
   means a bug in training or accounting, and the run stops.
"""
from __future__ import annotations

import math

import numpy as np

from ftaudit.empirical import epsilon_from_scores, one_run_epsilon
from ftaudit.dp.accounting import accounted_epsilon
from ftaudit.dp.spec import DPSpec, dp_spec
from ftaudit.evaluation import Evaluation, evaluate_signals
from ftaudit.finetune.methods import MethodOptions, get_method
from ftaudit.metrics import mean_ci
from ftaudit.metrics.paired import mean_difference
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.seeding import derive_seed
from ftaudit.studies.base import Context, Study, StudyOutput
from ftaudit.studies.digits.common import Cell, DigitsStudy, finetune_cell, setup
from ftaudit.studies.digits.config import DPFinetuneConfig
from ftaudit.studies.digits.finetune_mia import audit_arrays, headline, study_title, study_utility
from ftaudit.studies.vision import query_models, train_group

INF = math.inf


class EpsilonViolation(RuntimeError):
    """An empirical lower bound exceeded the accounted ε: training or accounting is wrong."""


def _eps_label(eps: float) -> str:
    return "∞" if eps == INF else f"{eps:g}"


def _plot_x(eps: float, finite: list[float]) -> float:
    """ε on a log axis; ∞ is drawn one factor of 2 beyond the largest finite ε (the caption says so)."""
    return eps if eps != INF else 2 * max(finite, default=1.0)


def search_frontier(cfg: DPFinetuneConfig, ctx: Context, study: DigitsStudy) -> list[dict]:
    """One DP model per (subset, lr, ε, clip) on the target's keep-row; accuracies on val/test halves."""
    sweep, task, ft_cfg = cfg.sweep, study.task, cfg.finetune
    rows = study.rows[0]
    base = dp_spec(ft_cfg.dp.at(1.0, 1.0), len(rows), ft_cfg.batch_size, ft_cfg.epochs, field="finetune.dp")
    grid = [(eps, clip) for eps in sweep.epsilons for clip in sweep.clips]
    specs = [DPSpec(epsilon=eps, delta=base.delta, clip=clip, accountant=base.accountant, sample_rate=base.sample_rate,
                    epochs=ft_cfg.epochs) for eps, clip in grid]
    seeds = [derive_seed(cfg.seed, "dp-search", j) for j in range(len(grid))]  # common random numbers across cells
    n_pop = len(task.population)
    val, test = np.arange(0, n_pop, 2), np.arange(1, n_pop, 2)
    out = []
    for subset in sweep.subsets:
        method = get_method(subset)
        for lr in sweep.lrs:
            ft = ft_cfg.recipe(lr, float("inf"), 1.0, method=subset)
            with ctx.stage("dp search"):
                template, res = train_group(ctx, f"DP search {subset} lr={lr:g}", cfg.model, task.n_finetune_classes, method,
                                            ft, task.audit, [study.ft_init] * len(grid), [rows] * len(grid), seeds,
                                            run_seed=cfg.seed, opts=MethodOptions.from_config(ft), dp=specs)
                correct = query_models(ctx, template, res.keys, res.states, study.pop_q)["correct"][:, :, 0]
            for j, ((eps, clip), record) in enumerate(zip(grid, res.dp_jobs)):
                out.append({"ε": eps, "subset": subset, "lr": lr, "clip": clip, "accounted ε": record["epsilon"],
                            "σ": record["noise_multiplier"], "steps": record["steps"], "q": record["sample_rate"],
                            "δ": record["delta"], "n test": len(test), "val accuracy": float(correct[j, val].mean()),
                            "test accuracy": float(correct[j, test].mean()), "test correct": correct[j, test]})
    return out


def choose(search: list[dict], eps: float, subset: str) -> dict:
    """The configuration with the best validation accuracy (ties: the first tried)."""
    cell = [r for r in search if r["ε"] == eps and r["subset"] == subset]
    return max(cell, key=lambda r: r["val accuracy"])


def search_cost(record: dict, k: int) -> float:
    """ε of releasing the best of k runs with these settings: their k-fold composition."""
    if record["σ"] == 0:
        return INF
    return accounted_epsilon(record["σ"], record["q"], k * record["steps"], record["δ"], record.get("accountant", "rdp"))


def claim_check(eps: float, cells: dict[str, dict], winner: str, paired: dict | None = None) -> str:
    """Is the best subset at small ε an intermediate one (the study's claim), and can this data tell?
    With ``paired`` (:func:`intermediate_difference`) the paired CI decides; otherwise the winner's
    test-accuracy lead over the best of "full" and "head" is compared with the 95 % half-width of one
    test accuracy (normal approximation)."""
    acc = {s: c["test accuracy"] for s, c in cells.items()}
    if paired is not None:
        lo, hi = paired["difference lo"], paired["difference hi"]
        verdict = ("as the study found, an intermediate subset wins" if lo > 0 else
                   "the study's claim (an intermediate subset wins) does not hold here" if hi < 0 else
                   "the study's claim is not resolved at this data size")
        return (f"At the smallest ε ({eps:g}) validation picks {winner}; the best intermediate subset "
                f"({paired['intermediate subset']}) minus the better of full and head ({paired['full or head']}): "
                f"{paired['difference']:+.1%} [{lo:+.1%}, {hi:+.1%}] test accuracy, paired over the test images: {verdict}.")
    n = next(iter(cells.values()))["n test"]
    half = 1.96 * math.sqrt(max(acc[winner] * (1 - acc[winner]), 1e-12) / n)
    spread = f"test accuracies of the subsets span {min(acc.values()):.1%}–{max(acc.values()):.1%} (±{half:.1%} for one, n = {n})"
    rivals = [acc[s] for s in ("full", "head") if s in acc and s != winner]
    if winner in ("full", "head"):
        lead = acc[winner] - max((a for s, a in acc.items() if s not in ("full", "head")), default=-1.0)
        verdict = ("the study's claim (an intermediate subset wins) does not hold here" if lead > half
                   else "no subset is reliably better at this data size, so the study's claim can neither be confirmed nor refuted")
    else:
        lead = acc[winner] - max(rivals, default=-1.0)
        verdict = ("as the study found, an intermediate subset wins" if lead > half
                   else "an intermediate subset wins on validation, but not by more than the test noise: "
                        "the study's claim is not resolved at this data size")
    return f"At the smallest ε ({eps:g}) validation picks {winner}; {spread}: {verdict}."


INTERMEDIATE_TITLE = "The study's claim at the smallest ε: an intermediate subset against full and head (paired)"


def intermediate_difference(cfg: DPFinetuneConfig, eps: float, cells: dict[str, dict]) -> dict | None:
    """Test accuracy of the best intermediate subset minus the best of "full" and "head" (each picked
    on validation accuracy, so nothing is chosen on the test half), with a paired bootstrap CI over the
    test images (both models scored on the same resampled images). None without both kinds."""
    inner = [s for s in cells if s not in ("full", "head")]
    ends = [s for s in cells if s in ("full", "head")]
    if not inner or not ends:
        return None
    a = max(inner, key=lambda s: cells[s]["val accuracy"])
    b = max(ends, key=lambda s: cells[s]["val accuracy"])
    d = mean_difference(cells[a]["test correct"], cells[b]["test correct"], cfg.metrics.bootstrap, cfg.metrics.ci_level,
                        cfg.seed)
    return {"ε target": _eps_label(eps), "intermediate subset": a, "its test accuracy": cells[a]["test accuracy"],
            "full or head": b, "their test accuracy": cells[b]["test accuracy"], "difference": d["value"],
            "difference lo": d["lo"], "difference hi": d["hi"], "n test": cells[a]["n test"]}


def frontier_sections(cfg: DPFinetuneConfig, search: list[dict]) -> tuple[list[ReportSection], list[str], dict]:
    sweep = cfg.sweep
    k_cell, k_all = len(sweep.lrs) * len(sweep.clips), len(sweep.lrs) * len(sweep.clips) * len(sweep.subsets)
    finite = [e for e in sweep.epsilons if e != INF]
    for r in search:
        r["accountant"] = cfg.finetune.dp.accountant
    chosen = {(eps, s): choose(search, eps, s) for eps in sweep.epsilons for s in sweep.subsets}
    table, winners = [], {}
    for eps in sweep.epsilons:
        best = max(sweep.subsets, key=lambda s: chosen[(eps, s)]["val accuracy"])
        winners[eps] = best
        for s in sweep.subsets:
            c = chosen[(eps, s)]
            table.append({"ε target": _eps_label(eps), "subset": s, "lr": c["lr"], "clip": c["clip"],
                          "val accuracy": c["val accuracy"], "test accuracy": c["test accuracy"],
                          "ε, one run": c["accounted ε"], f"ε, search of {k_cell}": search_cost(c, k_cell),
                          f"ε, grid of {k_all}": search_cost(c, k_all), "σ": c["σ"], "winner": "★" if s == best else ""})
    series = [Series(s, [_plot_x(e, finite) for e in sweep.epsilons], [chosen[(e, s)]["test accuracy"] for e in sweep.epsilons])
              for s in sweep.subsets]
    fig = Figure("Privacy–utility frontier by layer subset", "ε (log; rightmost point: no noise, ε = ∞)", "test accuracy",
                 series, xlog=True, caption=f"Each point: the best of {k_cell} (learning rate × clipping) DP runs by "
                                            "validation accuracy, reported on a disjoint test half.")
    smallest = min(finite) if finite else None
    lines = []
    row = intermediate_difference(cfg, smallest, {s: chosen[(smallest, s)] for s in sweep.subsets}) if smallest else None
    if smallest is not None:
        lines.append(claim_check(smallest, {s: chosen[(smallest, s)] for s in sweep.subsets}, winners[smallest], row))
    lines.append("Winners by ε: " + ", ".join(f"ε={_eps_label(e)}: {winners[e]}" for e in sweep.epsilons) + ".")
    cost = ReportSection("The hyperparameter search costs privacy", text=[
        f"Every cell tried {k_cell} configurations on the same private data and kept the best by validation accuracy; "
        f"the whole grid tried {k_all} per ε. Releasing the chosen model is (at most) the composition of all runs it was "
        f"chosen from, so the table gives ε for one run, for the cell's search and for the whole grid — each computed by "
        f"the {cfg.finetune.dp.accountant.upper()} accountant over k × steps steps at the same noise. The frontier's ε "
        "axis is the per-run ε, as in the study; read the search columns for what the selection really costs. (Validation "
        "images are held-out, not private, so only the training runs count.)"])
    frontier = ReportSection("Privacy–utility frontier: which layers to fine-tune under DP", text=lines, table=table, figures=[fig])
    out = [frontier, cost]
    if row is not None:
        d = "not resolved" if row["difference lo"] <= 0 <= row["difference hi"] else \
            "the intermediate subset is better" if row["difference lo"] > 0 else "full or head is better"
        out.insert(1, ReportSection(INTERMEDIATE_TITLE, text=[
            f"At ε = {row['ε target']}: the best intermediate subset by validation ({row['intermediate subset']}) against "
            f"the better of full and head by validation ({row['full or head']}), test accuracy difference "
            f"{row['difference']:+.1%} [{row['difference lo']:+.1%}, {row['difference hi']:+.1%}] ({cfg.metrics.ci_level:.0%} "
            f"paired bootstrap over the {row['n test']} test images): {d}."], table=[row]))
    return out, lines, chosen


def audit_cell(cfg: DPFinetuneConfig, study: DigitsStudy, cell: Cell, ev: Evaluation, eps: float) -> dict:
    """Empirical ε lower bounds for one DP ensemble, checked against its accounted ε."""
    sweep, pooled = cfg.sweep, ev.pooled
    scores = pooled.scores[sweep.attack]
    record = cell.dp or {}
    delta = record.get("delta", 1e-5)
    on = np.isin(pooled.example, study.canaries) if len(study.canaries) else np.ones_like(pooled.labels)
    canary = epsilon_from_scores(scores[on & pooled.labels], scores[on & ~pooled.labels], delta,
                                 level=cfg.metrics.ci_level, select="split", seed=cfg.seed)
    target0 = pooled.target == pooled.target[0]
    one = one_run_epsilon(scores[target0], pooled.labels[target0], delta, level=cfg.metrics.ci_level)
    accounted = record.get("epsilon", INF)
    for name, bound in (("canary", canary.epsilon_lb), ("one-run", one.epsilon_lb)):
        if bound > accounted * (1 + 1e-9):
            raise EpsilonViolation(f"{name} audit at ε target {eps:g}: empirical lower bound {bound:.3f} exceeds the "
                                   f"accounted ε {accounted:.3f} — a bug in training or accounting")
    return {"ε target": _eps_label(eps), "accounted ε": accounted,
            "canary lower bound": canary.epsilon_lb, "canary TPR": canary.tpr, "canary FPR": canary.fpr,
            "canary trials (in/out)": f"{int(canary.counts.tp + canary.counts.fn)}/{int(canary.counts.fp + canary.counts.tn)}",
            "one-run lower bound": one.epsilon_lb, "one-run guesses (correct/made)": f"{one.v}/{one.r}"}


def run(cfg: DPFinetuneConfig, ctx: Context) -> StudyOutput:
    sweep, ft_cfg = cfg.sweep, cfg.finetune
    n_models = ft_cfg.references + 1 + (ft_cfg.references + 1) % 2
    study = setup(cfg, ctx, n_models, ft_cfg.batch_size, canaries=sweep.canaries)
    search = search_frontier(cfg, ctx, study)
    sections, lines, chosen = frontier_sections(cfg, search)

    finite = [e for e in sweep.epsilons if e != INF]
    mia_rows, audit_rows, cells = [], [], {}
    for eps in sweep.epsilons:
        pick = chosen.get((eps, ft_cfg.method)) or {"lr": sweep.lrs[0], "clip": sweep.clips[0]}
        ft = ft_cfg.recipe(pick["lr"], eps, pick["clip"])
        cell = finetune_cell(ctx, study, ft, name=f"{ft_cfg.method} at ε={_eps_label(eps)}")
        with ctx.stage("attacks"):
            ev = evaluate_signals(ctx.store.metrics, cell.signals, cfg.attack.names, cfg.attack.params, ft_cfg.references,
                                  cfg.metrics, cfg.seed)
        att = ev.by_name(sweep.attack)
        tpr = att.tpr_at(0.01)
        acc = mean_ci(cell.test_acc, seed=cfg.seed)
        mia_rows.append({"ε target": _eps_label(eps), "accounted ε": (cell.dp or {}).get("epsilon", INF), "lr": pick["lr"],
                         "clip": pick["clip"], "test accuracy": acc["value"], "AUC": att.auc.value,
                         "AUC lo": att.auc.lo, "AUC hi": att.auc.hi, "TPR@1%FPR": tpr.value,
                         "TPR lo": tpr.lo, "TPR hi": tpr.hi, "x": _plot_x(eps, finite)})
        audit_rows.append(audit_cell(cfg, study, cell, ev, eps))
        cells[eps] = cell

    xs = [r.pop("x") for r in mia_rows]
    mia_fig = Figure(f"Membership inference on DP fine-tunes ({sweep.attack})", "ε (log; rightmost: ε = ∞)", "attack success",
                     [Series("AUC", xs, [r["AUC"] for r in mia_rows], [r["AUC lo"] for r in mia_rows], [r["AUC hi"] for r in mia_rows]),
                      Series("TPR at 1 % FPR", xs, [r["TPR@1%FPR"] for r in mia_rows], [r["TPR lo"] for r in mia_rows],
                             [r["TPR hi"] for r in mia_rows]),
                      Series("chance (AUC)", xs, [0.5] * len(xs)), Series("chance (TPR at 1 % FPR)", xs, [0.01] * len(xs))],
                     xlog=True, caption="Bands: 95 % bootstrap CIs over audit examples.")
    sections.append(ReportSection("Membership inference vs ε", text=[
        f"At each ε, {n_models} models ({ft_cfg.method}, that cell's chosen learning rate and clipping) are fine-tuned "
        f"on halves of the audit pool and attacked leave-one-out."], table=mia_rows, figures=[mia_fig]))
    sections.append(ReportSection("Empirical ε: auditing the DP claim", text=[
        f"Canary audit: {len(study.canaries)} mislabelled audit examples, IN for about half of the models; "
        f"{sweep.attack}'s scores on them, a threshold chosen on one half of the trials and a Clopper–Pearson bound at "
        f"{cfg.metrics.ci_level:.0%} on the other (trials pooled over models and canaries, so the interval is approximate). "
        "One-run audit: one model and its inclusion coins over the audit pool (its keep-row is an exact half, not "
        "independent coins, a mild departure from the paper's setting). A lower bound above the accounted ε would stop "
        "the run as a bug; a non-private model (ε = ∞) shows how large the bound gets without noise."], table=audit_rows))

    head_eps = sweep.headline
    cell = cells[head_eps]
    seeds = study.seeds
    models = [("pretrain", 0, study.pre.keys[0], seeds["pretrain"])]
    models += [(f"finetune:{c.name}", m, k, s) for c in cells.values() for m, (k, s) in enumerate(zip(c.result.keys, seeds["models"]))]
    utility = study_utility(cfg, study, cell.test_acc, cell.train_acc)
    utility[0]["name"] += f" ({cell.name})"
    notes = [f"Attack table, ROC and exposed examples: the ensemble at ε = {_eps_label(head_eps)}; every ε is in the sections below."]
    notes += lines
    return StudyOutput(title=study_title(cfg, study, "DP fine-tuning: layers, privacy–utility frontier, MIA and ε audit"),
                       **headline(cfg, cell, ft_cfg.references), utility=utility, audit_arrays=audit_arrays(study),
                       models=models, seeds=seeds, sections=sections, notes=notes)


STUDY = Study("dp-finetune", "DP fine-tuning: layer subsets × ε frontier with a priced search, MIA vs ε, empirical ε audit",
              DPFinetuneConfig, run)
