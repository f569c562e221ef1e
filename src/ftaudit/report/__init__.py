"""Reports of a finished run: the terminal table and the self-contained HTML page.

A report only reads what the run stored (``results.json`` and ``arrays/``) and draws it; it never
recomputes a metric.
"""
from __future__ import annotations

from ftaudit.report.figures import roc_png
from ftaudit.report.html import write_report
from ftaudit.report.table import render_table

__all__ = ["render_table", "roc_png", "write_report"]
