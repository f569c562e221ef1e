"""A user's records: the unit of membership in an audit of their own model.

``load_records`` reads the members or non-members the user gives (a file, a ``datasets`` directory or
an in-memory list) into :class:`Records`: text records with optional integer labels, or images with
labels. Every problem with the input is a :class:`UserError` naming the flag or config key it came
from. ``deduplicate`` drops exact duplicates and records present in both sets, and counts them, so
the report can say how many it dropped.

Formats:

- ``.txt``: one record per line, blank lines skipped;
- ``.jsonl`` (one JSON object a line) / ``.json`` (a list of objects) / ``.csv`` (a header row): a
  ``text`` field, and ``label`` (an integer) for classification;
- ``.npz``: images ``x`` ([n, C, H, W] or [n, H, W]; uint8 is scaled to [0, 1]) and labels ``y``;
- a directory written by ``datasets``' ``save_to_disk`` (needs the ``datasets`` package);
- in memory: a list of strings, a list of dicts with ``text`` (+ ``label``), or a ``Records``.
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftaudit.errors import UserError

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")
FORMATS = ".txt, .jsonl, .json, .csv, .npz or a datasets directory (save_to_disk)"


@dataclass(frozen=True)
class Records:
    """Text records (``texts``) or images (``images``, float32 [n, C, H, W]), with int64 ``labels``
    for classification. ``source`` says where they came from, for the report."""

    texts: list[str] | None
    labels: np.ndarray | None
    images: np.ndarray | None
    source: str

    def __post_init__(self):
        if (self.texts is None) == (self.images is None):
            raise ValueError("Records holds texts or images, exactly one of them")
        if self.labels is not None and len(self.labels) != len(self):
            raise ValueError(f"{len(self.labels)} labels for {len(self)} records")

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.images)

    def subset(self, index: np.ndarray) -> "Records":
        """The records at ``index`` (integer positions, in that order)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return Records(texts=None if self.texts is None else [self.texts[i] for i in index],
                       labels=None if self.labels is None else self.labels[index],
                       images=None if self.images is None else self.images[index],
                       source=self.source)


def load_records(spec, field: str, *, text_key: str = "text", label_key: str = "label",
                 need_labels: bool = False) -> Records:
    """The records of ``spec`` (a path, a list of str / dicts, or Records), checked; ``field`` names the
    CLI flag or config key for the one-line errors. ``need_labels``: every record must have an integer
    label (classification)."""
    if isinstance(spec, Records):
        records = spec
    elif isinstance(spec, (list, tuple)):
        records = _from_list(list(spec), field, "in-memory", text_key, label_key, need_labels)
    elif isinstance(spec, (str, Path)):
        records = _from_path(Path(spec).expanduser(), field, text_key, label_key, need_labels)
    else:
        raise UserError(field, f"cannot read records from a {type(spec).__name__}",
                        f"give a file ({FORMATS}), a list of strings or a list of dicts with {text_key!r}")
    if len(records) == 0:
        raise UserError(field, f"no records in {records.source}", "give at least one record")
    if need_labels and records.labels is None:
        raise UserError(field, f"the records of {records.source} have no labels, and classification needs them",
                        f"add an integer {label_key!r} to every record")
    return records


def check_label_range(records: Records, num_labels: int, field: str) -> None:
    """Every label must be a class of the model: 0 <= label < num_labels."""
    if records.labels is None:
        return
    bad = np.flatnonzero((records.labels < 0) | (records.labels >= num_labels))
    if len(bad):
        raise UserError(field, f"record {int(bad[0])} of {records.source} has label {int(records.labels[bad[0]])}, "
                        f"outside the model's {num_labels} classes ({len(bad)} such records)",
                        f"use labels 0 … {num_labels - 1}, as the model was trained")


def deduplicate(members: Records, nonmembers: Records) -> tuple[Records, Records, dict[str, int]]:
    """Drop exact duplicates within each set (the first copy stays) and every record present in both
    sets (from both). Texts compare by their exact string, images by their pixels. Returns the two sets
    and the counts {"member_duplicates", "nonmember_duplicates", "overlap"} (overlap: distinct records
    found in both sets)."""
    m_keys, n_keys = _keys(members), _keys(nonmembers)
    m_first, n_first = _first_copies(m_keys), _first_copies(n_keys)
    shared = set(m_first) & set(n_first)
    m_keep = np.array(sorted(i for k, i in m_first.items() if k not in shared), dtype=np.int64)
    n_keep = np.array(sorted(i for k, i in n_first.items() if k not in shared), dtype=np.int64)
    counts = {"member_duplicates": len(m_keys) - len(m_first), "nonmember_duplicates": len(n_keys) - len(n_first),
              "overlap": len(shared)}
    return members.subset(m_keep), nonmembers.subset(n_keep), counts


