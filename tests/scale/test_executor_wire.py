"""What crosses to an executor worker and back: safetensors blobs, a weightless template skeleton."""
import pickle

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from ftaudit.train.executor_wire import (changes, fill_skeleton, pack, prefixed, rebuild, same_bits, skeleton, strip,
                                         unpack)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight  # tied, as GPT-2's lm_head
        self.register_buffer("causal", torch.tril(torch.ones(2, 2)), persistent=False)
        self.register_buffer("steps", torch.tensor(3))


def test_skeleton_carries_no_weights_and_fills_back_with_ties_kept():
    model = Tied()
    bare, weights = skeleton(model)
    assert bare.emb.weight.is_meta and bare.steps.is_meta and bare.out.weight is bare.emb.weight
    assert not bare.causal.is_meta  # a non-persistent buffer is a constant, not a weight: it stays
    blob = pickle.dumps(bare)
    assert len(blob) < 4000 and model.emb.weight.numel() * 4 <= len(pack(weights))
    back = fill_skeleton(pickle.loads(blob), strip("w/", unpack(pack(prefixed("w/", weights)))))
    assert back.out.weight is back.emb.weight and isinstance(back.emb.weight, nn.Parameter)
    for name, t in model.state_dict().items():
        assert same_bits(t, back.state_dict()[name]), name
    assert torch.equal(back.causal, model.causal)


def test_a_tensor_met_twice_or_shared_ships_once():
    base = torch.randn(64, 64)
    inits = {**prefixed("a/", {"w": base, "b": torch.zeros(3)}), **prefixed("b/", {"w": base, "b": torch.ones(3)})}
    blob = pack(inits)
    assert set(load_safetensors(blob)) == {"a/w", "a/b", "b/b"}  # b/w is an alias of a/w
    back = unpack(blob)
    assert back["a/w"] is back["b/w"] and torch.equal(back["b/w"], base)
    # a tensor of the blob shipped once for all chunks is referenced, not copied
    shared = pack({"template/w": base})
    chunk = pack({"init/0/w": base, "init/0/b": torch.ones(3)}, shared={id(base): "template/w"})
    assert set(load_safetensors(chunk)) == {"init/0/b"}
    assert torch.equal(unpack(chunk, unpack(shared))["init/0/w"], base)
    view = base[:8]  # a view of a tensor already in the blob is copied (safetensors refuses shared storage)
    assert torch.equal(unpack(pack({"w": base, "v": view}))["v"], view)


def test_only_what_training_changed_comes_back():
    init = {"frozen": torch.randn(4, 4), "lora": torch.zeros(4), "neg": torch.tensor([0.0])}
    state = {"frozen": init["frozen"].clone(), "lora": torch.ones(4), "neg": torch.tensor([-0.0])}
    changed = changes(init, state)
    assert set(changed) == {"lora", "neg"}  # -0.0 differs from 0.0 in its bits: it ships
    rebuilt = rebuild(init, list(state), changed)
    assert list(rebuilt) == list(state) and all(same_bits(rebuilt[n], state[n]) for n in state)
