"""Scenario ``tmi-text`` end to end on tiny GPT-2s: the CLI writes a report with every sweep, and
LMs that memorize their pretraining blocks are found by TMI through the fine-tuned model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftaudit.cli import main
from ftaudit.store.db import RunDB

TINY = ["tmi.shadows=8", "tmi.pool=32", "tmi.finetune_blocks=16", "tmi.block_len=16",
        "tmi.vocab_size=300", "tmi.n_layer=1", "tmi.n_embd=32", "tmi.pretrain_epochs=15",
        "tmi.finetune_epochs=1", "tmi.augmentations=2", "tmi.augmentation_counts=[1]",
        "tmi.shadow_counts=[4]", "tmi.methods=[head]", "tmi.epsilons=[8]", "tmi.sweep_victims=2",
        "tmi.meta_epochs=30", "metrics.bootstrap=100"]
SECTIONS = ["Most exposed pretraining blocks (TMI)", "Sweep: number of shadow models", "Sweep: fine-tuning method",
            "Sweep: DP fine-tuning", "Sweep: number of augmented queries"]


def test_cli_run_writes_the_report_and_members_score_higher(tmp_path, capsys):
    store = tmp_path / "store"
    sets = [a for o in TINY + [f"out={store}"] for a in ("--set", o)]
    try:
        main(["run", "tmi-text", "-q", *sets])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    capsys.readouterr()
    (row,) = RunDB(store / "ftaudit.sqlite").runs()
    run_dir = Path(row.path)
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["title"] for s in results["sections"]] == SECTIONS
    html = (run_dir / "report.html").read_text()
    assert all(title in html for title in SECTIONS)
    exposed = results["sections"][0]["table"]
    assert len(exposed) == 10 and all(len(r["text"]) > 10 for r in exposed)  # the blocks' text is shown
    dp = results["sections"][3]["table"]
    assert float(dp[1]["noise σ"]) > 0
    util = {u["name"]: u for u in results["utility"]}
    members = util["pretrained: loss on its own pool blocks (members)"]
    others = util["pretrained: loss on the other pool blocks (non-members)"]
    assert members["hi"] < others["lo"]  # the shadows memorized their halves ...
    auc = {a["name"]: a["auc"] for a in results["attacks"]}
    assert auc["tmi"]["lo"] > 0.5, auc  # ... and TMI finds it through the fine-tuned model
    scores, labels = (np.load(run_dir / "arrays" / f"{n}.npy") for n in ("scores-tmi", "labels"))
    assert scores[labels].mean() > scores[~labels].mean()


@pytest.mark.parametrize("override, field, fix", [
    ("finetune.epochs=3", "finetune.epochs", "ftaudit config"),  # not in tmi-text's schema (tmi.finetune_epochs is)
    ("tmi.pool=100000", "tmi.pool", "tmi.block_len"),
    ("tmi.finetune_corpus=/no/such/file.txt", "tmi.finetune_corpus", "existing"),
])
def test_bad_text_settings_are_one_line_errors(tmp_path, capsys, override, field, fix):
    with pytest.raises(SystemExit) as info:
        main(["run", "tmi-text", "--set", override, "--set", f"out={tmp_path}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"error: {field}:" in err and fix in err and "Traceback" not in err, err
