"""docs/adding-a-study.md stays true: its code registers a toy study that runs end to end."""
import re
from pathlib import Path

import pytest
import yaml

import ftaudit
from ftaudit.errors import UserError

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-study.md"


@pytest.fixture(scope="module")
def toy_study():
    from ftaudit.studies import get_study

    try:
        return get_study("toy")
    except UserError:
        code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
        exec(compile(code, str(DOC), "exec"), {"__name__": "toy_study_doc"})
        return get_study("toy")


def test_the_documented_toy_study_runs_end_to_end(toy_study, tmp_path):
    res = ftaudit.run("toy", overrides=[f"out={tmp_path}", "metrics.bootstrap=50", "toy.recipe.epochs=30",
                                        "toy.noise=0.2", "toy.examples=48"])
    attacks = {a["name"]: a for a in res.results["attacks"]}
    assert set(attacks) == {"loss", "lira-online"}
    assert attacks["lira-online"]["auc"]["value"] > 0.5  # small, overfit MLPs: members are visible
    assert res.results["cache"]["models_trained"] == 6
    again = ftaudit.run("toy", config=res.path / "config.yaml")  # the stored config re-runs identically, from cache
    assert again.results["cache"] == {"models_trained": 0, "models_loaded": 6}
    assert again.results["attacks"] == res.results["attacks"]
    assert res.report.is_file()


def test_the_toy_study_has_its_own_schema(toy_study, tmp_path):
    with pytest.raises(UserError) as info:
        ftaudit.run("toy", overrides=[f"out={tmp_path}", "finetune.epochs=3"])
    assert info.value.field == "finetune"
    from ftaudit.config_build import build_config

    dumped = yaml.safe_load(yaml.safe_dump(build_config("toy").model_dump(mode="json")))
    assert set(dumped) == {"study", "seed", "seeds", "out", "preset", "engine", "metrics", "toy"}
