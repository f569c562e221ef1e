"""Scenario ``mlm-ratio`` end to end on a tiny BERT that memorised its halves, and the paired
comparison behind its verdict."""
from __future__ import annotations

import numpy as np
import pytest
from lm_worlds import MEMORISE, TINY, cli_run

from ftaudit.metrics.paired import paired_difference
from ftaudit.studies.lm.config import MASKED_ATTACKS
from ftaudit.studies.lm.mlm_ratio import significant


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    return cli_run("mlm-ratio", TINY + MEMORISE + ["lm.maskings=2"], tmp_path_factory.mktemp("mlm") / "store")


def test_report_compares_pll_with_the_ratios(memorised):
    results, run_dir = memorised
    assert [a["name"] for a in results["attacks"]] == MASKED_ATTACKS
    section = results["sections"][0]
    assert section["title"] == "PLL alone vs likelihood ratio"
    verdict = section["text"][1]
    assert verdict.startswith("The study: AUC 0.66 → 0.9") and "mlm-ratio:" in verdict and "mlm-ref-ratio:" in verdict
    rows = {r["attack"]: r for r in section["table"]}
    assert rows["mlm-ratio"]["vs mlm-pll: AUC gain"] and not rows["mlm-pll"]["vs mlm-pll: AUC gain"]
    assert verdict in results["notes"]
    assert "pseudo-perplexity" in results["utility"][0]["name"]
    assert (run_dir / "report.html").is_file()


def test_masked_lm_attacks_find_members(memorised):
    auc = {a["name"]: a["auc"] for a in memorised[0]["attacks"]}
    for name in ("loss", "reference", "mlm-pll", "mlm-ratio", "mlm-ref-ratio", "rmia-online"):
        assert auc[name]["lo"] > 0.5, (name, auc[name])


def test_paired_gain_of_an_attack_over_itself_is_nil_and_a_better_one_gains():
    """The verdict's paired comparison (ftaudit.metrics.paired, generalised from this study's paired gain)."""
    rng = np.random.default_rng(0)
    n = 400
    labels = np.tile([True, False], n // 2)
    example = np.arange(n) // 2
    weak = rng.normal(size=n) + 0.2 * labels
    strong = weak + 2.0 * labels
    same = paired_difference(weak, weak, labels, example, 0.01, 200, 0.95, 0)
    assert same.auc_diff == same.auc_diff_lo == same.auc_diff_hi == 0.0
    assert same.tpr_factor == same.tpr_factor_lo == same.tpr_factor_hi == 1.0
    assert not significant(same)
    better = paired_difference(weak, strong, labels, example, 0.1, 200, 0.95, 0)
    assert better.auc_diff_lo > 0.2 and better.tpr_factor_lo > 1.5
    assert significant(better)
    worse = paired_difference(strong, weak, labels, example, 0.1, 200, 0.95, 0)
    assert worse.auc_diff_hi < 0 and worse.tpr_factor_hi < 1
    assert not significant(worse)
