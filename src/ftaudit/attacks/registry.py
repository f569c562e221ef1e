"""The named attacks and the one entry point that validates user parameters and runs them."""
from __future__ import annotations

from functools import partial
from numbers import Real
from typing import Mapping, Sequence

import numpy as np

from ftaudit.attacks import membership as mia
from ftaudit.attacks.base import AttackInput, AttackSpec
from ftaudit.attacks.rmia_paper import rmia_paper
from ftaudit.errors import UserError

NAMES_FIELD = "attack.names"  # config paths named in UserErrors (see ftaudit.config.AttackConfig)
PARAMS_FIELD = "attack.params"

_REFS = frozenset({"references"})
_A_BOUNDS = {"offline_a": (0.0, 1.0)}
_GAMMA_BOUNDS = {"gamma": (1e-12, None)}


def _offline_rmia(inp: AttackInput, gamma: float, offline_a: float) -> np.ndarray:
    return mia.rmia(inp, gamma=gamma, offline_a=offline_a)


def _online_rmia(inp: AttackInput, gamma: float) -> np.ndarray:
    return mia.rmia(inp, gamma=gamma, offline_a=None)


ATTACKS: dict[str, AttackSpec] = {
    s.name: s
    for s in [
        AttackSpec("loss", mia.loss_attack, "target loss on the original input (LOSS)"),
        AttackSpec("reference", mia.reference_attack, "loss drop from the pretrained base to the target",
                   frozenset({"base"})),
        AttackSpec("lira-online", partial(mia.lira_online, global_variance=False),
                   "LiRA online, per-example variances", _REFS),
        AttackSpec("lira-online-global", partial(mia.lira_online, global_variance=True),
                   "LiRA online, one pooled variance per query", _REFS),
        AttackSpec("lira-offline", partial(mia.lira_offline, global_variance=False),
                   "LiRA offline (OUT references only), per-example variances", _REFS),
        AttackSpec("lira-offline-global", partial(mia.lira_offline, global_variance=True),
                   "LiRA offline (OUT references only), one pooled variance per query", _REFS),
        AttackSpec("rmia-online", _online_rmia, "RMIA, Pr(x) from all references",
                   frozenset({"references", "population"}), {"gamma": 2.0}, _GAMMA_BOUNDS),
        AttackSpec("rmia-offline", _offline_rmia, "RMIA, Pr(x) from OUT references via the offline_a map",
                   frozenset({"references", "population"}), {"gamma": 2.0, "offline_a": 0.3},
                   {**_GAMMA_BOUNDS, **_A_BOUNDS}),
        AttackSpec("rmia-paper-online", partial(rmia_paper, offline=False),
                   "RMIA as its paper runs it: pairwise ratios, vote across views, all references",
                   frozenset({"references", "population"}), {"gamma": 1.0}, _GAMMA_BOUNDS),
        AttackSpec("rmia-paper-offline", partial(rmia_paper, offline=True),
                   "RMIA as its paper runs it, OUT references, a calibrated on a reference model",
                   frozenset({"references", "population"}), {"gamma": 1.0}, _GAMMA_BOUNDS),
    ]
}


def register_precomputed(name: str, description: str) -> AttackSpec:
    """Register an attack whose per-model scores the scenario computes (``SignalSet.scores[name]``),
    e.g. the LM attacks on per-token log-probs; reading them here keeps one evaluation path."""
    if name in ATTACKS:
        raise ValueError(f"attack {name!r} registered twice")
    spec = AttackSpec(name, lambda inp: np.asarray(inp.target_scores[name], dtype=np.float64), description,
                      frozenset({"scores"}))
    ATTACKS[name] = spec
    return spec


def _unknown(name: object) -> str:
    """The fix for an unknown attack name: the closest registered one, then the list."""
    import difflib

    close = difflib.get_close_matches(str(name)[:200], list(ATTACKS), n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"choose from {', '.join(ATTACKS)}"


def resolve_params(name: str, params: Mapping[str, object] | None = None) -> dict[str, float]:
    """The attack's defaults overridden by ``params``, each checked; bad input raises UserError."""
    if name not in ATTACKS:
        raise UserError(NAMES_FIELD, f"unknown attack {name!r}", _unknown(name))
    spec = ATTACKS[name]
    out = dict(spec.defaults)
    for key, value in (params or {}).items():
        field = f"{PARAMS_FIELD}.{name}.{key}"
        if key not in spec.defaults:
            allowed = ", ".join(spec.defaults) if spec.defaults else "none"
            raise UserError(field, f"{name} has no parameter {key!r}", f"parameters it takes: {allowed}")
        if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(float(value)):
            raise UserError(field, f"must be a finite number, got {value!r}")
        lo, hi = spec.bounds.get(key, (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise UserError(field, f"{value} is out of range", f"choose a value in {span}")
        out[key] = float(value)
    return out


def resolve_request(names: Sequence[str], params: Mapping[str, Mapping[str, object]] | None) -> dict[str, dict[str, float]]:
    """Check a whole attack request (names and per-attack parameters) and resolve each attack's
    parameters; every mistake is a UserError naming its config path."""
    params = dict(params or {})
    for i, name in enumerate(names):
        if name not in ATTACKS:
            raise UserError(f"{NAMES_FIELD}[{i}]", f"unknown attack {name!r}", _unknown(name))
    for name in params:
        if name not in ATTACKS:
            raise UserError(f"{PARAMS_FIELD}.{name}", "unknown attack", _unknown(name))
        if name not in names:
            raise UserError(f"{PARAMS_FIELD}.{name}", f"parameters given for {name!r}, which is not run",
                            f"remove them or add {name!r} to {NAMES_FIELD}")
    return {name: resolve_params(name, params.get(name)) for name in names}


def run_attack(name: str, inp: AttackInput, **params) -> np.ndarray:
    """Run the named attack on one target: float64 scores [N], higher = member, never NaN."""
    kwargs = resolve_params(name, params)
    spec = ATTACKS[name]
    if "base" in spec.needs and inp.base_loss is None:
        raise ValueError(f"attack {name!r} needs the pretrained base's signals (base_loss)")
    if "scores" in spec.needs and name not in inp.target_scores:
        raise ValueError(f"attack {name!r} reads precomputed scores that this study did not compute")
    scores = np.asarray(spec.fn(inp, **kwargs), dtype=np.float64)
    if scores.shape != (inp.n_examples,) or not np.isfinite(scores).all():
        raise FloatingPointError(f"attack {name!r} produced non-finite or mis-shaped scores; are the signals finite?")
    return scores
