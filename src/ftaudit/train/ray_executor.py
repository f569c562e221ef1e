"""``engine.executor: ray``: one Ray task per chunk of a training group, and per signal job.

What a task gets: the chunk's :class:`~ftaudit.train.executor.ChunkJob` without its tensors (names,
optimiser recipe, rows, seeds, DP parameters, the template as a weightless skeleton) and its
tensors as safetensors blobs — the group's template weights, training pool and masks put once in
the object store for all its chunks, and the chunk's initial states. What comes back: the tensors
training changed, as safetensors bytes (never pickled weights; a LoRA model's adapters, not its
frozen base, which the driver takes from the initial state — the frozen-parameter guardrail still
sees any change). A signal task gets its :class:`~ftaudit.signals.jobs.SignalJob` the same way
(template and query tensors once per call, each chunk's states, a LoRA model's frozen base as a
reference to the template's) and sends back its arrays as safetensors. The worker resolves
``engine.device`` itself (a task asks Ray for one GPU when the device is cuda). Only the driver
writes the model cache and the store. A task whose worker dies (killed, out of memory, node lost) is retried by Ray
(``max_retries``); an exception the task raises is not retried and ends the run, as it would locally.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from typing import Iterator

import numpy as np
import torch

from ftaudit.config import EngineConfig
from ftaudit.devices import DTYPES, Placement
from ftaudit.errors import UserError
from ftaudit.signals.jobs import Arrays, SignalJob, run_signal_job
from ftaudit.store.faults import fault_point
from ftaudit.train.executor import ChunkJob, Progress, run_chunk
from ftaudit.train.executor_wire import (changes, fill_skeleton, metadata, pack, prefixed, rebuild, same_bits, skeleton,
                                         strip, unpack)
from ftaudit.train.trainers import State

log = logging.getLogger("ftaudit.engine")
MAX_RETRIES = 3  # attempts after a worker dies mid-task (Ray's own retry; exceptions are not retried)
WINDOW_MODELS = 1024  # models claimed and in flight at once (each claim holds one file descriptor)
INSTALL_FIX = 'install the extra: pip install "ftaudit[ray]" (or set engine.executor=local)'


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("engine.executor", "ray, but Ray is not installed", INSTALL_FIX) from None
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that nothing answers on is a user error now, not
    after Ray's minutes of reconnecting. ``auto`` and a local Ray are Ray's to find."""
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError("engine.ray_address", f"{address!r} is not host:port, ray://host:port or auto",
                        "e.g. engine.ray_address=auto on a cluster node, or 10.0.0.1:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError("engine.ray_address", f"nothing answers at {address!r} ({exc.strerror or exc})",
                        "start the cluster (ray start --head) or set engine.ray_address=null for a local Ray") from None


