"""TPR below what the sample resolves is said to be not resolved (terminal table, HTML, results.json);
rates are percentages with exact fractions at 0 and 1."""
from __future__ import annotations

import re

import pytest
from rich.console import Console

from ftaudit.report import render_table, write_report
from ftaudit.report.resolution import is_resolved, mark_resolution, min_resolved_fpr
from ftaudit.report.table import NOT_RESOLVED, fmt_rate, fmt_utility_value
from ftaudit.wording import plural


@pytest.mark.parametrize(("fpr", "n", "resolved"), [(0.001, 300, False), (0.01, 300, False), (0.1, 300, True),
                                                    (0.01, 1000, True), (0.01, 999, False), (0.001, 10_000, True),
                                                    (0.01, None, None), (None, 300, None), (0.01, 0, None)])
def test_resolved_from_ten_false_positives(fpr, n, resolved):
    assert is_resolved(fpr, n) is resolved


def test_mark_resolution_adds_a_flag_and_keeps_every_key():
    attack = {"name": "loss", "n_nonmembers": 300,
              "tpr_at_fpr": [{"fpr": f, "value": 0.1, "lo": 0.05, "hi": 0.2} for f in (0.001, 0.01, 0.1)]}
    mark_resolution(attack)
    assert [e["resolved"] for e in attack["tpr_at_fpr"]] == [False, False, True]
    assert all({"fpr", "value", "lo", "hi"} <= set(e) for e in attack["tpr_at_fpr"])
    assert min_resolved_fpr(300) == pytest.approx(1 / 30)


def _small_sample(results: dict) -> dict:
    for attack in results["attacks"]:
        attack["n_members"] = attack["n_nonmembers"] = 300
    return results


def test_terminal_table_says_not_resolved_instead_of_a_number(results):
    console = Console(record=True, width=200, color_system=None)
    render_table(_small_sample(results), console=console)
    text = console.export_text()
    assert text.count(NOT_RESOLVED) >= 6  # 0.1 % and 1 % of 300 non-members, for each of 3 attacks
    assert "2.00% [1.50%, 2.50%]" not in text  # lira-online's TPR at 0.1 % FPR: no bare number
    assert "30.0% [22.5%, 37.5%]" in text  # 10 % of 300 is 30 false positives: resolved
    assert "with 300 non-members an FPR below 3.33% lets fewer than 10 false positives through" in text


def test_stored_flag_wins_over_the_count(results):
    results["attacks"][0]["tpr_at_fpr"][0]["resolved"] = False  # 20,000 non-members, but flagged
    console = Console(record=True, width=200, color_system=None)
    render_table(results, console=console)
    text = console.export_text()
    assert text.count(NOT_RESOLVED) == 2  # the one flagged cell, and the rule beneath the table
    assert "TPR@0.1% FPR" in text and "2.00% [1.50%, 2.50%]" not in text


def test_html_says_not_resolved_with_the_measured_rate_beneath(make_run, results):
    text = write_report(make_run(_small_sample(results))).read_text(encoding="utf-8")
    attacks = re.search(r'<section id="attacks">(.*?)</section>', text, re.S).group(1)
    assert attacks.count('class="num unresolved"') == 6
    assert "measured 2.00% [1.50%, 2.50%]" in attacks  # beneath "not resolved", never bare
    assert "30.0% [22.5%, 37.5%]" in attacks
    assert "fewer than 10 false positives" in attacks
    headline = re.search(r'<section id="headline">(.*?)</section>', text, re.S).group(1)
    assert NOT_RESOLVED in headline and "1% of 300 non-members is 3 false positives" in headline
    # every attack has 300/300: one sentence, not two constant columns
    assert "scored on 300 member and 300 non-member rows" in attacks and "<th class=\"num\">members</th>" not in attacks


def test_rates_are_percent_with_exact_fractions():
    assert fmt_rate({"value": 1.0, "lo": 1.0, "hi": 1.0}, 300) == "100% (300/300)"
    assert fmt_rate({"value": 0.0, "lo": 0.0, "hi": 0.0315}, 120) == "0% (0/120) [0.00%, 3.15%]"
    assert fmt_rate({"value": 0.0898, "lo": 0.061, "hi": 0.124}) == "8.98% [6.10%, 12.40%]"
    assert fmt_utility_value({"name": "fine-tuned train accuracy", "value": 1.0, "lo": 1.0, "hi": 1.0}) == "100% (all)"
    assert fmt_utility_value({"name": "test accuracy", "value": 0.9799, "lo": 0.97, "hi": 0.985}) == "98.0% [97.0%, 98.5%]"
    assert fmt_utility_value({"name": "validation perplexity", "value": 228.137, "lo": 227.7, "hi": 228.5}) == \
        "228.1 [227.7, 228.5]"  # not a rate
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs" and plural(0, "canary", "canaries") == \
        "0 canaries"
