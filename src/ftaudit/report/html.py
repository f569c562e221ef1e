"""The self-contained HTML report of one run.

A report never recomputes a metric: it reads ``results.json`` and the stored arrays and draws them.
Everything is rendered in memory first and written with one atomic rename, so a failure at any
point leaves the previous ``report.html`` exactly as it was.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from ftaudit.report import plots
from ftaudit.report.figures import HEADLINE, RunArrays, data_uri, exposed_png, histogram_png, roc_figure, strongest
from ftaudit.store.runs import read_results
from ftaudit.report.records import RECORDS_NAME
from ftaudit.report.resolution import MIN_FALSE_POSITIVES, entry_resolved, min_resolved_fpr
from ftaudit.report.table import (
    DASH,
    NOT_RESOLVED,
    TPR_POINTS,
    attacks_of,
    fmt_auc,
    fmt_count,
    fmt_number,
    fmt_pct,
    fmt_tpr,
    fmt_utility_value,
    fpr_label,
    tpr_at,
    unresolved_note,
)

REPORT_NAME = "report.html"
TEMPLATE_NAME = "report.html.j2"


def _tpr_cell(attack: Mapping[str, Any], fpr: float) -> dict[str, Any]:
    """A TPR table cell: the rate, or "not resolved" (the measured rate in ``measured``)."""
    entry = tpr_at(attack, fpr)
    text = fmt_tpr(entry, attack.get("n_members"))
    if entry_resolved(attack, entry) is False and text != DASH:
        return {"text": NOT_RESOLVED, "resolved": False, "measured": f"measured {text}"}
    return {"text": text, "resolved": True, "measured": ""}


def _attack_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    best = results.get("best_attack")
    return [
        {
            "name": a.get("name") or "?",
            "description": a.get("description") or "",
            "auc": fmt_auc(a.get("auc")),
            "tprs": [_tpr_cell(a, fpr) for fpr in TPR_POINTS],
            "members": fmt_count(a.get("n_members")),
            "nonmembers": fmt_count(a.get("n_nonmembers")),
            "best": best is not None and a.get("name") == best,
        }
        for a in attacks_of(results)
    ]


def _counts_note(rows: list[dict[str, Any]]) -> str | None:
    """When every attack has the same member / non-member counts, one sentence instead of two
    constant columns."""
    counts = {(r["members"], r["nonmembers"]) for r in rows}
    if len(counts) != 1:
        return None
    members, nonmembers = counts.pop()
    return f"Every attack is scored on {members} member and {nonmembers} non-member rows."


def _utility_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": u.get("name") or "?", "value": _split_ci(fmt_utility_value(u)), "note": u.get("note") or ""}
        for u in results.get("utility") or []
        if isinstance(u, Mapping)
    ]


def _headline(results: Mapping[str, Any]) -> dict[str, Any] | None:
    best = next((a for a in attacks_of(results) if a.get("name") == results.get("best_attack")), None)
    if best is None:
        return None
    cell = _tpr_cell(best, HEADLINE)
    if cell["resolved"]:
        tpr, note = _split_ci(cell["text"]), ""
    else:
        n = best.get("n_nonmembers")
        tpr = (NOT_RESOLVED, "")
        note = (f"{cell['measured']}, but {fpr_label(HEADLINE)} of {fmt_count(n)} non-members is "
                f"{HEADLINE * n:.2g} false positives (at least {MIN_FALSE_POSITIVES} needed; resolved from "
                f"{fmt_pct(min_resolved_fpr(n), 2)} FPR)")
    return {
        "name": best.get("name"),
        "description": best.get("description") or "",
        "auc": _split_ci(fmt_auc(best.get("auc"))),
        "tpr": tpr,
        "tpr_note": note,
        "tpr_label": fpr_label(HEADLINE),
    }


def _split_ci(text: str) -> tuple[str, str]:
    """"0.71 [0.69, 0.73]" -> ("0.71", "[0.69, 0.73]"), so the headline can set the CI smaller;
    an exact fraction stays with the value ("100% (40/40)")."""
    value, bracket, interval = text.partition(" [")
    return value, bracket.strip() + interval if bracket else ""


# --- most exposed records --------------------------------------------------------------------

_EXPOSED_COLUMNS = (  # (key, header, numeric, always shown)
    ("example", "record", True, True),
    ("label", "label", True, False),
    ("score", "mean score as member", True, True),
    ("detected_at_1pct_fpr", "found at 1% FPR", True, True),
    ("member_rate", "member rate", True, False),
)


def _informative(values: list[Any]) -> bool:
    """A column worth showing: not empty everywhere and not one constant value."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and len({repr(v) for v in present}) > 1


def _exposed_value(key: str, value: Any) -> str:
    if key in ("detected_at_1pct_fpr", "member_rate"):
        return fmt_pct(value, 0) if isinstance(value, (int, float)) and not isinstance(value, bool) else DASH
    if key == "score":
        return fmt_number(value, ".4g")
    return DASH if value is None else str(value)