def _keys(records: Records) -> list:
    if records.texts is not None:
        return list(records.texts)
    return [("image", img.shape, np.ascontiguousarray(img).tobytes()) for img in records.images]


def _first_copies(keys: list) -> dict:
    first: dict = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return first


# --- reading ---------------------------------------------------------------------------------------

def _from_path(path: Path, field: str, text_key: str, label_key: str, need_labels: bool) -> Records:
    if not path.exists():
        raise UserError(field, f"{str(path)!r} does not exist", f"give an existing file ({FORMATS})")
    if path.is_dir():
        return _from_dataset_dir(path, field, text_key, label_key, need_labels)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _from_npz(path, field)
    if suffix not in TEXT_SUFFIXES:
        raise UserError(field, f"cannot read {str(path)!r}: unknown format {suffix or '(no suffix)'!r}",
                        f"use {FORMATS}")
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(field, f"cannot read {str(path)!r}: {exc.strerror or exc}", "check the file's permissions") from exc
    except UnicodeDecodeError as exc:
        raise UserError(field, f"{str(path)!r} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from exc
    source = str(path)
    if suffix == ".txt":
        texts = [line for line in content.splitlines() if line.strip()]
        return _from_list(texts, field, source, text_key, label_key, need_labels)
    if suffix == ".csv":
        return _from_list(_csv_rows(content, field, source, text_key), field, source, text_key, label_key, need_labels)
    rows = _json_rows(content, field, source, jsonl=suffix == ".jsonl")
    return _from_list(rows, field, source, text_key, label_key, need_labels)


def _json_rows(content: str, field: str, source: str, jsonl: bool) -> list:
    if not jsonl:
        try:
            rows = json.loads(content) if content.strip() else []
        except json.JSONDecodeError as exc:
            raise UserError(field, f"{source!r} is not valid JSON (line {exc.lineno}: {exc.msg})",
                            "give a JSON list of objects, or JSON lines (.jsonl)") from exc
        if not isinstance(rows, list):
            raise UserError(field, f"{source!r} holds a JSON {type(rows).__name__}, not a list of records",
                            "give a JSON list of objects, or JSON lines (.jsonl)")
        return rows
    rows = []
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(field, f"line {n} of {source!r} is not valid JSON ({exc.msg})",
                            "write one JSON object per line") from exc
    return rows


def _csv_rows(content: str, field: str, source: str, text_key: str) -> list[dict]:
    try:
        reader = csv.DictReader(io.StringIO(content, newline=""))
        rows = list(reader)
    except csv.Error as exc:
        raise UserError(field, f"{source!r} is not a readable CSV file ({exc})", "give a CSV file with a header row") from exc
    if reader.fieldnames is not None and text_key not in reader.fieldnames:
        raise UserError(field, f"{source!r} has no {text_key!r} column (columns: {', '.join(reader.fieldnames)})",
                        f"name the records' column {text_key!r}")
    return [{k: v for k, v in row.items() if k is not None} for row in rows]


def _from_list(items: list, field: str, source: str, text_key: str, label_key: str, need_labels: bool) -> Records:
    if not items:
        raise UserError(field, f"no records in {source}", "give at least one record")
    if all(isinstance(x, str) for x in items):
        _check_texts(items, field, source, lambda i: f"record {i}")
        return Records(texts=list(items), labels=None, images=None, source=source)
    if not all(isinstance(x, dict) for x in items):
        kinds = sorted({type(x).__name__ for x in items})
        raise UserError(field, f"the records of {source} are {' and '.join(kinds)}, not all strings or all objects",
                        f"give strings, or objects with {text_key!r}")
    missing = [i for i, x in enumerate(items) if text_key not in x]
    if missing:
        keys = ", ".join(sorted(items[missing[0]].keys())) or "none"
        raise UserError(field, f"record {missing[0]} of {source} has no {text_key!r} field (fields: {keys})",
                        f"give every record a {text_key!r} field")
    texts = [x[text_key] for x in items]
    _check_texts(texts, field, source, lambda i: f"record {i} of {source}")
    labelled = [label_key in x and x[label_key] not in (None, "") for x in items]
    if all(labelled):
        labels = _int_labels([x[label_key] for x in items], field, source, label_key)
    elif need_labels and any(labelled):
        i = labelled.index(False)
        raise UserError(field, f"record {i} of {source} has no {label_key!r}, and classification needs one",
                        f"give every record an integer {label_key!r}")
    else:
        labels = None
    return Records(texts=texts, labels=labels, images=None, source=source)


def _check_texts(texts: list, field: str, source: str, where) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(field, f"{where(i)} has a {type(t).__name__} for its text, not a string",
                            "give every record's text as a string")
        if not t.strip():
            raise UserError(field, f"{where(i)} has an empty text", "remove empty records")


def _int_labels(values: list, field: str, source: str, label_key: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool):
            ok = False
        elif isinstance(v, (int, np.integer)):
            out[i], ok = int(v), True
        elif isinstance(v, (float, np.floating)):
            ok = float(v).is_integer()
            out[i] = int(v) if ok else 0
        elif isinstance(v, str):
            try:
                out[i], ok = int(v.strip()), True
            except ValueError:
                ok = False
        else:
            ok = False
        if not ok:
            raise UserError(field, f"record {i} of {source} has {label_key!r} = {v!r}, not an integer class",
                            f"give every {label_key!r} as an integer class index")
    return out


def _from_npz(path: Path, field: str) -> Records:
    source = str(path)
    fix = "save it with numpy.savez(path, x=images, y=labels) of numeric arrays"
    try:
        if not zipfile.is_zipfile(path):
            raise UserError(field, f"cannot read {source!r}: not a numpy .npz archive", fix)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(field, f"cannot read {source!r} as a numpy .npz archive: {exc}", fix) from exc
    except ValueError as exc:  # object arrays: reading them would unpickle
        raise UserError(field, f"cannot read {source!r}: it holds Python objects (pickled), which ftaudit does not "
                        "load", fix) from exc
    if "x" not in arrays:
        raise UserError(field, f"{source!r} has no array 'x' (arrays: {', '.join(arrays) or 'none'})",
                        "save it with numpy.savez(path, x=images, y=labels)")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UserError(field, f"'x' of {source!r} has shape {x.shape} and dtype {x.dtype}, not numeric images",
                        "give images as [n, C, H, W] (or [n, H, W]) numbers")
    images = (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)
    labels = None
    if "y" in arrays:
        y = arrays["y"].reshape(-1)
        if len(y) != len(x):
            raise UserError(field, f"{source!r} has {len(x)} images but {len(y)} labels", "give one label per image")
        labels = _int_labels(y.tolist(), field, source, "y")
    return Records(texts=None, labels=labels, images=images, source=source)


def _from_dataset_dir(path: Path, field: str, text_key: str, label_key: str, need_labels: bool) -> Records:
    source = str(path)
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if not any((path / m).is_file() for m in markers):
        raise UserError(field, f"{source!r} is a directory, but not a dataset saved with save_to_disk",
                        f"give a records file ({FORMATS})")
    try:
        import datasets
    except ImportError as exc:
        raise UserError(field, f"{source!r} is a datasets directory, and the datasets package is not installed",
                        "pip install datasets, or export the records to .jsonl") from exc
    try:
        ds = datasets.load_from_disk(source)
    except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ValueError, its own errors)
        raise UserError(field, f"cannot load the dataset in {source!r}: {exc}", "save it again with save_to_disk") from exc
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise UserError(field, f"{source!r} holds the splits {', '.join(ds)}, not one set of records",
                            "save_to_disk the one split to audit")
        ds = next(iter(ds.values()))
    if text_key not in ds.column_names:
        raise UserError(field, f"the dataset in {source!r} has no {text_key!r} column "
                        f"(columns: {', '.join(ds.column_names)})", f"name the records' column {text_key!r}")
    columns = [text_key] + ([label_key] if label_key in ds.column_names else [])
    rows = ds.select_columns(columns).to_list()
    return _from_list(rows, field, source, text_key, label_key, need_labels)
