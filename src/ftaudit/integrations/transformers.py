"""Membership leakage logged while a ``transformers.Trainer`` trains: :class:`AuditCallback`.

At each evaluation (``every="eval"``) or at the end of each epoch (``every="epoch"``) the callback
scores a fixed random sample of the fine-tuning records (members) and of records the model never
saw (non-members) with the model as it is at that moment: the model-only attacks (LOSS, zlib,
Min-K %, Min-K %++ for causal LMs; LOSS for masked LMs; LOSS and confidence for classifiers) and,
when a ``base`` is given, the ratio to the base. It adds to the Trainer's logs, with bootstrap CIs,
``audit/auc``, ``audit/tpr@1%fpr`` (+ ``_lo`` / ``_hi``) of the strongest attack (highest AUC) and
``audit/<attack>/auc`` ... of every attack, so whatever ``report_to`` the user has (MLflow, W&B,
TensorBoard, ...) records leakage per epoch. The scoring and the CIs are the ``audit`` study's own
(``ftaudit.studies.audit.scoring``).

How the values reach the loggers (read in transformers 5.24's trainer.py / trainer_callback.py, and
tested with a real Trainer): ``Trainer.evaluate`` runs the evaluation loop, then ``Trainer.log(metrics)`` -- which appends
a copy of ``metrics`` to ``state.log_history`` and then calls every callback's ``on_log`` with the
dict itself -- and only after that ``on_evaluate``. So values added in ``on_evaluate`` reach no
logger. The callback list is ``[DefaultFlowCallback, <report_to integrations>, <user callbacks>,
<progress>]``: the integrations write ``logs`` in their own ``on_log`` before a user callback's runs.
So the callback (1) moves itself once, at its first event, to just after ``DefaultFlowCallback``,
ahead of every integration, and (2) measures in ``on_log`` when the dict being logged is an
evaluation's (every="eval"; the model is the evaluated one) or at ``on_epoch_end`` (every="epoch"),
and adds its values to the dict the integrations are about to receive and to the
``log_history`` entry ``log`` has just appended.

Only ``transformers`` (and torch) are needed, which the Trainer needs anyway.
"""
from __future__ import annotations

import inspect
import logging
import random
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ftaudit.errors import UserError

try:  # the callback must be a TrainerCallback for the Trainer to call it
    from transformers import TrainerCallback
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback
except ImportError as exc:  # pragma: no cover - transformers is a dependency of ftaudit
    raise ImportError("ftaudit.integrations.transformers needs the transformers package") from exc

if TYPE_CHECKING:
    from ftaudit.data.records import Records
    from ftaudit.models.load import LoadedModel

logger = logging.getLogger(__name__)

EVERY = ("epoch", "eval")


def fpr_label(fpr: float) -> str:
    """0.01 -> "1%", 0.001 -> "0.1%": the FPR as it appears in a log key."""
    return f"{round(float(fpr) * 100, 10):g}%"


def metric_keys(summary: dict[str, dict], fprs: Sequence[float], prefix: str = "audit") -> tuple[dict[str, float], str]:
    """The log keys of an ``attack_summary``: ``<prefix>/auc`` (+ ``_lo``, ``_hi``) and
    ``<prefix>/tpr@<f>fpr`` of the attack with the highest AUC, then ``<prefix>/<attack>/...`` of every
    attack. Returns the keys and the strongest attack's name."""
    strongest = max(summary, key=lambda a: (summary[a]["auc"][0], a))
    out: dict[str, float] = {}
    for scope, attack in [(prefix, strongest)] + [(f"{prefix}/{a}", a) for a in summary]:
        names = [("auc", "auc")] + [(f"tpr@{fpr_label(f)}fpr", f"tpr@{float(f):g}") for f in fprs]
        for key, source in names:
            value, lo, hi = summary[attack][source]
            out[f"{scope}/{key}"], out[f"{scope}/{key}_lo"], out[f"{scope}/{key}_hi"] = float(value), float(lo), float(hi)
    return out, strongest


