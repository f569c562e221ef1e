"""Language models for the engine: Hugging Face models behind a one-tensor forward.

The engine trains any module whose ``forward(inputs) -> logits`` it can ``functional_call`` and
vmap. :class:`LMWrapper` gives a HF causal or masked LM that shape (``input_ids [b, T] -> logits
[b, T, V]``); its parameters keep HF's names under the prefix ``lm.`` (``lm.lm_head.weight``), so a
state saves with ``save_pretrained`` and loads back unchanged.

What makes HF models train under vmap, set in their config rather than worked around in the trainer:

* dropout 0 — vmap refuses random operations, and dropout-free training is deterministic, so the
  vectorized and per-model trainers agree;
* ``use_cache=False`` — no key/value cache objects are built in a training forward;
* eager attention by default — SDPA also runs under vmap, but falls back to one call per model;
* untied output embeddings — GPT-2 ties ``lm_head.weight`` to ``wte.weight`` (BERT its decoder to
  the word embeddings). A tied pair is one parameter with two names: ``named_parameters`` lists only
  the embedding, so no method could train the head alone, and ``functional_call`` refuses states that
  carry both names. Each model here gets its own copy of the head (same values for a loaded model),
  so the head is a parameter of its own. BERT-style heads then hold their output bias twice
  (``cls.predictions.bias``, read only through the tie, and ``decoder.bias``); the unread copy is
  removed, so every parameter listed is one that trains.
* a masked LM attends only to real tokens: the padding mask is passed as a ready 4-D additive bias,
  because HF's 2-D mask path inspects the mask's values (``mask.all()``), which vmap cannot do.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, BertForMaskedLM,
                          BertForSequenceClassification,
                          GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel)
from transformers.models.bert.modeling_bert import BertPooler
from transformers.utils import logging as hf_logging

from ftaudit.errors import UserError
from ftaudit.finetune.methods import init_state
from ftaudit.train.trainers import State

KINDS = ("causal-lm", "masked-lm")  # also the names of their training objectives
CLASSIFIER = "sequence-classification"  # a BERT text classifier (objective: classification)
FIELD = "model.pretrained"


class LMWrapper(nn.Module):
    """``forward(input_ids [b, T]) -> logits [b, T, V]`` of a HF causal or masked LM (``self.lm``), or
    ``[b, K]`` of a sequence classifier."""

    def __init__(self, lm: PreTrainedModel, kind: str):
        super().__init__()
        if kind not in (*KINDS, CLASSIFIER):
            raise ValueError(f"kind must be one of {(*KINDS, CLASSIFIER)}, got {kind!r}")
        self.lm = lm
        self.kind = kind
        # Causal models never attend forward, so right padding cannot reach real tokens: no mask needed.
        self.pad_id = lm.config.pad_token_id if kind != "causal-lm" else None

    @property
    def vocab_size(self) -> int:
        return self.lm.get_output_embeddings().weight.shape[0]

    # How fine-tuning methods (ftaudit.finetune.methods) find the head and the blocks.
    @property
    def head_prefixes(self) -> tuple[str, ...]:
        """The output head's parameter prefix: GPT-2's (untied) ``lm_head``, BERT's ``cls`` MLM head,
        a sequence classifier's ``classifier``/``score`` (with BERT's pooler: both are new on top of a
        pretrained encoder)."""
        names = [n for n, _ in self.named_parameters()]
        if self.kind == CLASSIFIER and any(n.startswith("lm.bert.pooler.") for n in names):
            return ("lm.bert.pooler.", "lm.classifier.")
        for prefix in ("lm.lm_head.", "lm.cls.", "lm.classifier.", "lm.score."):
            if any(n.startswith(prefix) for n in names):
                return (prefix,)
        raise ValueError(f"no known output head among the parameters of {type(self.lm).__name__}")

    @property
    def block_names(self) -> list[str]:
        """The transformer layers, input to output (``lm.transformer.h.0``, ``lm.bert.encoder.layer.0``, …)."""
        modules = dict(self.named_modules())
        for prefix in ("lm.transformer.h", "lm.bert.encoder.layer", "lm.model.layers", "lm.gpt_neox.layers"):
            if prefix in modules:
                return [f"{prefix}.{i}" for i in range(len(modules[prefix]))]
        raise ValueError(f"cannot find the transformer layers of {type(self.lm).__name__}")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.pad_id is None:
            return self.lm(input_ids=input_ids).logits
        dtype = self.lm.get_input_embeddings().weight.dtype
        padding = (input_ids == self.pad_id)[..., None, None, :]  # [b, 1, 1, T]: key positions to ignore
        bias = torch.zeros(padding.shape, dtype=dtype, device=input_ids.device).masked_fill(padding, torch.finfo(dtype).min)
        return self.lm(input_ids=input_ids, attention_mask=bias).logits


def _build(model_cls, config: PretrainedConfig, kind: str, seed: int | None) -> LMWrapper:
    """HF's own init; with a ``seed``, drawn from that seed without touching the global torch RNG."""
    _no_dropout(config)  # also fields the head does not use, so a reloaded config reads the same
    with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation="eager")
    _drop_unread_bias(model)
    return LMWrapper(model.eval(), kind)


