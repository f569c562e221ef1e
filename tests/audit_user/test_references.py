"""Fine-tuning-aware references of `ftaudit audit`: N models fine-tuned from the user's base with the
user's recipe by ftaudit's engine on population records, then LiRA / RMIA. The target is the tests'
tiny GPT-2 fine-tuned on the members by a plain PyTorch loop (tests/audit_user's world)."""
import csv
import io
from pathlib import Path

import pytest

import ftaudit
from ftaudit.cli import main

RECIPE = "method: full\noptimizer: adam\nlr: 5.0e-3\nepochs: 25\nbatch_size: 8\nmax_length: 64\n"
FAST = {"metrics__bootstrap": 300, "regurgitation": False}


@pytest.fixture(scope="module")
def population(world, shakespeare, tmp_path_factory):
    """The world's 40 "others" (the target never saw them) plus 80 more short paragraphs in no set."""
    from audit_user_world import write_txt

    used = set(world.members_list) | set(world.nonmembers_list) | set(world.others)
    more = sorted({" ".join(d.split()) for d in shakespeare.documents} - used)
    more = [p for p in more if 40 <= len(p) <= 140][:80]
    return write_txt(tmp_path_factory.mktemp("population") / "population.txt", list(world.others) + more)


@pytest.fixture
def recipe(tmp_path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return str(path)


def test_references_find_the_leak_and_are_cached(world, population, recipe, tmp_path):
    kwargs = dict(base=world.gpt_base, out=tmp_path, references=4, recipe=recipe, population=population, **FAST)
    first = ftaudit.audit(world.gpt_model, world.members, world.nonmembers, **kwargs)
    aucs = {a["name"]: a["auc"] for a in first.results["attacks"]}
    print({k: (round(v["value"], 3), round(v["lo"], 3)) for k, v in aucs.items()})
    assert {"lira-offline", "rmia-offline"} <= set(aucs) and "lira-online" not in aucs
    assert aucs["lira-offline"]["lo"] > 0.5, aucs
    info = first.results["audit"]["references"]
    assert info["trained"] == 4 and info["references"] == 4 and info["z_samples"] == 30
    assert first.results["cache"]["models_trained"] == 4
    header = next(csv.reader(io.StringIO((first.path / "records.csv").read_text())))
    assert {"lira-offline", "rmia-offline_rank"} <= set(header)

    again = ftaudit.audit(world.gpt_model, world.members, world.nonmembers, **kwargs)
    assert again.results["cache"]["models_trained"] == 0 and again.results["audit"]["references"]["loaded"] == 4
    assert {a["name"]: a["auc"] for a in again.results["attacks"]} == aucs


def test_online_references_add_lira_online(world, population, tmp_path):
    recipe = tmp_path / "lora.yaml"
    recipe.write_text("method: lora\nlora_rank: 4\nlr: 5.0e-3\nepochs: 5\nbatch_size: 8\nmax_length: 64\n")
    res = ftaudit.audit(world.gpt_model, world.members, world.nonmembers, base=world.gpt_base, out=tmp_path,
                        references=2, recipe=str(recipe), population=population, online=True, **FAST)
    names = {a["name"] for a in res.results["attacks"]}
    assert {"lira-offline", "lira-online", "rmia-offline"} <= names
    info = res.results["audit"]["references"]
    assert info["online"] and info["pool"] == 80 + 90 and info["method"] == "lora" and info["trained"] == 2


def _exit(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main(["audit", "-q", *args])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_reference_input(world, population, recipe, tmp_path, capsys):
    common = ["--model", world.gpt_model, "--members", world.members, "--nonmembers", world.nonmembers,
              "--out", str(tmp_path)]
    full = ["--base", world.gpt_base, "--references", "4", "--recipe", recipe, "--population", population]
    assert "population" in _exit(capsys, *common, "--base", world.gpt_base, "--references", "4", "--recipe", recipe)
    assert "recipe" in _exit(capsys, *common, "--base", world.gpt_base, "--references", "4", "--population", population)
    assert "base" in _exit(capsys, *common, "--references", "4", "--recipe", recipe, "--population", population)
    assert "references" in _exit(capsys, *common, "--online")
    assert "causal LM" in _exit(capsys, *common, "--base", world.bert_base, *full[2:])
    assert "even" in _exit(capsys, *common, *full[:2], "--references", "3", *full[4:])
    bad = Path(tmp_path) / "bad.yaml"
    bad.write_text(RECIPE + "lora_rnak: 8\n")
    err = _exit(capsys, *common, *full[:4], "--recipe", str(bad), *full[6:])
    assert "bad.yaml" in err and "lora_rnak" in err
    assert "--recipe" in _exit(capsys, *common, *full[:4], "--recipe", str(tmp_path / "none.yaml"), *full[6:])
