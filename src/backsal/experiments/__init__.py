"""The paper's experiments as jobs: what each workflow rule computes, as library functions.

The Snakemake scripts under ``workflow/scripts`` only read their inputs and parameters, call one
of these functions and write the result; everything testable lives here.

* :mod:`.settings` — one settings object per stage, built and checked from the config;
* :mod:`.resources` — datasets and models of the config, opened identically by every job;
* :mod:`.pointing` — pointing-game records per shard (per layer, combined, meta-saliency);
* :mod:`.sensitivity` — class-sensitivity records per shard;
* :mod:`.faithfulness` — sanity-check and deletion / insertion records per run;
* :mod:`.meta_examples` — meta-saliency maps of a few images for the meta maps figure;
* :mod:`.evaluate` — evaluation tables from the records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backsal._lazy import lazy_names

#: Every public name -> its submodule, imported on first use (PEP 562): a job that only reads
#: records and writes tables (:mod:`.evaluate`, :mod:`.settings`) imports no torch.
_LAZY = {
    "evaluate_combination": ".evaluate",
    "evaluate_deletion": ".evaluate",
    "evaluate_meta": ".evaluate",
    "evaluate_pointing": ".evaluate",
    "evaluate_sanity": ".evaluate",
    "evaluate_sensitivity": ".evaluate",
    "layer_accuracies": ".evaluate",
    "run_deletion": ".faithfulness",
    "run_sanity": ".faithfulness",
    "run_meta_examples": ".meta_examples",
    "require_examples": ".pointing",
    "run_combination": ".pointing",
    "run_examples": ".pointing",
    "run_meta_pointing": ".pointing",
    "run_pointing": ".pointing",
    "OpenedModel": ".resources",
    "architecture_layers": ".resources",
    "check_device": ".resources",
    "dataset_checksum": ".resources",
    "open_dataset": ".resources",
    "open_model": ".resources",
    "pick_device": ".resources",
    "run_sensitivity": ".sensitivity",
    "CombinationSettings": ".settings",
    "ConfigError": ".settings",
    "DeletionSettings": ".settings",
    "FiguresSettings": ".settings",
    "MetaSettings": ".settings",
    "PointingSettings": ".settings",
    "SanitySettings": ".settings",
    "SensitivitySettings": ".settings",
    "TrainSettings": ".settings",
    "WorkflowSettings": ".settings",
}

if TYPE_CHECKING:
    from .evaluate import (
        evaluate_combination,
        evaluate_deletion,
        evaluate_meta,
        evaluate_pointing,
        evaluate_sanity,
        evaluate_sensitivity,
        layer_accuracies,
    )
    from .faithfulness import run_deletion, run_sanity
    from .meta_examples import run_meta_examples
    from .pointing import (
        require_examples,
        run_combination,
        run_examples,
        run_meta_pointing,
        run_pointing,
    )
    from .resources import (
        OpenedModel,
        architecture_layers,
        check_device,
        dataset_checksum,
        open_dataset,
        open_model,
        pick_device,
    )
    from .sensitivity import run_sensitivity
    from .settings import (
        CombinationSettings,
        ConfigError,
        DeletionSettings,
        FiguresSettings,
        MetaSettings,
        PointingSettings,
        SanitySettings,
        SensitivitySettings,
        TrainSettings,
        WorkflowSettings,
    )


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "CombinationSettings",
    "ConfigError",
    "DeletionSettings",
    "FiguresSettings",
    "MetaSettings",
    "OpenedModel",
    "PointingSettings",
    "SanitySettings",
    "SensitivitySettings",
    "TrainSettings",
    "WorkflowSettings",
    "architecture_layers",
    "check_device",
    "dataset_checksum",
    "evaluate_combination",
    "evaluate_deletion",
    "evaluate_meta",
    "evaluate_pointing",
    "evaluate_sanity",
    "evaluate_sensitivity",
    "layer_accuracies",
    "open_dataset",
    "open_model",
    "pick_device",
    "run_combination",
    "run_deletion",
    "require_examples",
    "run_examples",
    "run_meta_examples",
    "run_meta_pointing",
    "run_pointing",
    "run_sanity",
    "run_sensitivity",
]
