"""A language model of an LM study as Hugging Face directories.

The architecture and tokenizer are rebuilt the way the study built them, from the run's
``config.yaml``: the tokenizer through ``studies.lm.base.tokenizer_for`` (the trained BPE is cached
in the store), the tiny GPT-2 / BERT through ``models.lm.tiny_gpt2`` / ``tiny_bert`` with the ``lm``
section's sizes (a loaded base through ``load_pretrained``), the method's parameters through
``Method.build`` with the run's ``finetune`` options. The cached state must then load with no
missing or unexpected tensor, so a config that does not describe the model is an error, not a
silently different model.

* methods full / head / layers / bitfit: the wrapped HF model (``LMWrapper.lm``) holds every
  weight → ``save_pretrained`` + the tokenizer;
* LoRA: peft builds the same adapter on the base (same targets, rank, alpha; the trained head as
  ``modules_to_save``), takes the cached LoRA tensors, and must give the ftaudit model's logits on a
  probe batch before ``save_pretrained`` writes the adapter. The base is the run's ``pretrain`` model
  (checked tensor by tensor against the LoRA model's frozen weights), written to ``DIR/base``; for a
  loaded base, ``base_model_name_or_path`` is the user's own directory or hub id.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ftaudit.errors import UserError

FIELD = "MODEL"


def lm_section(config: dict) -> dict | None:
    """The ``lm`` section of an LM study's config (tiny model sizes, tokenizer), if the run has one."""
    lm = config.get("lm")
    return lm if isinstance(lm, dict) and "block_len" in lm and "model" in lm else None


def rebuild_lm(run_dir: Path, results: dict, store: Path, state: dict, method: str):
    """The model as the study built it: (config, tokenizer, base template, the method's model with
    ``state`` loaded, the method options)."""
    from ftaudit.config_build import build_config
    from ftaudit.finetune.methods import MethodOptions, get_method
    from ftaudit.models.lm import load_pretrained
    from ftaudit.store.runs import Store
    from ftaudit.studies.base import Context
    from ftaudit.studies.lm.base import CAUSAL, MASKED, TINY, model_name, tiny_template, tokenizer_for
    from ftaudit.train.engine import Engine

    cfg = build_config(results["study"], Path(run_dir) / "config.yaml", [])
    lm = cfg.lm
    kind = MASKED if any(k.startswith("lm.bert.") for k in state) else CAUSAL
    name = model_name(lm, kind, results["study"])
    s = Store(store)
    tok, _ = tokenizer_for(Context(store=s, engine=Engine(s.models, cfg.engine)), lm, name)
    if name in TINY.values():
        template = tiny_template(lm, name, tok)
    else:
        template = load_pretrained(name, field="lm.model")
    finetune = getattr(cfg, "finetune", None)
    opts = finetune.options if finetune is not None and hasattr(finetune, "options") else MethodOptions()
    built = get_method(method).build(template, opts)
    _load(built, state, f"the run's config.yaml does not rebuild this {method} model")
    return cfg, tok, template, built, opts


