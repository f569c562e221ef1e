"""Privacy accounting for Poisson-sampled DP-SGD: noise calibration, ε, and a cross-check.

Opacus's accountants are the ones we use (``rdp`` or ``prv``); Google's ``dp_accounting`` computes
the same ε independently, and :func:`check_epsilon` refuses to go on when the two disagree by more
than 1 % — a wrong sample rate, step count or history would show up here, not in a report.

What it took to make the two agree (measured on q ∈ {0.01, 0.05, 0.2}, σ ∈ {0.6, 1, 2, 4},
steps ∈ {10, 100, 1000}, δ = 1e-5):

* PRV vs PLD. Opacus's PRV accountant returns an *upper* bound, estimate + ``eps_error``, and its
  default ``eps_error = 0.01`` is absolute: at ε ≈ 0.02 that alone is a 40 % gap. We ask for a
  relative error instead — a cheap first pass at the default finds ε, a second uses
  ``eps_error = 1e-3·ε`` (floored at 1e-5). The reference is ``dp_accounting``'s pessimistic
  ``PLDAccountant`` with ``value_discretization_interval = 1e-4`` (1e-5 changes ε by < 1e-5
  relative, at 10× the cost). Worst relative gap over the grid: 1.5e-3.
* RDP vs RDP, same orders (Opacus's ``DEFAULT_ALPHAS``). On the integer orders both libraries are
  exact and agree to 1e-14. On fractional orders they do not compute the same thing:
  ``dp_accounting`` 0.6 sums the *absolute* values of the binomial series (an upper bound) and
  drops the order after 1000 terms, while Opacus sums it with signs — which matches direct
  numerical integration of the Rényi divergence to 6 digits (see tests/dp). So where the optimal
  order is fractional and below ~2.5 (ε ≳ 20 on the grid) ``dp_accounting`` is up to 2× looser.
  :func:`check_epsilon` therefore accepts an RDP ε that is *below* the reference when the two agree
  on the integer orders, where both are exact; it never accepts one above it.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Literal, Sequence

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

Accountant = Literal["rdp", "prv"]

RDP_ORDERS: list[float] = list(RDPAccountant.DEFAULT_ALPHAS)
INTEGER_ORDERS: list[float] = [a for a in RDP_ORDERS if float(a).is_integer()]
PRV_RELATIVE_ERROR = 1e-3  # eps_error as a fraction of ε
PRV_MIN_ERROR = 1e-5  # below this the PRV mesh gets too fine to be quick
PLD_DISCRETIZATION = 1e-4
RTOL = 0.01  # the agreement check_epsilon demands
CALIBRATION_TOLERANCE = 2e-3  # calibrated ε lands in [target·(1 - this), target]


class AccountingMismatch(RuntimeError):
    """Opacus and dp_accounting disagree on ε: the accounting inputs or a library are wrong."""


def _validate(sample_rate: float, steps: int, delta: float, accountant: str) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if accountant not in ("rdp", "prv"):
        raise ValueError(f"accountant must be 'rdp' or 'prv', got {accountant!r}")


def _prv_epsilon(sigma: float, sample_rate: float, steps: int, delta: float, eps_error: float) -> float:
    acc = PRVAccountant()
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta, eps_error=eps_error))


def accounted_epsilon(sigma: float, sample_rate: float, steps: int, delta: float,
                      accountant: Accountant = "rdp", orders: Sequence[float] | None = None) -> float:
    """ε spent by ``steps`` Poisson-sampled Gaussian steps, by Opacus's accountant (an upper bound).
    ``orders`` (RDP only) defaults to Opacus's own."""
    _validate(sample_rate, steps, delta, accountant)
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = [(sigma, sample_rate, steps)]
        return float(acc.get_epsilon(delta, alphas=list(orders or RDP_ORDERS)))
    coarse = _prv_epsilon(sigma, sample_rate, steps, delta, eps_error=0.01)
    return _prv_epsilon(sigma, sample_rate, steps, delta, max(PRV_RELATIVE_ERROR * coarse, PRV_MIN_ERROR))


def reference_epsilon(sigma: float, sample_rate: float, steps: int, delta: float,
                      accountant: Accountant = "rdp", orders: Sequence[float] | None = None) -> float:
    """The same ε by ``dp_accounting``: RDP at the same orders, or a fine pessimistic PLD for PRV."""
    _validate(sample_rate, steps, delta, accountant)
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(sigma)), steps)
    acc = (RdpAccountant(orders=list(orders or RDP_ORDERS)) if accountant == "rdp"
           else PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION))
    # dp_accounting warns (through absl) for every fractional order whose series it cuts off — the
    # known looseness check_epsilon handles; the warnings would drown a run's output.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        acc.compose(event)
        return float(acc.get_epsilon(delta))
    finally:
        absl_logger.setLevel(level)


def _close(a: float, b: float, rtol: float) -> bool:
    return a == b or abs(a - b) <= rtol * abs(b)


def check_epsilon(sigma: float, sample_rate: float, steps: int, delta: float,
                  accountant: Accountant = "rdp", rtol: float = RTOL) -> float:
    """Opacus's ε, after checking it against dp_accounting's (see the module docstring for when an
    RDP ε below the reference is accepted). Raises :class:`AccountingMismatch` otherwise."""
    accounted = accounted_epsilon(sigma, sample_rate, steps, delta, accountant)
    reference = reference_epsilon(sigma, sample_rate, steps, delta, accountant)
    if _close(accounted, reference, rtol):
        return accounted
    detail = ""
    if accountant == "rdp" and accounted < reference:
        exact_a = accounted_epsilon(sigma, sample_rate, steps, delta, "rdp", INTEGER_ORDERS)
        exact_r = reference_epsilon(sigma, sample_rate, steps, delta, "rdp", INTEGER_ORDERS)
        if _close(exact_a, exact_r, rtol):
            return accounted
        detail = f"; on integer orders opacus {exact_a:.6g} vs dp_accounting {exact_r:.6g}"
    raise AccountingMismatch(
        f"{accountant} accounting disagrees beyond {rtol:.0%}: opacus ε = {accounted:.6g}, "
        f"dp_accounting ε = {reference:.6g} (sigma={sigma}, q={sample_rate}, steps={steps}, delta={delta}){detail}")


def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: Accountant = "rdp") -> float:
    """The noise multiplier σ whose accounted ε is at most ``epsilon`` and within 0.2 % of it, by
    Opacus's ``get_noise_multiplier``. ``epsilon = inf`` means no privacy: σ = 0."""
    _validate(sample_rate, steps, delta, accountant)
    if epsilon == math.inf:
        return 0.0
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive (or inf), got {epsilon}")
    if steps == 0:
        return 0.0
    extra = {"eps_error": max(PRV_RELATIVE_ERROR * epsilon, PRV_MIN_ERROR)} if accountant == "prv" else {}
    with warnings.catch_warnings():  # the search's first, huge σs hit the largest RDP order: no news
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        sigma = float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                           steps=steps, accountant=accountant,
                                           epsilon_tolerance=CALIBRATION_TOLERANCE * epsilon, **extra))
    # PRV's bound depends on its error budget, which accounted_epsilon picks from ε itself: nudge
    # σ up in the rare case the search's budget left ε a hair above target under ours.
    while accounted_epsilon(sigma, sample_rate, steps, delta, accountant) > epsilon:
        sigma *= 1 + CALIBRATION_TOLERANCE / 4
    return sigma


__all__ = ["AccountingMismatch", "accounted_epsilon", "reference_epsilon", "check_epsilon", "calibrate_noise",
           "RDP_ORDERS", "INTEGER_ORDERS"]
