import importlib.util
import json

import numpy as np
import pytest

from ftaudit.data.text import BUNDLED, Corpus, load_corpus, make_blocks
from ftaudit.data.tokenizer import MASK_ID, PAD_ID, load_tokenizer, tokenizer_digest, tokenizer_key, train_tokenizer
from ftaudit.errors import UserError
from ftaudit.train.objectives import IGNORE


# --- corpora ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_corpora_load_whole_documents(name):
    corpus = load_corpus(name)
    assert len(corpus.documents) > 10 and all(d == d.strip() and d for d in corpus.documents)
    assert 200_000 < len(corpus.text.encode()) < 310_000
    if name.startswith("wikitext2"):
        assert all(d.startswith("= ") and not d.startswith("= =") for d in corpus.documents)  # one article each


def test_wikitext_splits_share_no_article():
    docs = [set(load_corpus(n).documents) for n in ("wikitext2", "wikitext2-test")]
    assert not docs[0] & docs[1]


def test_local_formats(tmp_path):
    (tmp_path / "a.txt").write_text("first para\nstill first\n\n  \nsecond\n\n\n")
    assert load_corpus(tmp_path / "a.txt").documents == ("first para\nstill first", "second")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert load_corpus(str(tmp_path / "b.jsonl")).documents == ("one", "two")
    (tmp_path / "c.csv").write_text('id,text\n1,"hello, world"\n2,"multi\nline"\n3,\n')
    assert load_corpus(tmp_path / "c.csv").documents == ("hello, world", "multi\nline")
    assert Corpus.from_text("x\n\ny").digest() != Corpus.from_text("x\n\nz").digest()


@pytest.mark.parametrize("content,name,problem", [
    (None, "missing.txt", "no such file"),
    ("\n\n  \n", "empty.txt", "holds no text"),
    ('{"text": "ok"}\nnot json\n', "bad.jsonl", "line 2 is not valid JSON"),
    ('{"body": "x"}\n', "nofield.jsonl", "no string 'text' field"),
    ("id,body\n1,x\n", "nocol.csv", "no 'text' column"),
    ("text", "notes.md", "unsupported format"),
])
def test_bad_local_corpora_are_user_errors(tmp_path, content, name, problem):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=problem) as info:
        load_corpus(tmp_path / name)
    assert info.value.field == "data.corpus" and info.value.fix


def test_unknown_corpus_name_is_a_user_error():
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(UserError, match="not installed"):
            load_corpus("no-such-corpus")
    else:  # the hub is tried, and fails: no such dataset, or no network
        with pytest.raises(UserError):
            load_corpus("ftaudit-test/no-such-dataset-xyz")


# --- tokenizer -------------------------------------------------------------------------------------

def test_tokenizer_round_trip_and_special_tokens(small_tok, shakespeare):
    assert len(small_tok) == 384
    assert (small_tok.pad_token_id, small_tok.mask_token_id) == (PAD_ID, MASK_ID)
    assert small_tok.cls_token == "[CLS]" and small_tok.sep_token == "[SEP]"
    text = shakespeare.documents[500] + "  ünïcödé 日本 , spaced ;\n\n\tend [MASK]"
    ids = small_tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert MASK_ID not in ids  # literal "[MASK]" in data is text, not the control token
    assert small_tok.decode(ids) == text


