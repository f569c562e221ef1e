"""Scenario ``lm-extraction`` end to end through the CLI on a tiny GPT-2 fine-tuned hard enough to
memorise: exposure grows with insertions and stays within its bounds, extraction finds repeated
training text and no held-out text, a rerun trains nothing, bad settings stop with exit 2."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ftaudit.cli import main
from ftaudit.store.db import RunDB

TINY = ["lm.vocab_size=300", "lm.block_len=32", "lm.pretrain_blocks=96", "lm.pretrain_epochs=2", "lm.pretrain_lr=0.01",
        "lm.n_layer=1", "lm.n_embd=32", "lm.pretrain_batch_size=8", "finetune.batch_size=8", "extraction.repetitions=[1,4,16]", "extraction.canaries=3",
        "extraction.finetune_blocks=96", "extraction.prompts=4", "finetune.epochs=8",
        "finetune.lr=0.01", "extraction.samples=4", "extraction.prefix_len=8", "extraction.suffix_len=6",
        "metrics.bootstrap=100"]


def sets(overrides, store):
    return [a for o in overrides + [f"out={store}"] for a in ("--set", o)]


def cli_run(overrides, store):
    try:
        main(["run", "lm-extraction", "-q", *sets(overrides, store)])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    run_dir = Path(RunDB(store / "ftaudit.sqlite").runs()[-1].path)
    return json.loads((run_dir / "results.json").read_text()), run_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("lm-extraction") / "store"


@pytest.fixture(scope="module")
def run(store):
    return cli_run(TINY, store)


def bits(cell: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.?\d*", cell)]


def test_exposure_grows_with_insertions_within_bounds(run):
    results, run_dir = run
    section = next(s for s in results["sections"] if s["title"] == "Canary exposure vs repetitions")
    rows = {r["insertions r"]: r for r in section["table"]}
    ceiling = np.log2(5001)
    rank = {r: bits(rows[r]["rank exposure (bits)"]) for r in rows}
    skew = {r: bits(rows[r]["skew-normal exposure (bits)"]) for r in rows}
    base = {r: bits(rows[r]["base, rank (bits)"]) for r in rows}
    assert all(0 <= v <= ceiling + 0.005 for r in rows for v in rank[r])  # 2 decimals in the table
    assert rank[16][0] > rank[1][0] and rank[16][0] > base[16][2]  # above the control's upper CI bound
    assert skew[16][0] >= rank[16][0] - 0.5
    fig = section["figures"][0]
    assert fig["xlog"] and [s["x"] for s in fig["series"][:3]] == [[1.0, 4.0, 16.0]] * 3
    # the inserted canaries are the members of the headline attacks, the 5,000 references the rest
    labels = np.load(run_dir / "arrays" / "labels.npy")
    assert labels.sum() == 9 and (~labels).sum() == 5000
    assert np.load(run_dir / "arrays" / "canary_repetitions.npy")[:9].tolist() == [1] * 3 + [4] * 3 + [16] * 3
    # the table's rank exposure, recomputed from the stored scores (log-perplexity = -canary-loss)
    ppl = -np.load(run_dir / "arrays" / "scores-canary-loss.npy")
    refs = ppl[~labels]
    for i, r in enumerate([1, 4, 16]):
        mine = ppl[3 * i:3 * i + 3]
        expected = np.mean([ceiling - np.log2(1 + (refs <= c).sum()) for c in mine])
        assert rank[r][0] == pytest.approx(expected, abs=0.006)
    auc = {a["name"]: a["auc"]["value"] for a in results["attacks"]}
    assert set(auc) == {"canary-loss", "canary-ratio"} and auc["canary-loss"] > 0.7


def test_extraction_finds_repeated_training_text_only(run):
    results, _ = run
    table = next(s for s in results["sections"] if s["title"] == "Extraction by generation")["table"]
    oracle = {r["prompts"]: r for r in table if r["ranking"].startswith("none")}
    assert oracle["training prefixes"]["extracted"] >= 2
    assert oracle["held-out prefixes (control)"]["extracted"] == 0
    ranked = [r for r in table if r["prompts"] == "training prefixes" and r["ranking"] == "ratio to base"]
    assert [r["kept per prompt"] for r in ranked] == ["0.25", "1"]
    for r in ranked:
        p, rec = bits(r["precision"]), bits(r["recall"])
        assert p[1] <= p[0] <= p[2] and rec[1] <= rec[0] <= rec[2]
        assert rec[0] == pytest.approx(100 * r["extracted"] / 12, abs=0.06)  # 4 prompts × 3 counts
    dup = next(s for s in results["sections"] if s["title"] == "Extraction vs repetitions")["table"]
    by = {r["copies r"]: bits(r["recall, any sample"])[0] for r in dup}
    assert by[16] > by[1] and by["held-out (0)"] == 0


def test_rerun_trains_nothing(run, store):
    results, _ = run
    again, _ = cli_run(TINY, store)
    assert again["cache"]["models_trained"] == 0 and again["sections"] == results["sections"]


def test_stored_config_reruns_to_the_same_results(run, store):
    results, run_dir = run
    try:
        main(["run", "-q", "-c", str(run_dir / "config.yaml")])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    again = json.loads((Path(RunDB(store / "ftaudit.sqlite").runs()[-1].path) / "results.json").read_text())
    assert again["config"] == results["config"] and again["sections"] == results["sections"]
    assert again["attacks"] == results["attacks"] and again["cache"]["models_trained"] == 0


@pytest.mark.parametrize("override, field", [
    (["extraction.suffix_len=30"], "extraction.suffix_len"),
    (["extraction.finetune_epochs=3"], "extraction.finetune_epochs"),  # moved to finetune.epochs
    (["extraction.canaries=20"], "extraction"),
    (["extraction.references=100"], "extraction.references"),
    (["lm.pretrain_corpus=wikitext2-test"], "lm.pretrain_corpus"),
])
def test_bad_settings_stop_before_training(override, field, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "lm-extraction", "-q", *sets(TINY + override, tmp_path / "store")])
    assert info.value.code == 2
    assert f"error: {field}" in capsys.readouterr().err
    assert not (tmp_path / "store" / "cache" / "models").exists()
