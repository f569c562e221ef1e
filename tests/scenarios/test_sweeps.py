"""The methods and dp-finetune studies end to end on small real digits models."""
import math

import pytest

import ftaudit
from ftaudit.errors import UserError

BASE = ["model.arch=mlp", "model.hidden=[64]", "data.audit_size=96", "data.population_size=60",
        "pretrain.epochs=10", "pretrain.augment=0", "finetune.augment=0", "metrics.bootstrap=100",
        "finetune.references=5"]


def _section(res, title_start):
    return next(s for s in res.results["sections"] if s["title"].startswith(title_start))


def test_methods_study_compares_every_method_at_matched_accuracy(tmp_path):
    res = ftaudit.run("methods", overrides=BASE + ["finetune.epochs=6", "sweep.lrs=[0.003]",
                                                   "sweep.methods=[full, head, lora]", f"out={tmp_path}"])
    grid = _section(res, "Leakage vs utility")
    assert [r["method"] for r in grid["table"]] == ["full", "head", "lora"]
    for row in grid["table"]:
        assert 0 <= row["TPR lo"] <= row["TPR@1%FPR"] <= row["TPR hi"] <= 1
        assert row["test accuracy"] > 0.3  # fine-tuning from the pretrained base works for every method
    assert sum(r["on frontier"] == "yes" for r in grid["table"]) >= 1
    assert grid["table"][1]["trainable params"] < grid["table"][2]["trainable params"] < grid["table"][0]["trainable params"]
    matched = _section(res, "At matched accuracy")
    assert {r["method"] for r in matched["table"]} == {"full", "head", "lora"}
    verdict = matched["text"][-1]  # most/least leaking named only when the CI of the difference excludes zero
    assert ("leaks most" in verdict and "[+" in verdict) or "not resolved" in verdict
    assert res.report.is_file() and "Pareto" in res.report.read_text()


def test_dp_study_audit_never_exceeds_the_accounted_epsilon(tmp_path):
    res = ftaudit.run("dp-finetune", overrides=BASE + [
        "finetune.epochs=12", "sweep.lrs=[0.005]", "sweep.clips=[1.0]", "sweep.epsilons=[0.5, .inf]",
        "sweep.subsets=[head, layers, full]", "sweep.canaries=24", f"out={tmp_path}"])
    frontier = _section(res, "Privacy–utility frontier")
    assert len(frontier["table"]) == 2 * 3
    for row in frontier["table"]:
        if row["ε target"] == "0.5":
            assert 0.49 < row["ε, one run"] <= 0.5  # calibrated to the target, never above it
            assert row["ε, search of 1"] == pytest.approx(row["ε, one run"], rel=1e-3)  # one config: no extra cost
            assert row["ε, grid of 3"] > 1.3 * row["ε, one run"]  # three subsets tried: composition costs more
    audit = {r["ε target"]: r for r in _section(res, "Empirical ε")["table"]}
    private, open_ = audit["0.5"], audit["∞"]
    assert private["canary lower bound"] <= private["accounted ε"] and private["one-run lower bound"] <= private["accounted ε"]
    assert open_["accounted ε"] is None or math.isinf(open_["accounted ε"]) or open_["accounted ε"] > 1e6
    assert open_["canary lower bound"] > max(private["canary lower bound"], 0.5)  # no noise: memorised canaries show
    mia = _section(res, "Membership inference vs ε")["table"]
    assert mia[0]["AUC"] < mia[1]["AUC"]  # ε = 0.5 leaks less than no noise


def test_sweep_attack_must_be_run(tmp_path):
    with pytest.raises(UserError, match="sweep.attack"):
        ftaudit.run("methods", overrides=BASE + ["attack.names=[loss]", f"out={tmp_path}"])
