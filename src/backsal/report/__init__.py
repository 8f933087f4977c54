"""Render the paper's tables and figures from the workflow's evaluation tables.

The workflow's final rules call these functions from thin notebooks (one per figure family); each
function takes the evaluation DataFrames, an output folder, options and a provenance record
(:func:`~backsal.provenance.collect`), writes its files atomically with the provenance
embedded, and returns the written paths. See :mod:`.tables` and :mod:`.figures` for the output
names, :mod:`backsal.provenance` for where the provenance sits in each format, and :mod:`.findings` for
the criteria that decide whether the paper's claims hold on our numbers.
"""

from typing import TYPE_CHECKING

from backsal._lazy import lazy_names

# Submodules load on first use: a job that only writes provenance does not pay for seaborn.
_LAZY = {
    # the example-maps file format belongs to the evaluation schema, shared with the jobs
    "Examples": "backsal.evaluation",
    "Finding": ".findings",
    "best_single_layers": ".tables",
    "combination_table": ".tables",
    "compare_with_reference": ".tables",
    "describe_findings": ".findings",
    "grid_figure": ".figures",
    "load_reference": ".tables",
    "meta_figure": ".figures",
    "meta_tables": ".tables",
    "plot_grid": ".figures",
    "plot_meta": ".figures",
    "plot_pointing_layers": ".figures",
    "plot_qualitative": ".figures",
    "plot_sensitivity": ".figures",
    "pointing_layers_figure": ".figures",
    "pointing_table": ".tables",
    "qualitative_figure": ".figures",
    "read_examples": "backsal.evaluation",
    "reference_comparison": ".tables",
    "save_figure": ".figures",
    "sensitivity_figure": ".figures",
    "sensitivity_table": ".tables",
    "write_findings": ".findings",
}

if TYPE_CHECKING:
    from ..evaluation import Examples, read_examples
    from .figures import (
        grid_figure,
        meta_figure,
        plot_grid,
        plot_meta,
        plot_pointing_layers,
        plot_qualitative,
        plot_sensitivity,
        pointing_layers_figure,
        qualitative_figure,
        save_figure,
        sensitivity_figure,
    )
    from .findings import Finding, describe_findings, write_findings
    from .tables import (
        best_single_layers,
        combination_table,
        compare_with_reference,
        load_reference,
        meta_tables,
        pointing_table,
        reference_comparison,
        sensitivity_table,
    )


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Examples",
    "Finding",
    "best_single_layers",
    "combination_table",
    "compare_with_reference",
    "describe_findings",
    "grid_figure",
    "load_reference",
    "meta_figure",
    "meta_tables",
    "plot_grid",
    "plot_meta",
    "plot_pointing_layers",
    "plot_qualitative",
    "plot_sensitivity",
    "pointing_layers_figure",
    "pointing_table",
    "qualitative_figure",
    "read_examples",
    "reference_comparison",
    "save_figure",
    "sensitivity_figure",
    "sensitivity_table",
    "write_findings",
]
