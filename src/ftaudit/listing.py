"""The tables ``ftaudit studies`` and ``ftaudit ls`` print (rich, sized to the terminal).

Neither imports a study module or torch: ``studies`` reads the descriptions from
:mod:`ftaudit.catalog`, ``ls`` reads the store's SQLite rows only.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

LS_FPR = 0.01  # `ftaudit ls` shows the best attack's TPR at this FPR (the headline)


def studies_table() -> Table:
    """Name and description of every study, two aligned columns; long descriptions wrap in theirs."""
    from ftaudit.catalog import STUDIES

    listed = dict(STUDIES)
    registry = sys.modules.get("ftaudit.studies")
    if registry is not None:  # studies registered in this process (plugins, tests) are listed too
        listed.update({n: registry.get_study(n).description for n in registry.names() if n not in listed})
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, description in listed.items():
        table.add_row(Text(name), Text(description))  # Text: no markup is parsed in them
    return table


def runs_table(db_path: Path, width: int) -> Table | None:
    """One row per complete run: run id, study, date, best attack, its TPR at 1 % FPR [CI]; None
    when there is none. The run id is never cut (``ftaudit report`` takes it) and already holds the
    date and the study (``<UTC date>-<time>-<study>-<hex>``): when the table is wider than ``width``
    those two columns go first, and what still does not fit wraps inside its column."""
    from ftaudit.store.db import RunDB

    db = RunDB(db_path)
    rows = []
    for r in db.runs():
        metrics = {(attack, metric): (value, lo, hi) for attack, metric, value, lo, hi in db.attack_metrics(r.run_id)}
        rows.append({"run": r.run_id, "study": r.study, "date (UTC)": r.created.replace("T", " ")[:16],
                     "best attack": r.best_attack or "—",
                     f"TPR at {LS_FPR:.0%} FPR [CI]": rate(metrics.get((r.best_attack, f"tpr@{LS_FPR:g}")))})
    if not rows:
        return None
    columns = list(rows[0])
    for redundant in ("date (UTC)", "study"):
        if _width(rows, columns) > width:
            columns.remove(redundant)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for name in columns:
        table.add_column(name, no_wrap=name == "run", overflow="fold",
                         justify="right" if name.startswith("TPR") else "left")
    for row in rows:
        table.add_row(*(Text(row[c]) for c in columns))
    return table


def _width(rows: list[dict], columns: list[str]) -> int:
    """The table's width without wrapping: widest cell per column, one space of padding on each
    inner side and a divider between columns."""
    return sum(max([len(c)] + [len(r[c]) for r in rows]) for c in columns) + 3 * (len(columns) - 1)


def rate(metric: tuple | None) -> str:
    """"8.9 % [5.1, 13.0]" from (value, lo, hi); "—" when the run did not measure it."""
    if metric is None or metric[0] is None:
        return "—"
    value, lo, hi = metric
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{100 * value:.1f} %{ci}"
