"""A user's own model, loaded for an audit: a Hugging Face directory, a hub id, a PEFT adapter
directory, or a model object already in memory.

``inspect_model_dir`` checks a directory without loading anything (is it a model or an adapter, is
there a safetensors checkpoint, which task), so bad input fails in a second, before any weights are
read. ``load_model`` then loads it with transformers / peft themselves, from safetensors only (a
pickle checkpoint can run code when it is read; it is refused with the way to convert it). Every
problem the user can fix is a one-line :class:`UserError`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ftaudit.data.tokenizer import TOKENIZER_FILES
from ftaudit.devices import module_device, resolve_device
from ftaudit.errors import UserError

TASKS = ("causal-lm", "masked-lm", "classification", "image-classification")
MAX_CONTEXT = 1024  # LoadedModel.max_length is the model's context, capped here
# peft's task_type -> ours (masked LMs and image classifiers have no peft task type)
PEFT_TASKS = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "classification"}
PICKLE_FIX = ("convert it to safetensors: load it once in a trusted environment and "
              "save_pretrained(dir, safe_serialization=True)")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A model ready to score records: ``model`` in eval mode, its tokenizer (None for image models),
    the task, where it came from, its number of classes (classifiers) and context length."""

    model: torch.nn.Module
    tokenizer: object | None
    task: str
    source: str
    num_labels: int | None
    max_length: int  # the model's context (n_positions / max_position_embeddings), capped at 1024; 0 for images
    is_adapter: bool

    @property
    def device(self) -> torch.device:
        return module_device(self.model)


