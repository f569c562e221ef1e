"""`--seeds N` repeats the whole study over independent seeds and reports the spread beside the CIs."""
import json

import pytest

import ftaudit
from ftaudit.cli import main
from ftaudit.errors import UserError
from study_settings import SMALL


def test_seeds_repeat_the_study_and_report_the_spread(tmp_path):
    store = tmp_path / "store"
    args = [a for kv in SMALL["finetune-mia"] + [f"out={store}"] for a in ("--set", kv)]
    with pytest.raises(SystemExit) as info:
        main(["run", "-q", "--seeds", "3", *args])
    assert info.value.code == 0
    (results_path,) = store.glob("runs/*/results.json")
    results = json.loads(results_path.read_text())
    assert results["config"]["seeds"] == [1, 2] and results["seeds"]["run"] == 0
    spread = next(s for s in results["sections"] if s["title"] == "Spread across seeds")
    rows = {r["attack"]: r for r in spread["table"]}
    assert set(rows) == {a["name"] for a in results["attacks"]}
    assert all(r["seeds"] == 3 for r in rows.values())
    assert "[0, 1, 2]" in spread["text"][0]
    # three independent studies: 1 + 1 + 4 models each (pretrain, scratch control, ensemble)
    assert results["cache"]["models_trained"] == 3 * (1 + 1 + 4)
    # the headline is seed 0's run, identical to a run without repeats (whose models are all cached)
    single = ftaudit.run("finetune-mia", overrides=SMALL["finetune-mia"] + [f"out={store}"])
    assert single.results["attacks"] == results["attacks"]
    assert single.results["cache"]["models_trained"] == 0


def test_seeds_must_be_distinct(tmp_path):
    with pytest.raises(UserError) as info:
        ftaudit.run("finetune-mia", overrides=[f"out={tmp_path}", "seeds=[1, 1]"])
    assert info.value.field == "seeds"
