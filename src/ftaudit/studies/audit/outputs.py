"""What an audit writes beside the pipeline's run directory: ``records.csv``, the plain verdict, the
smallest FPR the sample resolves, the counts, and the gate.

The audit must not leak what it audits: records are identified by their index and a salted hash
(``sha256(salt + record)[:16]``, the salt drawn per run and never stored), and their text appears in
``records.csv`` only when ``reveal`` is set.

Metric summaries are ``{attack: {"auc": (v, lo, hi), "tpr@<fpr>": (v, lo, hi)}}``, as
``scoring.attack_summary`` returns them (or :func:`summary_of` converts the pipeline's results).
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Sequence

import numpy as np

from ftaudit.report.blocks import ReportSection
from ftaudit.report.records import records_table
from ftaudit.report.resolution import MIN_FALSE_POSITIVES, min_resolved_fpr
from ftaudit.studies.audit.config import parse_gate

HEADLINE_FPR = 0.01
Summary = dict[str, dict[str, tuple[float, float, float]]]


def summary_of(attacks) -> Summary:
    """The summary dict from the pipeline's typed results (``AttackResult``) or their JSON form."""
    out: Summary = {}
    for a in attacks:
        if isinstance(a, dict):
            out[a["name"]] = {"auc": (a["auc"]["value"], a["auc"]["lo"], a["auc"]["hi"]),
                              **{f"tpr@{t['fpr']:g}": (t["value"], t["lo"], t["hi"]) for t in a["tpr_at_fpr"]}}
        else:
            out[a.name] = {"auc": tuple(a.auc), **{f"tpr@{r.fpr:g}": (r.value, r.lo, r.hi) for r in a.metrics.tpr_at_fpr}}
    return out


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def record_key(texts: Sequence[str] | None, images: np.ndarray | None, i: int) -> bytes:
    """The bytes that identify record i (its text, or its image array)."""
    return texts[i].encode("utf-8") if texts is not None else np.ascontiguousarray(images[i]).tobytes()


def salted_id(salt: bytes, key: bytes) -> str:
    return hashlib.sha256(salt + key).hexdigest()[:16]


def records_csv(scores: dict[str, np.ndarray], member: np.ndarray, record: np.ndarray, ids: Sequence[str],
                labels: np.ndarray | None = None, texts: Sequence[str] | None = None) -> bytes:
    """One row per audited record: index, set, record (its position in its loaded file, 0-based, blank
    lines skipped), salted id, member (1/0), [label], every attack's score and rank (1 = most
    member-like; ties share the best rank), and the text only when ``texts`` is given (``reveal``).
    Written by the one records.csv writer every run uses (``ftaudit.report.records``)."""
    member = np.asarray(member, dtype=bool)
    columns = {"index": np.arange(len(member)), "set": ["member" if m else "nonmember" for m in member],
               "record": np.asarray(record, np.int64), "id": list(ids), "member": member}
    if labels is not None:
        columns["label"] = np.asarray(labels, np.int64)
    return records_table(columns, scores, trailing={"text": list(texts)} if texts is not None else None)


def resolvable_fpr(n_nonmembers: int) -> float:
    """The smallest FPR the non-members resolve: the report's rule (``report.resolution``), about
    ten false positives among them; below it a TPR rests on a handful of scores."""
    return min_resolved_fpr(max(1, n_nonmembers))


def verdict_fpr(fprs: Sequence[float], n_nonmembers: int) -> float | None:
    """1 % when the sample resolves it, else the smallest reported FPR it resolves (None if none)."""
    floor = resolvable_fpr(n_nonmembers)
    if HEADLINE_FPR >= floor and any(abs(f - HEADLINE_FPR) < 1e-12 for f in fprs):
        return HEADLINE_FPR
    ok = sorted(f for f in fprs if f >= floor)
    return ok[0] if ok else None


def _pct(v: float) -> str:
    return f"{v * 100:.3g} %"


def _rate(ci: tuple[float, float, float]) -> str:
    return f"{_pct(ci[0])} [{_pct(ci[1])}, {_pct(ci[2])}]"