def task_of(architectures, where: str, field: str) -> str:
    """The task of a model from its config's ``architectures`` (or class names)."""
    names = " ".join(architectures or [])
    for marker, task in (("ForSequenceClassification", "classification"), ("ForImageClassification", "image-classification"),
                         ("ForMaskedLM", "masked-lm"), ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm")):
        if marker in names:
            return task
    raise UserError(field, f"cannot tell the task of {where!r} (architectures: {list(architectures or [])})",
                    f"pass --task, one of {', '.join(TASKS)}")


def inspect_model_dir(path: str, field: str) -> dict:
    """Cheap checks of a local directory before loading it: a model (config.json) or a PEFT adapter
    (adapter_config.json), with a safetensors checkpoint (a pickle-only one is refused). Returns
    {"kind": "model" | "adapter", "base": adapter's base or None, "task": task or None (when the
    config does not say), "config": the config's dict, "tokenizer": whether tokenizer files are there}."""
    where = Path(path).expanduser()
    if not where.exists():
        raise UserError(field, f"{str(path)!r} does not exist", "give a directory written by save_pretrained, or a hub id")
    if not where.is_dir():
        raise UserError(field, f"{str(path)!r} is a file, not a model directory",
                        "give the directory save_pretrained wrote (config.json + model.safetensors)")
    has_tokenizer = any((where / f).is_file() for f in TOKENIZER_FILES)
    if (where / "adapter_config.json").is_file():
        config = _read_json(where / "adapter_config.json", field)
        _check_weights(where, "adapter_model", field)
        base = config.get("base_model_name_or_path") or None
        return {"kind": "adapter", "base": base, "task": PEFT_TASKS.get(str(config.get("task_type"))),
                "config": config, "tokenizer": has_tokenizer}
    if (where / "config.json").is_file():
        config = _read_json(where / "config.json", field)
        _check_weights(where, "model", field)
        try:
            task = task_of(config.get("architectures"), str(path), field)
        except UserError:
            task = None
        return {"kind": "model", "base": None, "task": task, "config": config, "tokenizer": has_tokenizer}
    raise UserError(field, f"{str(path)!r} is not a Hugging Face model directory (no config.json or adapter_config.json)",
                    "give the directory save_pretrained wrote")


def _read_json(path: Path, field: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(field, f"cannot read {str(path)!r}: {exc}", "save the model again with save_pretrained") from exc
    if not isinstance(data, dict):
        raise UserError(field, f"{str(path)!r} is not a JSON object", "save the model again with save_pretrained")
    return data


def _check_weights(where: Path, stem: str, field: str) -> None:
    if any(where.glob("*.safetensors")) or (where / f"{stem}.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in where.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickles:
        raise UserError(field, f"pickle-only checkpoint in {str(where)!r} ({', '.join(pickles[:3])}): ftaudit only "
                        "loads safetensors, since reading a pickle can run code", PICKLE_FIX)
    raise UserError(field, f"no weights in {str(where)!r} (no {stem}.safetensors)",
                    "save the model with save_pretrained(dir, safe_serialization=True)")


def load_model(spec, *, task: str = "auto", base: str | None = None, field: str = "--model",
               device: str | None = "cpu", tokenizer=None, num_labels: int | None = None,
               local_files_only: bool | None = None) -> LoadedModel:
    """The model of ``spec`` (a local directory, a hub id, or an in-memory PreTrainedModel / PeftModel)
    in eval mode on ``device`` ("cpu", "cuda", "auto"; None leaves an in-memory model where it is).
    ``task`` "auto" reads it from the config. ``base``: the base of a PEFT adapter (default: the
    adapter's base_model_name_or_path). ``tokenizer``: a tokenizer object or directory (required for an
    in-memory text model; by default the model's own). ``num_labels``: the classes of an adapted
    classifier when its weights do not tell. ``local_files_only``: never touch the network (default:
    only for local directories)."""
    if task != "auto" and task not in TASKS:
        raise UserError("--task" if field.startswith("--") else "task", f"unknown task {task!r}",
                        f"use auto or one of {', '.join(TASKS)}")
    target = None if device is None else resolve_device(device)  # checked before anything is loaded
    if isinstance(spec, torch.nn.Module):
        loaded = _from_memory(spec, task, field, tokenizer)
    elif isinstance(spec, (str, Path)):
        loaded = _from_name(str(spec), task, base, field, tokenizer, num_labels, local_files_only)
    else:
        raise UserError(field, f"cannot load a model from a {type(spec).__name__}",
                        "give a model directory, a hub id or a transformers / peft model")
    if target is not None:
        loaded.model.to(target)
    loaded.model.eval()
    return loaded


def _from_memory(model: torch.nn.Module, task: str, field: str, tokenizer) -> LoadedModel:
    is_adapter = hasattr(model, "peft_config") and hasattr(model, "get_base_model")
    inner = model.get_base_model() if is_adapter else model
    config = getattr(inner, "config", None)
    if task == "auto":
        task = task_of([type(inner).__name__] + list(getattr(config, "architectures", None) or []),
                       type(inner).__name__, field)
    tok = _tokenizer_arg(tokenizer)
    if tok is None and task != "image-classification":
        raise UserError("tokenizer", f"an in-memory {task} model needs its tokenizer",
                        "pass tokenizer=... (the tokenizer the model was trained with)")
    source = f"in-memory {type(inner).__name__}" + (" with a PEFT adapter" if is_adapter else "")
    return _finish(model, config, tok, task, source, is_adapter, field)


def _tokenizer_arg(tokenizer):
    if tokenizer is None or not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from ftaudit.data.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer, field="tokenizer")


def _from_name(name: str, task: str, base: str | None, field: str, tokenizer, num_labels: int | None,
               local_files_only: bool | None) -> LoadedModel:
    path = Path(name).expanduser()
    if not path.exists() and not HUB_ID.match(name):
        raise UserError(field, f"{name!r} does not exist", "give a directory written by save_pretrained, or a hub id")
    if path.exists():
        info = inspect_model_dir(name, field)
        where, offline = str(path), True if local_files_only is None else local_files_only
    else:
        info = None
        where, offline = name, bool(local_files_only)
    if info is not None and info["kind"] == "adapter":
        return _load_adapter(where, info, task, base, field, tokenizer, num_labels, local_files_only)
    config = _config(where, offline, field)
    if task == "auto":
        task = task_of(config.architectures, name, field)
    if task == "classification" and num_labels is not None and num_labels != config.num_labels:
        raise UserError(field, f"{name!r} has {config.num_labels} classes, not {num_labels}", "drop num_labels")
    tok = _tokenizer_arg(tokenizer)
    if tok is None and task != "image-classification":
        if info is not None and not info["tokenizer"]:
            raise _no_tokenizer(where, field)
        tok = _own_tokenizer(where, offline, field)
    model = _weights(where, config, task, offline, field)
    return _finish(model, config, tok, task, where, False, field)


def _config(where: str, offline: bool, field: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, local_files_only=offline)
    except (OSError, ValueError, KeyError) as exc:
        local = Path(where).is_dir()
        if local:
            raise UserError(field, f"cannot read the config of {where!r}: {exc}",
                            "save the model again with save_pretrained") from exc
        raise UserError(field, f"{where!r} is no local directory and could not be fetched from the Hugging Face hub "
                        "(offline, or no such model): "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                        "pass a local directory written by save_pretrained") from exc


AUTO_CLASSES = {"causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
                "classification": "AutoModelForSequenceClassification",
                "image-classification": "AutoModelForImageClassification"}


def _weights(where: str, config, task: str, offline: bool, field: str, what: str | None = None):
    """from_pretrained of the task's auto class, safetensors only, every weight present and fitting."""
    import transformers

    from ftaudit.models.lm import _quiet_hf

    auto = getattr(transformers, AUTO_CLASSES[task])
    what = what or where
    try:
        with _quiet_hf():
            model, info = auto.from_pretrained(where, config=config, local_files_only=offline, use_safetensors=True,
                                               dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not Path(where).is_dir() and ("safetensors" in first or ".bin" in first):
            raise UserError(field, f"{what!r} has no safetensors weights: {first}", PICKLE_FIX) from exc
        raise UserError(field, f"cannot load {what!r} as a {task} model ({type(config).__name__}): {first}",
                        "check --task and that the checkpoint is complete and matches its config.json") from exc
    missing = sorted(info.get("missing_keys", ()))
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    if missing or mismatched:
        names = missing or mismatched
        kind = "has no weights for" if missing else "has weights of the wrong shape for"
        raise UserError(field, f"{what!r} does not fit its architecture as a {task} model: it {kind} "
                        f"{', '.join(names[:4])}{' …' if len(names) > 4 else ''}",
                        "check --task and that the checkpoint is complete and matches its config.json")
    return model


def _no_tokenizer(where: str, field: str) -> UserError:
    # transformers would make an empty tokenizer from config.json alone, and every record would encode to nothing
    return UserError(field, f"no tokenizer files in {where!r}", "save the model's tokenizer next to it "
                     "(tokenizer.save_pretrained(dir)), or pass tokenizer=")


def _own_tokenizer(where: str, offline: bool, field: str):
    from ftaudit.data.tokenizer import load_tokenizer

    return load_tokenizer(where, local_files_only=offline, field=field)


def _load_adapter(where: str, info: dict, task: str, base: str | None, field: str, tokenizer,
                  num_labels: int | None, local_files_only: bool | None) -> LoadedModel:
    """A PEFT adapter directory applied by peft itself to its base (``base``, else the adapter's
    base_model_name_or_path), both from safetensors."""
    from peft import PeftModel

    from ftaudit.models.lm import _quiet_hf

    base_name = base or info["base"]
    base_field = "--base" if base else field
    if not base_name:
        raise UserError(field, f"the adapter {where!r} does not name its base model", "pass --base")
    base_path = Path(base_name).expanduser()
    base_local = base_path.exists()
    if not base_local and not HUB_ID.match(base_name):
        raise UserError(base_field, f"the adapter's base {base_name!r} does not exist",
                        "pass --base with the base model's directory or hub id")
    if base_local and inspect_model_dir(str(base_path), base_field)["kind"] != "model":
        raise UserError(base_field, f"the base {base_name!r} is itself an adapter", "pass the full base model")
    base_where = str(base_path) if base_local else base_name
    offline = base_local if local_files_only is None else local_files_only
    config = _config(base_where, offline, base_field)
    if task == "auto":
        task = info["task"] or task_of(config.architectures, base_name, field)
    tok = _tokenizer_arg(tokenizer)
    if tok is None and task != "image-classification":
        if info["tokenizer"]:
            tok = _own_tokenizer(where, True, field)
        elif base_local and not inspect_model_dir(str(base_path), base_field)["tokenizer"]:
            raise _no_tokenizer(f"{where} and {base_where}", field)
        else:
            tok = _own_tokenizer(base_where, offline, base_field)
    what = f"{base_name} (base of the adapter)"
    if task == "classification":
        labels = num_labels or _adapter_classes(Path(where))
        if labels is not None:
            config.num_labels = labels
        model = _classifier_base(base_where, config, offline, base_field, what, Path(where))
    else:
        model = _weights(base_where, config, task, offline, base_field, what)
    try:
        with _quiet_hf():
            model = PeftModel.from_pretrained(model, where, is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(field, f"cannot apply the adapter {where!r} to {base_name!r}: {first}",
                        "pass the base the adapter was trained on (--base)") from exc
    return _finish(model, config, tok, task, f"adapter {where} on {base_name}", True, field)


def _classifier_base(where: str, config, offline: bool, field: str, what: str, adapter_dir: Path):
    """A base loaded as a sequence classifier. Its classification head is usually new (the adapter
    holds the trained one in modules_to_save): weights the base lacks, or has in another shape, are
    allowed only where the adapter file holds them."""
    from transformers import AutoModelForSequenceClassification

    from ftaudit.models.lm import _quiet_hf

    try:
        with _quiet_hf():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                where, config=config, local_files_only=offline, use_safetensors=True, dtype=torch.float32,
                ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(field, f"cannot load {what!r} as a classification model: {first}",
                        "pass the base the adapter was trained on (--base)") from exc
    held = _adapter_keys(adapter_dir)
    absent = list(info.get("missing_keys", ())) + [k[0] if isinstance(k, tuple) else k
                                                    for k in info.get("mismatched_keys", ())]
    uncovered = sorted(k for k in absent if k not in held)
    if uncovered:
        raise UserError(field, f"{what!r} has no weights for {', '.join(uncovered[:4])}"
                        f"{' …' if len(uncovered) > 4 else ''}, and the adapter does not hold them either",
                        "pass the base the adapter was trained on (--base), or save the adapter with "
                        "modules_to_save for those layers")
    return model


def _adapter_keys(adapter_dir: Path) -> set[str]:
    """The names (as in the base model) of the full weights an adapter file holds (modules_to_save)."""
    from safetensors import safe_open

    keys = set()
    for file in sorted(adapter_dir.glob("adapter_model*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            keys.update(k.removeprefix("base_model.model.") for k in f.keys() if "lora_" not in k)
    return keys


def _adapter_classes(adapter_dir: Path) -> int | None:
    """The number of classes of an adapted classifier: the rows of the head saved in modules_to_save."""
    from safetensors import safe_open

    rows = None
    for file in sorted(adapter_dir.glob("adapter_model*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if "lora_" in key or not key.endswith("weight"):
                    continue
                if any(h in key for h in ("classifier", "score", "out_proj")):
                    shape = f.get_slice(key).get_shape()
                    if len(shape) == 2:
                        rows = int(shape[0])
    return rows


def _finish(model, config, tok, task: str, source: str, is_adapter: bool, field: str) -> LoadedModel:
    if tok is not None and config is not None and task != "image-classification":
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None and len(tok) > vocab:
            raise UserError(field, f"its tokenizer has {len(tok)} tokens but the model only {vocab} embeddings",
                            "give the tokenizer the model was trained with")
    labels = int(config.num_labels) if task in ("classification", "image-classification") and config is not None else None
    return LoadedModel(model=model, tokenizer=tok, task=task, source=source, num_labels=labels,
                       max_length=_context(config, tok, task), is_adapter=is_adapter)


def _context(config, tok, task: str) -> int:
    if task == "image-classification":
        return 0
    limits = [getattr(config, name, None) for name in ("n_positions", "max_position_embeddings", "n_ctx")]
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    model_max = getattr(tok, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 10**6:
        limits.append(model_max)
    return min([MAX_CONTEXT] + limits)


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers map text to the same ids: the same vocabulary, BPE merges and special
    tokens (not the padding / truncation settings they were saved or last called with)."""
    from ftaudit.data.tokenizer import tokenizer_identity

    return tokenizer_identity(a) == tokenizer_identity(b)
