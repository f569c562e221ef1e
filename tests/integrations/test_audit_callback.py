"""AuditCallback in a real transformers.Trainer on a tiny GPT-2: the audit keys reach the Trainer's
logs at each evaluation (or epoch end), ahead of the report_to integrations, without changing the
training run."""
import copy
import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from ftaudit.data.tokenizer import train_tokenizer  # noqa: E402
from ftaudit.errors import UserError  # noqa: E402
from ftaudit.integrations.transformers import AuditCallback, fpr_label, metric_keys  # noqa: E402

LM_ATTACKS = ("loss", "zlib", "min-k", "min-k++")
HEAD = ("audit/auc", "audit/tpr@1%fpr")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny, dispatch-bound tensors: one torch thread is faster on a shared machine (as tests/lm)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts(shakespeare):
    docs = [d for d in shakespeare.documents[400:] if 40 <= len(d) <= 160]
    return {"members": docs[:32], "nonmembers": docs[32:64], "eval": docs[64:80]}


def tiny_gpt2(tok):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                     pad_token_id=tok.pad_token_id)
    return transformers.GPT2LMHeadModel(config)


class Recorder(transformers.TrainerCallback):
    """Stands in for a report_to integration: listed before the AuditCallback, it keeps what on_log gave it."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def make_trainer(tmp_path, tok, texts, callbacks, eval_strategy="epoch", epochs=2, model=None):
    model = model if model is not None else tiny_gpt2(tok)
    enc = lambda docs: [{"input_ids": tok(d, truncation=True, max_length=64)["input_ids"]} for d in docs]  # noqa: E731
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=epochs, per_device_train_batch_size=8,
        per_device_eval_batch_size=8, learning_rate=1e-2, eval_strategy=eval_strategy, save_strategy="no",
        logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    return transformers.Trainer(
        model=model, args=args, train_dataset=enc(texts["members"]),
        eval_dataset=enc(texts["eval"]) if eval_strategy != "no" else None, processing_class=tok,
        data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False), callbacks=callbacks)


def check_keys(entry, attacks):
    for key in HEAD + tuple(f"audit/{a}/{m}" for a in attacks for m in ("auc", "tpr@1%fpr")):
        v, lo, hi = entry[key], entry[f"{key}_lo"], entry[f"{key}_hi"]
        assert all(isinstance(x, float) and math.isfinite(x) for x in (v, lo, hi)), key
        assert 0.0 <= lo <= v <= hi <= 1.0, (key, lo, v, hi)


def test_keys_logged_at_each_evaluation_ahead_of_integrations(tmp_path, small_tok, texts):
    model = tiny_gpt2(small_tok)
    base = copy.deepcopy(model)  # the model before fine-tuning: the base of the base-ratio attack
    recorder = Recorder()
    audit = AuditCallback(texts["members"], texts["nonmembers"], base=base, every="eval", max_records=24, n_boot=50)
    trainer = make_trainer(tmp_path, small_tok, texts, [recorder, audit], model=model)
    handler = trainer.callback_handler.callbacks
    assert handler.index(audit) < handler.index(recorder)  # moved ahead of the integrations at on_init_end
    trainer.train()

    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(evals) == 2 and [round(e["epoch"]) for e in evals] == [1, 2]
    for entry in evals:
        check_keys(entry, LM_ATTACKS + ("lm-ratio",))
    # what the integrations received is what log_history holds
    seen = [s for s in recorder.seen if "eval_loss" in s]
    assert [{k: v for k, v in s.items() if k.startswith("audit/")} for s in seen] == \
        [{k: v for k, v in e.items() if k.startswith("audit/")} for e in evals]
    assert [h["step"] for h in audit.history] == [e["step"] for e in evals]
    # the headline is the attack with the highest AUC
    for h, entry in zip(audit.history, evals):
        assert entry["audit/auc"] == max(entry[f"audit/{a}/auc"] for a in LM_ATTACKS + ("lm-ratio",))
        assert entry["audit/auc"] == entry[f"audit/{h['strongest']}/auc"]
    assert len(audit.members) == len(audit.nonmembers) == 24


def test_every_epoch_without_evaluation_and_training_unchanged(tmp_path, small_tok, texts):
    base_dir = tmp_path / "base"  # a base given as a save_pretrained directory (loaded on the CPU)
    tiny_gpt2(small_tok).save_pretrained(base_dir)
    small_tok.save_pretrained(base_dir)
    audit = AuditCallback(texts["members"], texts["nonmembers"], base=str(base_dir), every="epoch", max_records=16,
                          n_boot=50)
    trainer = make_trainer(tmp_path / "a", small_tok, texts, [audit], eval_strategy="no")
    trainer.train()
    logged = [e for e in trainer.state.log_history if "audit/auc" in e]
    assert len(logged) == 2 and [round(e["epoch"]) for e in logged] == [1, 2]
    for entry in logged:
        check_keys(entry, LM_ATTACKS + ("lm-ratio",))
        assert "loss" in entry  # the epoch-end training log the callback asked for carries them
    assert [h["step"] for h in audit.history] == [e["step"] for e in logged]

    plain = make_trainer(tmp_path / "b", small_tok, texts, None, eval_strategy="no")
    plain.train()
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), name  # the audit drew no random numbers the training uses


def test_every_epoch_logs_into_the_epoch_evaluation(tmp_path, small_tok, texts):
    audit = AuditCallback(texts["members"], texts["nonmembers"], every="epoch", max_records=16, n_boot=50,
                          fprs=(0.01, 0.1))
    recorder = Recorder()
    trainer = make_trainer(tmp_path, small_tok, texts, [recorder], epochs=1)
    trainer.add_callback(audit)  # added after the Trainer was made: placed at on_train_begin
    trainer.train()
    logged = [e for e in trainer.state.log_history if "audit/auc" in e]
    assert len(logged) == 1 and "eval_loss" in logged[0]  # into the evaluation at the epoch's end
    check_keys(logged[0], LM_ATTACKS)
    assert [s["audit/auc"] for s in recorder.seen if "audit/auc" in s] == [logged[0]["audit/auc"]]
    assert 0 <= logged[0]["audit/tpr@10%fpr_lo"] <= logged[0]["audit/tpr@10%fpr_hi"] <= 1


def test_base_with_another_tokenizer_is_refused(tmp_path, small_tok, shakespeare, texts):
    other_tok = train_tokenizer(shakespeare.documents[:200], vocab_size=300)
    base_dir = tmp_path / "base"
    tiny_gpt2(other_tok).save_pretrained(base_dir)
    other_tok.save_pretrained(base_dir)
    audit = AuditCallback(texts["members"], texts["nonmembers"], base=str(base_dir), max_records=8, n_boot=20)
    trainer = make_trainer(tmp_path, small_tok, texts, [audit], eval_strategy="no", epochs=1)
    with pytest.raises(UserError, match="base.s tokenizer differs"):
        trainer.train()


def test_metric_keys_and_labels():
    assert [fpr_label(f) for f in (0.01, 0.001, 0.1, 0.05)] == ["1%", "0.1%", "10%", "5%"]
    summary = {"a": {"auc": (0.6, 0.5, 0.7), "tpr@0.01": (0.02, 0.0, 0.05)},
               "b": {"auc": (0.8, 0.7, 0.9), "tpr@0.01": (0.1, 0.05, 0.2)}}
    keys, strongest = metric_keys(summary, (0.01,))
    assert strongest == "b"
    assert keys["audit/auc"] == 0.8 and keys["audit/tpr@1%fpr_hi"] == 0.2 and keys["audit/a/auc_lo"] == 0.5
    assert len(keys) == 3 * 2 * 3


@pytest.mark.parametrize("kwargs, field", [
    ({"every": "weekly"}, "AuditCallback.every"),
    ({"max_records": 1}, "AuditCallback.max_records"),
    ({"fprs": (0.0,)}, "AuditCallback.fprs"),
    ({"n_boot": 2}, "AuditCallback.n_boot"),
    ({"members": []}, "AuditCallback.members"),
    ({"members": ["same", "other"], "nonmembers": ["same", "x"]}, "AuditCallback.members"),
])
def test_bad_arguments_fail_before_training(kwargs, field):
    args = {"members": ["a b c", "d e f", "g h i"], "nonmembers": ["j k l", "m n o"], **kwargs}
    with pytest.raises(UserError) as err:
        AuditCallback(**args)
    assert err.value.field == field


def test_sample_is_fixed_and_deduplicated():
    members = [f"member record {i}" for i in range(50)] + ["member record 0", "shared"]
    nonmembers = [f"other record {i}" for i in range(40)] + ["shared"]
    a = AuditCallback(members, nonmembers, max_records=10, seed=3)
    b = AuditCallback(members, nonmembers, max_records=10, seed=3)
    assert a.members.texts == b.members.texts and len(a.members) == 10 and len(a.nonmembers) == 10
    assert a.dropped == {"member_duplicates": 1, "nonmember_duplicates": 0, "overlap": 1}
    assert "shared" not in a.members.texts + a.nonmembers.texts
    assert np.unique(a.members.texts).size == 10
