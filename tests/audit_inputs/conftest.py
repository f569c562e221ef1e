"""The tiny saved models of the audit-input tests (see audit_inputs_models)."""
import numpy as np
import pytest
import torch

from audit_inputs_models import H, bert_classifier, gpt2, logits, save


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, small_tok):
    """gpt/ (causal LM), bert/ (3-class classifier), mlm/ (BERT masked LM), bert-base/ (a BertModel with
    pooler), lora/ (a LoRA adapter on gpt/), cls-lora/ (a LoRA classifier adapter on bert-base/, 4 classes)."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("models")
    save(gpt2(small_tok), small_tok, root / "gpt")
    save(bert_classifier(small_tok), small_tok, root / "bert")
    torch.manual_seed(1)
    save(BertForMaskedLM(BertConfig(vocab_size=len(small_tok), **H)), small_tok, root / "mlm")
    torch.manual_seed(2)
    save(BertModel(BertConfig(vocab_size=len(small_tok), **H)), small_tok, root / "bert-base")

    base = GPT2LMHeadModel.from_pretrained(root / "gpt")  # records its directory as the adapter's base
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM", fan_in_fan_out=True))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora.save_pretrained(root / "lora")
    np.save(root / "lora.npy", logits(lora))

    cls = BertForSequenceClassification.from_pretrained(root / "bert-base", num_labels=4)
    cls_lora = get_peft_model(cls, LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in cls_lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    cls_lora.save_pretrained(root / "cls-lora")
    np.save(root / "cls-lora.npy", logits(cls_lora))
    return root