def _load(model: torch.nn.Module, state: dict, problem: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join((list(missing) + list(unexpected))[:4])
        raise UserError(FIELD, f"{problem} (tensors that do not fit: {names})",
                        "export from the store and config the run was made with")


def _for_users(hf) -> None:
    """Undo what only ftaudit's training needs (models.lm), without changing any logit: the key/value
    cache back on (``generate`` needs it), and BERT-style MLM heads get back the output bias ftaudit
    removes as unread, as a copy of the decoder's, so transformers finds every weight it expects."""
    hf.config.use_cache = True
    for module in hf.modules():
        decoder = getattr(module, "decoder", None)
        if isinstance(decoder, torch.nn.Linear) and decoder.bias is not None and "bias" in module._parameters \
                and module._parameters["bias"] is None:
            module.bias = torch.nn.Parameter(decoder.bias.detach().clone(), requires_grad=False)


def probe_ids(vocab: int, length: int) -> torch.Tensor:
    """A fixed [2, length] batch of non-special token ids (ids 0..4 are the special tokens)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(5, vocab, (2, length), generator=g)


def export_lm(run_dir: Path, results: dict, store: Path, state: dict, method: str, work: Path, dest: Path) -> dict:
    """Write the model into ``work`` (renamed to ``dest`` afterwards) as a save_pretrained directory, or
    a peft adapter for LoRA; returns the manifest's fields."""
    from ftaudit.models.lm import _quiet_hf

    cfg, tok, template, built, opts = rebuild_lm(run_dir, results, store, state, method)
    with _quiet_hf(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecations inside transformers / peft, not ours
        # peft looks for the base's config to see if its vocabulary changed; the base is written beside, not yet in place
        warnings.filterwarnings("ignore", message="Could not find a config file")
        if method == "lora":
            return _export_lora(run_dir, results, store, cfg, tok, template, built, opts, state, work, dest)
        hf = built.lm
        _for_users(hf)
        hf.save_pretrained(work)
        tok.save_pretrained(work)
    return {"format": "save_pretrained", "kind": built.kind, "architecture": type(hf).__name__,
            "load": f"transformers.{_auto(built.kind)}.from_pretrained({str(dest)!r})"}


def _auto(kind: str) -> str:
    return "AutoModelForCausalLM" if kind == "causal-lm" else "AutoModelForMaskedLM"


def _base_state(run_dir: Path, results: dict, store: Path, cfg, template) -> tuple[dict, str | None]:
    """The base's weights and the path its adapter should name: the run's ``pretrain`` model (a tiny
    base pretrained here), else the loaded base itself."""
    from ftaudit.export.model import run_models
    from ftaudit.models.lm import initial_state
    from ftaudit.store.cache import ModelCache

    if not cfg.lm.tiny:
        where = Path(cfg.lm.model).expanduser()
        return initial_state(template), str(where.resolve()) if where.exists() else cfg.lm.model
    rows = [r for r in run_models(store, results["run_id"]) if r.role == "pretrain"]
    if not rows:
        raise UserError(FIELD, f"run {results['run_id']} has no pretrain model to be this adapter's base",
                        "export the fine-tuned model of a run that pretrained its base")
    return ModelCache(Path(store) / "cache").load(rows[0].key), None


def _export_lora(run_dir: Path, results: dict, store: Path, cfg, tok, template, built, opts, state: dict,
                 work: Path, dest: Path) -> dict:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from ftaudit.finetune.methods import get_method

    base_state, base_name = _base_state(run_dir, results, store, cfg, template)
    trainable = set(get_method("lora").trainable(built, opts))
    for name, value in state.items():
        source = name.replace(".base_layer.", ".")
        if name not in trainable and not (source in base_state and torch.equal(base_state[source], value)):
            raise UserError(FIELD, f"the LoRA model's frozen tensor {name} differs from the run's base",
                            "pass --out with the store the run was made in")
    _load(template, base_state, "the run's pretrain model does not fit the rebuilt base")
    base_dir = None
    if base_name is None:
        _for_users(template.lm)
        template.lm.save_pretrained(work / "base")
        tok.save_pretrained(work / "base")
        base_dir = dest / "base"
        base_name = str(base_dir)
    lora = sorted(k for k in state if ".lora_" in k)
    targets = sorted({k.split(".lora_")[0].removeprefix("lm.") for k in lora})
    rank = next(state[k].shape[0] for k in lora if ".lora_A." in k)
    extra = sorted(n for n in trainable if ".lora_" not in n)  # the trained head (train_head)
    modules = sorted({n.removeprefix("lm.").rsplit(".", 1)[0] for n in extra})
    conv1d = any(type(template.lm.get_submodule(t)).__name__ == "Conv1D" for t in targets)
    config = LoraConfig(r=rank, lora_alpha=opts.lora_alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                        fan_in_fan_out=conv1d, modules_to_save=modules or None,
                        task_type="CAUSAL_LM" if built.kind == "causal-lm" else None)
    peft_model = get_peft_model(template.lm, config)
    adapter = {"base_model.model." + k.removeprefix("lm.").replace(".default.", "."): state[k] for k in lora}
    adapter.update({"base_model.model." + n.removeprefix("lm."): state[n] for n in extra})
    loaded = set_peft_model_state_dict(peft_model, adapter)
    if loaded.unexpected_keys:
        raise RuntimeError(f"peft did not take the tensors {loaded.unexpected_keys[:4]}")
    peft_model.eval()
    ids = probe_ids(built.vocab_size, min(cfg.lm.block_len, 16))
    with torch.no_grad():
        ours, theirs = built(ids), peft_model(input_ids=ids).logits
    if not torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4):
        raise RuntimeError(f"the peft adapter does not reproduce the model (max |Δlogit| "
                           f"{(ours - theirs).abs().max().item():.3g}); this is a bug")
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    peft_model.save_pretrained(work)
    tok.save_pretrained(work)
    return {"format": "peft-lora", "kind": built.kind, "base": base_name, "base_dir": str(base_dir) if base_dir else None,
            "lora": {"r": rank, "alpha": opts.lora_alpha, "targets": targets, "modules_to_save": modules},
            "load": f"peft.PeftModel.from_pretrained(transformers.{_auto(built.kind)}.from_pretrained({base_name!r}), "
                    f"{str(dest)!r})"}
