"""The terminal table: every attack with its CIs, best attack marked, nulls shown as dashes."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ftaudit.report import render_table
from ftaudit.report.table import BEST_MARK, DASH, fmt_auc, fmt_number, fmt_tpr, fmt_utility


def _render(results: dict) -> str:
    console = Console(record=True, width=160, color_system=None)
    table = render_table(results, console=console)
    assert isinstance(table, Table)
    return console.export_text()


def test_table_lists_every_attack_with_cis(results):
    text = _render(results)
    for attack in results["attacks"]:
        assert attack["name"] in text
    assert "0.710 [0.700, 0.720]" in text  # AUC with its CI
    assert "2.00% [1.50%, 2.50%]" in text  # TPR@0.1% of lira-online, percent formatted
    assert "30.0% [22.5%, 37.5%]" in text  # TPR@10%: one decimal above 10 %
    assert "TPR@0.1% FPR" in text and "TPR@1% FPR" in text and "TPR@10% FPR" in text
    assert "95% CI" in text


def test_best_attack_is_marked_once(results):
    text = _render(results)
    assert text.count(BEST_MARK) == 1
    assert f"{BEST_MARK} lira-online" in text


def test_utility_and_skipped_beneath(results):
    text = _render(results)
    assert "fine-tuned test accuracy: 93.0% [92.0%, 94.0%] (mean over 4 models)" in text  # accuracies in percent
    assert "pretrained base accuracy (pretraining task): 98.0%" in text
    assert "reference: no base model" in text
    assert text.index("fine-tuned test accuracy") > text.index("lira-online")


def test_nulls_and_missing_fields_render_as_dashes(results):
    results["attacks"][1]["auc"] = None
    results["attacks"][1]["tpr_at_fpr"] = [{"fpr": 0.01, "value": 0.03, "lo": None, "hi": None}]
    results["attacks"][2] = {"name": "bare"}
    results["utility"] = None
    results["skipped_attacks"] = None
    results["ci_level"] = None
    results["best_attack"] = None
    text = _render(results)
    assert "bare" in text and "3.00%" in text
    assert text.count(DASH) >= 8
    assert BEST_MARK not in text


def test_empty_results_still_render():
    assert "run" in _render({"run_id": "run"})


def test_table_without_console_returns_rows(results):
    table = render_table(results)
    assert table.row_count == len(results["attacks"])


def test_formatters():
    assert fmt_auc({"value": 0.5, "lo": 0.49, "hi": None}) == "0.500"
    assert fmt_auc(None) == DASH
    assert fmt_tpr({"value": 0.0004, "lo": 0.0, "hi": 0.0012}) == "0.04% [0.00%, 0.12%]"
    assert fmt_tpr({"value": float("nan")}) == DASH
    assert fmt_utility({"name": "ppl", "value": 12.345678}) == "ppl: 12.35"
    assert fmt_number(float("inf")) == "∞" and fmt_number(None) == DASH and fmt_number(True) == DASH
