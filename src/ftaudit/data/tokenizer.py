"""Tokenizers: a small byte-level BPE trained locally, or a pretrained model's own.

Tiny language models need a tiny vocabulary (a 50k-token embedding would dwarf a 64-wide model), so
ftaudit trains a byte-level BPE on the study's public text with HF ``tokenizers``: byte-level, so any
text encodes without unknown tokens and decodes back exactly. Its special tokens sit at fixed ids
(``[PAD]`` = 0 … ``[MASK]`` = 4) so the same tokenizer serves GPT-2-style and BERT-style models. A
trained tokenizer is cached as a ``tokenizer.json`` under the content key of its training text and
vocabulary size, so a rerun reuses it instead of retraining.

``transformers`` is imported inside the functions: it takes seconds to import, and the vision
studies (which import this module through the MLM objective) never need it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ftaudit.errors import UserError
from ftaudit.store.atomic import atomic_write

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Role -> token, in id order: [PAD] is id 0, [MASK] id 4.
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
PAD_ID = 0
MASK_ID = 4
# files of a saved tokenizer: a directory with none of them has no tokenizer (transformers 5 would build an
# empty one from config.json alone, which encodes every text to nothing)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
TOKENIZER_VERSION = "byte-bpe-v1"  # bump when the training recipe changes: cached tokenizers stop matching


def tokenizer_key(documents: Iterable[str], vocab_size: int) -> str:
    """Content key of a trained tokenizer: the recipe, the vocabulary size and every document."""
    h = hashlib.sha256(f"{TOKENIZER_VERSION}|{vocab_size}|{'|'.join(SPECIAL_TOKENS.values())}".encode())
    for doc in documents:
        data = doc.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _train_bpe(documents: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(documents, trainer)
    return tok


def wrap(tok: Tokenizer) -> "PreTrainedTokenizerFast":
    """The trained tokenizer as a transformers tokenizer, special-token roles set. Decoding keeps
    spaces as they are (no clean-up), so decode(encode(text)) == text."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def train_tokenizer(documents: Iterable[str] | str, vocab_size: int = 1024,
                    cache_dir: str | Path | None = None) -> "PreTrainedTokenizerFast":
    """Train (or load from ``cache_dir``) a byte-level BPE of ``vocab_size`` tokens on ``documents``
    (a string counts as one document; pass ``Corpus.documents`` for a corpus)."""
    docs = [documents] if isinstance(documents, str) else list(documents)
    floor = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens
    if vocab_size < floor:
        raise UserError("tokenizer.vocab_size", f"{vocab_size} is too small for a byte-level BPE",
                        f"use at least {floor}")
    if not any(d.strip() for d in docs):
        raise UserError("tokenizer", "no text to train the tokenizer on", "give it a non-empty corpus")
    path = Path(cache_dir) / tokenizer_key(docs, vocab_size) / "tokenizer.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return wrap(Tokenizer.from_file(str(path)))
    tok = _train_bpe(docs, vocab_size)
    if path is not None:
        atomic_write(path, lambda p: tok.save(str(p)))
    return wrap(tok)


def load_tokenizer(name_or_dir: str | Path, local_files_only: bool | None = None,
                   field: str = "model.tokenizer") -> "PreTrainedTokenizerBase":
    """A pretrained model's tokenizer: a local HF directory, or a hub id (needs the network unless it
    is in the local HF cache). By default a local directory never touches the network."""
    from transformers import AutoTokenizer

    local = Path(name_or_dir).is_dir()
    if local and not any((Path(name_or_dir) / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(field, f"cannot load a tokenizer for {str(name_or_dir)!r}: the directory has no tokenizer files",
                        "save the model's tokenizer next to it (tokenizer.save_pretrained(dir))")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_dir),
                                             local_files_only=local if local_files_only is None else local_files_only)
    except (OSError, ValueError) as exc:
        where = "the directory" if local else "the Hugging Face hub (is the network up?)"
        raise UserError(field, f"cannot load a tokenizer for {str(name_or_dir)!r} from {where}: {exc}",
                        "pass a local directory holding tokenizer.json / tokenizer_config.json") from exc


def tokenizer_identity(tokenizer: "PreTrainedTokenizerBase") -> dict:
    """What decides how text becomes ids: the vocabulary (token -> id, added tokens included), the BPE
    merges (from the fast tokenizer's backend, or a slow tokenizer's ranks) and the special tokens
    (content -> id). Not the padding / truncation settings, which transformers writes into the backend
    whenever the tokenizer is called with padding or truncation, nor the special-token roles."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    merges: list = []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", None) or []]
        special = sorted((int(i), str(t.content)) for i, t in backend.get_added_tokens_decoder().items() if t.special)
    else:
        ranks = getattr(tokenizer, "bpe_ranks", None) or {}
        merges = [list(pair) for pair, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
        special = []
    for token in getattr(tokenizer, "all_special_tokens", []):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None:
            special.append((int(token_id), str(token)))
    return {"vocab": vocab, "merges": merges, "special": sorted(set(special))}


def tokenizer_digest(tokenizer: "PreTrainedTokenizerBase") -> str:
    """sha256 of the tokenizer's identity (vocabulary, merges, special tokens; see ``tokenizer_identity``),
    for content keys and the "same tokenizer" checks: two tokenizers that map text to the same ids have
    the same digest, whatever padding or truncation they were saved or last called with."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise TypeError("tokenizer_digest needs a fast (Rust-backed) tokenizer")
    text = json.dumps(tokenizer_identity(tokenizer), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
