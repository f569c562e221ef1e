"""Presets and `ftaudit reproduce` end to end at tiny sizes: every preset validates and runs, every
claim reads its difference from a real stored run, the CLI writes the table, bad names exit 2."""
import json

import pytest
import yaml

from ftaudit.cli import main
from ftaudit.config_build import build_config
from ftaudit.errors import UserError
from ftaudit.presets import PRESETS, get_preset
from ftaudit.reproduce.claims import CLAIMS, get_claim
from ftaudit.reproduce.runner import run_claims
from ftaudit.reproduce.verdict import NOT_REPRODUCED, REPRODUCED, REVERSED
from study_settings import SMALL


# The studies' small settings (tests/studies), plus what each claim needs to be measurable at all.
TINY = {study: list(settings) for study, settings in SMALL.items()}
TINY["dp-finetune"] += ["sweep.subsets=[head, full, lora]"]
TINY["lm-methods"] += ["sweep.methods=[head, adapters]"]
TINY["stealing"] += ["stealing.victim_methods=['full']"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.study}:{p.name}")
def test_every_preset_validates_and_its_saved_config_rebuilds_it(preset, tmp_path):
    cfg = build_config(preset.study, preset=preset.name)
    assert cfg.preset == preset.name
    dumped = cfg.model_dump(mode="json")
    for key, value in preset.overrides.items():
        node = dumped
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    saved = tmp_path / "config.yaml"  # what a run stores: the preset's name and every resolved value
    saved.write_text(yaml.safe_dump(dumped, sort_keys=False))
    assert build_config(None, saved) == cfg


def test_precedence_is_defaults_preset_file_set(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("study: dp-finetune\npreset: class-gap\ndata:\n  audit_size: 300\n")
    cfg = build_config(None, file)
    assert (cfg.data.split, cfg.data.audit_size, cfg.data.population_size) == ("classes", 300, 400)
    cfg = build_config(None, file, ["data.audit_size=200", "data.split=half"])
    assert (cfg.data.split, cfg.data.audit_size) == ("half", 200)
    assert build_config("dp-finetune").preset is None and build_config("dp-finetune").data.split == "half"


def test_config_and_presets_commands_show_the_preset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "dp-finetune", "--preset", "class-gap", "--set", "data.audit_size=300"])
    assert exc.value.code in (0, None)
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["preset"], shown["data"]["split"], shown["data"]["audit_size"]) == ("class-gap", "classes", 300)
    with pytest.raises(SystemExit) as exc:
        main(["presets", "tmi"])
    assert exc.value.code in (0, None) and "paper-shadows" in capsys.readouterr().out


def test_bad_preset_names_are_user_errors_with_did_you_mean():
    with pytest.raises(UserError, match="did you mean 'class-gap'"):
        get_preset("dp-finetune", "clas-gap")
    with pytest.raises(UserError, match="preset of dp-finetune"):
        build_config("finetune-mia", preset="class-gap")
    with pytest.raises(UserError, match="unknown claim"):
        get_claim("rmia-few-refs")


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    store = tmp_path_factory.mktemp("reproduce")
    return store, run_claims(CLAIMS, str(store), overrides_by_study=TINY)


def test_every_claim_runs_its_preset_end_to_end_and_gets_a_verdict(tiny_rows):
    _, rows = tiny_rows
    assert [r.claim.name for r in rows] == [c.name for c in CLAIMS]
    assert {c.study for c in CLAIMS if c.preset} == {p.study for p in PRESETS}  # every preset ran
    for r in rows:
        assert r.verdict in (REPRODUCED, NOT_REPRODUCED, REVERSED), (r.claim.name, r.error)
        assert r.measured.diff.lo <= r.measured.diff.value <= r.measured.diff.hi, r.claim.name
        assert r.measured.ours and r.measured.diff_text
    shared = {r.claim.name: r for r in rows}
    assert shared["dp-epsilon"].run_id == shared["dp-layers"].run_id  # one run for both DP claims
    # the invariant's interval is one-sided; the ε audit never exceeds the accounted ε
    assert shared["dp-epsilon"].verdict == REPRODUCED and shared["dp-epsilon"].measured.diff.hi == float("inf")


def test_reproduce_cli_writes_the_table_and_bad_names_exit_2(tiny_rows, capsys):
    store, _ = tiny_rows
    sets = [a for s in TINY["finetune-mia"] for a in ("--set", s)]
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "rmia-few-references", *sets, "--out", str(store), "-q"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "rmia-few-" in printed and f"report: {store}" in printed and "reproductions.html" in printed
    folder = max((store / "reproductions").iterdir())
    md = (folder / "reproductions.md").read_text()
    assert md.count("\n|") == 3 and "ftaudit run finetune-mia --preset few-references" in md
    assert "<table>" in (folder / "reproductions.html").read_text()
    verdicts = json.loads((folder / "verdicts.json").read_text())
    assert verdicts[0]["claim"] == "rmia-few-references" and verdicts[0]["verdict"] in (REPRODUCED, NOT_REPRODUCED,
                                                                                         REVERSED)
    for argv in (["reproduce", "rmia-few-refs"], ["run", "dp-finetune", "--preset", "clas-gap"],
                 ["config", "finetune-mia", "--preset", "class-gap"], ["presets", "finetune-mi"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    err = capsys.readouterr().err
    assert "did you mean 'rmia-few-references'" in err and "did you mean 'class-gap'" in err
