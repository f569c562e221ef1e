"""load_model / inspect_model_dir on tiny saved models: every kind and task, adapters through peft,
in-memory models, and every bad input as a one-line UserError before (or instead of) loading."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ftaudit.errors import UserError
from ftaudit.models.load import LoadedModel, inspect_model_dir, load_model, same_tokenizer

from audit_inputs_models import PROBE, bert_classifier, gpt2, logits, save


def fails(match, *args, field="--model", **kw):
    with pytest.raises(UserError, match=match) as err:
        load_model(*args, **kw)
    assert err.value.field == field and "\n" not in str(err.value) and err.value.fix
    return err.value


def copy(models_dir, name, tmp_path):
    return shutil.copytree(models_dir / name, tmp_path / name)


# --- what loads ----------------------------------------------------------------------------------

def test_causal_lm_directory(models_dir, small_tok):
    m = load_model(str(models_dir / "gpt"))
    assert isinstance(m, LoadedModel) and m.task == "causal-lm" and not m.is_adapter and m.num_labels is None
    assert m.max_length == 64 and m.source == str(models_dir / "gpt") and not m.model.training
    assert type(m.model).__name__ == "GPT2LMHeadModel" and next(m.model.parameters()).dtype == torch.float32
    assert same_tokenizer(m.tokenizer, small_tok) and m.device.type == "cpu"
    saved = load_file(models_dir / "gpt" / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(m.model.state_dict()[name], tensor)


def test_classifier_and_masked_lm_directories(models_dir):
    cls = load_model(models_dir / "bert")
    assert cls.task == "classification" and cls.num_labels == 3 and cls.max_length == 64
    mlm = load_model(models_dir / "mlm")
    assert mlm.task == "masked-lm" and mlm.num_labels is None and type(mlm.model).__name__ == "BertForMaskedLM"


def test_image_classifier_directory(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                              num_labels=10))
    save(vit, None, tmp_path / "vit")  # no tokenizer: images need none
    m = load_model(str(tmp_path / "vit"))
    assert m.task == "image-classification" and m.tokenizer is None and m.num_labels == 10 and m.max_length == 0
    with torch.no_grad():
        assert m.model(torch.zeros(2, 1, 8, 8)).logits.shape == (2, 10)


def test_inspect_model_dir(models_dir):
    info = inspect_model_dir(str(models_dir / "bert"), "--model")
    assert info["kind"] == "model" and info["task"] == "classification" and info["base"] is None
    assert len(info["config"]["id2label"]) == 3
    assert info["tokenizer"] is True
    base = inspect_model_dir(str(models_dir / "bert-base"), "--base")
    assert base["kind"] == "model" and base["task"] is None  # BertModel: no task, load_model asks for --task
    ad = inspect_model_dir(str(models_dir / "lora"), "--model")
    assert ad["kind"] == "adapter" and ad["task"] == "causal-lm" and ad["base"] == str(models_dir / "gpt")
    assert ad["tokenizer"] is False


def test_adapter_and_base_without_tokenizer_files(models_dir, tmp_path, small_tok):
    base = copy(models_dir, "gpt", tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (base / f).unlink()
    fails("no tokenizer files in", str(models_dir / "lora"), base=str(base))
    assert load_model(str(models_dir / "lora"), base=str(base), tokenizer=small_tok).tokenizer is small_tok


def test_causal_lora_adapter_through_peft(models_dir):
    m = load_model(str(models_dir / "lora"))
    assert m.is_adapter and m.task == "causal-lm" and m.source == f"adapter {models_dir / 'lora'} on {models_dir / 'gpt'}"
    assert type(m.model).__name__ == "PeftModelForCausalLM" and m.tokenizer is not None  # the base's tokenizer
    np.testing.assert_allclose(logits(m.model), np.load(models_dir / "lora.npy"), rtol=1e-5, atol=1e-6)


def test_classifier_lora_adapter_reads_its_classes_from_the_head(models_dir):
    m = load_model(str(models_dir / "cls-lora"))
    assert m.is_adapter and m.task == "classification" and m.num_labels == 4
    np.testing.assert_allclose(logits(m.model), np.load(models_dir / "cls-lora.npy"), rtol=1e-5, atol=1e-6)


def test_adapter_with_base_given_explicitly(models_dir, tmp_path):
    ad = copy(models_dir, "lora", tmp_path)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    fails("base .*moved-away.* does not exist", str(ad))
    m = load_model(str(ad), base=str(models_dir / "gpt"))
    np.testing.assert_allclose(logits(m.model), np.load(models_dir / "lora.npy"), rtol=1e-5, atol=1e-6)


def test_in_memory_models_need_their_tokenizer(models_dir, small_tok):
    model = gpt2(small_tok, seed=3)
    model.train()
    m = load_model(model, tokenizer=small_tok)
    assert m.model is model and not model.training and m.task == "causal-lm" and m.source == "in-memory GPT2LMHeadModel"
    assert m.max_length == 64 and m.tokenizer is small_tok
    fails("needs its tokenizer", model, field="tokenizer")
    by_dir = load_model(bert_classifier(small_tok, num_labels=5), tokenizer=str(models_dir / "bert"), device=None)
    assert by_dir.task == "classification" and by_dir.num_labels == 5 and same_tokenizer(by_dir.tokenizer, small_tok)


def test_in_memory_peft_model(small_tok):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(gpt2(small_tok), LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM",
                                                      fan_in_fan_out=True))
    m = load_model(peft, tokenizer=small_tok)
    assert m.is_adapter and m.task == "causal-lm" and "PEFT adapter" in m.source


def test_explicit_task_for_a_bare_encoder(models_dir):
    fails("cannot tell the task .*BertModel", str(models_dir / "bert-base"))
    fails("does not fit its architecture as a classification model", str(models_dir / "bert-base"), task="classification")


def test_tokenizer_override_for_a_directory_without_one(models_dir, small_tok, tmp_path):
    bare = tmp_path / "bare"
    gpt2(small_tok).save_pretrained(bare)
    fails("no tokenizer files in", str(bare))  # transformers would build an empty one from config.json
    assert load_model(str(bare), tokenizer=small_tok).tokenizer is small_tok


# --- bad input -----------------------------------------------------------------------------------

def test_missing_directory_and_a_file(tmp_path):
    fails("does not exist", str(tmp_path / "nope"))
    fails("does not exist", "./no/such/dir")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="is a file, not a model directory"):
        inspect_model_dir(str(tmp_path / "f.txt"), "--model")


def test_directory_that_is_not_hugging_face(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "weights.npy").write_bytes(b"")
    e = fails("not a Hugging Face model directory", str(tmp_path / "d"))
    assert "save_pretrained" in e.fix
    (tmp_path / "d" / "config.json").write_text("{not json")
    fails("cannot read .*config.json", str(tmp_path / "d"))


def test_pickle_only_checkpoints_are_refused_before_loading(models_dir, tmp_path, monkeypatch):
    d = copy(models_dir, "gpt", tmp_path)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")  # never read: refused by its name
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    e = fails("pickle-only checkpoint .*pytorch_model.bin", str(d))
    assert "safe_serialization=True" in e.fix
    ad = copy(models_dir, "lora", tmp_path)
    (ad / "adapter_model.safetensors").rename(ad / "adapter_model.bin")
    fails("pickle-only checkpoint .*adapter_model.bin", str(ad))
    (d / "pytorch_model.bin").unlink()
    fails("no weights in", str(d))


def test_checkpoint_that_does_not_fit_its_architecture(models_dir, tmp_path):
    d = copy(models_dir, "gpt", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "n_embd": 32, "n_head": 4}))
    fails("cannot load .* causal-lm|does not fit its architecture", str(d))
    fails("does not fit its architecture as a classification model", str(models_dir / "mlm"), task="classification")
    fails("cannot load .* as a masked-lm model", str(models_dir / "gpt"), task="masked-lm")


def test_unknown_task_and_device(models_dir):
    fails("unknown task 'seq2seq'", str(models_dir / "gpt"), task="seq2seq", field="--task")
    with pytest.raises(UserError, match="unknown device"):
        load_model(str(models_dir / "gpt"), device="tpu7")


def test_hub_id_that_cannot_be_fetched():
    e = fails("'ftaudit-no-such-org/no-such-model' is no local directory and could not be fetched from the Hugging Face hub",
              "ftaudit-no-such-org/no-such-model", local_files_only=True)
    assert "local directory" in e.fix


def test_adapter_without_a_base(models_dir, tmp_path):
    ad = copy(models_dir, "lora", tmp_path)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": None}))
    assert "--base" in fails("does not name its base", str(ad)).fix
    fails("is itself an adapter", str(ad), base=str(models_dir / "lora"), field="--base")


def test_classifier_adapter_on_a_base_lacking_weights_it_does_not_hold(models_dir, tmp_path):
    """The MLM checkpoint has no pooler, and the adapter does not hold one: the loaded model would not be
    the trained one."""
    fails("no weights for bert.pooler.* adapter does not hold them", str(models_dir / "cls-lora"),
          base=str(models_dir / "mlm"), field="--base")


def test_adapter_on_the_wrong_base(models_dir, small_tok, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    wide = tmp_path / "wide"
    save(GPT2LMHeadModel(GPT2Config(vocab_size=len(small_tok), n_positions=64, n_layer=1, n_embd=32, n_head=2)),
         small_tok, wide)
    fails("cannot apply the adapter", str(models_dir / "lora"), base=str(wide))


def test_tokenizer_larger_than_the_models_vocabulary(models_dir, small_tok, shakespeare):
    from ftaudit.data.tokenizer import train_tokenizer

    big = train_tokenizer(shakespeare.documents[:400], vocab_size=512)
    fails("512 tokens but the model only 384", str(models_dir / "gpt"), tokenizer=big)


def test_probe_ids_fit_the_tiny_vocabulary(small_tok):
    assert int(PROBE.max()) < len(small_tok)
