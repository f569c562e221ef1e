"""Scenario ``lm-mia`` end to end through the CLI on a tiny GPT-2, with known members: models
fine-tuned until they memorise their halves must be caught by every LM attack; a rerun trains
nothing; bad LM settings stop with one line naming the field (exit 2) before any training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lm_worlds import MEMORISE, TINY, cli_run

from ftaudit.cli import main
from ftaudit.store.db import RunDB
from ftaudit.studies.lm.config import CAUSAL_ATTACKS

LM_ATTACKS = ["loss", "zlib", "min-k", "min-k++", "lm-ratio", "ref-ratio", "lira-online-global", "rmia-online"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("lm-mia") / "store"


@pytest.fixture(scope="module")
def memorised(store):
    return cli_run("lm-mia", TINY + MEMORISE, store)


def test_report_and_every_lm_attack(memorised):
    results, run_dir = memorised
    names = [a["name"] for a in results["attacks"]]
    assert names == CAUSAL_ATTACKS
    assert (run_dir / "report.html").stat().st_size > 10_000
    titles = [s["title"] for s in results["sections"]]
    assert titles[0] == "Setup" and titles[1].startswith("Most exposed blocks")
    exposed = results["sections"][1]["table"]
    assert len(exposed) == 5 and all(len(r["text (first 80 characters)"]) > 5 for r in exposed)
    assert np.load(run_dir / "arrays" / "audit_ids.npy").shape == (48, 16)
    util = {u["name"].split(" (")[0]: u for u in results["utility"]}
    assert util["fine-tuned training perplexity"]["hi"] < util["fine-tuned validation perplexity"]["lo"]  # memorised
    for a in results["attacks"]:
        assert a["auc"]["lo"] <= a["auc"]["value"] <= a["auc"]["hi"]
        assert a["n_members"] == a["n_nonmembers"] == 4 * 48 // 2


def test_members_score_higher_on_memorised_fine_tunes(memorised):
    results, run_dir = memorised
    auc = {a["name"]: a["auc"] for a in results["attacks"]}
    labels = np.load(run_dir / "arrays" / "labels.npy")
    for name in LM_ATTACKS:
        assert auc[name]["lo"] > 0.5, (name, auc[name])
        scores = np.load(run_dir / "arrays" / f"scores-{name}.npy")
        assert np.median(scores[labels]) > np.median(scores[~labels]), name


def test_rerun_trains_and_queries_nothing(memorised, store):
    results, _ = memorised
    again, _ = cli_run("lm-mia", TINY + MEMORISE, store)
    assert again["cache"]["models_trained"] == 0 and again["cache"]["models_loaded"] == results["cache"]["models_trained"]
    assert again["attacks"] == results["attacks"]


def test_stored_config_reruns_to_the_same_results(memorised, store):
    """The run's config.yaml (every key, defaults included) re-runs to identical results: no
    behaviour depends on which keys were set (the attack list stays the LM one)."""
    results, run_dir = memorised
    try:
        main(["run", "-q", "-c", str(run_dir / "config.yaml")])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    again = json.loads((Path(RunDB(store / "ftaudit.sqlite").runs()[-1].path) / "results.json").read_text())
    assert again["config"] == results["config"] and again["attacks"] == results["attacks"]
    assert again["cache"]["models_trained"] == 0


def test_gentler_fine_tuning_leaks_less(memorised, store):
    """One epoch at a small learning rate: every attack finds less than on the memorised world, and
    with lm.reference=base the second-reference attack is skipped, not faked."""
    strong = {a["name"]: a["auc"]["value"] for a in memorised[0]["attacks"]}
    results, _ = cli_run("lm-mia", TINY + ["finetune.epochs=1", "finetune.lr=1e-4", "lm.reference=base"], store)
    gentle = {a["name"]: a["auc"]["value"] for a in results["attacks"]}
    for name in ("loss", "min-k", "lm-ratio", "lira-online-global"):
        assert gentle[name] < strong[name] - 0.1, (name, gentle[name], strong[name])
    assert "ref-ratio" in results["skipped_attacks"] and "ref-ratio" not in gentle


def test_vectorized_trainer_gives_the_same_study(memorised, tmp_path):
    """The LM studies train one model at a time unless engine.vectorized is set; set, the vmapped
    trainer computes the same models (to float tolerance), so the attacks agree."""
    results, _ = cli_run("lm-mia", TINY + MEMORISE + ["engine.vectorized=true"], tmp_path / "store")
    loop = {a["name"]: a["auc"]["value"] for a in memorised[0]["attacks"]}
    vmap = {a["name"]: a["auc"]["value"] for a in results["attacks"]}
    assert vmap.keys() == loop.keys()
    assert all(abs(vmap[n] - loop[n]) < 0.01 for n in loop), (vmap, loop)


@pytest.mark.parametrize("overrides, field", [
    (["lm.finetune_epochs=3"], "lm.finetune_epochs"),  # moved to finetune.epochs
    (["pretrain.lr=0.1"], "pretrain"),  # the tiny base's recipe is lm.pretrain_*
    (["pretrain.optimizer=sgd"], "pretrain"),
    (["finetune.augment=1"], "finetune.augment"),  # no pixel shifts for text
    (["attack.shifts=1"], "attack.shifts"),
    (["lm.model=tiny-bert"], "lm.model"),
    (["lm.model=/no/such/model/dir"], "lm.model"),
    (["lm.pretrain_corpus=wikitext2-test"], "lm.pretrain_corpus"),
    (["lm.finetune_corpus=/no/such/file.txt"], "lm.finetune_corpus"),
    (["lm.n_blocks=100000"], "lm.n_blocks"),
    (["lm.n_head=3"], "lm"),
    (["lm.reference=/no/such/reference"], "lm.reference"),
    (["finetune.dp.epsilon=8"], "finetune.dp"),  # the LM studies fine-tune without DP
])
def test_bad_lm_config_exits_2_before_training(cli_error, tmp_path, overrides, field):
    code, err = cli_error("lm-mia", TINY + overrides, tmp_path / "store")
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}") and "—" in lines[0], err
    assert not (tmp_path / "store" / "cache" / "models").exists()  # nothing was trained
