"""The saved models and record files of the audit tests, built once per session (a few seconds)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from audit_user_world import (bert_classifier, finetune_classifier, finetune_lm, gpt2, record_sets, save, write_jsonl,
                              write_txt)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models: a second torch thread on a busy 2-core machine only waits (see tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world(tmp_path_factory, shakespeare, small_tok, _one_thread):
    """Members, non-members and a third disjoint set ("others") of the same distribution; for each model
    kind a base, the base fine-tuned on the members ("model") and on the others ("unseen": it never saw
    the members or the non-members)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    root = tmp_path_factory.mktemp("audit-user")
    tok = small_tok
    members, nonmembers, others = record_sets(shakespeare)
    rng = np.random.default_rng(0)
    labels = {k: rng.integers(0, 2, len(v)) for k, v in (("m", members), ("n", nonmembers), ("o", others))}
    w = SimpleNamespace(root=root, tok=tok, members_list=members, nonmembers_list=nonmembers, others=others,
                        members=write_txt(root / "members.txt", members),
                        nonmembers=write_txt(root / "nonmembers.txt", nonmembers),
                        members_jsonl=write_jsonl(root / "members.jsonl", members, labels["m"]),
                        nonmembers_jsonl=write_jsonl(root / "nonmembers.jsonl", nonmembers, labels["n"]))

    w.gpt_base = save(gpt2(tok), tok, root / "gpt-base")
    w.gpt_model = save(finetune_lm(gpt2(tok), tok, members, epochs=25, lr=5e-3), tok, root / "gpt-model")
    w.gpt_unseen_obj = finetune_lm(gpt2(tok), tok, others, epochs=25, lr=5e-3)
    w.gpt_unseen = save(w.gpt_unseen_obj, tok, root / "gpt-unseen")

    w.bert_base = save(bert_classifier(tok), tok, root / "bert-base")
    w.bert_model = save(finetune_classifier(bert_classifier(tok), tok, members, labels["m"], epochs=25, lr=5e-3), tok,
                        root / "bert-model")
    w.bert_unseen = save(finetune_classifier(bert_classifier(tok), tok, others, labels["o"], epochs=25, lr=5e-3), tok,
                         root / "bert-unseen")

    def adapter(texts, where):
        base = GPT2LMHeadModel.from_pretrained(w.gpt_base)  # the adapter records this directory as its base
        lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                                               task_type="CAUSAL_LM", fan_in_fan_out=True))
        finetune_lm(lora, tok, texts, epochs=25, lr=1e-2)
        lora.save_pretrained(where)
        return str(where)

    w.lora_model = adapter(members, root / "lora-model")
    w.lora_unseen = adapter(others, root / "lora-unseen")
    return w
