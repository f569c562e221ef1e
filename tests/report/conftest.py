"""A small synthetic run directory in the pipeline's contract, for the report tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ATTACKS = ("lira-online", "loss", "reference-<zlib>")
RUN_ID = "20261123-181500-finetune-mia-3fa2c1"
N_EXAMPLES, N_TARGETS = 40, 4


def _roc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Test-side ROC points ([2, K], starting at (0, 0)); only here to fabricate stored arrays."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / hits.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / (~hits).sum()])
    return np.stack([fpr, tpr])


def _ci(value: float | None, width: float = 0.02) -> dict:
    if value is None:
        return {"value": None, "lo": None, "hi": None}
    return {"value": value, "lo": round(value - width / 2, 4), "hi": round(value + width / 2, 4)}


def attack_entry(name: str, auc: float, tprs: tuple[float, float, float]) -> dict:
    return {
        "name": name,
        "description": f"{name} attack",
        "auc": _ci(auc),
        "tpr_at_fpr": [{"fpr": f, **_ci(t, t / 2)} for f, t in zip((0.001, 0.01, 0.1), tprs)],
        "n_members": 20_000,  # stored counts (pooled rows): enough that every reported TPR is resolved
        "n_nonmembers": 20_000,
    }


def base_results() -> dict:
    return {
        "run_id": RUN_ID,
        "study": "finetune-mia",
        "title": "Membership of the fine-tuning data (digits)",
        "created": "2026-11-23T18:15:00+00:00",
        "ftaudit_version": "0.1.0",
        "config": {"study": "finetune-mia", "data": {"name": "digits", "n_audit": N_EXAMPLES},
                   "attacks": list(ATTACKS), "train": {"epochs": 3, "lr": 0.01}},
        "versions": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.4.6"},
        "seeds": {"run": 0, "pretrain": 123, "models": [1, 2, 3, 4]},
        "timings": {"data": 0.1, "pretrain": 3.2, "finetune": 20.5, "signals": 1.0, "attacks": 0.4,
                    "metrics": 2.0, "report": 0.0, "total": 28.0},
        "cache": {"models_trained": 4, "models_loaded": 1},
        "utility": [
            {"name": "fine-tuned test accuracy", "value": 0.93, "lo": 0.92, "hi": 0.94, "note": "mean over 4 models"},
            {"name": "pretrained base accuracy (pretraining task)", "value": 0.98, "lo": None, "hi": None, "note": ""},
        ],
        "ci_level": 0.95,
        "n_bootstrap": 1000,
        "attacks": [
            attack_entry("lira-online", 0.71, (0.02, 0.05, 0.3)),
            attack_entry("loss", 0.6234, (0.004, 0.021, 0.17)),
            attack_entry("reference-<zlib>", 0.55, (0.001, 0.012, 0.12)),
        ],
        "skipped_attacks": {"reference": "no base model"},
        "best_attack": "lira-online",
        "exposed": [
            {"example": 17, "label": 3, "score": 5.2, "attack": "lira-online", "member_rate": 0.5},
            {"example": 4, "label": 7, "score": 4.81, "attack": "lira-online", "member_rate": 0.25},
            {"example": 31, "label": 0, "score": None, "attack": "loss", "member_rate": 0.75},
        ],
        "notes": ["lira-online beats loss at every FPR"],
    }


def write_run(run_dir: Path, results: dict, *, images: bool = True, seed: int = 0) -> Path:
    """Write ``results`` and matching arrays for every attack it names into ``run_dir``."""
    rng = np.random.default_rng(seed)
    arrays = run_dir / "arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    p = N_EXAMPLES * N_TARGETS
    labels = rng.random(p) < 0.5
    np.save(arrays / "labels.npy", labels)
    np.save(arrays / "example.npy", np.tile(np.arange(N_EXAMPLES, dtype=np.int64), N_TARGETS))
    np.save(arrays / "target.npy", np.repeat(np.arange(N_TARGETS, dtype=np.int64), N_EXAMPLES))
    for i, attack in enumerate(results.get("attacks", [])):
        scores = rng.standard_normal(p) + labels * (1.0 - 0.3 * i)
        scores[:3] = [np.inf, -np.inf, 1e9]  # heavy tails the histograms must survive
        np.save(arrays / f"scores-{attack['name']}.npy", scores)
        np.save(arrays / f"roc-{attack['name']}.npy", _roc(np.nan_to_num(scores), labels))
    if images:
        np.save(arrays / "audit_x.npy", rng.integers(0, 17, (N_EXAMPLES, 8, 8)).astype(np.float32))
    np.save(arrays / "audit_y.npy", rng.integers(0, 10, N_EXAMPLES).astype(np.int64))
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))  # as the store writes it
    return run_dir


@pytest.fixture
def results() -> dict:
    return base_results()


@pytest.fixture
def run_dir(tmp_path: Path, results: dict) -> Path:
    return write_run(tmp_path / RUN_ID, results)


@pytest.fixture
def make_run(tmp_path: Path):
    """``make_run(results, images=True)`` -> a fresh run dir written from ``results``."""
    counter = iter(range(1000))

    def make(results: dict, *, images: bool = True) -> Path:
        return write_run(tmp_path / f"run-{next(counter)}", results, images=images)

    return make


@pytest.fixture(scope="session")
def study_runs(tmp_path_factory):
    """Real runs of the default study and of lm-mia at their small test sizes, made once per session:
    ``{study: RunResult}``, both in one store."""
    import ftaudit

    store = tmp_path_factory.mktemp("report-store")
    from study_settings import SMALL as small
    return {name: ftaudit.run(name, overrides=list(small[name]), out=str(store))
            for name in ("finetune-mia", "lm-mia")}
