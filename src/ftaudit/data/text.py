"""Text corpora and the membership units cut from them.

A :class:`Corpus` is a list of documents (articles, paragraphs, JSON records). Membership is decided
per :class:`TextBlocks` row: by default a fixed-length run of token ids cut from the corpus' token
stream, so every example has the same length and per-token signals need no masking; in document mode
one row per document, truncated or padded (padding is marked in ``valid`` and never counts).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ftaudit.errors import UserError
from ftaudit.train.objectives import IGNORE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FIELD = "data.corpus"  # config path named in UserErrors
# Bundled name -> (file under data/corpora, how it splits into documents); see corpora/ATTRIBUTION.md.
BUNDLED = {
    "wikitext2": ("wikitext2.txt", "articles"),
    "wikitext2-test": ("wikitext2-test.txt", "articles"),
    "shakespeare": ("shakespeare.txt", "paragraphs"),
}
FORMATS = (".txt", ".jsonl", ".csv")
_WIKI_TITLE = re.compile(r"^ = [^=].* = *$", flags=re.M)  # a top-level WikiText heading starts an article


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.documents)

    def digest(self) -> str:
        h = hashlib.sha256()
        for doc in self.documents:
            data = doc.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.hexdigest()

    @classmethod
    def from_text(cls, text: str, name: str = "text") -> "Corpus":
        return cls(name, tuple(paragraphs(text)))


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, stripped; empty ones dropped."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def articles(text: str) -> list[str]:
    """WikiText articles: each starts at a top-level ``= Title =`` line."""
    starts = [m.start() for m in _WIKI_TITLE.finditer(text)] or [0]
    return [a.strip() for a in (text[s:e] for s, e in zip(starts, starts[1:] + [len(text)])) if a.strip()]


def load_corpus(name_or_path: str | Path, field: str = FIELD, split: str = "train") -> Corpus:
    """A bundled corpus by name (``wikitext2``, ``wikitext2-test``, ``shakespeare``), a local file
    (``.txt``: blank-line separated paragraphs; ``.jsonl``: one object per line with a ``text`` field;
    ``.csv``: a ``text`` column), or a Hugging Face dataset ``name[:config]`` (its ``split``, column
    ``text``) when the ``datasets`` package is installed and the hub is reachable."""
    key = str(name_or_path)
    if key in BUNDLED:
        filename, how = BUNDLED[key]
        text = resources.files("ftaudit.data").joinpath("corpora", filename).read_text(encoding="utf-8")
        return _checked(key, articles(text) if how == "articles" else paragraphs(text), field)
    path = Path(key).expanduser()
    if _is_file_ref(key, path):
        return _checked(key, _read_file(path, field), field)
    return _checked(key, _read_hub(key, split, field), field)


def _is_file_ref(key: str, path: Path) -> bool:
    """A path unless it reads as a hub id (``name`` or ``owner/name``, optionally ``:config``)."""
    return (path.exists() or path.suffix.lower() in FORMATS or key.startswith((".", "/", "~"))
            or key.count("/") > 1)


def _checked(name: str, docs: list[str], field: str) -> Corpus:
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise UserError(field, f"corpus {name!r} holds no text", "give a file with at least one non-empty document")
    return Corpus(name, tuple(docs))


def _read_file(path: Path, field: str) -> list[str]:
    if not path.is_file():
        raise UserError(field, f"no such file: {str(path)!r}",
                        f"give an existing .txt/.jsonl/.csv file or a bundled corpus ({', '.join(BUNDLED)})")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(field, f"cannot read {path.name!r}: unsupported format {suffix or '(none)'}",
                        "use .txt (paragraphs), .jsonl (a 'text' field per line) or .csv (a 'text' column)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(field, f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        "convert it to UTF-8") from exc
    if suffix == ".txt":
        return paragraphs(text)
    if suffix == ".jsonl":
        return _jsonl_texts(text, path, field)
    return _csv_texts(text, path, field)


def _jsonl_texts(text: str, path: Path, field: str) -> list[str]:
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(field, f"{path.name} line {number} is not valid JSON ({exc.msg})",
                            "write one JSON object per line") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserError(field, f"{path.name} line {number} has no string 'text' field",
                            'write each line as {"text": "..."}')
        docs.append(record["text"])
    return docs


def _csv_texts(text: str, path: Path, field: str) -> list[str]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    if "text" not in (reader.fieldnames or []):
        raise UserError(field, f"{path.name} has no 'text' column (columns: {reader.fieldnames or 'none'})",
                        "name the column holding the documents 'text'")
    try:
        return [row["text"] or "" for row in reader]
    except csv.Error as exc:
        raise UserError(field, f"{path.name} is not valid CSV ({exc})", "fix the file") from exc


def _read_hub(key: str, split: str, field: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise UserError(field, f"unknown corpus {key!r}: not a bundled name, not a file, and the 'datasets' "
                        "package that loads Hugging Face datasets is not installed",
                        f"use one of {', '.join(BUNDLED)}, a .txt/.jsonl/.csv file, or pip install datasets") from None
    name, _, config = key.partition(":")
    try:
        data = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # datasets raises many types (connection, not found, bad config)
        raise UserError(field, f"cannot load Hugging Face dataset {key!r} (split {split!r}): {exc}",
                        "check the name and that the hub is reachable, or give a local file") from exc
    if "text" not in data.column_names:
        raise UserError(field, f"dataset {key!r} has no 'text' column (columns: {data.column_names})",
                        "use a dataset with a 'text' column or export it to .jsonl")
    return [t for t in data["text"] if isinstance(t, str)]


@dataclass(frozen=True)
class TextBlocks:
    """Membership units: n rows of token ids; Split-like (``x``/``y``/``digest``) for the engine."""

    ids: np.ndarray  # int64 [n, T]; padding positions hold pad_id
    valid: np.ndarray  # bool [n, T]; False at padding (document mode only)
    texts: tuple[str, ...]  # decoded text of each row's real tokens
    source: np.ndarray  # int64 [n]: token offset in the corpus stream (blocks) or document index (documents)
    mode: str  # "blocks" or "documents"
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def block_len(self) -> int:
        return self.ids.shape[1]

    @property
    def targets(self) -> np.ndarray:
        """The ids with IGNORE at padding: the training targets of both LM objectives."""
        return np.where(self.valid, self.ids, IGNORE)

    @property
    def x(self) -> np.ndarray:
        return self.ids

    @property
    def y(self) -> np.ndarray:
        return self.targets

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.ids, self.valid):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def select(self, rows) -> "TextBlocks":
        rows = np.asarray(rows, dtype=np.int64)
        return TextBlocks(self.ids[rows], self.valid[rows], tuple(self.texts[i] for i in rows), self.source[rows],
                          self.mode, self.pad_id)


def encode(tokenizer: "PreTrainedTokenizerBase", texts: list[str]) -> list[list[int]]:
    """Token ids without added special tokens; special-token strings in the text (a literal
    ``[MASK]``) are split like any text, so data never collides with the model's control tokens."""
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def make_blocks(corpus: Corpus | str, tokenizer: "PreTrainedTokenizerBase", block_len: int, n_blocks: int,
                seed: int, mode: str = "blocks") -> TextBlocks:
    """``n_blocks`` rows of ``block_len`` tokens, chosen at random (``seed``) without replacement.

    blocks: the documents are encoded and joined by the encoding of a blank line; the stream is cut
    into consecutive non-overlapping blocks, of which ``n_blocks`` are sampled (so no two rows share a
    token). documents: ``n_blocks`` distinct documents of at least two tokens, each truncated to
    ``block_len`` or padded after its end with the tokenizer's pad id (0 when it has none).
    """
    if isinstance(corpus, str):
        corpus = Corpus.from_text(corpus)
    if block_len < 2:
        raise UserError("data.block_len", f"{block_len} is too short", "use at least 2 tokens per block")
    if n_blocks < 1:
        raise UserError("data.n_blocks", f"{n_blocks} blocks requested", "ask for at least 1")
    if mode not in ("blocks", "documents"):
        raise UserError("data.mode", f"unknown block mode {mode!r}", "use 'blocks' or 'documents'")
    rng = np.random.default_rng([seed, 0x7E47])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = encode(tokenizer, list(corpus.documents))
    if mode == "blocks":
        ids, valid, source = _stream_blocks(encoded, encode(tokenizer, ["\n\n"])[0], block_len, n_blocks, rng, corpus.name)
    else:
        ids, valid, source = _document_blocks(encoded, block_len, n_blocks, rng, pad_id, corpus.name)
    texts = tuple(tokenizer.decode(row[ok].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
                  for row, ok in zip(ids, valid))
    return TextBlocks(ids=ids, valid=valid, texts=texts, source=source, mode=mode, pad_id=int(pad_id))


def _stream_blocks(encoded, separator, block_len, n_blocks, rng, name):
    stream = []
    for i, doc in enumerate(encoded):
        if i:
            stream.extend(separator)
        stream.extend(doc)
    available = len(stream) // block_len
    if n_blocks > available:
        raise UserError("data.n_blocks", f"corpus {name!r} has {len(stream)} tokens: only {available} blocks of "
                        f"{block_len}, {n_blocks} requested", "ask for fewer or shorter blocks, or use a larger corpus")
    start = rng.choice(available, size=n_blocks, replace=False) * block_len  # random order
    ids = np.asarray(stream, dtype=np.int64)[start[:, None] + np.arange(block_len)]
    return ids, np.ones(ids.shape, dtype=bool), start.astype(np.int64)


def _document_blocks(encoded, block_len, n_blocks, rng, pad_id, name):
    eligible = np.flatnonzero([len(doc) >= 2 for doc in encoded])
    if n_blocks > len(eligible):
        raise UserError("data.n_blocks", f"corpus {name!r} has {len(eligible)} documents of 2+ tokens, "
                        f"{n_blocks} requested", "ask for fewer, or use block mode")
    chosen = rng.choice(eligible, size=n_blocks, replace=False)
    ids = np.full((n_blocks, block_len), pad_id, dtype=np.int64)
    valid = np.zeros((n_blocks, block_len), dtype=bool)
    for row, doc in enumerate(chosen):
        tokens = encoded[doc][:block_len]
        ids[row, : len(tokens)] = tokens
        valid[row, : len(tokens)] = True
    return ids, valid, chosen.astype(np.int64)
