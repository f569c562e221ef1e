"""A finished run as an MLflow run: config as params, every metric with its CI bounds, the run
directory (report, results.json, config.yaml, records.csv, arrays/) as artifacts.

mlflow is an optional extra (``pip install "ftaudit[mlflow]"``), imported only here. Names follow
MLflow's rules (letters, digits, ``_ - . : /`` and spaces; 250 characters); see docs/exports.md:

    auc.<attack>, auc.<attack>.lo, auc.<attack>.hi
    tpr_at_fpr_<fpr>.<attack>[.lo|.hi]          e.g. tpr_at_fpr_0.01.lira-online.lo
    utility.<name>[.lo|.hi]                      the study's utility rows, e.g. test accuracy
    time.<stage>                                 seconds per pipeline stage

An attack name's ``+`` becomes ``p`` (``min-k++`` → ``min-kpp``); any other character MLflow refuses
becomes ``_``. Metrics are logged at step 0 with the run's creation time.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftaudit.errors import UserError

EXPERIMENT = "ftaudit"
INSTALL = 'pip install "ftaudit[mlflow]"'
FIELD = "--mlflow"
MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_PARAM_VALUE = 6000  # MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000  # MAX_TAG_VAL_LENGTH
TRUNCATED = " …[truncated; the full value is in config.yaml]"
_REFUSED = re.compile(r"[^A-Za-z0-9_\-.:/ ]+")


@dataclass(frozen=True)
class Exported:
    uri: str
    experiment: str
    mlflow_run_id: str
    already: bool  # the run was exported before (a finished MLflow run carries its ftaudit run id)


def clean(name: str) -> str:
    """A name MLflow accepts: ``+`` → ``p``, runs of other refused characters → ``_``."""
    return _REFUSED.sub("_", name.replace("+", "p")).strip("_ ") or "_"


def metrics_of(results: dict) -> dict[str, float]:
    """Every metric of ``results.json`` under an MLflow name, with its CI bounds (nulls skipped)."""
    out: dict[str, float] = {}

    def add(name: str, est: dict) -> None:
        for suffix, key in (("", "value"), (".lo", "lo"), (".hi", "hi")):
            value = est.get(key)
            if value is None:
                continue
            full = name + suffix
            if len(full) > MAX_KEY or full in out:
                raise ValueError(f"metric name {full!r} is too long for MLflow or not unique")
            out[full] = float(value)

    for att in results["attacks"]:
        attack = clean(att["name"])
        add(f"auc.{attack}", att["auc"])
        for t in att["tpr_at_fpr"]:
            add(f"tpr_at_fpr_{t['fpr']:g}.{attack}", t)
    seen: dict[str, int] = {}
    for u in results.get("utility", []):
        base = f"utility.{clean(u['name'])}"[:MAX_KEY - 8]
        seen[base] = seen.get(base, 0) + 1
        add(base if seen[base] == 1 else f"{base}_{seen[base]}", u)
    for stage, seconds in (results.get("timings") or {}).items():
        if isinstance(seconds, (int, float)):
            out[f"time.{clean(stage)}"] = float(seconds)
    return out


def params_of(config: dict) -> dict[str, str]:
    """The config flattened to dotted keys; non-strings as JSON; values cut to MLflow's limit."""
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[:MAX_PARAM_VALUE - len(TRUNCATED)] + TRUNCATED
        out[clean(prefix)[:MAX_KEY]] = text

    walk("", config)
    return out


def tags_of(results: dict) -> dict[str, str]:
    tags = {"mlflow.runName": results["run_id"], "ftaudit.run_id": results["run_id"], "ftaudit.study": results["study"],
            "ftaudit.version": str(results.get("ftaudit_version", "")), "ftaudit.created": str(results.get("created", "")),
            "ftaudit.best_attack": str(results.get("best_attack") or ""), "ftaudit.title": str(results.get("title", ""))}
    return {k: v[:MAX_TAG_VALUE] for k, v in tags.items()}


def default_uri(store: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the store's own MLflow database: ``<store>/mlflow.db``
    (MLflow's recommended SQLite backend; its file store refuses new runs by default) with artifacts
    in ``<store>/mlartifacts``."""
    root = Path(store).resolve()
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def _mlflow():
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise UserError(FIELD, f"mlflow is not installed ({exc.name or 'mlflow'} is missing)",
                        f"install the extra: {INSTALL}") from None
    return MlflowClient


@contextmanager
def _quiet() -> Iterator[None]:
    """Creating a SQLite store logs every schema migration at INFO; keep the CLI to its one line."""
    loggers = [logging.getLogger(n) for n in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_run(run_dir: Path, results: dict, store: Path, uri: str | None = None,
               experiment: str = EXPERIMENT) -> Exported:
    """Log one finished run to MLflow. ``uri``: a tracking URI; else ``MLFLOW_TRACKING_URI``; else the
    store's own ``sqlite:///<store>/mlflow.db``. A run already exported (a finished MLflow run tagged
    with its id) is not logged twice; an unfinished one (an export that failed) is replaced."""
    client_cls = _mlflow()
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    artifact_location = None
    if not uri:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    if not uri:
        uri, artifact_location = default_uri(store)
    run_id = results["run_id"]
    created = dt.datetime.fromisoformat(results["created"]) if results.get("created") else dt.datetime.now(dt.timezone.utc)
    stamp = int(created.timestamp() * 1000)
    try:
        with _quiet():
            client = client_cls(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_location)
            earlier = client.search_runs([exp_id], filter_string=f"tags.`ftaudit.run_id` = '{run_id}'")
            done = [r for r in earlier if r.info.status == "FINISHED"]
            if done:
                return Exported(uri, experiment, done[0].info.run_id, already=True)
            for r in earlier:
                client.delete_run(r.info.run_id)
            run = client.create_run(exp_id, start_time=stamp, tags=tags_of(results))
            mid = run.info.run_id
            try:
                params = [Param(k, v) for k, v in params_of(results["config"]).items()]
                metrics = [Metric(k, v, stamp, 0) for k, v in metrics_of(results).items()]
                for i in range(0, len(params), 100):  # MAX_PARAMS_TAGS_PER_BATCH
                    client.log_batch(mid, params=params[i:i + 100])
                for i in range(0, len(metrics), 1000):  # MAX_METRICS_PER_BATCH
                    client.log_batch(mid, metrics=metrics[i:i + 1000])
                client.log_artifacts(mid, str(run_dir))
            except BaseException:
                client.set_terminated(mid, "FAILED")
                raise
            client.set_terminated(mid, "FINISHED")
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(FIELD, f"MLflow at {uri} refused the export: {first}",
                        "check the tracking URI (default: the store's own sqlite database)") from None
    return Exported(uri, experiment, mid, already=False)
