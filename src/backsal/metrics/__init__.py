"""Metrics: the paper's pointing game (docs/methods.md §6) and class sensitivity (§7); the
model-randomisation sanity check (docs/methods.md §12) and deletion / insertion (§13)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backsal._lazy import lazy_names

#: Every public name -> its submodule, imported on first use (PEP 562): the pointing score
#: (:mod:`.scores`) then imports without torch.
_LAZY = {
    "BASELINES": ".deletion",
    "DeletionResult": ".deletion",
    "deletion_insertion": ".deletion",
    "INPUT_SMOOTHING": ".pointing",
    "MaskGroups": ".pointing",
    "POINTING_TOLERANCE": ".pointing",
    "SUBSETS": ".pointing",
    "argmax_points": ".pointing",
    "center_hits": ".pointing",
    "center_points": ".pointing",
    "evaluate_maps": ".pointing",
    "gaussian_smooth": ".pointing",
    "group_masks": ".pointing",
    "locate_points": ".pointing",
    "pointing_accuracies": ".scores",
    "pointing_accuracy": ".scores",
    "pointing_hits": ".pointing",
    "points_hit": ".pointing",
    "resize_maps": ".pointing",
    "subset_mask": ".scores",
    "RANDOMISATIONS": ".sanity",
    "SSIMStatistics": ".sanity",
    "SanityResult": ".sanity",
    "model_randomisation": ".sanity",
    "model_randomisations": ".sanity",
    "randomised_parameters": ".sanity",
    "ssim": ".sanity",
    "ssim_statistics": ".sanity",
    "RankedMaps": ".sensitivity",
    "SensitivitySummary": ".sensitivity",
    "average_ranks": ".sensitivity",
    "extreme_classes": ".sensitivity",
    "rank_maps": ".sensitivity",
    "spearman": ".sensitivity",
    "summarize_sensitivity": ".sensitivity",
    "true_class_probability": ".sensitivity",
}

if TYPE_CHECKING:
    from backsal.metrics.deletion import BASELINES, DeletionResult, deletion_insertion
    from backsal.metrics.pointing import (
        INPUT_SMOOTHING,
        POINTING_TOLERANCE,
        SUBSETS,
        MaskGroups,
        argmax_points,
        center_hits,
        center_points,
        evaluate_maps,
        gaussian_smooth,
        group_masks,
        locate_points,
        pointing_hits,
        points_hit,
        resize_maps,
    )
    from backsal.metrics.sanity import (
        RANDOMISATIONS,
        SanityResult,
        SSIMStatistics,
        model_randomisation,
        model_randomisations,
        randomised_parameters,
        ssim,
        ssim_statistics,
    )
    from backsal.metrics.scores import pointing_accuracies, pointing_accuracy, subset_mask
    from backsal.metrics.sensitivity import (
        RankedMaps,
        SensitivitySummary,
        average_ranks,
        extreme_classes,
        rank_maps,
        spearman,
        summarize_sensitivity,
        true_class_probability,
    )


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "BASELINES",
    "RANDOMISATIONS",
    "DeletionResult",
    "RankedMaps",
    "SSIMStatistics",
    "SanityResult",
    "deletion_insertion",
    "model_randomisation",
    "model_randomisations",
    "randomised_parameters",
    "ssim",
    "ssim_statistics",
    "INPUT_SMOOTHING",
    "MaskGroups",
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
    "group_masks",
    "locate_points",
    "pointing_accuracies",
    "pointing_accuracy",
    "pointing_hits",
    "points_hit",
    "rank_maps",
    "resize_maps",
    "spearman",
    "subset_mask",
    "summarize_sensitivity",
    "true_class_probability",
]
