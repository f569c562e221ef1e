"""Scenario ``lm-methods`` end to end: every method of the grid is fine-tuned, measured and drawn
against perplexity with its Pareto frontier."""
from __future__ import annotations

import pytest
from lm_worlds import TINY, cli_run

METHODS = ["full", "head", "adapters", "lora"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    overrides = TINY + [f"sweep.methods=[{', '.join(METHODS)}]", "sweep.lrs=[0.001, 0.01]", "finetune.references=3",
                        "finetune.epochs=4", "finetune.lr=0.01", "finetune.method=head", "lm.reference=base",
                        "lm.block_len=24", "sweep.canaries=4", "sweep.canary_references=63"]  # a canary takes 22 tokens here
    return cli_run("lm-methods", overrides, tmp_path_factory.mktemp("methods") / "store")


def test_every_cell_is_measured(grid):
    results, run_dir = grid
    assert results["cache"]["models_trained"] == 1 + 4 * 2 * 4  # the base, then 4 models per cell
    section = results["sections"][0]
    rows = section["table"]
    assert [(r["method"], r["lr"]) for r in rows] == [(m, lr) for m in METHODS for lr in (0.001, 0.01)]
    for r in rows:
        assert r["recall lo"] <= r["recall@10%FPR"] <= r["recall hi"]
        assert r["TPR lo"] <= r["TPR@1%FPR"] <= r["TPR hi"]
        assert r["ppl lo"] <= r["validation perplexity"] <= r["ppl hi"]
    params = {r["method"]: r["trainable params"] for r in rows}
    assert params["head"] < params["full"] and params["lora"] < params["full"] and params["adapters"] < params["full"]
    # more learning rate, more memorisation: the faster cell of each method leaks more
    for m in METHODS:
        slow, fast = (r for r in rows if r["method"] == m)
        assert fast["training perplexity"] < slow["training perplexity"], m
    assert "(headline cell: head lr=0.01)" in results["title"]
    assert (run_dir / "report.html").is_file()


def test_frontier_and_matched_comparison(grid):
    results, _ = grid
    section, matched = results["sections"][:2]
    figure = section["figures"][0]
    labels = [s["label"] for s in figure["series"]]
    assert labels == METHODS + ["Pareto frontier"]
    frontier = figure["series"][-1]
    on = [r for r in section["table"] if r["on frontier"] == "yes"]
    assert sorted(frontier["x"]) == sorted(r["validation perplexity"] for r in on) and on
    # no frontier cell is dominated by another cell
    for f in on:
        assert not any(r["validation perplexity"] < f["validation perplexity"] and r["recall@10%FPR"] < f["recall@10%FPR"]
                       for r in section["table"])
    assert sorted(r["method"] for r in matched["table"]) == sorted(METHODS)
    leak = [r["recall@10%FPR"] for r in matched["table"]]
    assert leak == sorted(leak, reverse=True)


def test_canary_exposure_column(grid):
    """Repeated canaries are exposed: well above the base (which never saw them) once fine-tuning
    memorises, and at most log2(64) = 6 bits by rank."""
    results, _ = grid
    section = results["sections"][0]
    control = float(section["text"][1].split("the control: ")[1].split(" bits")[0])
    assert 0 <= control < 4
    rows = {(r["method"], r["lr"]): r for r in section["table"]}
    for r in rows.values():
        assert 0 <= r["exposure lo"] <= r["canary exposure (rank, bits)"] <= r["exposure hi"] <= 6
        assert r["canary exposure (skew-normal, bits)"] >= 0
    assert rows[("full", 0.01)]["canary exposure (rank, bits)"] > control + 1.5
    assert [f["title"] for f in section["figures"]] == ["Leakage vs perplexity (lm-ratio)", "Canary exposure vs perplexity"]


def test_canary_longer_than_a_block_exits_2_before_training(cli_error, tmp_path):
    code, err = cli_error("lm-methods", TINY, tmp_path / "store")  # 16-token blocks, 22-token canaries
    assert code == 2 and err.startswith("error: lm.block_len: a canary takes 22 tokens"), err
    assert not (tmp_path / "store" / "cache" / "models").exists()


def test_unknown_method_attack_exits_2(cli_error, tmp_path):
    code, err = cli_error("lm-methods", TINY + ["sweep.attack=nope"], tmp_path / "store")
    assert code == 2 and err.startswith("error: sweep.attack")
