"""Claims on cache entries, so two runs on one store never train the same model twice.

Before training a chunk of models, the engine takes an exclusive ``fcntl.flock`` on a claim file
next to each entry (``<key>.lock``), always in sorted key order so that two runs wanting
overlapping sets cannot deadlock; then it looks again, and trains only what is still missing. A
second run wanting the same models waits for the first one's locks and then loads its models.
The kernel drops a lock when its holder dies, so a killed run never blocks the next one.

A claim file is unlinked by its holder before the lock is released; a waiter that then gets the
lock on the unlinked file notices (its inode is no longer the path's) and claims the new file.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator


@contextmanager
def claim(paths: Iterable[Path], on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold exclusive locks on all ``paths`` (created as needed) for the block's duration.
    ``on_wait`` is called once if another process holds any of them (we then block until it is done)."""
    held: list[tuple[Path, int]] = []
    waited = False
    try:
        for path in sorted(set(Path(p) for p in paths)):
            fd, blocked = _acquire(path, None if waited else on_wait)
            waited = waited or blocked
            held.append((path, fd))
        yield
    finally:
        for path, fd in reversed(held):
            try:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)  # closing releases the lock


def _acquire(path: Path, on_wait: Callable[[], None] | None) -> tuple[int, bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocked = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not blocked:
                    on_wait()
                blocked = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd, blocked
        os.close(fd)  # the holder unlinked this file as it finished: claim the current one


def locked_elsewhere(path: Path) -> bool:
    """Whether another process holds the claim (doctor: a live writer's entry is not a problem)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
