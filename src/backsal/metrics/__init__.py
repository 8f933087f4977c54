"""Metrics of the paper: the pointing game (docs/methods.md §6) and class sensitivity (§7)."""

from backsal.metrics.pointing import (
    INPUT_SMOOTHING,
    POINTING_TOLERANCE,
    SUBSETS,
    argmax_points,
    center_hits,
    center_points,
    evaluate_maps,
    gaussian_smooth,
    locate_points,
    pointing_accuracies,
    pointing_accuracy,
    pointing_hits,
    points_hit,
    resize_maps,
    subset_mask,
)
from backsal.metrics.sensitivity import (
    SensitivitySummary,
    average_ranks,
    extreme_classes,
    spearman,
    summarize_sensitivity,
)

__all__ = [
    "INPUT_SMOOTHING",
    "POINTING_TOLERANCE",
    "SUBSETS",
    "SensitivitySummary",
    "argmax_points",
    "average_ranks",
    "center_hits",
    "center_points",
    "evaluate_maps",
    "extreme_classes",
    "gaussian_smooth",
    "locate_points",
    "pointing_accuracies",
    "pointing_accuracy",
    "pointing_hits",
    "points_hit",
    "resize_maps",
    "spearman",
    "subset_mask",
    "summarize_sensitivity",
]
