"""Per-image class sensitivity (docs/methods.md §7): Spearman ρ between the maps of the most and
the least likely class against the model's probability of the image's ground-truth class, one
panel per method, from the sensitivity records (one row per image, method, layer and lr).

Output: ``out/{dataset}/{model}/sensitivity_scatter.{pdf,png}`` (:func:`sensitivity_scatter_figures`).
The jobs' record files do not name their run: :func:`label_records` adds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluation import P_TRUE, RUN_COLUMNS, stem_of
from ..provenance import validate_provenance
from ._common import iter_models, ordered_methods, output_stem, require_columns
from .figures import _palette, _style, save_figure

__all__ = [
    "SCATTER_COLUMNS",
    "label_records",
    "plot_sensitivity_scatter",
    "sensitivity_scatter_figures",
]

#: What the figure reads: sensitivity records labelled with their run.
SCATTER_COLUMNS = (*RUN_COLUMNS, "method", "layer", "lr", "rho", P_TRUE)
#: Stem of the figure (:data:`backsal.evaluation.OUTPUTS`).
SCATTER_STEM = stem_of("sensitivity_scatter_figure")


def label_records(
    records: Mapping[tuple[str, str], pd.DataFrame], evaluation: pd.DataFrame
) -> pd.DataFrame:
    """The records of each ``(dataset, model)`` run, labelled with their run, in one table.

    Args:
        records: ``(dataset, model)`` -> that run's sensitivity records (all its shards).
        evaluation: The sensitivity evaluation table, which gives each run's ``arch``.

    Raises:
        ValueError: A run the evaluation table does not hold.
    """
    require_columns(evaluation, RUN_COLUMNS, "sensitivity table")
    arch_of = {
        (str(d), str(m)): str(a)
        for d, m, a in evaluation[list(RUN_COLUMNS)].drop_duplicates().itertuples(index=False)
    }
    labelled = []
    for (dataset, model), frame in records.items():
        if (dataset, model) not in arch_of:
            raise ValueError(
                f"sensitivity records of {dataset}/{model}: the sensitivity table has no such "
                f"run (it has {sorted(arch_of)})"
            )
        labelled.append(frame.assign(dataset=dataset, model=model, arch=arch_of[dataset, model]))
    return pd.concat(labelled, ignore_index=True)


def plot_sensitivity_scatter(
    records: pd.DataFrame,
    layer: str,
    *,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Figure:
    """ρ (plain maps, lr = 0) against the ground-truth class probability at ``layer``; each
    panel gives Spearman's correlation of the two over the images, and how many ρ are undefined.
    """
    require_columns(records, SCATTER_COLUMNS, "sensitivity records")
    models = list(iter_models(records, "sensitivity records", dataset, model))
    if len(models) > 1:
        raise ValueError(f"scatter: several models {[(d, m) for d, m, _, _ in models]}")
    ds, mdl, arch, rows = models[0]
    rows = rows[(rows["lr"] == 0) & (rows["layer"].astype(str) == layer)]
    if rows.empty:
        raise ValueError(f"scatter of {ds}/{mdl}: no plain (lr = 0) records at layer {layer!r}")
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    palette = _palette(methods)
    columns = min(4, len(methods))
    lines = math.ceil(len(methods) / columns)
    with _style():
        figure = Figure(figsize=(2.4 * columns + 0.4, 2.3 * lines + 0.5), layout="constrained")
        axes = figure.subplots(lines, columns, sharex=True, sharey=True, squeeze=False)
        for ax in axes.flat[len(methods) :]:
            ax.set_axis_off()
        for ax, method in zip(axes.flat, methods, strict=False):
            part = rows[rows["method"] == method]
            rho = part["rho"].to_numpy(dtype=float)
            probability = part[P_TRUE].to_numpy(dtype=float)
            defined = np.isfinite(rho) & np.isfinite(probability)
            ax.scatter(probability[defined], rho[defined], s=6, color=palette[method], alpha=0.7)
            trend = (
                pd.Series(probability[defined]).corr(pd.Series(rho[defined]), method="spearman")
                if defined.sum() > 2
                else float("nan")
            )
            ax.set_title(
                f"{method}\nSpearman {trend:.2f}; {int((~defined).sum())} undefined", fontsize=7
            )
            ax.set_xlim(0, 1)
            ax.set_ylim(-1, 1)
        for ax in axes[-1]:
            ax.set_xlabel("p(ground-truth class)")
        for ax in axes[:, 0]:
            ax.set_ylabel("ρ, most vs least likely")
        figure.suptitle(f"Per-image class sensitivity at {layer}: {ds}, {mdl} ({arch})")
    return figure


def sensitivity_scatter_figures(
    records: pd.DataFrame,
    out_dir: str | Path,
    *,
    layers: Mapping[str, str],
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
) -> list[Path]:
    """:func:`plot_sensitivity_scatter` per model at ``layers[model]`` →
    ``out_dir/{dataset}/{model}/sensitivity_scatter``."""
    provenance = validate_provenance(provenance)
    written: list[Path] = []
    for ds, mdl, _, _ in iter_models(records, "sensitivity records"):
        figure = plot_sensitivity_scatter(
            records, layers[mdl], method_order=method_order, dataset=ds, model=mdl
        )
        written += save_figure(figure, output_stem(out_dir, ds, mdl, SCATTER_STEM), provenance)
    return written