def exposed_by_attack(results: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """The stored most exposed records per attack; older runs stored the best attack's only."""
    stored = results.get("exposed_by_attack")
    if isinstance(stored, Mapping) and stored:
        return {str(k): [e for e in v if isinstance(e, Mapping)] for k, v in stored.items() if isinstance(v, list)}
    exposed = [e for e in results.get("exposed") or [] if isinstance(e, Mapping)]
    if not exposed:
        return {}
    return {str(exposed[0].get("attack") or results.get("best_attack") or "best attack"): exposed}


def _exposed_note(results: Mapping[str, Any]) -> str:
    """When the 1 %-FPR threshold the exposed records are ranked by is itself not resolved, say so."""
    best = next((a for a in attacks_of(results) if a.get("name") == results.get("best_attack")), None)
    if best is None or entry_resolved(best, tpr_at(best, HEADLINE)) is not False:
        return ""
    return (f"With {fmt_count(best.get('n_nonmembers'))} non-member rows the 1 %-FPR threshold rests on fewer than "
            f"{MIN_FALSE_POSITIVES} of them: read these tables as a ranking, not as detection rates.")


def _top_text(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return "no records"
    top = rows[0]
    return (f"top: record {top.get('example', DASH)}, found at 1% FPR in "
            f"{_exposed_value('detected_at_1pct_fpr', top.get('detected_at_1pct_fpr'))} of its member rows")


def _exposed_tables(results: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, bool]]]:
    """One table per attack (the strongest first), with only the columns that say something."""
    tables = exposed_by_attack(results)
    every = [e for rows in tables.values() for e in rows]
    columns = [(key, header, numeric) for key, header, numeric, always in _EXPOSED_COLUMNS
               if (always and any(e.get(key) is not None for e in every)) or _informative([e.get(key) for e in every])]
    order = strongest(results, k=len(tables)) + list(tables)
    names = list(dict.fromkeys(n for n in order if n in tables))
    out = [{"attack": name, "open": i == 0, "top": _top_text(tables[name]),
            "rows": [[str(r)] + [_exposed_value(key, e.get(key)) for key, _, _ in columns]
                     for r, e in enumerate(tables[name], start=1)]}
           for i, name in enumerate(names)]
    return out, [("rank", True)] + [(header, numeric) for _, header, numeric in columns]


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
                figures.append({"uri": data_uri(plots.study_figure(spec)), "caption": spec.get("caption") or "",
                                "alt": spec.get("title") or "figure"})
            except (TypeError, ValueError) as exc:  # a malformed stored spec: say so, draw the rest
                problems.append(f"figure {spec.get('title')!r} of section {section.get('title')!r} not drawn: {exc}")
        out.append({"title": str(section.get("title") or ""), "text": [str(t) for t in section.get("text") or []],
                    "headers": headers, "rows": [[_cell(r.get(h)) for h in headers] for r in table], "figures": figures})
    return out


LONG_VERSION = 16  # characters: a longer value (the platform string) gets a whole row of the grid


def _versions(results: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """Every recorded version as (name, version, long); long values and the packages that were not
    installed (one row) go last, so the grid of short ones has no holes."""
    items = [(str(k), str(v)) for k, v in _mapping(results, "versions").items()]
    missing = [k for k, v in items if v == "not installed"]
    rows = [(k, v) for k, v in items if v != "not installed"] + ([("not installed", ", ".join(missing))] if missing else [])
    rows = [(k, v, len(v) > LONG_VERSION) for k, v in rows]
    return [r for r in rows if not r[2]] + [r for r in rows if r[2]]


def build_context(results: Mapping[str, Any], arrays: RunArrays) -> dict[str, Any]:
    """Everything the template shows, already formatted as strings (the template only lays out)."""
    problems: list[str] = []
    exposed_tables, exposed_headers = _exposed_tables(results)
    best_exposed = exposed_by_attack(results).get(exposed_tables[0]["attack"], []) if exposed_tables else []
    hist = histogram_png(results, arrays, problems)
    exposed_image = exposed_png(best_exposed, arrays, problems)
    roc = roc_figure(results, arrays, problems)
    level = results.get("ci_level")
    attacks = _attack_rows(results)
    counts_note = _counts_note(attacks) if attacks else None
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
        "attacks": attacks,
        "count_columns": counts_note is None,
        "counts_note": counts_note,
        "unresolved_note": unresolved_note(results),
        "skipped": list(_mapping(results, "skipped_attacks").items()),
        "roc_uri": data_uri(roc.png),
        "roc_axes_box": json.dumps(list(roc.axes_box)),
        "roc_legend_box": json.dumps(list(roc.legend_box)) if roc.legend_box else "",
        "roc_band": (arrays.get(f"rocband-{results.get('best_attack')}") is not None),
        "emphasised": strongest(results),
        "hist_uri": data_uri(hist) if hist else None,
        "exposed": exposed_tables,
        "exposed_headers": exposed_headers,
        "exposed_uri": data_uri(exposed_image) if exposed_image else None,
        "exposed_note": _exposed_note(results),
        "records": RECORDS_NAME if (arrays.dir.parent / RECORDS_NAME).is_file() else None,
        "notes": [str(n) for n in results.get("notes") or [] if str(n).strip()],
        "sections": _sections(results, problems),
        "config": _pretty_config(results.get("config") or {}),
        "versions": _versions(results),
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
