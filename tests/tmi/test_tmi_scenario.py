"""Scenario ``tmi`` end to end: the CLI writes a report with every sweep, reruns come from the
cache, and on worlds with known pretraining membership the attack points the right way."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ftaudit
from ftaudit.cli import main
from ftaudit.store.db import RunDB

TINY = ["tmi.shadows=8", "tmi.pool=40", "tmi.finetune_size=50", "data.population_size=50", "tmi.pretrain_epochs=5",
        "tmi.finetune_epochs=3", "tmi.augmentations=3", "tmi.augmentation_counts=[1, 3]", "tmi.shadow_counts=[4, 8]",
        "tmi.methods=[head, full]", "tmi.epsilons=[4]", "tmi.sweep_victims=2", "tmi.meta_epochs=3",
        "model.hidden=[32]", "metrics.bootstrap=50"]
# Shadows that memorize few points, half of them mislabelled, through a linear probe.
STRONG = ["tmi.shadows=32", "tmi.pool=32", "tmi.mislabel=0.5", "tmi.pretrain_epochs=200", "tmi.augmentations=8",
          "tmi.finetune_size=50", "data.population_size=50", "tmi.finetune_epochs=5", "metrics.bootstrap=200",
          "tmi.shadow_counts=[]", "tmi.methods=[]", "tmi.epsilons=[]", "tmi.augmentation_counts=[]"]
SECTIONS = ["Mislabelled vs correctly labelled pretraining digits", "Sweep: number of shadow models",
            "Sweep: fine-tuning method", "Sweep: DP fine-tuning", "Sweep: number of augmented queries"]


def cli(*argv):
    try:
        main(list(argv))
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_cli_run_writes_the_report_with_every_sweep_and_reruns_from_cache(tmp_path, capsys):
    store = tmp_path / "store"
    sets = [a for o in TINY + [f"out={store}"] for a in ("--set", o)]
    cli("run", "tmi", "-q", *sets)
    assert "tmi" in capsys.readouterr().out
    (row,) = RunDB(store / "ftaudit.sqlite").runs()
    run_dir = Path(row.path)
    results = json.loads((run_dir / "results.json").read_text())
    html = (run_dir / "report.html").read_text()
    assert {a["name"] for a in results["attacks"]} == {"tmi", "adapted-lira", "global-threshold"}
    for a in results["attacks"]:
        assert a["auc"]["lo"] <= a["auc"]["value"] <= a["auc"]["hi"]
        assert a["n_members"] == a["n_nonmembers"] == 8 * 40 // 2  # every shadow a victim, half keep-matrix
    assert [s["title"] for s in results["sections"]] == SECTIONS
    for title in SECTIONS:
        assert title in html
    sweeps = {s["title"]: s for s in results["sections"]}
    assert [r["shadow models (incl. victim)"] for r in sweeps["Sweep: number of shadow models"]["table"]] == [4, 8]
    assert [r["method"] for r in sweeps["Sweep: fine-tuning method"]["table"]] == ["head", "full"]
    dp_rows = sweeps["Sweep: DP fine-tuning"]["table"]
    assert dp_rows[0]["ε"].startswith("∞") and float(dp_rows[1]["noise σ"]) > 0
    assert float(dp_rows[1]["ε (dp_accounting)"]) == pytest.approx(4, rel=0.05)
    assert len(sweeps["Sweep: number of shadow models"]["figures"]) == 2
    # pretraining, head and full fine-tunes and the DP one: 4 x 8 models; the head cell is the headline's
    assert results["cache"] == {"models_trained": 32, "models_loaded": 8}
    labels = np.load(run_dir / "arrays" / "labels.npy")
    assert labels.shape == (8 * 40,) and set(np.load(run_dir / "arrays" / "audit_y.npy")) <= {0, 1, 2, 3, 4}
    cli("run", "tmi", "-q", *sets)
    capsys.readouterr()
    again = json.loads((Path(RunDB(store / "ftaudit.sqlite").runs()[1].path) / "results.json").read_text())
    assert again["cache"] == {"models_trained": 0, "models_loaded": 40}
    assert again["attacks"] == results["attacks"] and again["sections"] == results["sections"]


def _aucs(res) -> dict:
    return {a["name"]: a["auc"] for a in res.results["attacks"]}


def test_members_score_higher_when_pretraining_memorizes(tmp_path):
    res = ftaudit.run("tmi", overrides=STRONG + [f"out={tmp_path}"])
    auc = _aucs(res)
    assert auc["tmi"]["lo"] > 0.5, auc
    scores = np.load(res.path / "arrays" / "scores-tmi.npy")
    labels = np.load(res.path / "arrays" / "labels.npy")
    assert scores[labels].mean() > scores[~labels].mean()
    groups = {r["challenge points"].split(" ")[0]: r for r in res.results["sections"][0]["table"]}
    assert set(groups) == {"all", "mislabelled", "correctly"}


def test_no_pretraining_no_signal_and_why_shadows_are_balanced(tmp_path):
    """Shadows that barely move from their init: IN and OUT are the same models, TMI is at chance.
    Without balancing, each point's metaclassifier sees one IN shadow fewer when the victim is IN,
    learns that base rate, and ranks members far BELOW non-members."""
    null = STRONG + ["tmi.pretrain_epochs=1", "pretrain.lr=1e-7", "tmi.victims=16", f"out={tmp_path}"]
    auc = _aucs(ftaudit.run("tmi", overrides=null))["tmi"]
    assert auc["lo"] < 0.5 < auc["hi"] and abs(auc["value"] - 0.5) < 0.05, auc
    unbalanced = _aucs(ftaudit.run("tmi", overrides=null + ["tmi.balance=false"]))["tmi"]  # same models, cached
    assert unbalanced["hi"] < 0.3, unbalanced


def test_scenario_refuses_what_it_does_not_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "tmi", "--set", "finetune.method=lora", "--set", f"out={tmp_path}"])
    assert info.value.code == 2
    assert "finetune.method" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["run", "tmi", "--set", "tmi.pool=5000", "--set", f"out={tmp_path}"])
    assert info.value.code == 2
    assert "tmi.pool" in capsys.readouterr().err
