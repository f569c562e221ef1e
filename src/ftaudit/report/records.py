"""``records.csv``: every audited record's score and rank under every attack, with its membership.

One writer for every run directory. The pipeline writes it from the pooled arrays (one row per
audit example and target model); the ``audit`` study writes its own through the same writer, with
its extra columns (set, file position, salted id, optional text). Rank 1 is the most member-like
record of its target model; ties share the best rank; a NaN score ranks last.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

RECORDS_NAME = "records.csv"


def ranks(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """1 = highest score within its group (all rows one group when ``groups`` is None)."""
    s = -np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    if groups is None:
        return rankdata(s, method="min").astype(np.int64)
    groups = np.asarray(groups)
    out = np.empty(s.shape, np.int64)
    for g in np.unique(groups):
        at = groups == g
        out[at] = rankdata(s[at], method="min").astype(np.int64)
    return out


def _text(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.10g}"
    return "" if v is None else str(v)


def records_table(columns: Mapping[str, Sequence[Any]], scores: Mapping[str, np.ndarray], *,
                  groups: np.ndarray | None = None, trailing: Mapping[str, Sequence[Any]] | None = None) -> bytes:
    """CSV bytes: ``columns``, then ``<attack>`` and ``<attack>_rank`` per attack, then ``trailing``.

    Every column has one value per row; ranks are taken within ``groups`` (the target model).
    """
    trailing = dict(trailing or {})
    n = len(next(iter(columns.values()))) if columns else len(next(iter(scores.values()), []))
    for name, values in {**columns, **scores, **trailing}.items():
        if len(values) != n:
            raise ValueError(f"records.csv column {name!r} has {len(values)} values, expected {n}")
    ranked = {name: ranks(s, groups) for name, s in scores.items()}
    header = list(columns) + [c for name in scores for c in (name, f"{name}_rank")] + list(trailing)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    cols = [list(v) for v in columns.values()]
    tail = [list(v) for v in trailing.values()]
    score_cols = [(np.asarray(s, np.float64), ranked[name]) for name, s in scores.items()]
    for i in range(n):
        row = [_text(c[i]) for c in cols]
        for s, r in score_cols:
            row += [_text(s[i]), str(int(r[i]))]
        writer.writerow(row + [_text(c[i]) for c in tail])
    return buf.getvalue().encode("utf-8")


def pooled_records(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``records.csv`` of a run from its pooled arrays (``labels``, ``example``, ``target``,
    ``scores-<attack>``, optional ``audit_y``): columns ``example``, ``target`` (only with several
    target models), ``member`` (1/0), ``label`` (the example's class, when the study stored one),
    then each attack's score and rank within its target model."""
    labels = np.asarray(arrays["labels"]).astype(bool)
    example = np.asarray(arrays["example"], np.int64)
    target = np.asarray(arrays.get("target", np.zeros_like(example)), np.int64)
    columns: dict[str, Sequence[Any]] = {"example": example}
    if np.unique(target).size > 1:
        columns["target"] = target
    columns["member"] = labels
    audit_y = arrays.get("audit_y")
    if audit_y is not None and np.ndim(audit_y) == 1 and example.size and example.max() < len(audit_y):
        columns["label"] = np.asarray(audit_y)[example]
    scores = {name[len("scores-"):]: np.asarray(v) for name, v in arrays.items() if name.startswith("scores-")}
    return records_table(columns, scores, groups=target)
