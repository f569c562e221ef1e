"""`ftaudit doctor [--fix]`: finds every kind of damage a store can have, repairs it, then reports clean."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest

from faultlib import attacks_of, complete_runs, copy_store, run_inprocess
from ftaudit.cli import main
from ftaudit.store.db import RunDB


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("reference") / "store"
    return store, run_inprocess(store).results["attacks"]


def doctor(store, *flags) -> int:
    try:
        main(["doctor", *flags, "--out", str(store)])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_a_clean_store_is_clean(reference, capsys):
    assert doctor(reference[0]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"store {reference[0]}: clean"]


def _damage(store):
    """One of every problem doctor knows; returns the paths it should name."""
    (row,) = complete_runs(store)
    run_dir = store / "runs" / row.run_id
    db = RunDB(store / "ftaudit.sqlite")
    results = json.loads((run_dir / "results.json").read_text())
    names = {}
    # a killed run's partial directory, and a temp file of a killed write
    names["partial"] = store / "runs" / f".partial-{row.run_id}x-999999999"
    shutil.copytree(run_dir, names["partial"])
    names["tmp"] = store / "cache" / "signals" / ".conf.npy.pid999999999.abcdefgh.tmp"
    names["tmp"].write_bytes(b"half")
    # a pending row whose writer died before renaming, and a complete row whose directory is gone
    db.record_run({**results, "run_id": "dead-pending"}, None, [], status="pending")
    with sqlite3.connect(db.path) as con:
        con.execute("UPDATE runs SET writer_pid = 999999999 WHERE run_id = 'dead-pending'")
    db.record_run({**results, "run_id": "no-dir"}, None, [])
    names["dead-pending"], names["no-dir"] = "dead-pending", "no-dir"
    # a complete run directory without a row (adopted), and junk in runs/ (quarantined)
    names["orphan"] = store / "runs" / "orphan-run"
    shutil.copytree(run_dir, names["orphan"])
    (names["orphan"] / "results.json").write_text(json.dumps({**results, "run_id": "orphan-run"}))
    names["junk"] = store / "runs" / "not-a-run"
    names["junk"].mkdir()
    # a model, a signals entry and a metrics entry that fail verification
    names["model"] = sorted((store / "cache" / "models").glob("*/*.safetensors"))[-1]
    data = bytearray(names["model"].read_bytes())
    data[-1] ^= 0xFF
    names["model"].write_bytes(bytes(data))
    names["signals"] = sorted((store / "cache" / "signals").glob("*/*/_names.json"))[0].parent
    npy = sorted(names["signals"].glob("*.npy"))[0]
    npy.write_bytes(npy.read_bytes()[:-3])
    names["metrics"] = sorted((store / "cache" / "metrics").glob("*/*.json"))[0]
    names["metrics"].write_text("{}")
    return names


def test_doctor_finds_each_problem_fixes_them_and_the_rerun_is_identical(reference, tmp_path, capsys):
    store = copy_store(reference[0], tmp_path / "store")
    names = _damage(store)
    assert doctor(store) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    for what, name in names.items():
        assert sum(str(name) in line for line in problems) == 1, (what, out)
    assert len(problems) == len(names)
    assert out.strip().endswith("9 problems — `ftaudit doctor --fix` repairs them")
    assert doctor(store, "--fix") == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"store {store}: clean (9 repaired)"
    assert doctor(store) == 0
    capsys.readouterr()
    runs = {r.run_id for r in complete_runs(store)}
    assert "orphan-run" in runs and "no-dir" not in runs and "dead-pending" not in runs
    assert (store / "quarantine" / "runs").is_dir() and not names["junk"].exists()
    assert not names["partial"].exists() and not names["tmp"].exists() and not names["model"].exists()
    again = run_inprocess(store)
    assert again.results["attacks"] == reference[1] == attacks_of(store / "runs" / "orphan-run")
    assert again.results["cache"]["models_trained"] == 1  # the removed model, trained again
    assert doctor(store) == 0


def test_a_garbage_database_is_moved_aside_and_the_index_rebuilt(reference, tmp_path, capsys):
    store = copy_store(reference[0], tmp_path / "store")
    (row,) = complete_runs(store)
    garbage = os.urandom(2048)
    (store / "ftaudit.sqlite").write_bytes(garbage)
    assert doctor(store) == 1
    assert "is not a usable database" in capsys.readouterr().out
    assert (store / "ftaudit.sqlite").read_bytes() == garbage  # checking changes nothing
    assert doctor(store, "--fix") == 0
    (kept,) = (store / "quarantine" / "database").iterdir()
    assert kept.read_bytes() == garbage
    assert [r.run_id for r in complete_runs(store)] == [row.run_id]
    assert doctor(store) == 0


def test_doctor_on_a_directory_that_is_not_a_store(tmp_path, capsys):
    assert doctor(tmp_path) == 2
    assert capsys.readouterr().err.startswith("error: --out:")
    assert doctor(tmp_path / "missing") == 2
