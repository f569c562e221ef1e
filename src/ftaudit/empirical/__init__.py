"""Differential-privacy audits: empirical lower bounds on epsilon from canary membership guesses.

:mod:`~ftaudit.empirical.epsilon` uses many training runs (Clopper-Pearson on one threshold's rates);
:mod:`~ftaudit.empirical.one_run` uses a single run with many independently included canaries.
"""
from ftaudit.empirical.epsilon import (
    Counts,
    EpsilonBound,
    cp_lower,
    cp_upper,
    epsilon_from_counts,
    epsilon_from_scores,
)
from ftaudit.empirical.one_run import (
    OneRunBound,
    one_run_epsilon,
    one_run_epsilon_from_counts,
    one_run_p_value,
)

__all__ = [
    "Counts",
    "EpsilonBound",
    "OneRunBound",
    "cp_lower",
    "cp_upper",
    "epsilon_from_counts",
    "epsilon_from_scores",
    "one_run_epsilon",
    "one_run_epsilon_from_counts",
    "one_run_p_value",
]
