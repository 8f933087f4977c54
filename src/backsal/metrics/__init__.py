"""Metrics: the paper's pointing game (docs/methods.md §6) and class sensitivity (§7); the
model-randomisation sanity check (docs/methods.md §12) and deletion / insertion (§13)."""

from backsal.metrics.deletion import (
    BASELINES,
    DeletionResult,
    deletion_insertion,
)
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
from backsal.metrics.sanity import (
    RANDOMISATIONS,
    SanityResult,
    model_randomisation,
    randomised_parameters,
    ssim,
)
from backsal.metrics.sensitivity import (
    SensitivitySummary,
    average_ranks,
    extreme_classes,
    spearman,
    summarize_sensitivity,
    true_class_probability,
)

__all__ = [
    "BASELINES",
    "RANDOMISATIONS",
    "DeletionResult",
    "SanityResult",
    "deletion_insertion",
    "model_randomisation",
    "randomised_parameters",
    "ssim",
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
    "true_class_probability",
]
