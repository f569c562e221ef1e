"""The self-contained HTML report of one run.

A report never recomputes a metric: it reads ``results.json`` and the stored arrays and draws them.
Everything is rendered in memory first and written with one atomic rename, so a failure at any
point leaves the previous ``report.html`` exactly as it was.
"""
from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from ftaudit.report import plots
from ftaudit.store.runs import read_results
from ftaudit.report.table import (
    DASH,
    TPR_POINTS,
    attacks_of,
    fmt_auc,
    fmt_ci,
    fmt_count,
    fmt_number,
    fmt_tpr,
    fpr_label,
    tpr_at,
)

REPORT_NAME = "report.html"
TEMPLATE_NAME = "report.html.j2"
MAX_EXPOSED_IMAGES = 24  # more than this is a wall of digits, the table below still lists all


# --- reading the run -------------------------------------------------------------------------


class RunArrays:
    """Lazy access to ``<run_dir>/arrays``; a missing optional file reads as None."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "arrays"

    def get(self, name: str) -> np.ndarray | None:
        path = self.dir / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def roc(self, attack: str) -> np.ndarray | None:
        return self.get(f"roc-{attack}")

    def scores(self, attack: str) -> np.ndarray | None:
        return self.get(f"scores-{attack}")


# --- figures ---------------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _roc_label(attack: Mapping[str, Any]) -> str:
    auc = (attack.get("auc") or {}).get("value")
    return f"{attack.get('name')} (AUC {fmt_number(auc, '.3f')})" if auc is not None else str(attack.get("name"))


def _roc_curves(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> dict[str, tuple]:
    curves = {}
    for attack in attacks_of(results):
        roc = arrays.roc(attack.get("name"))
        if roc is None:
            problems.append(f"arrays/roc-{attack.get('name')}.npy is missing; ROC not drawn")
        elif roc.ndim != 2 or roc.shape[0] != 2:
            problems.append(f"arrays/roc-{attack.get('name')}.npy has shape {roc.shape}, expected [2, K]")
        else:
            curves[_roc_label(attack)] = (roc[0], roc[1])
    return curves


def _roc_png(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> bytes:
    return plots.roc_plot(_roc_curves(results, arrays, problems), title=results.get("title") or "")


def roc_png(run_dir: str | Path) -> bytes:
    """The report's log-log ROC figure as PNG bytes (for exporting, e.g. the README figure)."""
    return _roc_png(read_results(Path(run_dir)), RunArrays(Path(run_dir)), [])


def _histogram_png(results: Mapping[str, Any], arrays: RunArrays, problems: list[str]) -> bytes | None:
    labels = arrays.get("labels")
    if labels is None:
        problems.append("arrays/labels.npy is missing; score histograms not drawn")
        return None
    scores = {}
    for attack in attacks_of(results):
        name = attack.get("name")
        values = arrays.scores(name)
        if values is None:
            problems.append(f"arrays/scores-{name}.npy is missing; its histogram not drawn")
        elif values.shape != labels.shape:
            problems.append(f"arrays/scores-{name}.npy has shape {values.shape}, labels {labels.shape}")
        else:
            scores[name] = values
    return plots.score_histograms(scores, labels) if scores else None


def _exposed_caption(item: Mapping[str, Any]) -> str:
    found = item.get("detected_at_1pct_fpr")
    if isinstance(found, (int, float)):
        rate_text = f"found {found:.0%}"
    else:
        rate = item.get("member_rate")
        rate_text = f"{rate:.0%} in" if isinstance(rate, (int, float)) else DASH
    return f"#{item.get('example')}  y={item.get('label')}\ns={fmt_number(item.get('score'))}  {rate_text}"


