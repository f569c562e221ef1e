"""The stealing study's report sections: setup, victims, identification (accuracy and detection),
weight estimation and pruning. Every "A beats B" here rests on a paired bootstrap CI of the
difference that excludes zero; otherwise the table says "not resolved"."""
from __future__ import annotations

import numpy as np

from ftaudit.config import MetricsConfig
from ftaudit.evaluation import HEADLINE_FPR, Evaluation
from ftaudit.metrics import mean_ci
from ftaudit.metrics.paired import cluster_weights
from ftaudit.report.blocks import Figure, ReportSection, Series
from ftaudit.studies.stealing.candidates import Base, Labelled
from ftaudit.studies.stealing.config import StealingStudyConfig
from ftaudit.studies.stealing.distill import INITS, Estimates
from ftaudit.studies.stealing.identification import Identification
from ftaudit.studies.stealing.pruning import SCORES, relative_distance
from ftaudit.studies.stealing.victims import Victim, encoder_names
from ftaudit.wording import plural

LATENCY_CHANNEL = ("an idealised same-host channel: the attacker times its own calls of query() (wall clock around "
                   "the public call), in the victim's process on the same machine, with no network or queue between "
                   "them, and profiles its copies of the candidate architectures on that machine too")


def fmt(est: dict, pct: bool = True) -> str:
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(est['value'])} [{f(est['lo'])}, {f(est['hi'])}]"


def paired_agreement(a: np.ndarray, b: np.ndarray, m: MetricsConfig, seed: int) -> tuple[float, float, float]:
    """mean(a) − mean(b) over the held-out blocks with a paired bootstrap CI (both students scored on
    the same resampled blocks in every replicate)."""
    w = cluster_weights(np.arange(len(a)), m.bootstrap, seed)
    d = w @ (a.astype(np.float64) - b.astype(np.float64)) / w.sum(1)
    lo, hi = np.quantile(d[1:], [(1 - m.ci_level) / 2, (1 + m.ci_level) / 2])
    return float(d[0]), float(lo), float(hi)


def paired_text(a: str, b: str, diff: tuple[float, float, float]) -> str:
    value, lo, hi = diff
    verdict = f"{a} beats {b}" if lo > 0 else f"{b} beats {a}" if hi < 0 else "not resolved"
    return f"{value * 100:+.1f} pts [{lo * 100:+.1f}, {hi * 100:+.1f}]: {verdict}"


def setup_section(cfg: StealingStudyConfig, cands: dict[str, Base], vics: list[Victim], train_set: Labelled,
                  test_set: Labelled) -> ReportSection:
    st = cfg.stealing
    rows = [{"candidate": spec, "architecture": b.candidate.arch, "pretraining corpus": b.candidate.corpus,
             "seed": b.candidate.seed, "parameters": sum(v.numel() for v in b.state.values()),
             "member rate (victims fine-tuned from it)": f"{np.mean([v.base == spec for v in vics]):.1%}"}
            for spec, b in cands.items()]
    text = [f"{len(cands)} candidate bases, MLM-pretrained here ({st.pretrain_blocks} blocks, {plural(st.pretrain_epochs, 'epoch')}) and "
            f"stored as HF directories under the store's cache/candidates. {len(vics)} victims: every candidate × "
            f"{', '.join(st.victim_methods)} × {st.victim_seeds} seeds, fine-tuned {plural(st.victim_epochs, 'epoch')} (Adam; learning rate "
            f"{', '.join(f'{m} {st.victim_lrs[m]:g}' for m in st.victim_methods)}) "
            f"on {len(train_set.y)} blocks of the {st.classes} longest {st.task_corpus} articles (task: which article); "
            f"{len(test_set.y)} held-out blocks measure accuracy and agreement. The API returns "
            f"{'the top-1 label' if st.top1 else 'class probabilities'}; queries are {st.queries} "
            f"({st.query_corpus if st.queries == 'natural' else 'uniform token ids'}). A candidate's member rate is the "
            "share of victims fine-tuned from it (the share of its (victim, candidate) pairs that are members)."]
    return ReportSection("Setup", text, rows)


def victims_section(cfg: StealingStudyConfig, cands: dict[str, Base], vics: list[Victim],
                    accuracy: list[float]) -> ReportSection:
    """What the victims learnt and how far fine-tuning moved them from their base, per method."""
    m = cfg.metrics
    rows = []
    for method in cfg.stealing.victim_methods:
        group = [i for i, v in enumerate(vics) if v.method == method]
        names = encoder_names(vics[group[0]].state)
        moved = [relative_distance(vics[i].state, cands[vics[i].base].state, names) for i in group]
        rows.append({"method": method, "victims": len(group),
                     "task accuracy": fmt(mean_ci(np.array([accuracy[i] for i in group]), m.ci_level, m.bootstrap, cfg.seed)),
                     "encoder moved ‖θ_victim − θ_base‖ / ‖θ_base‖": f"{np.mean(moved):.4f} (max {np.max(moved):.4f})"})
    text = [f"Task accuracy of the victims on the held-out blocks, mean over victims with a {m.ci_level:.0%} bootstrap CI "
            f"(chance {1 / cfg.stealing.classes:.0%}), and the relative distance of each fine-tuned encoder (LoRA merged) "
            "from the base it started at."]
    return ReportSection("Victims", text, rows)


