"""The verdict table of ``ftaudit reproduce``: markdown, a self-contained HTML page and JSON in the
store (``<out>/reproductions/<UTC time>/``), and a rich table for the terminal."""
from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Sequence

from rich.markup import escape
from rich.table import Table

from ftaudit.reproduce.runner import Row

COLUMNS = ["claim", "paper's number", "ours (95 % CI)", "difference judged [CI]", "verdict", "command", "time (load)"]
RULE = ("Verdict: reproduced when the CI of the difference excludes the bound (0 unless stated) on the claimed "
        "side, reversed when it excludes it on the other side, not reproduced when it contains it; an invariant "
        "holds (reproduced) unless its CI lies wholly on the forbidden side. Times are wall seconds of the claim's "
        "run on this machine with the 1-minute load average before → after (other processes share the cores, so "
        "they are upper bounds; 0 s: the run was shared with the claim above). Cached models are reused.")


def _cells(row: Row) -> list[str]:
    c, m = row.claim, row.measured
    when = f"{row.seconds:.0f} s (load {row.load[0]:.1f} → {row.load[1]:.1f})"
    return [f"{c.name}: {c.claim} ({c.source})", c.paper, m.ours if m else row.error,
            (m.diff_text + (f". {m.note}" if m.note else "")) if m else "", row.verdict,
            f"ftaudit run {c.study}" + (f" --preset {c.preset}" if c.preset else ""), when]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(x) for x in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + RULE + "\n"


def html_page(rows: Sequence[Row], title: str) -> str:
    colour = {"reproduced": "#1a7f37", "reversed": "#b42318", "not reproduced": "#9a6700"}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        cells = _cells(r)
        tds = [f"<td>{html.escape(x)}</td>" for x in cells]
        tds[4] = f'<td style="color:{colour.get(r.verdict, "#444")};font-weight:bold">{html.escape(cells[4])}</td>'
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:100em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;font-size:90%}th{background:#f4f4f4}"
            f"</style></head><body><h1>{html.escape(title)}</h1><table><tr>{head}</tr>{''.join(body)}</table>"
            f"<p>{html.escape(RULE)}</p></body></html>\n")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_table(rows: Sequence[Row], out: str | Path) -> Path:
    """Write reproductions.md, reproductions.html and verdicts.json under <out>/reproductions/<time>/;
    returns that directory."""
    from ftaudit.store.atomic import atomic_write_text

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = Path(out) / "reproductions" / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = Path(out) / "reproductions" / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    title = f"ftaudit reproductions, {stamp} UTC"
    atomic_write_text(folder / "reproductions.md", f"# {title}\n\n" + markdown(rows))
    atomic_write_text(folder / "reproductions.html", html_page(rows, title))
    atomic_write_text(folder / "verdicts.json", json.dumps(_json_safe([r.to_dict() for r in rows]), indent=1,
                                                           ensure_ascii=False) + "\n")
    return folder


def rich_table(rows: Sequence[Row]) -> Table:
    style = {"reproduced": "green", "reversed": "red", "not reproduced": "yellow"}
    table = Table(title="reproductions", caption=RULE, caption_justify="left", show_lines=True)
    for name in ("claim", "ours", "difference [CI]", "verdict", "time"):
        table.add_column(name, overflow="fold")
    for r in rows:
        cells = _cells(r)
        table.add_row(escape(r.claim.name), escape(cells[2]), escape(cells[3]),
                      f"[{style.get(r.verdict, 'white')}]{escape(r.verdict)}[/]", escape(cells[6]))
    return table
