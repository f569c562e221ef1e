"""Membership inference attacks on signal arrays: pure functions, higher score = more likely member."""
from ftaudit.attacks.base import AttackInput, AttackSpec, attack_input
from ftaudit.attacks.leave_one_out import PooledScores, leave_one_out, reference_models
from ftaudit.attacks.registry import ATTACKS, resolve_params, run_attack
from ftaudit.attacks.synthetic import gaussian_world, optimal_auc
import ftaudit.attacks.lm  # noqa: E402,F401,I001  (registers the LM attacks)

__all__ = [
    "ATTACKS",
    "AttackInput",
    "AttackSpec",
    "PooledScores",
    "attack_input",
    "gaussian_world",
    "leave_one_out",
    "optimal_auc",
    "reference_models",
    "resolve_params",
    "run_attack",
]
