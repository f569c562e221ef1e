"""Torch threads from the cores actually free: the arithmetic, the caps, a real busy process seen,
and the run's record of what it used."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from ftaudit import threads


@pytest.mark.parametrize("busy,expected", [(0.0, 4), (0.3, 4), (0.6, 3), (1.0, 3), (2.4, 2), (3.9, 1), (9.0, 1)])
def test_free_cores_are_usable_minus_the_busy_ones(monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.auto_threads(busy=busy) == expected


def test_usable_cores_respect_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.usable_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads.usable_cores() >= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_a_spinning_process_counts_as_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get going
        assert threads.busy_cores(0.3) >= 0.7
    finally:
        spinner.kill()
        spinner.wait()


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_run_records_where_and_on_how_many_threads_it_ran(tiny_overrides):
    from ftaudit.api import run

    before = torch.get_num_threads()
    results = run("finetune-mia", overrides=tiny_overrides).results
    engine = results["engine"]
    assert engine["device"] == "cpu" and engine["dtype"] == "float32" and engine["executor"] == "local"
    assert engine["threads_rule"].startswith("auto")
    used = engine["torch_threads"] if isinstance(engine["torch_threads"], list) else [engine["torch_threads"]]
    assert all(1 <= n <= threads.usable_cores() for n in used)
    assert torch.get_num_threads() == before  # the caller's setting is back