def _exposed_png(exposed: list[Mapping[str, Any]], arrays: RunArrays, problems: list[str]) -> bytes | None:
    """Images of the most exposed examples, or None when the run has no images to show."""
    if not exposed:
        return None
    audit_x = arrays.get("audit_x")
    if audit_x is None or audit_x.ndim not in (3, 4):  # absent, or not images (e.g. tabular rows)
        return None
    shown = [e for e in exposed[:MAX_EXPOSED_IMAGES] if isinstance(e.get("example"), int) and 0 <= e["example"] < len(audit_x)]
    if len(shown) < len(exposed[:MAX_EXPOSED_IMAGES]):
        problems.append("some exposed examples index outside arrays/audit_x.npy; their images are not shown")
    if not shown:
        return None
    images = audit_x[[e["example"] for e in shown]]
    return plots.example_grid(images, [_exposed_caption(e) for e in shown])


# --- context for the template ---------------------------------------------------------------


def _attack_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    best = results.get("best_attack")
    return [
        {
            "name": a.get("name") or "?",
            "description": a.get("description") or "",
            "auc": fmt_auc(a.get("auc")),
            "tprs": [fmt_tpr(tpr_at(a, fpr)) for fpr in TPR_POINTS],
            "members": fmt_count(a.get("n_members")),
            "nonmembers": fmt_count(a.get("n_nonmembers")),
            "best": best is not None and a.get("name") == best,
        }
        for a in attacks_of(results)
    ]


def _utility_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"name": u.get("name") or "?", "value": _split_ci(fmt_ci(u, lambda v: f"{v:.4g}")), "note": u.get("note") or ""}
        for u in results.get("utility") or []
        if isinstance(u, Mapping)
    ]


def _headline(results: Mapping[str, Any]) -> dict[str, str] | None:
    best = next((a for a in attacks_of(results) if a.get("name") == results.get("best_attack")), None)
    if best is None:
        return None
    return {
        "name": best.get("name"),
        "description": best.get("description") or "",
        "auc": _split_ci(fmt_auc(best.get("auc"))),
        "tpr": _split_ci(fmt_tpr(tpr_at(best, 0.01))),
        "tpr_label": fpr_label(0.01),
    }


def _split_ci(text: str) -> tuple[str, str]:
    """"0.71 [0.69, 0.73]" -> ("0.71", "[0.69, 0.73]"), so the headline can set the CI smaller."""
    value, _, interval = text.partition(" ")
    return value, interval


def _exposed_rows(exposed: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    def rate(v: Any) -> str:
        return f"{v:.0%}" if isinstance(v, (int, float)) and not math.isnan(v) else DASH

    return [
        {
            "rank": str(i),
            "example": str(e.get("example", DASH)),
            "label": str(e.get("label", DASH)),
            "score": fmt_number(e.get("score"), ".4g"),
            "attack": str(e.get("attack") or DASH),
            "member_rate": rate(e.get("member_rate")),
            "detected": rate(e.get("detected_at_1pct_fpr")),
        }
        for i, e in enumerate(exposed, start=1)
    ]


def _pretty_config(config: Any) -> str:
    """YAML when PyYAML is there (easier to read); JSON otherwise. The config is plain JSON data."""
    try:
        import yaml
    except ImportError:
        return json.dumps(config, indent=2)
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True).strip()


def _timing_rows(timings: Mapping[str, Any]) -> list[dict[str, Any]]:
    total = timings.get("total")
    total = total if isinstance(total, (int, float)) and total > 0 else None
    rows = []
    for stage, seconds in timings.items():
        share = seconds / total if total and isinstance(seconds, (int, float)) and stage != "total" else None
        rows.append(
            {
                "stage": stage,
                "seconds": fmt_number(seconds, ".1f") + " s" if isinstance(seconds, (int, float)) else DASH,
                "share": f"{share:.0%}" if share is not None else "",
                "bar": round(min(max(share, 0.0), 1.0) * 100, 1) if share is not None else 0,
                "total": stage == "total",
            }
        )
    return rows


