"""Torch's thread count: for a block of work, and for a run from the cores actually free.

Tiny models and metaclassifiers are dispatch-bound: on a shared 2-core machine a second OpenMP thread
waiting for a busy core made them 5-20x slower, so those paths run on one thread
(:func:`torch_threads`). A whole run with ``engine.threads: 0`` takes :func:`auto_threads`: the cores
this process may use (affinity, cgroup quota, ``OMP_NUM_THREADS``) minus the cores other processes
keep busy, measured over a short window of ``/proc/stat`` — so a run next to a busy process uses the
cores that are free instead of spinning on one that is not (docs/performance.md, "Contention").
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

SAMPLE_S = 0.15  # the window over which other processes' CPU use is measured


@contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None or 0: leave torch's setting), then restore it."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota and by
    ``OMP_NUM_THREADS`` when the user set it."""
    cpus = _allowed_cpus()
    cores = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores)


def _allowed_cpus() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over the CPUs in ``cpus`` (all when None), from /proc/stat;
    None where there is none."""
    busy = total = 0.0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
            continue
        fields = [float(v) for v in rest.split()[:8]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        busy, total = busy + sum(fields) - idle, total + sum(fields)
    return (busy, total) if total > 0 else None


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """Cores other processes keep busy among those this process may use: their busy share over
    ``sample_s`` seconds while this process sleeps (Linux /proc/stat); elsewhere the 1-minute load
    average."""
    cpus = _allowed_cpus()
    first = _cpu_times(cpus)
    if first is None:
        return float(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(sample_s)
    second = _cpu_times(cpus)
    d_busy, d_total = second[0] - first[0], second[1] - first[1]
    if d_total <= 0:
        return 0.0
    return d_busy / d_total * (len(cpus) if cpus is not None else (os.cpu_count() or 1))


def auto_threads(busy: float | None = None) -> int:
    """Threads for a run with ``engine.threads: 0``: usable cores minus the cores others keep busy
    (rounded: a core busy more than half the time counts as taken), at least one."""
    usable = usable_cores()
    if usable == 1:  # nothing to choose: no need to measure (0.15 s asleep)
        return 1
    busy = busy_cores() if busy is None else busy
    return max(1, usable - math.floor(busy + 0.5))
