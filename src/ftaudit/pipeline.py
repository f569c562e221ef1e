"""The one pipeline: study output → evaluator (attacks) → metrics → store → report.

Data flows one way. The study produces signals and names the evaluator that scores them; attacks
turn signals into scores (pure functions); metrics turn scores into rates with bootstrap CIs; the
store writes the run directory and its rows; the report draws what was stored.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import yaml

from ftaudit import progress
from ftaudit.attacks.registry import resolve_request
from ftaudit.budget import check_budget
from ftaudit.config import StudyConfig
from ftaudit.evaluation import HEADLINE_FPR, Evaluation, evaluate
from ftaudit.metrics import roc_curve
from ftaudit.metrics.roc import summarize
from ftaudit.pipeline_seeds import seed_spread_section
from ftaudit.report import write_report
from ftaudit.report.records import RECORDS_NAME, pooled_records
from ftaudit.report.resolution import MIN_FALSE_POSITIVES, is_resolved, mark_resolution
from ftaudit.seeding import derive_seed
from ftaudit.studies import Context, StudyOutput, get_study
from ftaudit.store.atomic import atomic_write, atomic_write_text
from ftaudit.store.runs import Store, write_arrays, write_results
from ftaudit.threads import torch_threads
from ftaudit.train.engine import Engine, Reporter
from ftaudit.train.executor import check_executor


class MetricsTable(list):
    """A list of row dicts that prints as an aligned text table (for notebooks and the REPL)."""

    def __str__(self) -> str:
        if not self:
            return "(no attacks)"
        cols = list(self[0])
        cells = [[f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in self]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    __repr__ = __str__


@dataclass
class RunResult:
    """What a run produced: its id and directory, and the results dict (also in results.json)."""

    run_id: str
    path: Path
    results: dict

    @property
    def metrics(self) -> "MetricsTable":
        """The attacks' metrics as table rows: attack, auc (+ _lo/_hi), tpr@<fpr> (+ _lo/_hi).
        Prints as a text table; :meth:`to_frame` gives it as a pandas DataFrame."""
        rows = MetricsTable()
        for att in self.results["attacks"]:
            row = {"attack": att["name"], "auc": att["auc"]["value"], "auc_lo": att["auc"]["lo"], "auc_hi": att["auc"]["hi"]}
            for t in att["tpr_at_fpr"]:
                row[f"tpr@{t['fpr']:g}"] = t["value"]
                row[f"tpr@{t['fpr']:g}_lo"] = t["lo"]
                row[f"tpr@{t['fpr']:g}_hi"] = t["hi"]
            rows.append(row)
        return rows

    def to_frame(self):
        """The metrics table as a pandas DataFrame indexed by attack (columns as in :attr:`metrics`,
        plus n_members / n_nonmembers, the pooled rows). pandas is the ``notebook`` extra."""
        try:
            import pandas as pd
        except ImportError:
            from ftaudit.errors import UserError

            raise UserError("pandas", "RunResult.to_frame needs pandas, which is not installed",
                            'install the extra: pip install "ftaudit[notebook]"') from None
        rows = [{**row, "n_members": att.get("n_members"), "n_nonmembers": att.get("n_nonmembers")}
                for row, att in zip(self.metrics, self.results["attacks"])]
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["attack"]).set_index("attack")

    @property
    def report(self) -> Path:
        return self.path / "report.html"


def validate_attacks(cfg: StudyConfig) -> None:
    """A study with an ``attack`` section: refuse unknown attacks or parameters before any training."""
    attack = getattr(cfg, "attack", None)
    if attack is not None:
        resolve_request(attack.names, attack.params)


# Every library a run's numbers can depend on (the report's Setup section lists them all), then
# optional ones shown only when installed.
VERSIONED = ("ftaudit", "torch", "numpy", "scipy", "scikit-learn", "transformers", "tokenizers", "peft", "opacus",
             "dp-accounting", "safetensors", "pydantic", "pyyaml", "matplotlib", "jinja2", "typer", "rich")
OPTIONAL_VERSIONED = ("huggingface-hub", "accelerate", "datasets", "mlflow", "pandas", "ray")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in VERSIONED + OPTIONAL_VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            if pkg in VERSIONED:
                out[pkg] = "not installed"
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def engine_record(cfg: StudyConfig, ctx: Context) -> dict:
    """Where the run's work ran: the device models trained on (the Ray workers' with executor=ray) and
    the one this process queried them on, the training dtype, the executor and the torch threads its
    stages used (several when engine.threads is 0 and the free cores changed)."""
    used = sorted(ctx.threads_used) or [torch.get_num_threads()]
    return {"device": str(ctx.engine.executor.placement().device), "query_device": str(ctx.engine.placement.device),
            "dtype": cfg.engine.dtype, "executor": cfg.engine.executor,
            "torch_threads": used if len(used) > 1 else used[0],
            "threads_rule": f"fixed {cfg.engine.threads}" if cfg.engine.threads else "auto: free cores at each stage"}


def make_run_id(cfg: StudyConfig) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256((cfg.model_dump_json() + str(time.time_ns())).encode()).hexdigest()[:6]
    return f"{stamp}-{cfg.study}-{digest}"


def run_pipeline(cfg: StudyConfig, reporter: Reporter | None = None) -> RunResult:
    with torch_threads(None):  # the caller's thread count is back once the run ends
        return _run_pipeline(cfg, reporter)


def _run_pipeline(cfg: StudyConfig, reporter: Reporter | None = None) -> RunResult:
    start = time.perf_counter()
    study = get_study(cfg.study)
    validate_attacks(cfg)
    check_budget(cfg)  # refuse, before any training, a run no 24 GiB 2-core machine could finish
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    check_executor(cfg.engine)  # Ray chosen but not installed: refused before the store is touched
    store = Store(cfg.out)
    store.clean_partial()
    ctx = Context(store=store, engine=Engine(store.models, cfg.engine, reporter), reporter=reporter,
                  adapt_threads=not cfg.engine.threads)
    out = study.run(cfg, ctx)
    ev = score(ctx, out, cfg)
    if cfg.seeds:
        repeats = {cfg.seed: ev}
        for seed in cfg.all_seeds[1:]:
            again = cfg.model_copy(update={"seed": seed, "seeds": []})
            repeats[seed] = score(ctx, study.run(again, ctx), again)
        out.sections.insert(0, seed_spread_section(repeats, cfg.metrics))

    with ctx.stage("metrics"):
        pooled = ev.pooled
        curves = {name: np.stack(roc_curve(scores, pooled.labels)) for name, scores in pooled.scores.items()}
        best = ev.best.name if ev.best else None
        exposed_all = {name: most_exposed(pooled, name, out, cfg.metrics.exposed) for name in pooled.scores}
        exposed = exposed_all.get(best, []) if best else []

    run_id = make_run_id(cfg)
    package_versions = versions()
    results = {
        "run_id": run_id, "study": cfg.study, "title": out.title,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "ftaudit_version": package_versions["ftaudit"], "config": cfg.model_dump(mode="json"), "versions": package_versions,
        "seeds": out.seeds, "timings": {}, "cache": {"models_trained": ctx.models_trained, "models_loaded": ctx.models_loaded},
        "utility": out.utility, "ci_level": cfg.metrics.ci_level, "n_bootstrap": cfg.metrics.bootstrap,
        "attacks": [mark_resolution(a.to_dict()) for a in ev.attacks], "skipped_attacks": dict(pooled.skipped),
        "best_attack": best, "exposed": exposed, "exposed_by_attack": exposed_all, "notes": out.notes + findings(ev),
        "sections": [section.to_dict() for section in out.sections], "engine": engine_record(cfg, ctx), **out.extra,
    }
    partial = store.new_run_dir(run_id)
    try:
        _write_run(store, partial, run_id, results, cfg, ctx, out, pooled, curves, start)
        # rows as pending → rename into place → rows complete: all or nothing (store/runs.py)
        final = store.commit_run(partial, run_id, results, out.models)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return RunResult(run_id=run_id, path=final, results=results)


def score(ctx: Context, out: StudyOutput, cfg: StudyConfig) -> Evaluation:
    """The study's evaluator, then every attack's metrics with bootstrap CIs."""
    with ctx.stage("attacks"):
        out.evaluation.scores()
    with ctx.stage("metrics"):
        return evaluate(ctx.store.metrics, out.evaluation, cfg.metrics, cfg.seed)


def _write_run(store: Store, partial: Path, run_id: str, results: dict, cfg: StudyConfig, ctx: Context,
               out: StudyOutput, pooled, curves: dict, start: float) -> Path:
    """Fill the partial run directory (arrays, config, results, report); the caller commits it."""
    arrays = {"labels": pooled.labels, "example": pooled.example, "target": pooled.target, **out.audit_arrays}
    arrays.update({f"scores-{n}": s for n, s in pooled.scores.items()})
    arrays.update({f"roc-{n}": c for n, c in curves.items()})
    if results.get("best_attack"):
        with ctx.stage("metrics"):
            best = results["best_attack"]
            arrays[f"rocband-{best}"] = roc_band(pooled, best, cfg.metrics, cfg.seed)
    write_arrays(partial, arrays)
    if RECORDS_NAME not in out.files:  # the audit writes its own (same writer, more columns)
        atomic_write(partial / RECORDS_NAME, lambda p, data=pooled_records(arrays): p.write_bytes(data))
    for name, data in out.files.items():
        if "/" in name or name.startswith(".") or name in ("results.json", "config.yaml", "report.html"):
            raise ValueError(f"a study may not write {name!r} into its run directory")
        atomic_write(partial / name, lambda p, data=data: p.write_bytes(data))
    atomic_write_text(partial / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    results["timings"] = {**{k: round(v, 3) for k, v in ctx.timings.items()}, "total": round(time.perf_counter() - start, 3)}
    write_results(partial, results)
    report_start = time.perf_counter()
    with progress.stage("report"):
        write_report(partial)
    results["timings"]["report"] = round(time.perf_counter() - report_start, 3)
    results["timings"]["total"] = round(time.perf_counter() - start, 3)
    write_results(partial, results)
    return partial


def roc_band(pooled, attack: str, metrics, seed: int, points: int = 30) -> np.ndarray:
    """The report's ROC band of ``attack``: ``[3, G]`` (FPR grid log-spaced from one non-member row to
    1, TPR lower and upper bound) at ``metrics.ci_level``, from the same example bootstrap as the table."""
    n_non = int((~pooled.labels).sum())
    if n_non == 0 or not pooled.labels.any():
        return np.zeros((3, 0))
    grid = np.unique(np.geomspace(1.0 / n_non, 1.0, points))
    est = summarize(pooled.scores[attack], pooled.labels, pooled.example, grid, metrics.bootstrap, metrics.ci_level,
                    derive_seed(seed, "roc-band"))
    return np.array([grid, [t.lo for t in est.tpr_at_fpr], [t.hi for t in est.tpr_at_fpr]], dtype=np.float64)


def most_exposed(pooled, attack: str, out: StudyOutput, k: int) -> list[dict]:
    """Examples ``attack`` flags most often when they are members: the fraction of an example's
    member rows scored above the 1 %-FPR threshold of all non-member rows; ties by mean member score."""
    scores, labels, example = pooled.scores[attack], pooled.labels, pooled.example
    member_rate = out.member_rate
    threshold = np.quantile(scores[~labels], 1 - HEADLINE_FPR) if (~labels).any() else np.inf
    n = int(example.max()) + 1 if example.size else 0
    hits = np.bincount(example[labels], weights=(scores[labels] > threshold), minlength=n)
    count = np.bincount(example[labels], minlength=n)
    total = np.bincount(example[labels], weights=scores[labels], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate, mean = hits / count, total / count
    order = [i for i in np.lexsort((-np.nan_to_num(mean, nan=-np.inf), -np.nan_to_num(rate, nan=-1.0))) if count[i]][:k]
    labels_of = out.audit_arrays.get("audit_y")
    return [{"example": int(i), "label": int(labels_of[i]) if labels_of is not None else None,
             "score": float(mean[i]), "detected_at_1pct_fpr": float(rate[i]), "attack": attack,
             "member_rate": float(member_rate[i])} for i in order]


def findings(ev: Evaluation) -> list[str]:
    """Plain-language lines the report shows: does the best calibrated attack beat LOSS at 1 % FPR?
    Said only when the paired bootstrap CI of the TPR difference excludes zero."""
    names = [a.name for a in ev.attacks]
    calibrated = [a for a in ev.attacks if a.name.startswith(("lira", "rmia"))]
    if "loss" not in names or not calibrated:
        return []
    top = max(calibrated, key=lambda a: (a.tpr_at(HEADLINE_FPR).value, a.auc.value))
    diff = ev.compare("loss", top.name, HEADLINE_FPR)
    t_top, t_loss = top.tpr_at(HEADLINE_FPR).value, ev.by_name("loss").tpr_at(HEADLINE_FPR).value
    ratio = f", {t_top / t_loss:.1f}× LOSS's" if t_loss > 0 else ""
    picked = f"picked after the fact as the best of {len(calibrated)} calibrated attacks" if len(calibrated) > 1 else "the only calibrated attack"
    level = f"{ev.metrics.ci_level:.0%}"
    diff_text = (f"TPR difference {diff.tpr_diff:+.1%} [{diff.tpr_diff_lo:+.1%}, {diff.tpr_diff_hi:+.1%}] "
                 f"({level} paired bootstrap over audit examples)")
    if diff.tpr_diff_lo > 0:
        verdict = "beats LOSS"
    elif diff.tpr_diff_hi < 0:
        verdict = "is beaten by LOSS"
    else:
        verdict = "against LOSS: not resolved"
    n_non = top.metrics.n_nonmembers
    caveat = ("" if is_resolved(HEADLINE_FPR, n_non) is not False else
              f" 1 % FPR is not resolved with {n_non} non-member rows (fewer than {MIN_FALSE_POSITIVES} false "
              "positives): read these TPRs as a ranking, not as rates.")
    return [f"At 1 % FPR the best calibrated attack ({top.name}, {picked}; TPR {t_top:.1%}) {verdict} "
            f"(LOSS TPR {t_loss:.1%}{ratio}; {diff_text}).{caveat}"]