def _seed_rows(seeds: Mapping[str, Any]) -> list[tuple[str, str]]:
    def text(v: Any) -> str:
        return ", ".join(str(x) for x in v) if isinstance(v, list) else str(v)

    return [(k, text(v)) for k, v in seeds.items()]


def _mapping(results: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = results.get(key)
    return value if isinstance(value, Mapping) else {}


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return DASH if value is None else str(value)
    if isinstance(value, float):
        return fmt_number(value, ".4g")
    return str(value)


def _sections(results: Mapping[str, Any], problems: list[str]) -> list[dict[str, Any]]:
    """A study's extra sections (sweeps, frontiers, audits): text, a table and figures drawn from
    the stored specs."""
    out = []
    for section in results.get("sections") or []:
        if not isinstance(section, Mapping):
            continue
        table = [r for r in section.get("table") or [] if isinstance(r, Mapping)]
        headers = list(table[0]) if table else []
        figures = []
        for spec in section.get("figures") or []:
            try:
                figures.append({"uri": _data_uri(plots.study_figure(spec)), "caption": spec.get("caption") or "",
                                "alt": spec.get("title") or "figure"})
            except (TypeError, ValueError) as exc:  # a malformed stored spec: say so, draw the rest
                problems.append(f"figure {spec.get('title')!r} of section {section.get('title')!r} not drawn: {exc}")
        out.append({"title": str(section.get("title") or ""), "text": [str(t) for t in section.get("text") or []],
                    "headers": headers, "rows": [[_cell(r.get(h)) for h in headers] for r in table], "figures": figures})
    return out


def build_context(results: Mapping[str, Any], arrays: RunArrays) -> dict[str, Any]:
    """Everything the template shows, already formatted as strings (the template only lays out)."""
    problems: list[str] = []
    exposed = [e for e in results.get("exposed") or [] if isinstance(e, Mapping)]
    hist = _histogram_png(results, arrays, problems)
    exposed_png = _exposed_png(exposed, arrays, problems)
    level = results.get("ci_level")
    return {
        "title": results.get("title") or results.get("study") or "ftaudit report",
        "run_id": results.get("run_id") or DASH,
        "study": results.get("study") or DASH,
        "created": results.get("created") or DASH,
        "version": results.get("ftaudit_version") or DASH,
        "ci_text": f"{level:.0%} CI" if isinstance(level, (int, float)) else "CI",
        "n_bootstrap": fmt_count(results.get("n_bootstrap")),
        "headline": _headline(results),
        "utility": _utility_rows(results),
        "tpr_headers": [fpr_label(f) for f in TPR_POINTS],
        "attacks": _attack_rows(results),
        "skipped": list(_mapping(results, "skipped_attacks").items()),
        "roc_uri": _data_uri(_roc_png(results, arrays, problems)),
        "hist_uri": _data_uri(hist) if hist else None,
        "exposed": _exposed_rows(exposed),
        "exposed_uri": _data_uri(exposed_png) if exposed_png else None,
        "notes": [str(n) for n in results.get("notes") or [] if str(n).strip()],
        "sections": _sections(results, problems),
        "config": _pretty_config(results.get("config") or {}),
        "versions": list(_mapping(results, "versions").items()),
        "seeds": _seed_rows(_mapping(results, "seeds")),
        "timings": _timing_rows(_mapping(results, "timings")),
        "cache": list(_mapping(results, "cache").items()),
        "problems": problems,
    }


# --- rendering -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ftaudit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in the template fails loudly, not as blank text
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one HTML string; nothing is written."""
    run_dir = Path(run_dir)
    context = build_context(read_results(run_dir), RunArrays(run_dir))
    return _environment().get_template(TEMPLATE_NAME).render(**context)


def write_report(run_dir: str | Path) -> Path:
    """Render ``<run_dir>/report.html`` (self-contained, atomically replaced) and return its path."""
    run_dir = Path(run_dir)
    html = render_html(run_dir)
    return plots.atomic_write_bytes(run_dir / REPORT_NAME, html.encode("utf-8"))
