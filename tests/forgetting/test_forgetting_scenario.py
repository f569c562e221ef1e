"""The ``forgetting`` study end to end on a small configuration, and its config errors."""
import json

import pytest

import ftaudit
from ftaudit.errors import UserError

SMALL = ["forgetting.models=8", "forgetting.train_size=200", "forgetting.population_size=60",
         "forgetting.per_repetition=40", "forgetting.repetitions=[1,8]", "forgetting.inject_per_step=16",
         "forgetting.inject_step=60", "forgetting.repeat_gap=8", "forgetting.poison_epochs=20",
         "forgetting.checkpoints=[0,10,40]", "forgetting.augment=0", "forgetting.arch=mlp",
         "forgetting.hidden=[64]", "metrics.bootstrap=100", "attack.shifts=0"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    store = tmp_path_factory.mktemp("forgetting") / "store"
    first = ftaudit.run("forgetting", overrides=SMALL + [f"out={store}"])
    again = ftaudit.run("forgetting", overrides=SMALL + [f"out={store}"])
    return first, again


def test_report_has_decay_curves_with_cis(small):
    res, _ = small
    sections = {s["title"]: s for s in res.results["sections"]}
    inject = sections["INJECT: exposure after the last pass"]
    labels = {(row["run"], row["examples"]) for row in inject["table"]}
    for mode in ("nondeterministic", "deterministic"):
        assert {(f"inject · {mode}", g) for g in ("r = 1", "r = 8", "all")} <= labels
    for fig in inject["figures"] + sections["POISON: the sensitive set trained first"]["figures"]:
        for series in fig["series"]:
            assert series["x"] == [0, 10, 40]
            assert all(lo <= y <= hi for y, lo, hi in zip(series["y"], series["lo"], series["hi"]))
    assert (res.path / "report.html").stat().st_size > 10_000
    assert "deterministic" in json.dumps(sections["Deterministic vs nondeterministic training"]["text"])


def _auc(cell: str) -> tuple[float, float, float]:
    value, rest = cell.split(" [")
    lo, hi = rest.rstrip("]").split(", ")
    return float(value), float(lo), float(hi)


def test_exposure_grows_with_repetitions_and_fades_after_the_sensitive_phase(small):
    res, _ = small
    inject = {(r["run"], r["examples"]): r for r in res.results["sections"][0]["table"]}
    poison = {r["run"]: r for r in res.results["sections"][1]["table"]}
    for mode in ("nondeterministic", "deterministic"):
        # seen 8 times vs once: the CIs right after the last pass do not overlap
        assert _auc(inject[(f"inject · {mode}", "r = 8")]["AUC at 0"])[1] > _auc(inject[(f"inject · {mode}", "r = 1")]["AUC at 0"])[2]
        # 20 epochs on mislabelled digits alone: exposed at the end of that phase, much less 40 steps later
        start, end = _auc(poison[f"poison · {mode}"]["AUC at 0"]), _auc(poison[f"poison · {mode}"]["AUC at 40"])
        assert start[1] > 0.5 and end[0] < start[1], poison


def test_rerun_takes_every_checkpoint_from_the_cache(small):
    first, again = small
    assert first.results["cache"] == {"models_trained": 32, "models_loaded": 0}
    assert again.results["cache"] == {"models_trained": 0, "models_loaded": 32}
    assert again.results["sections"] == first.results["sections"]
    assert again.results["attacks"] == first.results["attacks"]


@pytest.mark.parametrize("override, field", [
    ("forgetting.repeat_gap=2", "forgetting.repeat_gap"),
    ("forgetting.inject_step=10", "forgetting.inject_step"),
    ("model.arch=cnn", "model"),  # no model section: the network is forgetting.arch / hidden / channels
    ("forgetting.attack=reference", "forgetting.attack"),
    ("forgetting.models=7", "forgetting"),
    ("forgetting.checkpoints=[10,5]", "forgetting"),
    ("forgetting.train_size=1700", "forgetting.train_size"),
])
def test_bad_settings_are_user_errors(tmp_path, override, field):
    with pytest.raises(UserError) as err:
        ftaudit.run("forgetting", overrides=SMALL + [f"out={tmp_path}", override])
    assert err.value.field.startswith(field)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
