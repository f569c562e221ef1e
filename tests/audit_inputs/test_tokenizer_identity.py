"""Tokenizer identity (same_tokenizer, tokenizer_digest): vocabulary, merges and special tokens decide it;
padding / truncation settings, saved or left behind by a call, do not."""
import json

import pytest

from ftaudit.data.tokenizer import load_tokenizer, tokenizer_digest, train_tokenizer
from ftaudit.models.load import same_tokenizer


def same(a, b):
    assert same_tokenizer(a, b) == (tokenizer_digest(a) == tokenizer_digest(b))
    return same_tokenizer(a, b)


def test_padding_and_truncation_settings_do_not_count(small_tok, tmp_path):
    small_tok.save_pretrained(tmp_path / "plain")
    plain = load_tokenizer(tmp_path / "plain")
    padded = load_tokenizer(tmp_path / "plain")
    padded(["a b c", "d"], padding=True, truncation=True, max_length=2)  # transformers writes these into the backend
    padded.padding_side, padded.truncation_side, padded.model_max_length = "left", "left", 16
    backend = json.loads(padded.backend_tokenizer.to_str())
    assert backend["padding"] is not None and backend["truncation"] is not None  # the old digest hashed these
    assert same(plain, padded) and same(small_tok, padded)

    padded.save_pretrained(tmp_path / "padded")
    saved = json.loads((tmp_path / "padded" / "tokenizer.json").read_text())
    assert saved["padding"] is not None and saved["truncation"]["max_length"] == 2  # saved with the model
    assert (tmp_path / "padded" / "tokenizer.json").read_bytes() != (tmp_path / "plain" / "tokenizer.json").read_bytes()
    assert same(load_tokenizer(tmp_path / "padded"), plain)


def test_byte_identical_tokenizer_json_with_other_settings(small_tok, tmp_path):
    """Two directories with the same tokenizer.json and different saved settings are one tokenizer."""
    for name, side in (("a", "right"), ("b", "left")):
        small_tok.save_pretrained(tmp_path / name)
        cfg = json.loads((tmp_path / name / "tokenizer_config.json").read_text())
        cfg.update(padding_side=side, model_max_length=32 if side == "left" else 64)
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert same(load_tokenizer(tmp_path / "a"), load_tokenizer(tmp_path / "b"))


def test_special_token_roles_do_not_count(small_tok, tmp_path):
    small_tok.save_pretrained(tmp_path / "t")
    other = load_tokenizer(tmp_path / "t")
    other.pad_token = "[SEP]"  # e.g. a GPT-2 user setting pad = eos before saving the fine-tuned model
    assert same(small_tok, other)


def test_another_vocabulary_is_another_tokenizer(small_tok, shakespeare):
    other = train_tokenizer(shakespeare.documents[400:800], vocab_size=384)
    assert len(other) == len(small_tok) and not same(small_tok, other)


def test_other_merges_are_another_tokenizer(small_tok, tmp_path):
    small_tok.save_pretrained(tmp_path / "t")
    data = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    merges[-1], merges[-2] = merges[-2], merges[-1]  # same vocabulary, another merge order
    (tmp_path / "t" / "tokenizer.json").write_text(json.dumps(data))
    swapped = load_tokenizer(tmp_path / "t")
    assert swapped.get_vocab() == small_tok.get_vocab() and not same(small_tok, swapped)


def test_an_added_special_token_is_another_tokenizer(small_tok, tmp_path):
    small_tok.save_pretrained(tmp_path / "t")
    more = load_tokenizer(tmp_path / "t")
    more.add_special_tokens({"additional_special_tokens": ["<|sep2|>"]})
    assert not same(small_tok, more)


def test_digest_needs_a_fast_tokenizer():
    class Slow:
        def get_vocab(self):
            return {"a": 0}

    with pytest.raises(TypeError, match="fast"):
        tokenizer_digest(Slow())
    assert same_tokenizer(Slow(), Slow())


def test_a_directory_without_tokenizer_files_has_no_tokenizer(tmp_path):
    """transformers 5 builds an empty tokenizer from config.json alone; load_tokenizer refuses instead."""
    from ftaudit.errors import UserError

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 384}))
    with pytest.raises(UserError, match="has no tokenizer files"):
        load_tokenizer(tmp_path)
