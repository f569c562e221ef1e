"""export-model: a run's cached LMs load back in transformers / peft with the logits ftaudit computes.

One tiny lm-methods run (full and LoRA cells) is shared by the module. The ftaudit-side model is
built here the way the study builds it (tiny GPT-2 of the run's ``lm`` sizes, ``Method.build`` with its
``finetune`` options, the cached state loaded strictly) and queried through ``LMWrapper`` on the
run's own audit blocks; the exported directory is loaded by transformers / peft alone.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ftaudit.cli import main


from study_settings import LM

LORA = ["sweep.methods=[full, lora]", "sweep.lrs=[0.01]", "sweep.canaries=0", "lm.reference=base",
        "finetune.references=3"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    import ftaudit

    store = tmp_path_factory.mktemp("store")
    return ftaudit.run("lm-methods", overrides=LM + LORA, out=str(store)), store


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def ok(capsys, *argv):
    try:
        main(list(argv))
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def ftaudit_model(res, store, role: str, idx: int):
    """The run's model as the study built it: (LMWrapper with the cached state, the run)."""
    import sqlite3

    from ftaudit.api import load_run
    from ftaudit.config_build import build_config
    from ftaudit.finetune.methods import get_method
    from ftaudit.models.lm import tiny_bert, tiny_gpt2
    from ftaudit.store.cache import ModelCache

    run = load_run(res.run_id, store)
    cfg = build_config(run.results["study"], run.path / "config.yaml", [])
    with sqlite3.connect(store / "ftaudit.sqlite") as con:
        (key,) = con.execute("SELECT model_key FROM run_models WHERE run_id=? AND role=? AND idx=?",
                             (res.run_id, role, idx)).fetchone()
    state = ModelCache(store / "cache").load(key)
    bert = "lm.bert.embeddings.word_embeddings.weight" in state
    vocab = state["lm.bert.embeddings.word_embeddings.weight" if bert else "lm.transformer.wte.weight"].shape[0]
    build = tiny_bert if bert else tiny_gpt2
    template = build(vocab, cfg.lm.block_len, n_layer=cfg.lm.n_layer, n_embd=cfg.lm.n_embd, n_head=cfg.lm.n_head)
    method = "lora" if any(".lora_" in k for k in state) else "full"
    model = get_method(method).build(template, cfg.finetune.options)
    model.load_state_dict(state, strict=True)
    return model.eval(), run


def audit_batch(run) -> torch.Tensor:
    return torch.from_numpy(np.load(run.path / "arrays" / "audit_ids.npy")[:6].astype(np.int64))


def test_full_finetune_round_trips_through_from_pretrained(lm_run, capsys, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res, store = lm_run
    out = ok(capsys, "export-model", res.run_id, "finetune:full:1", str(tmp_path / "full"), "--out", str(store))
    assert "save_pretrained" in out
    ours, run = ftaudit_model(res, store, "finetune:full lr=0.01", 1)
    ids = audit_batch(run)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        expected, got = ours(ids), hf(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the exported tokenizer is the run's: it encodes like the BPE the study trained
    tok = AutoTokenizer.from_pretrained(tmp_path / "full")
    (trained,) = (store / "cache" / "tokenizers").glob("*/tokenizer.json")
    from tokenizers import Tokenizer

    text = "The quick brown fox, 1897, in Shakespeare's words."
    assert tok(text)["input_ids"] == Tokenizer.from_file(str(trained)).encode(text).ids
    manifest = json.loads((tmp_path / "full" / "ftaudit-model.json").read_text())
    assert manifest["run_id"] == res.run_id and manifest["idx"] == 1 and manifest["method"] == "full"


def test_lora_round_trips_through_peft(lm_run, capsys, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res, store = lm_run
    dest = tmp_path / "lora"
    ok(capsys, "export-model", res.run_id, "finetune:lora lr=0.01:2", str(dest), "--out", str(store))
    assert (dest / "adapter_config.json").is_file() and (dest / "base" / "config.json").is_file()
    assert json.loads((dest / "adapter_config.json").read_text())["base_model_name_or_path"] == str(dest / "base")
    ours, run = ftaudit_model(res, store, "finetune:lora lr=0.01", 2)
    ids = audit_batch(run)
    base = AutoModelForCausalLM.from_pretrained(dest / "base").eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    peft = PeftModel.from_pretrained(base, dest).eval()
    with torch.no_grad():
        expected, got = ours(ids), peft(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter (and the trained head) matter
    # the base directory is the run's pretrained model
    pre, _ = ftaudit_model(res, store, "pretrain", 0)
    with torch.no_grad():
        torch.testing.assert_close(base_logits, pre(ids), rtol=1e-5, atol=1e-5)


def test_list_names_every_model(lm_run, capsys):
    res, store = lm_run
    out = ok(capsys, "export-model", res.run_id, "--list", "--out", str(store))
    assert "pretrain:0" in out and "finetune:lora lr=0.01:3" in out and "peft adapter" in out


@pytest.mark.parametrize("argv, field", [
    (["no-such-run", "pretrain:0"], "RUN"),
    (["{run}", "nothing:0"], "MODEL"),
    (["{run}", "finetune:0"], "MODEL"),  # two roles start with finetune
    (["{run}", "pretrain:9"], "MODEL"),
    (["{run}", "finetune:full"], "MODEL"),  # four models: needs the index
    (["{run}"], "MODEL"),
])
def test_bad_names_exit_2_with_one_line(lm_run, capsys, tmp_path, argv, field):
    res, store = lm_run
    argv = [a.format(run=res.run_id) for a in argv]
    code, _, err = cli(capsys, "export-model", *argv, *([str(tmp_path / "d")] if len(argv) == 2 else []),
                       "--out", str(store))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {field}:")
    assert not (tmp_path / "d").exists()


def test_refuses_a_non_empty_directory(lm_run, capsys, tmp_path):
    res, store = lm_run
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "export-model", res.run_id, "pretrain:0", str(tmp_path / "d"), "--out", str(store))
    assert code == 2 and err.startswith("error: DIR:")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["keep.txt"]


def test_masked_lm_with_lora_round_trips(tmp_path_factory, capsys):
    """mlm-ratio (tiny BERT), LoRA: the adapter on its exported base, and the base itself, give the
    ftaudit model's logits; the base directory is complete (no weight transformers must initialise)."""
    import ftaudit
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForMaskedLM

    from ftaudit.export.hf import probe_ids
    from ftaudit.models.lm import load_pretrained

    store = tmp_path_factory.mktemp("mlm")
    res = ftaudit.run("mlm-ratio", overrides=LM + ["finetune.references=3", "lm.maskings=2", "finetune.method=lora"],
                      out=str(store))
    dest = tmp_path_factory.mktemp("out") / "ref"
    ok(capsys, "export-model", res.run_id, "reference:0", str(dest), "--out", str(store))
    ours, _ = ftaudit_model(res, store, "reference", 0)
    ids = probe_ids(ours.vocab_size, 16)
    base = AutoModelForMaskedLM.from_pretrained(dest / "base").eval()
    with safe_open(str(dest / "base" / "model.safetensors"), "pt") as f:
        assert set(base.state_dict()) <= set(f.keys())
    peft = PeftModel.from_pretrained(base, dest).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft(input_ids=ids).logits, ours(ids), rtol=1e-5, atol=1e-5)
    # ftaudit's own loader takes the exported base back unchanged
    reloaded = load_pretrained(dest / "base")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids), AutoModelForMaskedLM.from_pretrained(dest / "base")(input_ids=ids).logits)
