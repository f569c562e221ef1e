"""The HTML report: self-contained, complete, robust to optional pieces, written atomically."""
from __future__ import annotations

import base64
import html
import re
from importlib import resources

import numpy as np
import pytest

from ftaudit.errors import UserError
from ftaudit.report import html as report_html
from ftaudit.report import roc_png, write_report
from ftaudit.report.html import REPORT_NAME

PNG = b"\x89PNG\r\n\x1a\n"


def _pngs(text: str) -> list[bytes]:
    """Every embedded image, decoded."""
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"https?://", text)
    assert not re.search(r"<script|<link|<iframe|@import|url\(", text, re.I)


def _section(text: str, name: str) -> str:
    return re.search(rf'<section id="{name}">(.*?)</section>', text, re.S).group(1)


def test_report_is_complete_and_self_contained(run_dir, results):
    path = write_report(run_dir)
    assert path == run_dir / REPORT_NAME and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert results["run_id"] in text and html.escape(results["title"]) in text
    assert "finetune-mia" in text and "2026-11-23T18:15:00+00:00" in text
    for attack in results["attacks"]:
        assert html.escape(attack["name"]) in _section(text, "attacks")
    assert "reference-<zlib>" not in text  # autoescaped
    assert "data:image/png;base64," in text
    pngs = _pngs(text)
    assert len(pngs) == 3 and all(p.startswith(PNG) for p in pngs)  # ROC, histograms, exposed digits
    _assert_self_contained(text)
    assert sorted(p.name for p in run_dir.iterdir()) == ["arrays", REPORT_NAME, "results.json"]


def test_headline_table_and_reproducibility_come_from_results(run_dir):
    text = write_report(run_dir).read_text(encoding="utf-8")
    headline = _section(text, "headline")
    assert "lira-online" in headline
    assert "0.710 <small>[0.700, 0.720]</small>" in headline  # AUC with CI
    assert "5.00% <small>[3.75%, 6.25%]</small>" in headline  # TPR@1% FPR with CI
    assert "93.0% <small>[92.0%, 94.0%]</small>" in headline and "mean over 4 models" in headline  # a rate: percent
    attacks = _section(text, "attacks")
    assert "0.623 [0.613, 0.633]" in attacks and "2.10% [1.58%, 2.63%]" in attacks
    assert attacks.count('class="best"') == 1
    assert "no base model" in attacks
    repro = _section(text, "reproducibility")
    for needle in ("3.11.7", "2.13.0", "123", "1, 2, 3, 4", "20.5 s", "73%", "models trained", "epochs: 3"):
        assert needle in repro, needle
    assert "lira-online beats loss at every FPR" in _section(text, "notes")
    exposed = _section(text, "exposed")
    assert "<td class=\"num\">—</td>" in exposed and "75%" in exposed  # null score


def test_missing_optional_pieces_do_not_break(make_run, results):
    for key in ("skipped_attacks", "notes", "seeds", "cache", "timings", "versions", "config", "utility"):
        del results[key]
    results["exposed"] = []
    text = write_report(make_run(results, images=False)).read_text(encoding="utf-8")
    assert len(_pngs(text)) == 2
    assert "No exposed records stored." in text
    assert 'id="notes"' not in text and "Skipped attacks" not in text
    _assert_self_contained(text)


@pytest.mark.parametrize("audit_x", [None, np.zeros((40, 5), np.float32)], ids=["absent", "tabular"])
def test_without_images_exposed_examples_are_a_table(make_run, results, audit_x):
    run_dir = make_run(results, images=False)
    if audit_x is not None:
        np.save(run_dir / "arrays" / "audit_x.npy", audit_x)
    text = write_report(run_dir).read_text(encoding="utf-8")
    exposed = _section(text, "exposed")
    assert "<img" not in exposed
    assert "<td class=\"num\">17</td>" in exposed and "lira-online" in exposed


def test_missing_arrays_are_reported_not_fatal(run_dir, results):
    (run_dir / "arrays" / "roc-loss.npy").unlink()
    (run_dir / "arrays" / "labels.npy").unlink()
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "roc-loss.npy is missing" in text and "labels.npy is missing" in text
    assert "No scores stored." in text
    assert len(_pngs(text)) == 2  # ROC of the other attacks, exposed digits


def test_no_attacks_at_all(make_run, results):
    results.update(attacks=[], best_attack=None, exposed=[])
    text = write_report(make_run(results)).read_text(encoding="utf-8")
    assert "No attack results stored." in text and "no attack result stored" in text


@pytest.mark.parametrize(
    ("content", "problem"), [('{"run_id": "x", "attacks": [', "not valid JSON"), ("[1, 2]", "JSON object")]
)
def test_corrupt_results_leave_previous_report_untouched(run_dir, content, problem):
    previous = write_report(run_dir).read_bytes()
    (run_dir / "results.json").write_text(content)
    with pytest.raises(UserError, match=problem):
        write_report(run_dir)
    assert (run_dir / REPORT_NAME).read_bytes() == previous
    assert sorted(p.name for p in run_dir.iterdir()) == ["arrays", REPORT_NAME, "results.json"]


def test_failure_while_writing_leaves_no_partial_file(run_dir, monkeypatch):
    previous = write_report(run_dir).read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.plots.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(run_dir)
    assert (run_dir / REPORT_NAME).read_bytes() == previous
    assert sorted(p.name for p in run_dir.iterdir()) == ["arrays", REPORT_NAME, "results.json"]


def test_missing_results_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no results.json"):
        write_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_roc_png_reads_the_stored_curves(run_dir):
    png = roc_png(run_dir)
    assert png.startswith(PNG)
    assert png in _pngs(write_report(run_dir).read_text(encoding="utf-8"))  # same figure as the report


def test_template_is_packaged():
    template = resources.files("ftaudit.report").joinpath("templates", "report.html.j2")
    assert template.is_file()
