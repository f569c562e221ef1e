"""Every registered study re-runs from its printed and from its stored config to identical metrics.

`ftaudit config STUDY` → YAML → `ftaudit run -c` must give the same metrics as the direct run, and a
stored run's `config.yaml` must re-run identically (from the cache). This is the promise that broke
when studies decided behaviour from which keys were set.
"""
import json
from pathlib import Path

import pytest
import yaml

from ftaudit.cli import main
from ftaudit.studies import BUILTIN
from study_settings import SMALL


def cli(*args: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == 0, f"ftaudit {' '.join(args)} exited {info.value.code}"


def _runs(store: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in store.glob("runs/*/results.json")), key=lambda r: r["created"])


def test_every_study_has_small_settings():
    """Every built-in study is covered (tests register their own toy studies, covered where they are defined)."""
    assert set(SMALL) == set(BUILTIN), "add small settings for every study to tests/study_settings.py"


@pytest.mark.parametrize("study", sorted(SMALL))
def test_config_round_trips_and_reruns_identically(study, tmp_path, capsys):
    store = tmp_path / "store"
    overrides = [a for kv in SMALL[study] + [f"out={store}"] for a in ("--set", kv)]
    cli("config", study, *overrides)
    printed = capsys.readouterr().out
    saved = tmp_path / "study.yaml"
    saved.write_text(printed)
    assert yaml.safe_load(printed)["study"] == study

    cli("run", "-q", "-c", str(saved))  # from the printed config
    cli("run", study, "-q", *overrides)  # directly
    first, direct = _runs(store)
    assert direct["config"] == first["config"]
    assert direct["attacks"] == first["attacks"]
    assert direct["cache"]["models_trained"] == 0  # same config, same content keys: all from the cache

    cli("run", "-q", "-c", str(next(store.glob(f"runs/{first['run_id']}/config.yaml"))))  # the stored config
    again = _runs(store)[-1]
    assert again["config"] == first["config"] and again["attacks"] == first["attacks"]
    assert again["sections"] == first["sections"]