def ensure_ray(address: str | None):
    """Ray, started (or joined) once per process: an already initialised Ray is used as it is. With
    no address, RAY_ADDRESS (set for a driver submitted with ``ray job submit``) names the cluster."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address is None and not os.environ.get("RAY_ADDRESS"):  # a local Ray on this machine's cores, this venv
            ray.init(num_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                     include_dashboard=False, logging_level=logging.WARNING)
        else:
            check_reachable(address)
            ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise UserError("engine.ray_address", f"cannot join a Ray cluster at {address!r} ({exc})",
                        "start one (ray start --head) or set engine.ray_address=null for a local Ray") from None
    return ray


def task_device(device: str, cluster_gpus: float) -> str:
    """``engine.device`` as a task runs it. auto = cuda when the cluster has GPUs; cuda:N becomes
    cuda (a task sees only the GPU Ray gave it, as device 0)."""
    if device == "auto":
        return "cuda" if cluster_gpus else "cpu"
    if device.startswith("cuda"):
        if not cluster_gpus:
            raise UserError("engine.device", f"{device!r}, but the Ray cluster has no GPU",
                            "set engine.device=auto or cpu, or add GPU nodes to the cluster")
        return "cuda"
    if device == "mps":
        raise UserError("engine.device", "'mps' with engine.executor=ray (Ray schedules no Apple GPUs)",
                        "set engine.device=cpu, or engine.executor=local")
    return device


def _train_task(job: ChunkJob, shared_blob: bytes, chunk_blob: bytes, device: str, dtype: str, threads: int) -> bytes:
    """The body of a Ray task (runs in a worker): rebuild the chunk, train it, return safetensors."""
    torch.set_num_threads(threads)
    fault_point("task", job.group)  # tests: a worker that dies (or stops) mid-task
    shared = unpack(shared_blob)
    tensors = unpack(chunk_blob, shared)
    job = dataclasses.replace(
        job, template=fill_skeleton(job.template, strip("template/", shared)),
        inits=[strip(f"init/{j}/", tensors) for j in range(len(job.seeds))],
        x=shared["x"], y=shared["y"], masks=strip("mask/", shared) if job.masks is not None else None)
    states = run_chunk(job, Placement.from_engine(device, dtype))
    changed = {name: t for j, (init, s) in enumerate(zip(job.inits, states))
               for name, t in prefixed(f"model/{j}/", changes(init, s)).items()}
    return pack(changed, meta={"names": json.dumps([list(s) for s in states]), "host": socket.gethostname(),
                               "pid": str(os.getpid()), "device": device})


def _signal_task(job: SignalJob, shared_blob: bytes, states_blob: bytes, n_states: int, device: str,
                 threads: int) -> bytes:
    """The body of a signal task (runs in a worker): rebuild the job, query its models, return
    the arrays as safetensors (numbers, never pickles)."""
    torch.set_num_threads(threads)
    fault_point("task", f"signals:{job.signal}")  # tests: a worker that dies (or stops) mid-task
    shared = unpack(shared_blob)
    tensors = unpack(states_blob, shared)
    job = dataclasses.replace(job, template=fill_skeleton(job.template, strip("template/", shared)),
                              states=[strip(f"state/{j}/", tensors) for j in range(n_states)],
                              inputs=strip("input/", shared))
    arrays = run_signal_job(job, Placement.from_engine(device))
    return pack({name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()},
                meta={"host": socket.gethostname(), "pid": str(os.getpid()), "device": device})


def _put_shared(ray, module: torch.nn.Module, tensors: State):
    """Put what every task of a call shares in Ray's object store once: the template's weights
    and ``tensors``. Returns (the template's skeleton, its weights, the blob's ref, {id: name})."""
    template, weights = skeleton(module)
    shared_tensors = {**prefixed("template/", weights), **tensors}
    return template, weights, ray.put(pack(shared_tensors)), {id(t): name for name, t in shared_tensors.items()}


def _finished(ray, pending: dict) -> Iterator[tuple[int, bytes]]:
    """(index, blob) of each task of ``pending`` ({ref: index}) as it finishes; whatever is still
    running when the caller stops (Ctrl-C, an error) is cancelled."""
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            yield i, RayExecutor._get(ray, ready[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def same_as_template(init: State, weights: State) -> State:
    """``init`` with each tensor that holds the template's bits replaced by the template's own
    tensor, so it ships once, with the template (a frozen base is usually the template's copy)."""
    return {name: weights[name] if name in weights and same_bits(weights[name], t) else t for name, t in init.items()}


class RayExecutor:
    """Chunks as Ray tasks: all chunks of a window in flight at once, saved as each finishes."""

    def __init__(self, cfg: EngineConfig):
        import_ray()  # a missing Ray is the user's error now, not after the first group's data is built
        self.cfg = cfg
        self.window = max(1, WINDOW_MODELS // cfg.chunk)
        self.threads = cfg.threads or 1  # CPUs a task asks for, and its torch threads
        self._device: str | None = None if cfg.device == "auto" else task_device(cfg.device, 1)
        self._remote: dict = {}  # the remote functions, made once (Ray exports each to the workers once)

    def _ray(self):
        return ensure_ray(self.cfg.ray_address)

    def device(self) -> str:
        if self._device is None:  # auto: whatever the cluster has (Ray starts here)
            self._device = task_device("auto", self._ray().cluster_resources().get("GPU", 0))
        return self._device

    def placement(self) -> Placement:
        # built, not resolved: the driver may lack the workers' device; only its key() is used here
        return Placement(torch.device(self.device()), DTYPES[self.cfg.dtype])

    def _options(self, ray, fn, name: str):
        """The remote ``fn`` (exported to the workers once) with this run's resources."""
        device = self.device()
        if device.startswith("cuda") and not ray.cluster_resources().get("GPU", 0):
            raise UserError("engine.device", f"{self.cfg.device!r}, but the Ray cluster has no GPU",
                            "set engine.device=auto or cpu, or add GPU nodes to the cluster")
        if fn not in self._remote:
            self._remote[fn] = ray.remote(fn)
        return self._remote[fn].options(num_cpus=self.threads, num_gpus=1 if device.startswith("cuda") else 0,
                                        max_retries=MAX_RETRIES, retry_exceptions=False, name=name)

    def run(self, jobs: list[ChunkJob], progress: Progress) -> Iterator[tuple[int, list[State]]]:
        ray = self._ray()
        task = self._options(ray, _train_task, f"ftaudit-train-{jobs[0].group}")
        first = jobs[0]
        template, weights, shared, shared_ids = _put_shared(ray, first.template, {
            "x": first.x, "y": first.y, **prefixed("mask/", first.masks or {})})
        device, pending = self.device(), {}
        for i, job in enumerate(jobs):
            inits = {name: t for j, s in enumerate(job.inits)
                     for name, t in prefixed(f"init/{j}/", same_as_template(s, weights)).items()}
            bare = dataclasses.replace(job, template=template, inits=[], x=None, y=None,
                                       masks={} if job.masks is not None else None)
            ref = task.remote(bare, shared, pack(inits, shared=shared_ids), device, self.cfg.dtype, self.threads)
            pending[ref] = i
        log.debug("group %s: %d chunk(s) on Ray (%s, %d CPU(s) per task)", first.group, len(jobs), device, self.threads)
        for i, blob in _finished(ray, pending):
            changed, info = unpack(blob), metadata(blob)
            log.debug("group %s: chunk %d trained on %s (pid %s), %d changed tensors back (%d bytes)", first.group,
                      i, info.get("host"), info.get("pid"), len(changed), len(blob))
            yield i, [rebuild(init, names, strip(f"model/{j}/", changed))
                      for j, (init, names) in enumerate(zip(jobs[i].inits, json.loads(info["names"])))]
            progress(len(jobs[i].seeds) * jobs[i].steps)

    def run_signals(self, jobs: list[SignalJob]) -> Iterator[tuple[int, Arrays]]:
        ray = self._ray()
        first = jobs[0]
        if any(j.template is not first.template or j.inputs.keys() != first.inputs.keys()
               or any(j.inputs[k] is not t for k, t in first.inputs.items()) for j in jobs):
            raise ValueError("the signal jobs of one call must share their template and query tensors")
        task = self._options(ray, _signal_task, f"ftaudit-signals-{first.signal}")
        template, weights, shared, shared_ids = _put_shared(ray, first.template, prefixed("input/", first.inputs))
        device, pending = self.device(), {}
        for i, job in enumerate(jobs):
            states = {name: t for j, s in enumerate(job.states)
                      for name, t in prefixed(f"state/{j}/", same_as_template(s, weights)).items()}
            bare = dataclasses.replace(job, template=template, states=[], inputs={})
            pending[task.remote(bare, shared, pack(states, shared=shared_ids), len(job.states), device,
                                self.threads)] = i
        for i, blob in _finished(ray, pending):
            info = metadata(blob)
            log.debug("signals %s: chunk %d of %d model(s) queried on %s (pid %s, %s), %d bytes back", first.signal, i,
                      len(jobs[i].states), info.get("host"), info.get("pid"), info.get("device"), len(blob))
            yield i, {name: t.numpy() for name, t in unpack(blob).items()}

    @staticmethod
    def _get(ray, ref) -> bytes:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise
