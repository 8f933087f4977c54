"""The paper's experiments as jobs: what each workflow rule computes, as library functions.

The Snakemake scripts under ``workflow/scripts`` only read their inputs and parameters, call one
of these functions and write the result; everything testable lives here.

* :mod:`.settings` — one settings object per stage, built and checked from the config;
* :mod:`.resources` — datasets and models of the config, opened identically by every job;
* :mod:`.pointing` — pointing-game records per shard (per layer, combined, meta-saliency);
* :mod:`.sensitivity` — class-sensitivity records per shard;
* :mod:`.evaluate` — evaluation tables from the records.
"""

from .evaluate import (
    evaluate_combination,
    evaluate_meta,
    evaluate_pointing,
    evaluate_sensitivity,
    layer_accuracies,
)
from .pointing import run_combination, run_examples, run_meta_pointing, run_pointing
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
    FiguresSettings,
    MetaSettings,
    PointingSettings,
    SensitivitySettings,
    TrainSettings,
    WorkflowSettings,
)

__all__ = [
    "CombinationSettings",
    "ConfigError",
    "FiguresSettings",
    "MetaSettings",
    "OpenedModel",
    "PointingSettings",
    "SensitivitySettings",
    "TrainSettings",
    "WorkflowSettings",
    "architecture_layers",
    "check_device",
    "dataset_checksum",
    "evaluate_combination",
    "evaluate_meta",
    "evaluate_pointing",
    "evaluate_sensitivity",
    "layer_accuracies",
    "open_dataset",
    "open_model",
    "pick_device",
    "run_combination",
    "run_examples",
    "run_meta_pointing",
    "run_pointing",
    "run_sensitivity",
]
