"""Shared by the store fault tests: a tiny finetune-mia, run in-process or as a CLI subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ftaudit.store.db import RunDB

# 6 models (pretrain, scratch, 4 fine-tunes), a couple of seconds in-process
TINY = ["data.audit_size=40", "data.population_size=20", "pretrain.epochs=1", "finetune.epochs=2",
        "finetune.references=2", "metrics.bootstrap=20", "model.arch=mlp", "model.hidden=[8]", "pretrain.augment=0",
        "finetune.augment=0", "attack.shifts=0"]
N_MODELS = 6


def sets(extra: list[str] = ()) -> list[str]:
    return [a for o in [*TINY, *extra] for a in ("--set", o)]


def run_inprocess(store: Path, extra: list[str] = ()):
    import ftaudit

    return ftaudit.run("finetune-mia", overrides=[*TINY, *extra], out=str(store))


def cli_subprocess(store: Path, *args: str, fault: str | None = None, preexec=None, extra: list[str] = (),
                   wait: bool = True):
    """``ftaudit run -q`` (or ``args`` when given) in a child process; FTAUDIT_FAULT set when ``fault``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FTAUDIT_FAULT", None)
    if fault:
        env["FTAUDIT_FAULT"] = fault
    argv = list(args) or ["run", "-q", *sets(extra), "--out", str(store)]
    cmd = [sys.executable, "-m", "ftaudit", *argv]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=preexec)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=preexec, timeout=600)


def complete_runs(store: Path) -> list:
    db = store / "ftaudit.sqlite"
    return RunDB(db).runs() if db.is_file() else []


def attacks_of(run_dir: str | Path) -> list[dict]:
    return json.loads((Path(run_dir) / "results.json").read_text())["attacks"]


def results_of(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_doctor_clean(store: Path) -> None:
    from ftaudit.store.doctor import check_store

    result = check_store(store)
    assert result.clean, result.lines()


def leftovers(store: Path) -> list[str]:
    """Anything a failed run must not leave: partial directories, temp files."""
    found = [str(p) for p in (store / "runs").glob(".partial-*")] if (store / "runs").is_dir() else []
    return found + [str(p) for p in store.rglob("*.tmp")]
