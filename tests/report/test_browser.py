"""The report as a reader sees it: rendered by real headless Chromium (scripts/check_report.py).

The checker asserts no horizontal overflow at 700 px, every image loaded, nothing fetched from
outside the file, and the ROC legend outside the plot area. It runs on the default study's report
and on lm-mia's (12 attacks) at their small test sizes, and on a deliberately broken page, so the
checks are seen to fail when they should.
"""
from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_report = _checker()


def _need_browser() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if check_report.chromium_path() is None:
        pytest.skip("no chromium binary: apt-get install -y chromium (or set FTAUDIT_CHROMIUM)")


def _facts(**overrides) -> dict:
    facts = {"scrollWidth": 700, "clientWidth": 700, "wide": [],
             "imgs": [{"alt": "roc", "complete": True, "natural": 900, "rect": [0, 0, 660, 450], "id": "roc-figure",
                       "axes": "[0.08, 0.07, 0.66, 0.91]", "legend": "[0.67, 0.07, 0.98, 0.56]"}]}
    facts.update(overrides)
    return facts


def test_checker_accepts_a_good_page_and_names_each_failure():
    assert check_report.check_facts(_facts(), 700) == []
    assert "horizontal overflow" in check_report.check_facts(_facts(scrollWidth=900), 700)[0]
    assert check_report.check_facts(_facts(scrollWidth=900), 1400) == []  # overflow is judged at narrow widths
    broken = _facts()
    broken["imgs"][0].update(natural=0)
    assert "did not load" in check_report.check_facts(broken, 700)[0]
    inside = _facts()
    inside["imgs"][0].update(legend="[0.5, 0.5, 0.65, 0.9]")  # the legend drawn on the curves
    assert "overlaps the plot area" in check_report.check_facts(inside, 700)[0]
    clipped = _facts()
    clipped["imgs"][0].update(legend="[0.67, 0.07, 1.02, 0.56]")
    assert "outside the image" in check_report.check_facts(clipped, 700)[0]
    assert "no ROC figure" in check_report.check_facts(_facts(imgs=[]), 700)[0]


def test_reports_of_the_default_study_and_lm_mia_pass_in_chromium(study_runs, tmp_path):
    _need_browser()
    screens = tmp_path / "screens"
    runs = [study_runs["finetune-mia"].path, study_runs["lm-mia"].path]
    results = check_report.check_reports(runs, widths=(700, 1400), screens=screens)
    assert results == {str(p): [] for p in runs}
    assert len(list(screens.glob("*.png"))) == 4


def test_a_broken_page_fails_in_chromium(tmp_path):
    """Overflow, a broken image, a legend on the plot and a request for an outside resource: all caught."""
    _need_browser()
    png = base64.b64encode(b"not a png").decode()
    page = tmp_path / "bad" / "report.html"
    page.parent.mkdir()
    page.write_text(
        "<!DOCTYPE html><html><body>"
        f'<img id="roc-figure" alt="roc" src="data:image/png;base64,{png}" '
        f"data-axes-box='{json.dumps([0.1, 0.1, 0.7, 0.9])}' data-legend-box='{json.dumps([0.5, 0.6, 0.68, 0.88])}'>"
        '<div style="width: 1500px">a table that does not scroll</div>'
        '<img alt="outside" src="http://127.0.0.1:9/x.png">'
        "</body></html>")
    (problems,) = check_report.check_reports([page], widths=(700,)).values()
    text = "\n".join(problems)
    assert "horizontal overflow" in text and "'roc' did not load" in text
    assert "overlaps the plot area" in text and "not self-contained" in text


def test_command_line_exit_status(tmp_path, capsys):
    _need_browser()
    assert check_report.main([str(tmp_path / "missing")]) == 1
    assert "no such report" in capsys.readouterr().out