def identification_section(cfg: StealingStudyConfig, cands: dict[str, Base], vics: list[Victim],
                           ident: Identification) -> ReportSection:
    st, m = cfg.stealing, cfg.metrics
    arch_of = {spec: b.candidate.arch for spec, b in cands.items()}
    ci = lambda hits: mean_ci(np.array(hits, dtype=np.float64), m.ci_level, m.bootstrap, cfg.seed)  # noqa: E731
    rows = [{"step": "architecture from latency", "queries": "profile", "victims": "all",
             "accuracy": fmt(ci([ident.arch_found[v.index] == arch_of[v.base] for v in vics]))}]
    for n in st.id_budgets:
        for method in [*st.victim_methods, "all"]:
            group = [v for v in vics if method in ("all", v.method)]
            rows.append({"step": "base from outputs (probe)", "queries": n, "victims": f"{method} ({len(group)})",
                         "accuracy": fmt(ci([ident.probe[(v.index, n)][0] == v.base for v in group]))})
        combined = [max((s for s in ident.probe[(v.index, n)][1] if arch_of[s] == ident.arch_found[v.index]),
                        key=ident.probe[(v.index, n)][1].get, default=None) == v.base for v in vics]
        rows.append({"step": "latency, then probe among that architecture", "queries": n, "victims": f"all ({len(vics)})",
                     "accuracy": fmt(ci(combined))})
    grid = len(st.latency_lengths) * sum(b * (st.latency_repeats + 1) for b in st.latency_batches)
    text = [f"Accuracy of identification over {len(vics)} victims ({m.ci_level:.0%} bootstrap CI over victims). A latency "
            f"profile costs {grid} query rows (median of {st.latency_repeats} timed calls per (batch, length) cell, after a "
            f"warm-up); it is compared with the profiles of the candidates' architectures. Latency here is {LATENCY_CHANNEL}."]
    return ReportSection("Base identification", text, rows)


def detection_section(ev: Evaluation, n_victims: int, n_cands: int, budget: int) -> ReportSection:
    """Identification as detection over the (victim, candidate) pairs, with paired comparisons."""
    level = f"{ev.metrics.ci_level:.0%}"
    rows = [{"attack": a.name, "AUC": f"{a.auc.value:.3f} [{a.auc.lo:.3f}, {a.auc.hi:.3f}]",
             f"TPR at {HEADLINE_FPR:.0%} FPR": f"{a.tpr_at().value:.1%} [{a.tpr_at().lo:.1%}, {a.tpr_at().hi:.1%}]",
             "paired against": "", "AUC difference": "", "verdict (AUC)": ""} for a in ev.attacks]
    names = [a.name for a in ev.attacks]
    for a, b in [("probe-fit", "latency+probe"), ("latency", "latency+probe"), ("probe-fit", "latency")]:
        if a in names and b in names:
            d = ev.compare(a, b)
            rows.append({"attack": b, "AUC": "", f"TPR at {HEADLINE_FPR:.0%} FPR": "", "paired against": a,
                         "AUC difference": f"{d.auc_diff:+.3f} [{d.auc_diff_lo:+.3f}, {d.auc_diff_hi:+.3f}]",
                         "verdict (AUC)": d.verdict("auc")})
    text = [f"Identification as a detection task over the {n_victims * n_cands} (victim, candidate) pairs, a member when "
            f"the candidate is the victim's base; probe fits at {budget} queries. {level} CIs resample the {n_victims} "
            f"victims (cluster bootstrap: every victim's {n_cands} rows together), and the paired rows resample them for "
            "both attacks at once; a verdict is given only where the paired CI of the AUC difference excludes zero."]
    return ReportSection("Base identification as detection", text, rows)


