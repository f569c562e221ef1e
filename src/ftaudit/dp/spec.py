"""A group's DP-SGD settings, resolved once: sampling rate, steps, calibrated noise and its ε.

The engine trains a DP group for ``round(epochs / q)`` Poisson-sampled steps with the noise
multiplier Opacus calibrates for (ε, δ); the ε it records is Opacus's accountant's, cross-checked
against Google's dp_accounting (:func:`~ftaudit.dp.accounting.check_epsilon` raises on a mismatch).
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

from ftaudit.dp.accounting import calibrate_noise, check_epsilon, reference_epsilon
from ftaudit.dp.sampling import steps_for
from ftaudit.errors import UserError


@dataclass(frozen=True)
class DPSpec:
    epsilon: float  # target; inf = no noise (clipping and Poisson sampling still on)
    delta: float
    clip: float
    accountant: str
    sample_rate: float
    epochs: int

    @property
    def steps(self) -> int:
        return steps_for(self.epochs, self.sample_rate)

    def key(self) -> dict:
        return asdict(self)

    def resolve(self) -> dict:
        """σ for the target ε, and the ε both accountants give for it (recorded with the models).
        Deterministic and a few hundred ms each, so memoised per spec (a sweep repeats them)."""
        return dict(_resolve(self))

    def _compute(self) -> dict:
        steps = self.steps
        sigma = calibrate_noise(self.epsilon, self.delta, self.sample_rate, steps, self.accountant)
        if sigma == 0.0:
            return {**self.key(), "target_epsilon": self.epsilon, "noise_multiplier": 0.0, "steps": steps,
                    "epsilon": math.inf, "epsilon_reference": math.inf}
        eps = check_epsilon(sigma, self.sample_rate, steps, self.delta, self.accountant)
        ref = reference_epsilon(sigma, self.sample_rate, steps, self.delta, self.accountant)
        # The spec's own fields first, so the accounted ε (not the target) is what "epsilon" holds.
        return {**self.key(), "target_epsilon": self.epsilon, "noise_multiplier": sigma, "steps": steps,
                "epsilon": eps, "epsilon_reference": ref}


@functools.lru_cache(maxsize=1024)
def _resolve(spec: DPSpec) -> tuple:
    return tuple(spec._compute().items())


def dp_spec(dp_cfg, n_rows: int, batch_size: int, epochs: int, field: str = "finetune.dp") -> DPSpec | None:
    """The spec of a ``finetune.dp`` section for models with ``n_rows`` training rows, or None when DP is off."""
    if not dp_cfg.enabled:
        return None
    q = dp_cfg.sample_rate if dp_cfg.sample_rate is not None else min(1.0, batch_size / n_rows)
    if n_rows * q < 1:
        raise UserError(f"{field}.sample_rate", f"q = {q:g} with {n_rows} rows gives an expected batch below 1",
                        f"use a sample rate of at least {1 / n_rows:.3g}")
    delta = dp_cfg.delta if dp_cfg.delta is not None else min(1e-5, 0.1 / n_rows)
    if delta >= 1 / n_rows:
        raise UserError(f"{field}.delta", f"δ = {delta:g} is not below 1/N = {1 / n_rows:.3g}",
                        "choose δ well below one over the number of training rows")
    return DPSpec(epsilon=float(dp_cfg.epsilon), delta=delta, clip=dp_cfg.clip, accountant=dp_cfg.accountant,
                  sample_rate=q, epochs=epochs)
