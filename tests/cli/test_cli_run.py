import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


import ftaudit
from ftaudit.cli import main
from ftaudit.store.db import RunDB


def cli(*argv):
    try:
        main(list(argv))
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_run_ls_report_and_cached_rerun(capsys, tmp_path, tiny_overrides):
    store = tmp_path / "store"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    cli("run", "-q", *sets)
    out = capsys.readouterr().out
    assert "lira-online" in out and "report:" in out
    (row,) = RunDB(store / "ftaudit.sqlite").runs()
    run_dir = Path(row.path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["cache"] == {"models_trained": 6, "models_loaded": 0}
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert {a["name"] for a in results["attacks"]} >= {"loss", "reference", "lira-online", "rmia-offline"}
    # rerun: identical jobs come from the cache
    cli("run", "-q", *sets)
    capsys.readouterr()
    runs = RunDB(store / "ftaudit.sqlite").runs()
    assert len(runs) == 2
    again = json.loads((Path(runs[1].path) / "results.json").read_text())
    assert again["cache"] == {"models_trained": 0, "models_loaded": 6}
    assert again["attacks"] == results["attacks"]
    # ls and report read the store
    cli("ls", "--out", str(store))
    assert row.run_id in capsys.readouterr().out
    (run_dir / "report.html").unlink()
    cli("report", row.run_id[:-1], "--out", str(store))
    assert (run_dir / "report.html").is_file()
    cli("studies")
    assert "finetune-mia" in capsys.readouterr().out


def test_python_api(tmp_path, tiny_overrides):
    res = ftaudit.run("finetune-mia", overrides=tiny_overrides, seed=3)
    assert res.results["seeds"]["run"] == 3
    rows = {r["attack"]: r for r in res.metrics}
    assert rows["lira-online"]["auc_lo"] <= rows["lira-online"]["auc"] <= rows["lira-online"]["auc_hi"]
    assert "tpr@0.01" in rows["loss"]
    text = str(res.metrics)
    assert text.splitlines()[0].split()[:2] == ["attack", "auc"] and "lira-online" in text
    loaded = ftaudit.load_run(res.run_id, out=tmp_path / "store")
    assert loaded.path == res.path and loaded.results == res.results
    assert ftaudit.load_run(res.path).run_id == res.run_id


def test_killed_run_resumes_and_trains_only_what_was_missing(tmp_path, tiny_overrides):
    """SIGKILL in the middle of fine-tuning; the rerun trains only the missing models and leaves
    no partial files or rows."""
    store = tmp_path / "store"
    overrides = [o for o in tiny_overrides if not o.startswith(("finetune.epochs", "finetune.references"))]
    overrides += ["finetune.epochs=150", "finetune.references=7", "engine.chunk=1"]  # ~0.1 s a model
    cmd = [sys.executable, "-m", "ftaudit", "run", "-q"] + [a for o in overrides for a in ("--set", o)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    models = store / "cache" / "models"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(models.rglob("*.safetensors"))) < 4:  # pretrain + 3 fine-tunes
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(models.rglob("*.safetensors")))
    assert 4 <= done < 1 + 8 + 1, "the kill should land during fine-tuning"
    assert not (store / "ftaudit.sqlite").exists() or not RunDB(store / "ftaudit.sqlite").runs()
    res = ftaudit.run("finetune-mia", overrides=overrides)
    assert res.results["cache"]["models_trained"] == 10 - done
    assert res.results["cache"]["models_loaded"] == done
    assert not list(store.rglob("*.tmp")) and not list((store / "runs").glob(".partial-*"))
    assert len(RunDB(store / "ftaudit.sqlite").runs()) == 1
