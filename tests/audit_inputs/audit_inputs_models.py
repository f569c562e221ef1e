"""Tiny Hugging Face models as a user would hand them to the audit: built from configs (1 layer, 16 wide)
for the small shakespeare tokenizer, save_pretrained into directories."""
import numpy as np
import torch

PROBE = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])  # token ids whose logits the fixture records

H = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)


def gpt2(tok, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_embd=16, n_head=2,
                                      bos_token_id=0, eos_token_id=0))


def bert_classifier(tok, num_labels=3, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=num_labels, **H))


def save(model, tok, where):
    model.save_pretrained(where)
    if tok is not None:
        tok.save_pretrained(where)
    return where


def logits(model) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(PROBE).logits.numpy()
