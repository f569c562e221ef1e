"""The listing commands: `studies` (no torch import, aligned), `config STUDY` (commented YAML that
parses back), `ls` (best attack and its TPR at 1 % FPR, fits the terminal), `--version`."""
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from ftaudit.catalog import STUDIES
from ftaudit.cli import main
from ftaudit.config_build import build_config
from ftaudit.config_doc import commented_yaml, description
from ftaudit.store.db import RunDB
from ftaudit.studies import BUILTIN, get_study


def cli_out(capsys, *argv) -> str:
    try:
        main(list(argv))
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    return capsys.readouterr().out


def cli_subprocess(*argv, columns: int, cwd=None) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    done = subprocess.run([sys.executable, "-m", "ftaudit", *argv], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_studies_imports_no_torch():
    """`ftaudit studies` through the CLI's entry point imports neither torch nor any study module."""
    code = ("import sys\nfrom ftaudit.cli import main\ntry:\n    main(['studies'])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')\n"
            "               or m.startswith('ftaudit.studies.'))\n"
            "assert not heavy, heavy[:10]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "finetune-mia" in done.stdout


def test_catalog_is_the_registry():
    """The torch-free descriptions `studies` prints are the studies' own, in the registry's order."""
    assert list(STUDIES) == list(BUILTIN)
    for name, text in STUDIES.items():
        assert get_study(name).description == text, name


@pytest.mark.parametrize("columns", [80, 200])
def test_studies_listing_is_aligned(columns):
    out = cli_subprocess("studies", columns=columns)
    lines = [line.rstrip() for line in out.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= columns
    first = lines[0]
    start = len(first) - len(first.split(maxsplit=1)[1])  # where the description column begins
    names = []
    for line in lines:
        if line[:start].strip():
            names.append(line[:start].strip())
        else:
            assert len(line) - len(line.lstrip()) == start, line  # a wrapped line starts under the description
        assert line[start - 1] == " " and line[start] != " ", line
    assert names == list(STUDIES)
    if columns == 200:
        assert len(lines) == len(STUDIES)  # nothing wraps


def test_scenarios_is_an_alias(capsys):
    assert cli_out(capsys, "scenarios") == cli_out(capsys, "studies")


@pytest.mark.parametrize("study", list(BUILTIN))
def test_config_yaml_has_descriptions_and_parses_back(study):
    cfg = build_config(study)
    text = commented_yaml(cfg, f"ftaudit {study}")
    assert yaml.safe_load(text) == cfg.model_dump(mode="json")
    comments = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("# ")]
    # every description the config classes carry is printed (a long one wrapped over several comment lines)
    joined = " ".join(comments)
    for key in ("seed", "out"):
        assert " ".join(description(cfg, key).split()) in joined
    assert len(comments) > len(cfg.model_dump(mode="json"))


def test_config_command_prints_only_the_study_and_round_trips(capsys, tmp_path):
    out = cli_out(capsys, "config", "lm-mia", "--set", "finetune.epochs=3")
    cfg = build_config("lm-mia", overrides=["finetune.epochs=3"])
    assert yaml.safe_load(out) == cfg.model_dump(mode="json")
    assert set(yaml.safe_load(out)) == set(type(cfg).model_fields)  # that study's sections, no other
    assert re.search(r"^  # .*\n  epochs: 3$", out, re.M)  # a key under its description
    saved = tmp_path / "lm-mia.yaml"
    saved.write_text(out)
    assert build_config(None, saved) == cfg


def _record(db: RunDB, run_id: str, study: str, best: str | None, tpr: tuple[float, float, float]) -> None:
    value, lo, hi = tpr
    attacks = [{"name": name, "auc": {"value": 0.6, "lo": 0.55, "hi": 0.65},
                "tpr_at_fpr": [{"fpr": 0.001, "value": 0.0, "lo": 0.0, "hi": 0.01},
                               {"fpr": 0.01, "value": value if name == best else value / 2, "lo": lo, "hi": hi}]}
               for name in ("loss", "lira-offline-global", "rmia-online")]
    results = {"run_id": run_id, "study": study, "created": "2026-12-02T10:40:53+00:00", "seeds": {"run": 0},
               "best_attack": best, "config": {"study": study}, "versions": {}, "timings": {}, "attacks": attacks,
               "utility": []}
    db.record_run(results, db.path.parent / "runs" / run_id, [])


@pytest.mark.parametrize("columns", [80, 200])
def test_ls_shows_the_best_attack_and_fits_the_terminal(tmp_path, columns):
    store = tmp_path / "store"
    db = RunDB(store / "ftaudit.sqlite")
    runs = {"20261202-104053-lm-extraction-0a1b2c": ("lm-extraction", "lira-offline-global", (0.0898, 0.051, 0.124)),
            "20261202-104153-finetune-mia-3d4e5f": ("finetune-mia", "rmia-online", (0.125, 0.1, 0.15))}
    for run_id, (study, best, tpr) in runs.items():
        _record(db, run_id, study, best, tpr)
    out = cli_subprocess("ls", "--out", str(store), columns=columns)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= columns, out
    assert "best attack" in out and "TPR at 1% FPR [CI]" in out
    for run_id in runs:
        assert run_id in out  # the id is never cut: it is what `ftaudit report` takes
    assert "lira-offline-global" in out and "9.0 % [5.1, 12.4]" in out  # nothing folded at 80 columns either
    if columns == 200:
        row = next(line for line in lines if "lm-extraction-0a1b2c" in line)
        assert re.search(r"lm-extraction\s+2026-12-02 10:40\s+lira-offline-global\s+9\.0 % \[5\.1, 12\.4\]", row), row
        assert "12.5 % [10.0, 15.0]" in out


def test_ls_on_an_empty_store(capsys, tmp_path):
    assert "no runs" in cli_out(capsys, "ls", "--out", str(tmp_path / "none"))


def test_version(capsys):
    assert cli_out(capsys, "--version").strip() == f"ftaudit {metadata.version('ftaudit')}"
