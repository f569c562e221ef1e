"""Faults on a local 2-CPU Ray: a worker killed mid-task is retried by Ray (max_retries) and a driver
killed while its tasks train resumes from the cache; both end with the numbers of an uninterrupted
local run. Nothing is raced against a timer:

Every worker of this file's Ray inherits FTAUDIT_FAULT=task:fine-tune@STOP, so each fine-tune task
stops itself as it starts (store/faults.py). A reaper thread lets each stopped worker go on — except,
when a test asks, the first one, which it SIGKILLs: a worker lost mid-task, as to the OOM killer."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ftaudit
from ftaudit.store.doctor import check_store
from raylib import N_MODELS, RAY, TINY, Reaper, assert_same_models, local_ray

pytest.importorskip("ray")
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see stopped workers")]


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray({"FTAUDIT_FAULT": "task:fine-tune@STOP"}) as ray:
        reaper = Reaper()
        reaper.start()
        try:
            yield ray, reaper
        finally:
            reaper.done.set()
            reaper.join()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run (its store and attacks)."""
    store = tmp_path_factory.mktemp("local") / "store"
    return store, ftaudit.run("finetune-mia", overrides=TINY, out=str(store)).results["attacks"]


def test_a_killed_worker_is_retried_and_the_numbers_do_not_change(ray_cluster, reference, tmp_path):
    _, reaper = ray_cluster
    reaper.kill_next = True
    on_ray = ftaudit.run("finetune-mia", overrides=TINY + RAY, out=str(tmp_path / "ray"))
    assert len(reaper.killed) == 1 and not reaper.kill_next  # one worker was lost mid-task, and retried
    assert reaper.continued  # the retry (and the other fine-tune chunk's task) went on
    assert on_ray.results["cache"] == {"models_trained": N_MODELS, "models_loaded": 0}
    assert on_ray.results["attacks"] == reference[1]
    assert_same_models(reference[0], tmp_path / "ray")


def test_a_killed_driver_resumes_from_the_cache(ray_cluster, reference, tmp_path):
    """The driver is an `ftaudit run` subprocess joining this Ray (engine.ray_address), killed
    (FTAUDIT_FAULT=training:fine-tune, SIGKILL) as it holds the claims on the fine-tunes, after
    the pretrained model came back and was saved."""
    store = tmp_path / "ray"
    address = ray_cluster[0].get_runtime_context().gcs_address
    sets = [a for o in [*TINY, *RAY, f"engine.ray_address={address}"] for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FTAUDIT_FAULT": "training:fine-tune"}
    proc = subprocess.run([sys.executable, "-m", "ftaudit", "run", "-q", *sets, "--out", str(store)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list((store / "cache" / "models").glob("*/*.safetensors"))) == 1  # the pretrained model
    again = ftaudit.run("finetune-mia", overrides=TINY + RAY, out=str(store))
    assert again.results["cache"] == {"models_trained": N_MODELS - 1, "models_loaded": 1}
    assert again.results["attacks"] == reference[1]
    assert_same_models(reference[0], store)
    assert not list(store.rglob("*.lock"))
    assert check_store(store).clean, check_store(store).lines()
