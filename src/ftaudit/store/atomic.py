"""Write-then-rename: a file either has its old content or its complete new content, never half.

Used for every file the store writes, so that a run killed with SIGKILL at any moment leaves no
truncated file behind. The temp file is named ``.<name>.pid<writer pid>.<random>.tmp``: one left by
a killed writer is removed at the next start (:func:`stale_temp_files`), one of a live writer (a
concurrent run on the same store) is left alone.
"""
from __future__ import annotations

import errno
import io
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ftaudit.store.faults import fault_point

# A full disk, a full quota, or a file-size limit (RLIMIT_FSIZE): the same fault for the user.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_TEMP = re.compile(r"^\..+\.pid(\d+)\.[^.]+\.tmp$")
LEGACY_TEMP_AGE = 3600.0  # temp files without a pid (older versions) are stale after an hour


def atomic_write(path: str | Path, write: Callable[[Path], None], size: int | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then rename it into place.

    A full disk raises ``OSError`` with the errno, ``filename`` = ``path`` and ``needed`` = ``size``
    (the bytes this write needed, when known), so the CLI can name the store and the space."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path, size) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        fault_point("tmp-written", str(path))
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results and reports are meant to be shared
        os.replace(tmp_path, path)
    except OSError as exc:
        raise _named(exc, path, size) from exc
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _named(exc: OSError, path: Path, size: int | None) -> OSError:
    """The same error, naming the file being written (a write() error names none)."""
    if exc.errno not in DISK_FULL:
        return exc
    named = OSError(exc.errno, exc.strerror, str(path))
    named.needed = size  # type: ignore[attr-defined]
    return named


def stale_temp_files(root: Path) -> Iterator[Path]:
    """Temp files under ``root`` whose writer is gone (a killed write), never those of a live one."""
    if not root.is_dir():
        return
    now = time.time()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            path = Path(dirpath) / name
            m = _TEMP.match(name)
            if m:
                if not pid_alive(int(m.group(1))):
                    yield path
            else:
                try:
                    if now - path.stat().st_mtime > LEGACY_TEMP_AGE:
                        yield path
                except FileNotFoundError:
                    pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data), size=len(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str | Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)