def _is_eval_log(logs: dict) -> bool:
    """The dict ``Trainer.evaluate`` logs carries ``<prefix>_runtime`` (speed metrics); the training
    logs carry ``loss`` / ``learning_rate``, the end-of-training summary ``train_runtime``."""
    return any(k.endswith("_runtime") and k != "train_runtime" for k in logs)


def _is_train_summary(logs: dict) -> bool:
    return "train_runtime" in logs


class AuditCallback(TrainerCallback):
    """Log membership leakage of the model being trained into the Trainer's logs.

    ``members`` / ``nonmembers``: the fine-tuning records and records the model never trains on, in
    any form ``ftaudit.data.records.load_records`` reads (a .txt / .jsonl / .csv / .npz file, a
    ``datasets`` directory, a list of strings or of dicts with ``text`` (+ ``label``), ``Records``).
    Exact duplicates and records in both sets are dropped, then at most ``max_records`` of each set
    are drawn at random (``seed``), once: every measurement scores the same records.
    ``base``: the pretrained model the fine-tune started from (a directory, a hub id, a model object or
    a ``LoadedModel``), adding the base-ratio attack; it must share the model's tokenizer.
    ``every``: "epoch" (at the end of each epoch) or "eval" (at each evaluation).
    ``fprs``: the false-positive rates of the logged TPRs; ``n_boot`` bootstrap replicates give the
    ``level`` CIs. ``tokenizer``: by default the Trainer's ``processing_class``. ``task``: "auto" reads
    it from the model. ``prefix``: the first part of every key. Measurements are kept in ``history``.
    """

    def __init__(self, members, nonmembers, base=None, every: str = "epoch", max_records: int = 256,
                 fprs: Sequence[float] = (0.01,), n_boot: int = 200, seed: int = 0, *, tokenizer=None,
                 task: str = "auto", level: float = 0.95, batch_size: int = 16, max_length: int | None = None,
                 prefix: str = "audit"):
        from ftaudit.data.records import deduplicate, load_records

        if every not in EVERY:
            raise UserError("AuditCallback.every", f"unknown value {every!r}", "use 'epoch' or 'eval'")
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 2:
            raise UserError("AuditCallback.max_records", f"{max_records!r} is not a whole number >= 2",
                            "give the number of records per set to score, e.g. 256")
        fprs = tuple(float(f) for f in (fprs if isinstance(fprs, (list, tuple)) else (fprs,)))
        if not fprs or not all(0 < f < 1 for f in fprs):
            raise UserError("AuditCallback.fprs", f"{fprs!r} are not false-positive rates in (0, 1)",
                            "e.g. fprs=(0.01,)")
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
            raise UserError("AuditCallback.n_boot", f"{n_boot!r} bootstrap replicates are too few",
                            "use at least 10, e.g. 200")
        if not 0 < level < 1:
            raise UserError("AuditCallback.level", f"{level!r} is not a confidence level in (0, 1)", "e.g. 0.95")
        self.every, self.max_records, self.fprs, self.n_boot, self.seed = every, max_records, fprs, n_boot, seed
        self.level, self.batch_size, self.max_length, self.prefix = level, batch_size, max_length, prefix
        self.task, self.tokenizer, self._base_spec = task, tokenizer, base

        # Records are read and checked now, before training starts; the sample is fixed once.
        members = load_records(members, "AuditCallback.members")
        nonmembers = load_records(nonmembers, "AuditCallback.nonmembers")
        members, nonmembers, self.dropped = deduplicate(members, nonmembers)
        for name, rec in (("members", members), ("nonmembers", nonmembers)):
            if len(rec) < 2:
                raise UserError(f"AuditCallback.{name}", f"{len(rec)} distinct {name} left after dropping duplicates "
                                "and records present in both sets", "give at least 2 records in each set")
        rng = np.random.default_rng(seed)
        self.members: Records = _sample(members, max_records, rng)
        self.nonmembers: Records = _sample(nonmembers, max_records, rng)

        # one {"step", "epoch", "strongest", "truncated", "metrics"} per measurement
        self.history: list[dict[str, Any]] = []
        self._target: LoadedModel | None = None
        self._target_model = None
        self._base: LoadedModel | None = None
        self._placed = False
        self._measured: tuple[int, dict[str, float]] | None = None  # (global step, values) of the last measurement
        self._unlogged = False  # the last measurement is not in any log yet
        self._wait_eval = False  # ...and an evaluation follows at its step: log it there

    # ---- placement: ahead of the report_to integrations -------------------------------------------

    def _place(self) -> None:
        """Move this callback, once, to just after DefaultFlowCallback in the Trainer's callback list,
        so its on_log runs before the report_to integrations' (see the module docstring). The handler
        is the caller of the event (``CallbackHandler.call_event``)."""
        if self._placed:
            return
        self._placed = True
        frame = inspect.currentframe()
        handler = None
        try:
            for _ in range(8):
                frame = frame.f_back if frame is not None else None
                if frame is None:
                    break
                candidate = frame.f_locals.get("self")
                if isinstance(candidate, CallbackHandler) and any(cb is self for cb in candidate.callbacks):
                    handler = candidate
                    break
        finally:
            del frame
        if handler is None:
            logger.warning("AuditCallback could not find the Trainer's callback list: report_to integrations listed "
                           "before it may not record the audit keys (trainer.state.log_history has them)")
            return
        others = [cb for cb in handler.callbacks if cb is not self]
        flow = [i for i, cb in enumerate(others) if isinstance(cb, DefaultFlowCallback)]
        others.insert(flow[-1] + 1 if flow else 0, self)
        handler.callbacks = others  # a new list: the event loop under way keeps iterating the old one

    def on_init_end(self, args, state, control, **kwargs):
        self._place()

    def on_train_begin(self, args, state, control, **kwargs):
        self._place()
        self._measured = None

    def on_train_end(self, args, state, control, **kwargs):
        self._measured = None  # load_best_model_at_end may change the model at the same step

    # ---- when to measure, where to log --------------------------------------------------------------

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._place()
        if self.every != "epoch":
            return
        self._measure(state, model, kwargs)
        # DefaultFlowCallback (before this one) has decided whether an evaluation follows at this step.
        self._wait_eval = bool(control.should_evaluate)
        if not control.should_evaluate:
            control.should_log = True  # a log call at this step carries the values
        return control

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        self._place()
        if logs is None:
            return
        is_eval = _is_eval_log(logs)
        if is_eval and self.every == "eval" and (self._measured is None or self._measured[0] != state.global_step):
            self._measure(state, model, kwargs)
        if self._measured is None:
            return
        step, values = self._measured
        same_step = step == state.global_step
        if (is_eval and same_step) or (self._unlogged and (not (self._wait_eval and same_step)
                                                           or _is_train_summary(logs))):
            self._attach(logs, state, values)

    def _attach(self, logs: dict, state, values: dict[str, float]) -> None:
        last = state.log_history[-1] if state.log_history else None
        logged = set(logs)
        logs.update(values)  # the dict every later callback's on_log (the integrations) receives
        # Trainer.log appended {**logs, "step": ...} to log_history before calling on_log: update it too
        if isinstance(last, dict) and last.get("step") == state.global_step and set(last) - {"step"} <= logged:
            last.update(values)
        self._unlogged = False

    # ---- measuring --------------------------------------------------------------------------------

    def _measure(self, state, model, kwargs: dict) -> None:
        import torch

        from ftaudit.studies.audit.scoring import attack_summary, record_scores

        # The audit must not change the training run: no global RNG draws (the model's mode is restored
        # by record_scores / _target_of).
        np_state, py_state = np.random.get_state(), random.getstate()
        home = next(model.parameters()).device if model is not None else torch.device("cpu")
        cuda = [] if home.type != "cuda" else [home.index if home.index is not None else torch.cuda.current_device()]
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                target = self._target_of(model, kwargs)
                base = self._base_for(target)
                device = target.device
                base_home = base.device if base is not None else None
                if base is not None and base_home != device:
                    base.model.to(device)
                try:
                    scores_m, trunc_m = record_scores(target, self.members, base, self.batch_size, self.max_length,
                                                      self.seed)
                    scores_n, trunc_n = record_scores(target, self.nonmembers, base, self.batch_size,
                                                      self.max_length, self.seed)
                finally:
                    if base is not None and base_home != device:
                        base.model.to(base_home)  # off the accelerator while the model trains
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        scores = {k: np.concatenate([scores_m[k], scores_n[k]]) for k in scores_m}
        labels = np.concatenate([np.ones(len(self.members), bool), np.zeros(len(self.nonmembers), bool)])
        summary = attack_summary(scores, labels, self.fprs, self.n_boot, self.level, self.seed)
        values, strongest = metric_keys(summary, self.fprs, self.prefix)
        self._measured, self._unlogged, self._wait_eval = (state.global_step, values), True, False
        self.history.append({"step": state.global_step, "epoch": state.epoch, "strongest": strongest,
                             "truncated": trunc_m + trunc_n, "metrics": values})

    def _target_of(self, model, kwargs: dict) -> "LoadedModel":
        """The Trainer's model as a LoadedModel (task, context, tokenizer), built once, left where it is
        and in the mode it is in."""
        from ftaudit.data.records import check_label_range
        from ftaudit.models.load import load_model

        if model is None:
            raise UserError("AuditCallback", "the Trainer passed no model to the callback",
                            "use it with a transformers Trainer")
        if self._target is not None and self._target_model is model:
            return self._target
        tokenizer = self.tokenizer if self.tokenizer is not None else \
            kwargs.get("processing_class", kwargs.get("tokenizer"))
        was_training = model.training
        try:
            target = load_model(model, task=self.task, tokenizer=tokenizer, device=None, field="AuditCallback model")
        finally:
            model.train(was_training)
        if target.task == "image-classification" and self.members.images is None:
            raise UserError("AuditCallback.members", "an image classifier needs image records (.npz with x, y)",
                            "give the records as an .npz file")
        if target.task in ("classification", "image-classification"):
            for name, rec in (("members", self.members), ("nonmembers", self.nonmembers)):
                if rec.labels is None:
                    raise UserError(f"AuditCallback.{name}", "classification needs a label for every record",
                                    "give records with an integer `label`")
                check_label_range(rec, target.num_labels, f"AuditCallback.{name}")
        elif self.members.texts is None:
            raise UserError("AuditCallback.members", f"a {target.task} model needs text records", "give text records")
        self._target, self._target_model = target, model
        return target

    def _base_for(self, target: "LoadedModel") -> "LoadedModel | None":
        """The base as a LoadedModel, loaded once (on the CPU; moved to the model's device to score)."""
        import torch

        from ftaudit.models.load import LoadedModel, load_model, same_tokenizer

        if self._base_spec is None:
            return None
        if self._base is None:
            spec = self._base_spec
            if isinstance(spec, LoadedModel):
                base = spec
            else:
                in_memory = isinstance(spec, torch.nn.Module)
                base = load_model(spec, task=target.task, field="AuditCallback.base",
                                  device=None if in_memory else "cpu", tokenizer=target.tokenizer if in_memory else None)
            if base.task != target.task:
                raise UserError("AuditCallback.base", f"the base is a {base.task} model but the trained model is "
                                f"{target.task}", "give the base the model is fine-tuned from")
            tokenizers = (base.tokenizer, target.tokenizer)
            if None not in tokenizers and not same_tokenizer(*tokenizers):
                raise UserError("AuditCallback.base", "the base's tokenizer differs from the trained model's, so "
                                "their likelihoods of a record are not comparable",
                                "give the base the model is fine-tuned from")
            self._base = base
        return self._base


def _sample(records: "Records", limit: int, rng: np.random.Generator) -> "Records":
    if len(records) <= limit:
        return records
    return records.subset(np.sort(rng.choice(len(records), size=limit, replace=False)))