def tiny_gpt2(vocab: int, block_len: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
              untie_head: bool = True, seed: int | None = None) -> LMWrapper:
    """A small GPT-2 from scratch (HF's init). ``untie_head=False`` keeps GPT-2's tied head: such a
    model can be queried but not trained by the engine (see the module docstring)."""
    config = GPT2Config(vocab_size=vocab, n_positions=block_len, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        n_inner=4 * n_embd, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                        tie_word_embeddings=not untie_head, bos_token_id=None, eos_token_id=None)
    return _build(GPT2LMHeadModel, config, "causal-lm", seed)


def tiny_bert(vocab: int, block_len: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
              pad_id: int | None = 0, seed: int | None = None) -> LMWrapper:
    """A small BERT masked LM from scratch, head untied; attends only to tokens != ``pad_id``
    (``None``: to every position)."""
    config = BertConfig(vocab_size=vocab, hidden_size=n_embd, num_hidden_layers=n_layer, num_attention_heads=n_head,
                        intermediate_size=4 * n_embd, max_position_embeddings=block_len, type_vocab_size=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
                        tie_word_embeddings=False, pad_token_id=pad_id, use_cache=False)
    return _build(BertForMaskedLM, config, "masked-lm", seed)


class MeanPooler(BertPooler):
    """BERT's pooler (dense + tanh, the same parameters) on the mean of the last hidden states over
    all positions instead of the first one. A tiny BERT pretrained by MLM alone (no next-sentence
    task) learns nothing at [CLS] that a head could read: its last-layer output there is never
    predicted. The mean counts every position, so it suits inputs without padding."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states.mean(dim=1)))


POOLINGS = ("cls", "mean")


def bert_classifier(base: LMWrapper, num_labels: int, seed: int, pooling: str = "cls") -> tuple[LMWrapper, State]:
    """A BERT sequence classifier on a masked-LM base's encoder: (model, initial state). The encoder
    (``lm.bert.*``) is the base's; the pooler and the classifier are new, drawn from ``seed``. The
    pooler reads the first position (``cls``, HF's) or the mean over positions (``mean``)."""
    if base.kind != "masked-lm" or not hasattr(base.lm, "bert"):
        raise ValueError(f"a BERT classifier needs a BERT masked-LM base, got {type(base.lm).__name__}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    fields = {k: v for k, v in base.lm.config.to_dict().items() if k not in ("id2label", "label2id")}
    if pooling == "mean":  # recorded in the config, so the architecture's cache key (lm_arch_spec) tells the two apart
        fields["pooling"] = "mean"
    config = BertConfig.from_dict({**fields, "num_labels": num_labels, "architectures": ["BertForSequenceClassification"]})
    model = _build(BertForSequenceClassification, config, CLASSIFIER, seed)
    if pooling == "mean":
        mean = MeanPooler(config)
        mean.load_state_dict(model.lm.bert.pooler.state_dict())
        model.lm.bert.pooler = mean
    encoder = {k: v for k, v in initial_state(base).items() if k.startswith("lm.bert.")}
    return model, init_state(model, encoder)


def _kind_of(config: PretrainedConfig, where: str) -> str:
    archs = " ".join(config.architectures or [])
    if "MaskedLM" in archs:
        return "masked-lm"
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return "causal-lm"
    raise UserError(FIELD, f"cannot tell whether {where!r} is a causal or a masked LM (architectures: "
                    f"{config.architectures})", f"pass kind= one of {', '.join(KINDS)}")


def _no_dropout(config: PretrainedConfig) -> None:
    for name, value in config.to_dict().items():
        if ("dropout" in name or "pdrop" in name) and isinstance(value, float):
            setattr(config, name, 0.0)


@contextmanager
def _quiet_hf():
    """HF's load report and progress bars off: load_pretrained checks missing weights itself."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(name_or_dir: str | Path, kind: str | None = None, local_files_only: bool | None = None,
                    attn_implementation: str = "eager", field: str = FIELD) -> LMWrapper:
    """A pretrained model in float32, from a local HF directory (``save_pretrained``) or a hub id (needs
    the network unless cached), made trainable as above: dropout 0, no cache, head untied. ``kind`` is
    read from the config's architectures unless given. Weights the checkpoint lacks are an error, not
    a silent random init."""
    where = str(name_or_dir)
    local = Path(where).is_dir()
    offline = local if local_files_only is None else local_files_only
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=offline)
    except (OSError, ValueError) as exc:
        source = "the directory" if local else "the Hugging Face hub (is the network up?)"
        raise UserError(field, f"cannot load model {where!r} from {source}: {exc}",
                        "pass a directory written by save_pretrained (config.json + weights)") from exc
    kind = kind or _kind_of(config, where)
    if kind not in KINDS:
        raise UserError(field, f"unknown model kind {kind!r}", f"use one of {', '.join(KINDS)}")
    _no_dropout(config)
    config.use_cache = False
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModelForMaskedLM
    try:
        with _quiet_hf():
            model, info = auto.from_pretrained(where, config=config, local_files_only=offline, dtype=torch.float32,
                                               attn_implementation=attn_implementation, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise UserError(field, f"cannot load the weights of {where!r}: {exc}", "check the model directory") from exc
    untie(model)
    dropped = _drop_unread_bias(model)
    missing = sorted(set(info.get("missing_keys", ())) - set(dropped))
    if missing:
        raise UserError(field, f"{where!r} has no weights for {', '.join(missing[:5])}"
                        f"{' …' if len(missing) > 5 else ''}", "point at a complete checkpoint")
    return LMWrapper(model.eval(), kind)


def untie(model: PreTrainedModel) -> list[str]:
    """Give every parameter reachable under several names its own copy; returns the names that got one.
    The config records the untying, so ``save_pretrained`` writes both and a reload stays untied."""
    first: dict[int, str] = {}
    copied = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in first:
            first[id(param)] = name
            continue
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner), attr, nn.Parameter(param.detach().clone(), param.requires_grad))
        copied.append(name)
    model.config.tie_word_embeddings = False
    return copied


def _drop_unread_bias(model: PreTrainedModel) -> list[str]:
    """Remove the output bias of BERT/RoBERTa-style MLM heads that the untied model never reads: the
    head's own ``bias``, when its ``decoder`` has a separate one. Returns the removed names."""
    dropped = []
    for name, module in model.named_modules():
        decoder = getattr(module, "decoder", None)
        bias = module._parameters.get("bias")
        if isinstance(decoder, nn.Linear) and bias is not None and decoder.bias is not None and decoder.bias is not bias:
            module.register_parameter("bias", None)
            dropped.append(f"{name}.bias" if name else "bias")
    return dropped


def initial_state(model: nn.Module) -> State:
    """A detached copy of the model's state, the engine's ``Job.init``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def lm_arch_spec(model: LMWrapper) -> dict:
    """What determines the architecture, for content keys: the kind, the HF class and its config
    (without bookkeeping fields that do not change the computation)."""
    config = {k: v for k, v in model.lm.config.to_dict().items()
              if not k.startswith("_") and k not in ("transformers_version", "architectures", "name_or_path")}
    return {"kind": model.kind, "class": type(model.lm).__name__, "pad_id": model.pad_id,
            "attn": model.lm.config._attn_implementation, "config": config}
