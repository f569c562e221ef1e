"""A Ray worker killed while it computes a study's signals is retried by Ray, and the run ends with
the numbers of an uninterrupted local run. Every worker of this file's Ray inherits
FTAUDIT_FAULT=task:signals@STOP: each signal task stops itself as it starts (training tasks do not),
and the reaper SIGKILLs the first one and lets the others go on (raylib.Reaper)."""
from pathlib import Path

import pytest

import ftaudit
from raylib import N_MODELS, RAY, TINY, Reaper, local_ray

pytest.importorskip("ray")
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see stopped workers")]


def test_a_worker_killed_mid_query_is_retried_and_the_numbers_do_not_change(tmp_path):
    local = ftaudit.run("finetune-mia", overrides=TINY, out=str(tmp_path / "local"))
    with local_ray({"FTAUDIT_FAULT": "task:signals@STOP"}):
        reaper = Reaper()
        reaper.kill_next = True
        reaper.start()
        try:
            on_ray = ftaudit.run("finetune-mia", overrides=TINY + RAY, out=str(tmp_path / "ray"))
        finally:
            reaper.done.set()
            reaper.join()
    assert len(reaper.killed) == 1 and reaper.continued  # one signal task lost mid-task and retried; others went on
    assert on_ray.results["cache"] == {"models_trained": N_MODELS, "models_loaded": 0}
    assert on_ray.results["attacks"] == local.results["attacks"]
    assert on_ray.results["utility"] == local.results["utility"]