def verdict(summary: Summary, primary: str, fprs: Sequence[float], n_nonmembers: int, level: float) -> dict:
    """The plain verdict: what the declared attack (``primary``, chosen before the scores: the base
    ratio when a base is given, else LOSS) reveals at 1 % FPR (or the smallest resolved FPR), with its
    CI against chance; then the strongest attack, said to be picked after the fact."""
    floor = resolvable_fpr(n_nonmembers)
    fpr = verdict_fpr(fprs, n_nonmembers)
    lines, out = [], {"attack": primary, "fpr": fpr, "resolvable_fpr": floor, "ci_level": level}
    auc = summary[primary]["auc"]
    if fpr is None:
        lines.append(f"With {n_nonmembers} non-members no reported FPR is resolvable (the smallest is "
                     f"{MIN_FALSE_POSITIVES}/{n_nonmembers} = {_pct(floor)}); only the AUC is meaningful: {primary} AUC {auc[0]:.3f} "
                     f"[{auc[1]:.3f}, {auc[2]:.3f}] (chance 0.5).")
        out.update(tpr=None, above_chance=bool(auc[1] > 0.5))
    else:
        tpr = summary[primary][f"tpr@{fpr:g}"]
        above = tpr[1] > fpr
        call = ("more than chance" if above else
                "not distinguishable from chance at this sample size" if tpr[2] >= fpr else "less than chance")
        lines.append(f"At {_pct(fpr)} FPR this model reveals {_rate(tpr)} of its fine-tuning records "
                     f"({primary}, {level:.0%} CI); chance is {_pct(fpr)} — {call}. "
                     f"AUC {auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}] (chance 0.5).")
        out.update(tpr=list(tpr), above_chance=bool(above))
        if fpr != HEADLINE_FPR:
            lines.append(f"1 % FPR is not resolvable with {n_nonmembers} non-members (the smallest resolvable FPR is "
                         f"{MIN_FALSE_POSITIVES}/{n_nonmembers} = {_pct(floor)}); the verdict uses {_pct(fpr)}.")
        best = max(summary, key=lambda a: (summary[a][f"tpr@{fpr:g}"][0], summary[a]["auc"][0]))
        if best != primary and len(summary) > 1:
            lines.append(f"The strongest of the {len(summary)} attacks here, picked after the fact (so its CI is "
                         f"optimistic), is {best}: {_rate(summary[best][f'tpr@{fpr:g}'])} at {_pct(fpr)} FPR.")
        out["best_attack"] = best
    below = [f for f in fprs if f < floor]
    if below:
        lines.append(f"TPR at {', '.join(_pct(f) for f in below)} FPR is not resolved with {n_nonmembers} non-members "
                     f"(fewer than {MIN_FALSE_POSITIVES} false positives; the smallest resolvable FPR is {_pct(floor)}).")
    out["text"] = lines
    return out


def evaluate_gate(summary: Summary, fail_above: str | None) -> dict | None:
    """The gate: fires when the CI lower bound of the chosen rate of ANY attack is above the threshold."""
    if fail_above is None:
        return None
    _, fpr, threshold = parse_gate(fail_above)
    metric = "auc" if fpr is None else f"tpr@{fpr:g}"
    over = {a: m[metric][1] for a, m in summary.items() if metric in m and m[metric][1] > threshold}
    if over:
        named = ", ".join(f"{a} (lower bound {lo:.4g})" for a, lo in sorted(over.items(), key=lambda kv: -kv[1]))
        message = f"gate {fail_above}: FAILED — the CI lower bound of {metric} is above {threshold:g} for {named}"
    else:
        message = f"gate {fail_above}: passed — no attack's CI lower bound of {metric} is above {threshold:g}"
    return {"fail_above": fail_above, "metric": metric, "threshold": threshold, "fired": bool(over),
            "attacks": sorted(over), "message": message}


def audit_section(info: dict) -> ReportSection:
    """The report block: what was audited, the counts, and how records are identified (the verdict and
    the gate are the run's notes)."""
    c = info["counts"]
    text = [f"Model: {info['model']} ({info['task']}); base: {info['base'] or 'none'}."]
    text.append("Records are identified by index and a salted hash in records.csv; "
                + ("their text is included (reveal)." if info["reveal"] else "their text is not stored anywhere in "
                                                                              "this run (pass --reveal to include it)."))
    rows = [{"count": k.replace("_", " "), "value": v} for k, v in c.items() if v is not None]
    return ReportSection("Audit of the given model", text=text, table=rows)