def test_tokenizer_is_cached_by_content(shakespeare, tmp_path):
    docs = shakespeare.documents[:200]
    first = train_tokenizer(docs, vocab_size=300, cache_dir=tmp_path)
    cached = list(tmp_path.glob("*/tokenizer.json"))
    assert len(cached) == 1 and cached[0].parent.name == tokenizer_key(docs, 300)
    stamp = cached[0].stat().st_mtime_ns
    again = train_tokenizer(docs, vocab_size=300, cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == stamp  # loaded, not retrained
    assert tokenizer_digest(again) == tokenizer_digest(first)
    assert again.mask_token_id == MASK_ID and again.decode(again("a b")["input_ids"]) == "a b"
    train_tokenizer(docs, vocab_size=320, cache_dir=tmp_path)
    train_tokenizer(docs[:-1], vocab_size=300, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/tokenizer.json"))) == 3
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(docs, vocab_size=100)


def test_tokenizer_saves_and_loads_as_a_hf_directory(small_tok, tmp_path):
    small_tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert tokenizer_digest(loaded) == tokenizer_digest(small_tok) and loaded.mask_token_id == MASK_ID
    with pytest.raises(UserError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path / "empty-dir-that-is-missing", local_files_only=True)


# --- blocks ----------------------------------------------------------------------------------------

def test_blocks_fixed_length_disjoint_and_deterministic(small_tok, shakespeare):
    blocks = make_blocks(shakespeare, small_tok, block_len=32, n_blocks=200, seed=3)
    assert blocks.ids.shape == (200, 32) and blocks.ids.dtype == np.int64 and blocks.valid.all()
    starts = np.sort(blocks.source)
    assert (np.diff(starts) >= 32).all() and (starts % 32 == 0).all()  # non-overlapping tiles of the stream
    assert len({tuple(r) for r in blocks.ids}) == 200
    same = make_blocks(shakespeare, small_tok, 32, 200, seed=3)
    other = make_blocks(shakespeare, small_tok, 32, 200, seed=4)
    assert same.digest() == blocks.digest() and other.digest() != blocks.digest()
    assert np.array_equal(blocks.targets, blocks.ids) and blocks.x is blocks.ids
    for row, text in zip(blocks.ids[:20], blocks.texts[:20]):  # texts are the blocks' tokens, decoded
        assert small_tok.decode(row.tolist()) == text
    sub = blocks.select([5, 1])
    assert np.array_equal(sub.ids, blocks.ids[[5, 1]]) and sub.texts == (blocks.texts[5], blocks.texts[1])


def test_blocks_come_from_the_corpus_stream(small_tok):
    corpus = Corpus("t", ("alpha beta gamma delta " * 30, "epsilon zeta eta theta " * 30))
    blocks = make_blocks(corpus, small_tok, block_len=8, n_blocks=5, seed=0)
    stream = small_tok(["alpha beta gamma delta " * 30 + "\n\n" + "epsilon zeta eta theta " * 30],
                       add_special_tokens=False)["input_ids"][0]
    for row, start in zip(blocks.ids, blocks.source):
        assert row.tolist() == stream[start:start + 8]
    with pytest.raises(UserError, match="only"):
        make_blocks(corpus, small_tok, block_len=8, n_blocks=10_000, seed=0)


def test_document_mode_pads_and_marks_padding(small_tok):
    corpus = Corpus("docs", ("short one", "a much longer document " * 20, "x", "mid length text here"))
    blocks = make_blocks(corpus, small_tok, block_len=16, n_blocks=3, seed=0, mode="documents")
    assert blocks.ids.shape == (3, 16) and sorted(blocks.source) == [0, 1, 3]  # "x" is one token: not eligible
    for row, ok, target, doc in zip(blocks.ids, blocks.valid, blocks.targets, blocks.source):
        n = int(ok.sum())
        assert ok[:n].all() and not ok[n:].any() and (row[n:] == PAD_ID).all() and (target[n:] == IGNORE).all()
        full = small_tok(corpus.documents[doc], add_special_tokens=False)["input_ids"]
        assert row[:n].tolist() == full[:16]
    with pytest.raises(UserError, match="documents"):
        make_blocks(corpus, small_tok, block_len=16, n_blocks=4, seed=0, mode="documents")


def test_jsonl_corpus_round_trip_into_blocks(small_tok, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": f"record number {i} says hello"}) + "\n" for i in range(40)))
    blocks = make_blocks(load_corpus(path), small_tok, block_len=10, n_blocks=12, seed=1)
    assert blocks.ids.shape == (12, 10)
