"""Content-addressed caches: trained models (safetensors), named arrays (.npy), small JSON results.

A model's key is the hash of everything that determines its weights (see :func:`content_key`), so
an identical job is never trained twice and a killed run resumes from the models it finished.
Files are written atomically; a file that does not exist is simply a miss.

Every entry carries a digest of its content written with it, and is checked when it is read: a
model against the keys, shapes and dtypes its job expects and its digest; arrays against the
shapes, dtypes and digests in their manifest; a JSON result against its digest and the reader's
schema. An entry that fails (a flipped byte, a truncated or foreign file, weights edited after
the fact) is discarded with a warning on the ``ftaudit.store`` logger and recomputed, never used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ftaudit.store.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_text, load_npy
from ftaudit.store.faults import fault_point

ENGINE_VERSION = "1"  # bump when training semantics change: old cache entries stop matching
DIGEST_META = "ftaudit_digest"  # safetensors metadata entry: state_digest of the tensors, written with them
KEY_META = "ftaudit_key"  # …and the entry's own key, so a sound entry copied over another is caught
log = logging.getLogger("ftaudit.store")

# What a cached model must hold: {parameter name: (shape, dtype)}, taken from the job's initial state.
Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]


def content_key(**parts) -> str:
    """sha256 of the canonical JSON of ``parts`` (numbers, strings, lists, dicts)."""
    blob = json.dumps({"engine": ENGINE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(obj).tobytes() + str(obj.dtype).encode()).hexdigest()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot hash {type(obj).__name__}")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_spec(state: dict[str, torch.Tensor]) -> Spec:
    return {n: (tuple(t.shape), t.dtype) for n, t in state.items()}


class CacheError(RuntimeError):
    """A cache entry exists but cannot be read (e.g. a disk error); the message names the file."""


class BadEntry(CacheError):
    """A cache entry failed verification (content, digest, keys or shapes): discard and recompute it."""


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _header(path: Path) -> tuple[dict, int]:
    """The safetensors header of ``path`` (read without its data) and the file size it implies."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BadEntry("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise BadEntry("not a safetensors file (header length)")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEntry(f"not a safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise BadEntry("not a safetensors file")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    return header, 8 + n + max(ends, default=0)


def _check_header(path: Path, spec: Spec | None) -> None:
    header, size = _header(path)
    if path.stat().st_size != size:
        raise BadEntry(f"{path.stat().st_size} bytes where its header describes {size} (truncated or padded)")
    if spec is not None:
        names = {k for k in header if k != "__metadata__"}
        _check_names(names, set(spec))
        for name, (shape, dtype) in spec.items():
            entry = header[name]
            if tuple(entry.get("shape", ())) != tuple(shape) or _ST_DTYPES.get(entry.get("dtype")) not in (dtype, None):
                raise BadEntry(f"tensor {name!r} is {entry.get('dtype')} {tuple(entry.get('shape', ()))}, "
                               f"the model expects {dtype} {tuple(shape)}")
    _check_meta(header, path.stem)


def _check_meta(header: dict, key: str) -> None:
    meta = header.get("__metadata__") or {}
    if not meta.get(DIGEST_META):
        raise BadEntry("no content digest (written by an older ftaudit, or not by ftaudit)")
    if meta.get(KEY_META) != key:
        raise BadEntry("written for another key (a different model's file)")


def _check_names(have: set[str], want: set[str]) -> None:
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        raise BadEntry(f"tensor names differ from the model's (missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                       f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''})")


class ModelCache:
    saved_in_process = 0  # models this process trained and kept (the CLI's "N models kept" on Ctrl-C)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "models" / key[:2] / f"{key}.safetensors"

    def lock_path(self, key: str) -> Path:
        """The claim file of an entry: whoever holds its lock is training that model."""
        return self.root / "models" / key[:2] / f"{key}.lock"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def usable(self, key: str, spec: Spec | None = None) -> bool:
        """Present and sound as far as its header tells (names, shapes, dtypes, size, a digest); a
        bad entry is discarded here, so the caller trains it again. The data's digest is checked on
        :meth:`load`, which only a run that needs the weights does."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            _check_header(path, spec)
        except BadEntry as exc:
            self.discard(key, str(exc))
            return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CacheError(f"model cache entry {path} is unreadable ({exc}); delete it and rerun") from exc
        return True

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> Path:
        tensors = {n: t.detach().cpu().contiguous() for n, t in state.items()}
        data = save_safetensors(tensors, metadata={**(meta or {}), DIGEST_META: state_digest(tensors), KEY_META: key})
        path = atomic_write_bytes(self.path(key), data)
        ModelCache.saved_in_process += 1
        fault_point("model-saved", key)
        return path

    def load(self, key: str, spec: Spec | None = None) -> dict[str, torch.Tensor]:
        """The entry's tensors, verified: :class:`BadEntry` (naming the file) when its content does
        not match its digest, or its names, shapes or dtypes differ from ``spec``."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CacheError(f"model cache entry {path} is unreadable ({exc}); delete it and rerun") from exc
        try:
            state = load_safetensors(data)
            header, size = _header(path)
        except (SafetensorError, BadEntry, ValueError, OSError) as exc:
            raise BadEntry(f"model cache entry {path} is unreadable ({exc})") from exc
        try:
            _check_meta(header, key)
        except BadEntry as exc:
            raise BadEntry(f"model cache entry {path}: {exc}") from None
        if state_digest(state) != header["__metadata__"][DIGEST_META]:
            raise BadEntry(f"model cache entry {path} does not match its digest (corrupted or modified)")
        if spec is not None:
            try:
                _check_names(set(state), set(spec))
            except BadEntry as exc:
                raise BadEntry(f"model cache entry {path}: {exc}") from None
            for name, (shape, dtype) in spec.items():
                if tuple(state[name].shape) != tuple(shape) or state[name].dtype != dtype:
                    raise BadEntry(f"model cache entry {path}: tensor {name!r} is {state[name].dtype} "
                                   f"{tuple(state[name].shape)}, the model expects {dtype} {tuple(shape)}")
        return state

    def verify(self, key: str) -> str | None:
        """Why the entry is bad (content against its own digest, no template), or None (doctor)."""
        try:
            self.load(key)
        except BadEntry as exc:
            return str(exc)
        return None

    def discard(self, key: str, reason: str) -> None:
        log.warning("discarding model cache entry %s: %s; it will be trained again", self.path(key), reason)
        self.path(key).unlink(missing_ok=True)


def array_digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(arr.tobytes() + str(arr.dtype).encode() + str(arr.shape).encode()).hexdigest()


class ArrayCache:
    """Named float arrays per key, e.g. one model's signals on one audit set."""

    MANIFEST = "_names.json"

    def __init__(self, root: str | Path, kind: str):
        self.root = Path(root) / kind
        self._verified: dict[str, dict[str, np.ndarray]] = {}

    def _path(self, key: str, name: str) -> Path:
        return self.root / key[:2] / key / f"{name}.npy"

    def has(self, key: str, names: list[str]) -> bool:
        return all(self._path(key, n).is_file() for n in names)

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in arrays.items():
            atomic_save_npy(self._path(key, name), arr)

    def load(self, key: str, names: list[str]) -> dict[str, np.ndarray]:
        return {n: load_npy(self._path(key, n)) for n in names}

    # Whole entries: the arrays, then a manifest naming them with their shapes, dtypes and digests,
    # written last, so an entry whose manifest exists is complete (a run killed mid-save leaves a
    # miss, never half an entry) and an entry whose arrays disagree with it is detected.
    def _manifest(self, key: str) -> Path:
        return self.root / key[:2] / key / self.MANIFEST

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def has_entry(self, key: str) -> bool:
        """A complete entry that passes verification (it is read here and kept for
        :meth:`load_entry`); a bad one is discarded with a warning and counts as missing."""
        if not self._manifest(key).is_file():
            return False
        try:
            self._verified[key] = self._read_entry(key)
        except BadEntry as exc:
            self.discard(key, str(exc))
            return False
        return True

    def save_entry(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if not arrays or any(not n or "/" in n or n.startswith("_") for n in arrays):
            raise ValueError(f"array names must be non-empty plain names, got {list(arrays)}")
        arrays = {n: np.asarray(a) for n, a in arrays.items()}
        self.save(key, arrays)
        manifest = {"format": 2, "arrays": {n: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": array_digest(a)}
                                            for n, a in sorted(arrays.items())}}
        atomic_write_text(self._manifest(key), json.dumps(manifest))

    def load_entry(self, key: str) -> dict[str, np.ndarray]:
        if key in self._verified:
            return self._verified.pop(key)
        try:
            return self._read_entry(key)
        except BadEntry as exc:
            self.discard(key, str(exc))
            raise CacheError(f"cache entry {self.entry_dir(key)} is unreadable ({exc}); it was removed, rerun") from exc

    def _read_entry(self, key: str) -> dict[str, np.ndarray]:
        try:
            manifest = json.loads(self._manifest(key).read_text())
        except (OSError, ValueError) as exc:
            raise BadEntry(f"manifest unreadable ({exc})") from exc
        if not (isinstance(manifest, dict) and manifest.get("format") == 2 and isinstance(manifest.get("arrays"), dict)):
            raise BadEntry("manifest without shapes and digests (written by an older ftaudit)")
        out = {}
        for name, want in manifest["arrays"].items():
            try:
                arr = load_npy(self._path(key, name))
            except (OSError, ValueError, EOFError) as exc:
                raise BadEntry(f"{name}.npy unreadable ({exc})") from exc
            if not isinstance(want, dict) or list(arr.shape) != want.get("shape") or arr.dtype.str != want.get("dtype"):
                raise BadEntry(f"{name}.npy is {arr.dtype.str} {list(arr.shape)}, its manifest says "
                               f"{want.get('dtype') if isinstance(want, dict) else '?'} "
                               f"{want.get('shape') if isinstance(want, dict) else '?'}")
            if array_digest(arr) != want.get("sha256"):
                raise BadEntry(f"{name}.npy does not match its digest (corrupted or modified)")
            out[name] = arr
        if not out:
            raise BadEntry("manifest names no arrays")
        return out

    def verify(self, key: str) -> str | None:
        """Why the entry is bad, or None (doctor)."""
        try:
            self._read_entry(key)
        except BadEntry as exc:
            return str(exc)
        return None

    def discard(self, key: str, reason: str) -> None:
        log.warning("discarding cache entry %s: %s; it will be recomputed", self.entry_dir(key), reason)
        self._verified.pop(key, None)
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)


def json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class JsonCache:
    """Small JSON results by content key, e.g. an attack's bootstrap summary for given scores.

    Stored as ``{"sha256": <digest of value>, "value": value}``; :meth:`get` returns the value only
    if the digest matches and ``check(value)`` (the reader's schema) does not raise."""

    def __init__(self, root: str | Path, kind: str):
        self.root = Path(root) / kind

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, check: Callable[[dict], object] | None = None) -> dict | None:
        path = self._path(key)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
            return None
        problem = _json_problem(raw, check)
        if problem:
            log.warning("discarding cache entry %s: %s; it will be recomputed", path, problem)
            path.unlink(missing_ok=True)
            return None
        return json.loads(raw)["value"]

    def verify(self, key: str) -> str | None:
        """Why the entry is bad (against its digest), or None (doctor)."""
        try:
            return _json_problem(self._path(key).read_text(), None)
        except OSError as exc:
            return f"unreadable ({exc})"

    def put(self, key: str, value: dict) -> None:
        atomic_write_text(self._path(key), json.dumps({"sha256": json_digest(value), "value": value}))


def _json_problem(raw: str, check: Callable[[dict], object] | None) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    if not (isinstance(doc, dict) and set(doc) == {"sha256", "value"}):
        return "not a digest-carrying entry (written by an older ftaudit, or edited)"
    if json_digest(doc["value"]) != doc["sha256"]:
        return "does not match its digest (corrupted or modified)"
    if check is not None:
        try:
            check(doc["value"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return f"wrong content ({type(exc).__name__}: {exc})"
    return None

