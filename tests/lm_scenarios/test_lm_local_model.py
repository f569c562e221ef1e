"""Real models by local directory (the same path a hub id takes): a tiny GPT-2 and a tiny BERT saved
with ``save_pretrained`` next to their tokenizer are the base of lm-mia / mlm-ratio, nothing is
pretrained, and a directory named as ``lm.reference`` is the second reference."""
from __future__ import annotations

import numpy as np
import pytest
from lm_worlds import MEMORISE, TINY, cli_run

from ftaudit.data.text import load_corpus
from ftaudit.data.tokenizer import train_tokenizer
from ftaudit.models.lm import tiny_bert, tiny_gpt2

T = 16


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Directories holding a tiny GPT-2 / BERT and their (shared) tokenizer, as save_pretrained writes them."""
    root = tmp_path_factory.mktemp("models")
    tok = train_tokenizer(load_corpus("wikitext2").documents, vocab_size=300, cache_dir=root / "tok")
    dirs = {}
    for name, build in (("gpt2", tiny_gpt2), ("bert", tiny_bert)):
        model = build(len(tok), T, n_layer=1, n_embd=32, seed=1)
        model.lm.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


def test_causal_model_from_a_directory_with_a_named_reference(saved, tmp_path):
    model = str(saved["gpt2"])
    results, run_dir = cli_run("lm-mia", TINY + MEMORISE + [f"lm.model={model}", f"lm.reference={model}"], tmp_path / "s")
    setup = results["sections"][0]["text"]
    assert any(f"Base: {model} (loaded, not pretrained here)" in line for line in setup)
    assert any(f"{model} (the model's own tokenizer)" in line for line in setup)
    assert results["cache"]["models_trained"] == 4  # the fine-tunes only: no pretraining, no disjoint reference
    arrays = run_dir / "arrays"
    # the named reference is the base itself here, so the two ratio attacks agree exactly
    np.testing.assert_allclose(np.load(arrays / "scores-ref-ratio.npy"), np.load(arrays / "scores-lm-ratio.npy"))
    auc = {a["name"]: a["auc"] for a in results["attacks"]}
    assert auc["lm-ratio"]["lo"] > 0.5


def test_masked_model_from_a_directory(saved, tmp_path):
    results, _ = cli_run("mlm-ratio", TINY + MEMORISE + [f"lm.model={saved['bert']}", "lm.reference=base"], tmp_path / "s")
    assert results["cache"]["models_trained"] == 4
    auc = {a["name"]: a["auc"] for a in results["attacks"]}
    assert auc["mlm-ratio"]["lo"] > 0.5 and auc["loss"]["lo"] > 0.5


@pytest.mark.parametrize("scenario, which, extra, field", [
    ("lm-mia", "bert", [], "lm.model"),  # a masked LM where a causal one is studied
    ("lm-mia", "gpt2", ["lm.block_len=32"], "lm.block_len"),  # longer than the model's positions
    ("lm-mia", "gpt2", ["lm.reference={bert}"], "lm.reference"),  # a reference of the other kind
])
def test_directory_mismatches_exit_2(saved, cli_error, tmp_path, scenario, which, extra, field):
    extra = [e.format(bert=saved["bert"]) for e in extra]
    code, err = cli_error(scenario, TINY + [f"lm.model={saved[which]}"] + extra, tmp_path / "s")
    assert code == 2 and err.startswith(f"error: {field}"), err
