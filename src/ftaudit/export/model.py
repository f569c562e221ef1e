"""A run's cached models, named the way a user names them, written out for other tools.

A run's ``run_models`` rows (role, idx, model key) point at ``cache/models/<k[:2]>/<key>.safetensors``,
whose tensors carry the training template's names (``lm.`` for language models, peft's
``base_layer`` / ``lora_A.default`` for LoRA). ``MODEL`` is ``role:idx`` as in those rows
(``pretrain:0``, ``finetune:lora lr=0.01:3``), or a unique prefix of the role (``finetune:3``).

What is written (docs/exports.md):

* a language model of an LM study (config section ``lm``), methods full / head / layers / bitfit:
  a ``save_pretrained`` directory with its tokenizer (``transformers.AutoModelFor*.from_pretrained``);
* the same with LoRA: a peft adapter directory (``PeftModel.from_pretrained`` on its base), and the
  base as a ``save_pretrained`` directory in ``DIR/base`` when the run pretrained it;
* anything else (the vision nets, bottleneck adapters, other studies' models): not a Hugging Face
  format — the weights as ``model.safetensors`` under their ftaudit names, plus ``ftaudit-model.json``.

Every directory gets ``ftaudit-model.json``: the run, the model row, the method and what was written.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ftaudit.errors import UserError
from ftaudit.store.atomic import atomic_write_text

MANIFEST = "ftaudit-model.json"
HF_METHODS = ("full", "head", "layers", "bitfit", "lora")  # methods whose models have a Hugging Face form
FIELD = "MODEL"


@dataclass(frozen=True)
class ModelRow:
    role: str
    idx: int
    key: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.role}:{self.idx}"


def locate(run: str | Path, out: str | Path):
    """(RunResult, store root) of a run given by id / prefix in ``out``, or by its directory (whose
    store is two levels up when it holds the database, as ``<store>/runs/<id>`` does)."""
    from ftaudit.api import load_run

    result = load_run(run, out)
    given = Path(run)
    if (given / "results.json").is_file() and (given.resolve().parent.parent / "ftaudit.sqlite").is_file():
        return result, given.resolve().parent.parent
    return result, Path(out)


def run_models(store: Path, run_id: str) -> list[ModelRow]:
    """The run's model rows, read-only (the store is never written by an export)."""
    db = Path(store) / "ftaudit.sqlite"
    if not db.is_file():
        raise UserError("--out", f"no store database at {db}", "pass --out with the run's store")
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT role, idx, model_key, seed FROM run_models WHERE run_id = ? ORDER BY rowid",
                           (run_id,)).fetchall()
    return [ModelRow(*r) for r in rows]


def pick(rows: list[ModelRow], name: str, run_id: str) -> ModelRow:
    """``role:idx`` exactly, or a unique role prefix with its idx; a bare role with one model."""
    if not rows:
        raise UserError("RUN", f"run {run_id} has no models recorded in this store",
                        "pass --out with the store the run was made in")
    role, sep, idx_text = name.rpartition(":")
    if not sep or not idx_text.strip().isdigit():
        role, idx = name, None
    else:
        idx = int(idx_text)
    roles = list(dict.fromkeys(r.role for r in rows))
    matches = [r for r in roles if r == role] or [r for r in roles if r.startswith(role)]
    hint = "`ftaudit export-model RUN --list` shows them"
    if len(matches) != 1:
        what = "matches no model role" if not matches else f"matches several roles ({', '.join(matches)})"
        raise UserError(FIELD, f"{name!r} {what} of run {run_id}; roles: {', '.join(roles)}", f"name it as role:idx; {hint}")
    mine = [r for r in rows if r.role == matches[0]]
    if idx is None:
        if len(mine) != 1:
            raise UserError(FIELD, f"{matches[0]!r} has {len(mine)} models", f"add the index, e.g. {matches[0]}:0; {hint}")
        return mine[0]
    found = [r for r in mine if r.idx == idx]
    if not found:
        raise UserError(FIELD, f"{matches[0]!r} has no model {idx} (indices {mine[0].idx}..{mine[-1].idx})", hint)
    return found[0]


def model_meta(store: Path, key: str) -> dict[str, str]:
    """The cache entry's metadata (group, method, seed, trainer), without loading its tensors."""
    from safetensors import SafetensorError, safe_open

    from ftaudit.store.cache import CacheError, ModelCache

    path = ModelCache(Path(store) / "cache").path(key)
    if not path.is_file():
        raise UserError(FIELD, f"the model's weights are not in the cache ({path})",
                        "rerun the run's config (ftaudit run -c <run>/config.yaml) to retrain it; the cache may have been deleted")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CacheError(f"model cache entry {path} is unreadable ({exc}); delete it and rerun") from exc


def listing(results: dict, store: Path) -> list[dict]:
    """One row per model of the run: its name, method, how it would be exported, its cache key."""
    from ftaudit.export.hf import lm_section
    from ftaudit.store.cache import ModelCache

    lm = lm_section(results["config"]) is not None
    cache = ModelCache(Path(store) / "cache")
    out = []
    for r in run_models(store, results["run_id"]):
        if not cache.has(r.key):
            method, form = "?", "not in the cache (rerun the run's config to retrain it)"
        else:
            method = model_meta(store, r.key).get("method", "?")
            if lm and method in HF_METHODS:
                form = "peft adapter" if method == "lora" else "save_pretrained"
            else:
                form = "safetensors (not HF)"
        out.append({"model": r.name, "method": method, "export": form, "key": r.key[:12]})
    return out


def export_model(run_dir: Path, results: dict, store: Path, name: str, dest: Path) -> dict:
    """Write model ``name`` of the run into ``dest`` (new or empty); returns the manifest written."""
    row = pick(run_models(store, results["run_id"]), name, results["run_id"])
    meta = model_meta(store, row.key)
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError("DIR", f"{dest} exists and is not an empty directory", "give a new directory")
    from ftaudit.export.hf import export_lm, lm_section
    from ftaudit.store.cache import ModelCache

    state = ModelCache(Path(store) / "cache").load(row.key)
    method = meta.get("method", "")
    manifest = {"run_id": results["run_id"], "study": results["study"], "model": row.name, "role": row.role,
                "idx": row.idx, "model_key": row.key, "seed": row.seed, "method": method,
                "trainer": meta.get("trainer", ""), "group": meta.get("group", "")}
    # Written into a hidden sibling, renamed into place when complete: a failed export leaves nothing.
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if lm_section(results["config"]) is not None and method in HF_METHODS and any(k.startswith("lm.") for k in state):
            manifest.update(export_lm(run_dir, results, store, state, method, work, dest))
        else:
            manifest.update(export_raw(state, work, results))
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def export_raw(state: dict, dest: Path, results: dict) -> dict:
    """The weights under their ftaudit names, for models without a Hugging Face form."""
    from safetensors.torch import save_file

    from ftaudit.store.atomic import atomic_write

    tensors = {k: v.contiguous() for k, v in state.items()}
    atomic_write(dest / "model.safetensors", lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    config = results["config"]
    return {"format": "safetensors", "files": ["model.safetensors"],
            "note": "not a Hugging Face format: the tensors keep ftaudit's parameter names; rebuild the architecture "
                    "from the run's config.yaml (for the digits nets ftaudit.models.vision.build_model(model section, "
                    "classes)) and load_state_dict",
            "model_config": config.get("model"), "shapes": {k: list(v.shape) for k, v in state.items()}}
