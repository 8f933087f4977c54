"""The paper's experiments as jobs: what each workflow rule computes, as library functions.

The Snakemake scripts under ``workflow/scripts`` only read their inputs and parameters, call one
of these functions and write the result; everything testable lives here.

* :mod:`.resources` — datasets and models of the config, opened identically by every job;
* :mod:`.pointing` — pointing-game records per shard (per layer, combined, meta-saliency);
* :mod:`.sensitivity` — class-sensitivity records per shard;
* :mod:`.evaluate` — evaluation tables from the records.
"""

from .evaluate import (
    combination_table,
    layer_accuracies,
    meta_table,
    pointing_table,
    sensitivity_table,
)
from .pointing import Examples, run_combination, run_examples, run_meta_pointing, run_pointing
from .resources import OpenedModel, dataset_checksum, open_dataset, open_model, pick_device
from .sensitivity import run_sensitivity

__all__ = [
    "Examples",
    "OpenedModel",
    "combination_table",
    "dataset_checksum",
    "layer_accuracies",
    "meta_table",
    "open_dataset",
    "open_model",
    "pick_device",
    "pointing_table",
    "run_combination",
    "run_examples",
    "run_meta_pointing",
    "run_pointing",
    "run_sensitivity",
    "sensitivity_table",
]