def estimation_section(cfg: StealingStudyConfig, est: Estimates) -> ReportSection:
    st, m = cfg.stealing, cfg.metrics
    rows, figures = [], []
    for v in est.chosen:
        series_a, series_d = [], []
        for init_name in INITS:
            got = [(b, est.students[(v.index, init_name, b)]) for b in st.budgets if (v.index, init_name, b) in est.students]
            if not got:
                continue
            xs = [float(b) for b, _ in got]
            series_a.append(Series(init_name, xs, [r.agreement["value"] for _, r in got],
                                   [r.agreement["lo"] for _, r in got], [r.agreement["hi"] for _, r in got]))
            series_d.append(Series(init_name, xs, [r.distance for _, r in got]))
            for b, r in got:
                ident = est.students[(v.index, "identified base", b)]
                vs = "" if init_name == "identified base" else paired_text(
                    "identified base", init_name, paired_agreement(ident.agree, r.agree, m, cfg.seed))
                rows.append({"victim": f"{v.index} ({v.method})", "student starts from": init_name, "queries": b,
                             "agreement": fmt(r.agreement), "accuracy": f"{r.accuracy:.1%}",
                             "identified base − this start (paired)": vs,
                             "distance to victim": f"{r.distance:.4f}", "base's distance": f"{est.base_dist[v.index]:.4f}",
                             "constant guess agrees": f"{est.majority[v.index]:.1%}"})
        series_d.append(Series("the base itself", [float(st.budgets[0]), float(st.budgets[-1])], [est.base_dist[v.index]] * 2))
        figures.append(Figure(f"Agreement with the victim ({v.method}) vs queries", "queries (log scale)",
                              "agreement on held-out blocks", series_a, xlog=True,
                              caption=f"Victim {v.index}: fine-tuned with {v.method} from {v.base}; {m.ci_level:.0%} "
                                      "bootstrap CI over the held-out blocks."))
        figures.append(Figure(f"Distance to the victim's encoder ({v.method}) vs queries", "queries (log scale)",
                              "‖θ − θ_victim‖ / ‖θ_victim‖", series_d, xlog=True))
    text = [f"Students are distilled from the victim's {'top-1 labels' if st.top1 else 'probabilities'} on "
            f"{st.queries} queries ({st.distill_steps} steps of batch {st.batch_size}, Adam {st.distill_lr:g}, all weights "
            "trained, a fresh head). They start from the identified base (latency, then the probe), from a wrong base of the "
            "same architecture, or from random init. Agreement: share of held-out task blocks on which the student's "
            "label equals the victim's ('constant guess agrees': the share a student always answering the victim's most "
            "frequent label would reach); distance: relative L2 distance of the encoder weights to the victim's (LoRA merged). "
            f"'identified base − this start': the agreement difference with a {m.ci_level:.0%} paired bootstrap CI over the "
            "held-out blocks (one victim: it does not cover victim-to-victim variation); 'beats' only where it excludes zero."]
    return ReportSection("Weight estimation vs query budget", text, rows, figures)


def pruning_section(cfg: StealingStudyConfig, est: Estimates) -> ReportSection:
    st, m = cfg.stealing, cfg.metrics
    rows, curves = [], {}
    for pr in est.pruned:
        v, s = pr.victim, pr.student
        full = est.students[(v.index, "identified base", max(st.budgets))]
        name = "head only" if pr.share == 0 else f"top {pr.share:.0%}"
        vs = "" if pr.share == 1 else paired_text(name, "all trained", paired_agreement(s.agree, full.agree, m, cfg.seed))
        curves.setdefault(v.method, []).append((pr.share, s.agreement))
        rows.append({"victim": f"{v.index} ({v.method})", "trained share p": f"{pr.share:.0%}",
                     "agreement": fmt(s.agreement), "accuracy": f"{s.accuracy:.1%}",
                     "this − all trained (paired)": vs, "distance to victim": f"{s.distance:.4f}",
                     **{f"changed elements found ({score})": f"{pr.found[score]:.1%}" if score in pr.found else ""
                        for score in SCORES}})
    series = [Series(method, [max(p, 1e-3) for p, _ in pts], [a["value"] for _, a in pts],
                     [a["lo"] for _, a in pts], [a["hi"] for _, a in pts]) for method, pts in curves.items()]
    figure = Figure("Agreement vs share of encoder weights trained", "trained share p (log scale; 0 plotted at 0.1 %)",
                    "agreement on held-out blocks", series, xlog=True)
    text = [f"At {max(st.budgets)} queries, from the identified base: the head is distilled first (p = 0), the encoder "
            f"elements are scored there from the gradients of the distillation loss over batches of {st.batch_size} queries "
            f"(trained by {st.prune_score}: snr = |Σ g| / √Σ g², fisher = Σ g²), and only the top p are trained (the rest "
            "stay at the base). 'Changed elements found': share of the victim's p most-changed elements "
            "(|θ_victim − θ_base|, which the attacker never sees) that each score's top p holds; chance is p. "
            "'this − all trained': agreement difference to the student that trains every element, paired over the "
            "held-out blocks."]
    return ReportSection("Weight-extraction pruning", text, rows, [figure])
