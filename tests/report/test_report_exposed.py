"""The report's most exposed records (per attack, only informative columns), its link to records.csv,
the ROC's layout attributes and the horizontally scrolling tables."""
from __future__ import annotations

import json
import re

from ftaudit.report import write_report


def _section(text: str, name: str) -> str:
    return re.search(rf'<section id="{name}">(.*?)</section>', text, re.S).group(1)


def _lm_like(results: dict) -> dict:
    """What an LM study stores: no class label, every block a member of half the models."""
    rows = lambda attack, base: [{"example": base + i, "label": None, "score": 1.0 - i / 10, "attack": attack,  # noqa: E731
                                  "detected_at_1pct_fpr": 1.0 - i / 4, "member_rate": 0.5} for i in range(3)]
    results["exposed_by_attack"] = {"loss": rows("loss", 10), "lira-online": rows("lira-online", 20),
                                    "reference-<zlib>": rows("reference-<zlib>", 30)}
    results["exposed"] = results["exposed_by_attack"]["lira-online"]
    return results


def test_exposed_records_per_attack_strongest_open_without_constant_columns(make_run, results):
    text = write_report(make_run(_lm_like(results), images=False)).read_text(encoding="utf-8")
    exposed = _section(text, "exposed")
    summaries = re.findall(r"<details( open)?>\s*<summary>([^<]+)<", exposed)
    assert [(o, n.strip()) for o, n in summaries] == [(" open", "lira-online"), ("", "loss"), ("", "reference-&lt;zlib&gt;")]
    headers = re.findall(r"<th[^>]*>([^<]+)</th>", exposed)
    assert headers[:4] == ["rank", "record", "mean score as member", "found at 1% FPR"]
    assert "label" not in headers and "member rate" not in headers  # None everywhere / 50 % everywhere
    assert "None" not in exposed
    assert '<td class="num">20</td>' in exposed and '<td class="num">30</td>' in exposed


def test_varying_columns_stay(make_run, results):
    exposed = _section(write_report(make_run(results, images=False)).read_text(encoding="utf-8"), "exposed")
    headers = re.findall(r"<th[^>]*>([^<]+)</th>", exposed)
    assert "label" in headers and "member rate" in headers  # digits' classes; rates 50 / 25 / 75 %
    assert "found at 1% FPR" not in headers  # not stored in this (older) run: not a column of dashes


def test_report_links_records_csv_when_the_run_has_it(make_run, results):
    run = make_run(results)
    assert "records.csv" not in _section(write_report(run).read_text(encoding="utf-8"), "exposed")
    (run / "records.csv").write_text("example,member\n")
    assert '<a href="records.csv">' in _section(write_report(run).read_text(encoding="utf-8"), "exposed")


def test_roc_carries_its_layout_and_tables_scroll(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    img = re.search(r'<img id="roc-figure"[^>]*>', text).group(0)
    axes = json.loads(re.search(r'data-axes-box="([^"]+)"', img).group(1))
    legend = json.loads(re.search(r'data-legend-box="([^"]+)"', img).group(1))
    assert legend[0] >= axes[2]  # the legend is right of the plot area
    assert "Thick lines" in _section(text, "roc") and "lira-online" in _section(text, "roc")
    assert '<div class="scroll">\n  <table>' in _section(text, "attacks")
    assert ".scroll { overflow-x: auto" in text
