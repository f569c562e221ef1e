import logging
import math

import numpy as np
import pytest

from ftaudit.dp import accounting
from ftaudit.dp.accounting import (AccountingMismatch, accounted_epsilon, calibrate_noise, check_epsilon,
                                   reference_epsilon)

DELTA = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")


@pytest.fixture(autouse=True)
def _quiet_dp_accounting():
    logging.disable(logging.WARNING)  # dp_accounting logs each fractional order it gives up on
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("q,sigma,steps", [(0.01, 0.6, 100), (0.01, 4, 1000), (0.05, 1, 1000), (0.05, 2, 10),
                                           (0.2, 1, 10), (0.2, 4, 1000)])
def test_rdp_matches_dp_accounting_within_one_percent(q, sigma, steps):
    a = accounted_epsilon(sigma, q, steps, DELTA, "rdp")
    r = reference_epsilon(sigma, q, steps, DELTA, "rdp")
    assert abs(a - r) <= 0.01 * r
    assert check_epsilon(sigma, q, steps, DELTA, "rdp") == a


@pytest.mark.parametrize("q,sigma,steps", [(0.01, 2, 10), (0.2, 4, 1000)])
def test_prv_matches_pld_within_one_percent(q, sigma, steps):
    # (0.01, 2, 10) has ε ≈ 0.066: Opacus's default absolute eps_error would be 15 % off here
    a = accounted_epsilon(sigma, q, steps, DELTA, "prv")
    r = reference_epsilon(sigma, q, steps, DELTA, "prv")
    assert r <= a <= 1.01 * r  # both upper bounds; PRV's carries its (relative) error budget
    assert check_epsilon(sigma, q, steps, DELTA, "prv") == a


def _rdp_by_integration(q: float, sigma: float, alpha: float) -> float:
    """Rényi divergence of order alpha of the Poisson-subsampled Gaussian, by quadrature."""
    z = np.linspace(-30 * sigma, 30 * sigma + 10, 400_001)
    log_ratio = np.logaddexp(np.log1p(-q), np.log(q) + (2 * z - 1) / (2 * sigma ** 2))
    log_f = alpha * log_ratio - z ** 2 / (2 * sigma ** 2) - 0.5 * np.log(2 * np.pi * sigma ** 2)
    top = log_f.max()
    return float((top + np.log(np.trapezoid(np.exp(log_f - top), z))) / (alpha - 1))


def test_large_epsilon_rdp_is_checked_on_exact_orders():
    # Optimal order ~1.6: dp_accounting's fractional-order bound is loose there (10 % above), so
    # the check compares on the integer orders, where both libraries are exact, and accepts.
    q, sigma, steps = 0.2, 0.6, 100
    a, r = accounted_epsilon(sigma, q, steps, DELTA), reference_epsilon(sigma, q, steps, DELTA)
    assert a < 0.95 * r
    assert check_epsilon(sigma, q, steps, DELTA) == a
    # ... and Opacus's fractional orders are the exact ones (direct integration agrees to 1e-5)
    from opacus.accountants.analysis.rdp import _compute_rdp
    for alpha in (1.3, 1.6, 2.5):
        assert _compute_rdp(q, sigma, alpha) == pytest.approx(_rdp_by_integration(q, sigma, alpha), rel=1e-5)


def test_mismatch_raises_with_both_numbers(monkeypatch):
    monkeypatch.setattr(accounting, "reference_epsilon", lambda *a, **k: 3.0)
    with pytest.raises(AccountingMismatch, match=r"opacus ε = 2\.155\d+, dp_accounting ε = 3 "):
        check_epsilon(1.0, 0.05, 10, DELTA)  # opacus says ε ≈ 2.156
    assert issubclass(AccountingMismatch, RuntimeError)
    # an RDP ε *above* the reference is never excused
    monkeypatch.setattr(accounting, "reference_epsilon", lambda *a, **k: 2.0)
    with pytest.raises(AccountingMismatch):
        check_epsilon(1.0, 0.05, 10, DELTA)


@pytest.mark.parametrize("epsilon", [0.5, 2.0, 8.0])
def test_calibrate_then_account_round_trips_rdp(epsilon):
    sigma = calibrate_noise(epsilon, DELTA, 0.05, 300)
    eps = accounted_epsilon(sigma, 0.05, 300, DELTA)
    assert 0.99 * epsilon <= eps <= epsilon
    assert accounted_epsilon(sigma * 0.97, 0.05, 300, DELTA) > epsilon  # σ is (nearly) the smallest that fits


def test_calibrate_then_account_round_trips_prv():
    sigma = calibrate_noise(2.0, DELTA, 0.05, 100, "prv")
    assert 0.99 * 2.0 <= accounted_epsilon(sigma, 0.05, 100, DELTA, "prv") <= 2.0


def test_infinite_epsilon_means_no_noise_and_validation():
    assert calibrate_noise(math.inf, DELTA, 0.05, 100) == 0.0
    assert accounted_epsilon(0.0, 0.05, 100, DELTA) == math.inf
    assert check_epsilon(0.0, 0.05, 100, DELTA, "prv") == math.inf
    assert accounted_epsilon(1.0, 0.05, 0, DELTA) == 0.0
    for bad in (0.0, 1.0, -1e-5, 2.0):
        with pytest.raises(ValueError, match="delta"):
            calibrate_noise(1.0, bad, 0.05, 100)
        with pytest.raises(ValueError, match="delta"):
            accounted_epsilon(1.0, 0.05, 100, bad)
    with pytest.raises(ValueError, match="sample_rate"):
        accounted_epsilon(1.0, 0.0, 100, DELTA)
    with pytest.raises(ValueError, match="epsilon"):
        calibrate_noise(0.0, DELTA, 0.05, 100)
    with pytest.raises(ValueError, match="accountant"):
        accounted_epsilon(1.0, 0.05, 100, DELTA, "gdp")
