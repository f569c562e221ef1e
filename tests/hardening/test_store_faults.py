"""The store under faults: a run is either fully there (directory, results, complete row) or not at all.

Crashes are injected at exact points (FTAUDIT_FAULT, store/faults.py), never raced against a timer;
a full disk is a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so writes fail with EFBIG). Each
fault is followed by a rerun that must succeed with the reference metrics and a clean `doctor`.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from faultlib import (N_MODELS, assert_doctor_clean, attacks_of, cli_subprocess, complete_runs, copy_store, leftovers,
                      results_of, run_inprocess, sets)
from ftaudit.cli import main
from ftaudit.store.db import RunDB
from ftaudit.store.doctor import check_store
from ftaudit.store.runs import Store


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A store with one complete tiny run and every cache entry it needs; tests work on copies."""
    store = tmp_path_factory.mktemp("reference") / "store"
    res = run_inprocess(store)
    return store, res.results["attacks"]


def exit_code(argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code or 0
    return 0


# (a kill after the pending row and before the rename is the recovery unit test's "never-renamed")
@pytest.mark.parametrize("point", ["at-commit", "after-rename", "at-complete"])
def test_kill_at_each_commit_point_then_rerun(point, reference, tmp_path):
    store = copy_store(reference[0], tmp_path / "store")
    proc = cli_subprocess(store, fault=point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # whatever moment it died at, only the complete reference run is listed
    assert len(complete_runs(store)) == 1
    assert not check_store(store).clean  # the dead run's partial directory or pending row is reported
    again = run_inprocess(store)  # recovery at start: completes a renamed run, removes the rest
    runs = complete_runs(store)
    recovered = point in ("after-rename", "at-complete")
    assert len(runs) == (3 if recovered else 2)
    for row in runs:
        assert attacks_of(row.path) == reference[1]
    assert again.results["cache"] == {"models_trained": 0, "models_loaded": N_MODELS}
    assert not leftovers(store) and not RunDB(store / "ftaudit.sqlite").pending()
    assert {p.name for p in (store / "runs").iterdir()} == {r.run_id for r in runs}
    assert_doctor_clean(store)


def test_killed_signals_write_leaves_temp_files_removed_only_when_their_writer_is_dead(reference, tmp_path):
    store = copy_store(reference[0], tmp_path / "store")
    shutil.rmtree(store / "cache" / "signals")
    proc = cli_subprocess(store, fault="tmp-written:/signals/", wait=False)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    killed = list((store / "cache" / "signals").rglob("*.tmp"))
    assert killed and all(f".pid{proc.pid}." in p.name for p in killed)  # the killed writer's
    live = store / "cache" / "signals" / f".x.npy.pid{os.getpid()}.abcdefgh.tmp"  # a concurrent writer's
    live.write_bytes(b"in progress")
    dead = store / "cache" / "signals" / ".y.npy.pid999999999.abcdefgh.tmp"
    dead.write_bytes(b"killed")
    again = run_inprocess(store)
    assert not any(p.exists() for p in killed) and not dead.exists()
    assert live.exists()  # never another live process's file
    assert again.results["attacks"] == reference[1]
    assert_doctor_clean(store)  # a live writer's temp file is not a problem
    live.unlink()


def _file_size_limit(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return preexec


def test_disk_full_prints_one_line_and_keeps_the_store_consistent(reference, tmp_path):
    store = copy_store(reference[0], tmp_path / "store")
    before = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    # 100 kB per file: the cached run needs no new model, but its report (~170 kB) cannot be written
    proc = cli_subprocess(store, preexec=_file_size_limit(100_000))
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: no space left for the store ") and str(store) in lines[0]
    assert "needed" in lines[0] and "rerun the same command" in lines[0]
    assert len(complete_runs(store)) == 1 and not RunDB(store / "ftaudit.sqlite").pending()
    assert not leftovers(store)
    assert sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file()) == before
    assert_doctor_clean(store)
    assert run_inprocess(store).results["attacks"] == reference[1]
    assert_doctor_clean(store)


def test_disk_full_at_the_database_commit(reference, tmp_path, monkeypatch, capsys):
    """The file-size limit set exactly at the commit: the database cannot grow, so the pending row
    is never written; no directory is renamed, nothing is left behind."""
    store = copy_store(reference[0], tmp_path / "store")
    db = store / "ftaudit.sqlite"
    commit = Store.commit_run

    def commit_on_a_full_disk(self, *args, **kwargs):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (db.stat().st_size, hard))
        try:
            return commit(self, *args, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)

    monkeypatch.setattr(Store, "commit_run", commit_on_a_full_disk)
    assert exit_code(["run", "-q", *sets(), "--out", store]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no space left for the store ") and str(store) in err[0], err
    assert len(complete_runs(store)) == 1 and not RunDB(db).pending()
    assert {p.name for p in (store / "runs").iterdir()} == {r.run_id for r in complete_runs(store)}
    assert not leftovers(store)
    assert_doctor_clean(store)
    monkeypatch.setattr(Store, "commit_run", commit)
    assert run_inprocess(store).results["attacks"] == reference[1]


@pytest.mark.parametrize("step", ["record_run", "mark_complete"])
def test_an_exception_during_the_commit_undoes_it(step, reference, tmp_path, monkeypatch):
    """Before the pending row or after the rename: either way no directory and no row stay behind."""
    store = copy_store(reference[0], tmp_path / "store")
    original = getattr(RunDB, step)

    def fail(self, *args, **kwargs):
        if step == "record_run" and kwargs.get("status") != "pending":
            return original(self, *args, **kwargs)
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(RunDB, step, fail)
    with pytest.raises(OverflowError):
        run_inprocess(store)
    monkeypatch.setattr(RunDB, step, original)
    assert len(complete_runs(store)) == 1 and not RunDB(store / "ftaudit.sqlite").pending()
    assert {p.name for p in (store / "runs").iterdir()} == {r.run_id for r in complete_runs(store)}
    assert not leftovers(store)
    assert_doctor_clean(store)


def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    store = tmp_path / "store"
    proc = cli_subprocess(store, fault="model-saved@INT")  # Ctrl-C right after the first model is saved
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["interrupted; 1 model kept; rerun the same command to resume"]
    assert not complete_runs(store) and not leftovers(store)
    assert_doctor_clean(store)
    again = run_inprocess(store)
    assert again.results["cache"] == {"models_trained": N_MODELS - 1, "models_loaded": 1}
    assert_doctor_clean(store)


def _wait_for(condition, what: str) -> None:
    """Poll a process state (not a timer: the deadline only bounds a hang)."""
    deadline = time.monotonic() + 600
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def _waiting_on_a_lock(pid: int) -> bool:
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines() if len(line.split()) > 5)


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux /proc/locks to see a blocked claim")
def test_two_identical_runs_at_once_train_each_model_once(tmp_path):
    """Run A stops as it starts training models it holds the claims on; run B starts, wants
    the same models and must block on A's claims (seen in /proc/locks); then A continues. Without
    the claims, B would train every model while A is stopped, and A all of them again after."""
    store = tmp_path / "store"
    a = cli_subprocess(store, fault="training:pretrain@STOP", wait=False)
    _wait_for(lambda: a.poll() is not None or _stopped(a.pid), "run A to stop holding its claims")
    b = cli_subprocess(store, wait=False)
    _wait_for(lambda: b.poll() is not None or _waiting_on_a_lock(b.pid), "run B to wait for A's claims")
    os.kill(a.pid, signal.SIGCONT)
    for p in (a, b):
        p.wait(timeout=600)
        assert p.returncode == 0, p.stderr.read()[-2000:]
    runs = complete_runs(store)
    assert len(runs) == 2
    caches = [results_of(r.path)["cache"] for r in runs]
    assert sum(c["models_trained"] for c in caches) == N_MODELS, caches
    assert all(c["models_trained"] + c["models_loaded"] == N_MODELS for c in caches)
    assert attacks_of(runs[0].path) == attacks_of(runs[1].path)
    assert not list(store.rglob("*.lock")) and not leftovers(store)
    assert_doctor_clean(store)


def test_garbage_database_is_one_line_exit_1_and_left_untouched(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    garbage = os.urandom(3000)
    (store / "ftaudit.sqlite").write_bytes(garbage)
    for argv in (["ls", "--out", store], ["run", "-q", *sets(), "--out", store], ["report", "x", "--out", store]):
        assert exit_code(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a usable ftaudit database" in err[0] and "doctor --fix" in err[0], err
    assert (store / "ftaudit.sqlite").read_bytes() == garbage
    assert not (store / "cache").exists()  # refused before any training


def test_report_by_id_from_another_directory_with_a_relative_store(reference, tmp_path, monkeypatch, capsys):
    store = copy_store(reference[0], tmp_path / "store")
    (row,) = complete_runs(store)
    assert os.path.isabs(row.path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert exit_code(["report", row.run_id, "--out", "../store"]) == 0
    assert str(store / "runs" / row.run_id / "report.html") in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize("run_id", ["", "%", "_", "2%", "%-finetune-mia-%"])
def test_run_ids_are_matched_literally(run_id, reference, capsys):
    assert exit_code(["report", run_id, "--out", reference[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RUN:"), err
    assert RunDB(reference[0] / "ftaudit.sqlite").find(run_id) is None


def test_a_unique_prefix_still_finds_its_run(reference):
    (row,) = complete_runs(reference[0])
    assert RunDB(reference[0] / "ftaudit.sqlite").find(row.run_id[:10]).run_id == row.run_id


OLD_SCHEMA = """CREATE TABLE runs (run_id TEXT PRIMARY KEY, scenario TEXT NOT NULL, created TEXT NOT NULL,
  seed INTEGER NOT NULL, best_attack TEXT, path TEXT NOT NULL, config_json TEXT NOT NULL,
  versions_json TEXT NOT NULL, timings_json TEXT NOT NULL);"""


def test_a_store_from_before_run_status_is_migrated(tmp_path):
    db = tmp_path / "store" / "ftaudit.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.executescript(OLD_SCHEMA)
        con.execute("INSERT INTO runs VALUES ('r1','finetune-mia','2026-01-01',0,NULL,'store/runs/r1','{}','{}','{}')")
    rows = RunDB(db).runs()
    assert [(r.run_id, r.path) for r in rows] == [("r1", str(db.parent / "runs" / "r1"))]
    with sqlite3.connect(db) as con:
        assert {"status", "writer_pid"} <= {r[1] for r in con.execute("PRAGMA table_info(runs)")}


def _fake_results(run_id: str) -> dict:
    return {"run_id": run_id, "study": "finetune-mia", "created": "2026-01-01T00:00:00+00:00", "seeds": {"run": 0},
            "best_attack": None, "config": {}, "versions": {}, "timings": {}, "utility": [],
            "attacks": [{"name": "loss", "auc": {"value": 0.5, "lo": 0.4, "hi": 0.6}, "tpr_at_fpr": []}]}


def test_recovery_finishes_or_removes_half_committed_runs_and_spares_live_ones(tmp_path):
    import json

    store = Store(tmp_path / "store")
    for run_id, has_dir in (("renamed", True), ("never-renamed", False), ("live", False)):
        store.db.record_run(_fake_results(run_id), None, [("finetune", 0, "k" * 64, 1)], status="pending")
        if has_dir:
            (store.runs_dir / run_id).mkdir(parents=True)
            (store.runs_dir / run_id / "results.json").write_text(json.dumps(_fake_results(run_id)))
    with sqlite3.connect(store.db.path) as con:  # the first two writers are dead, "live" is this process
        con.execute("UPDATE runs SET writer_pid = 999999999 WHERE run_id != 'live'")
    orphan = store.runs_dir / "orphan"
    orphan.mkdir()
    (orphan / "results.json").write_text(json.dumps(_fake_results("orphan")))
    store.clean_partial()
    assert sorted(r.run_id for r in store.db.runs()) == ["orphan", "renamed"]
    assert [p.run_id for p in store.db.pending()] == ["live"]
    with sqlite3.connect(store.db.path) as con:
        assert con.execute("SELECT count(*) FROM run_models WHERE run_id = 'never-renamed'").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM attack_metrics WHERE run_id = 'renamed'").fetchone() == (1,)


def test_api_load_run_refuses_an_empty_id(reference):
    from ftaudit import UserError, load_run

    with pytest.raises(UserError, match="RUN"):
        load_run("", out=reference[0])
