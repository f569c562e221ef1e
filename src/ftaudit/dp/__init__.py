"""Differentially private training: accounting, Poisson sampling and the DP-SGD gradient.

The trainers that use them live in :mod:`ftaudit.train.dp_trainers`.
"""
from ftaudit.dp.accounting import (AccountingMismatch, accounted_epsilon, calibrate_noise, check_epsilon,
                                   reference_epsilon)
from ftaudit.dp.per_sample import DPParams, dp_gradient, expected_batch_size
from ftaudit.dp.sampling import poisson_schedule, steps_for

__all__ = ["AccountingMismatch", "accounted_epsilon", "calibrate_noise", "check_epsilon", "reference_epsilon",
           "DPParams", "dp_gradient", "expected_batch_size", "poisson_schedule", "steps_for"]
