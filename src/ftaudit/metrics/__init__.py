"""Attack metrics: ROC, AUC, TPR at low FPR, and bootstrap confidence intervals."""
from ftaudit.metrics.roc import (
    DEFAULT_FPRS,
    AttackMetrics,
    Estimate,
    RateEstimate,
    auc,
    mean_ci,
    roc_curve,
    summarize,
    tpr_at_fpr,
    weighted_roc_stats,
)

__all__ = [
    "DEFAULT_FPRS",
    "AttackMetrics",
    "Estimate",
    "RateEstimate",
    "auc",
    "mean_ci",
    "roc_curve",
    "summarize",
    "tpr_at_fpr",
    "weighted_roc_stats",
]
