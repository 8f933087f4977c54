"""Tables and figures of the model-randomisation sanity check (docs/methods.md §12) and of
deletion / insertion (§13), from the ``sanity`` and ``deletion`` evaluation tables
(columns: :data:`backsal.evaluation.COLUMNS`).

Output names (``out/`` is the ``out_dir`` argument; tables get ``.csv/.md/.tex``, figures
``.pdf/.png``):

=============================================  ==================================================
``out/{dataset}/{model}/sanity``               :func:`sanity_tables`: ρ and SSIM with every block
                                               randomised (cascading), per method × layer
``out/{dataset}/{model}/sanity_depth``         :func:`sanity_figures`: ρ against the depth
``out/{dataset}/{model}/deletion``             :func:`deletion_tables`: deletion / insertion AUC
``out/{dataset}/{model}/deletion_curves``      :func:`deletion_figures`: the mean curves
=============================================  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluation import COLUMNS, stem_of
from ..provenance import validate_provenance
from ._common import (
    MISSING,
    LayerOrder,
    iter_models,
    layers_for,
    ordered_methods,
    output_stem,
    require_columns,
)
from ._render import RenderedTable, write_table
from .figures import _MARKERS, _palette, _style, save_figure

__all__ = [
    "SANITY_STEMS",
    "DELETION_STEMS",
    "deletion_figures",
    "deletion_tables",
    "plot_deletion",
    "plot_sanity",
    "sanity_figures",
    "sanity_tables",
]

#: Output stems: (table, figure) of each stage (:data:`backsal.evaluation.OUTPUTS`).
SANITY_STEMS = (stem_of("sanity_table"), stem_of("sanity_figure"))
DELETION_STEMS = (stem_of("deletion_table"), stem_of("deletion_figure"))


def _value(mean: float, std: float) -> str:
    return MISSING if pd.isna(mean) else f"{mean:.2f} ± {std:.2f}"


def _fully_randomised(rows: pd.DataFrame) -> pd.DataFrame:
    cascading = rows[rows["randomisation"] == "cascading"]
    return cascading[cascading["depth"] == cascading["depth"].max()]


def sanity_tables(
    sanity: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
) -> list[Path]:
    """Per model: Spearman ρ and SSIM between trained and fully randomised maps, per method ×
    layer (cascading randomisation down to the lowest block). The CSV holds every depth."""
    provenance = validate_provenance(provenance)
    require_columns(sanity, COLUMNS["sanity"], "sanity table")
    written: list[Path] = []
    for ds, mdl, arch, rows in iter_models(sanity, "sanity table"):
        where = f"sanity table of {ds}/{mdl}"
        full = _fully_randomised(rows)
        if full.empty:
            raise ValueError(f"{where}: no cascading randomisation rows")
        layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
        methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
        display = pd.DataFrame({"method": methods})
        indexed = full.set_index(["method", "layer"])
        for layer in layers:
            cells = []
            for method in methods:
                if (method, layer) not in indexed.index:
                    cells.append(MISSING)
                    continue
                row = indexed.loc[(method, layer)]
                cells.append(
                    f"ρ {_value(row['spearman_mean'], row['spearman_std'])}; "
                    f"SSIM {_value(row['ssim_mean'], row['ssim_std'])}"
                )
            display[layer] = cells
        blocks = ", ".join(
            rows.sort_values("depth").drop_duplicates("depth")["block"].astype(str).tolist()
        )
        undefined = int(full["undefined"].sum())
        table = RenderedTable(
            display=display,
            csv=rows.drop(columns=["dataset", "model", "arch"]).reset_index(drop=True),
            caption=(
                f"Model-randomisation sanity check on {ds}, model {mdl} ({arch}): Spearman ρ and "
                "SSIM between the maps of the trained model and of the model with every block "
                "randomised (cascading), mean ± std over images. Near 1: the map ignores the "
                "weights (the method fails the check)."
            ),
            label=f"sanity-{ds}-{mdl}",
            align=["l"] + ["r"] * len(layers),
            notes=[
                f"Blocks randomised, top first: {blocks}.",
                f"{undefined} undefined ρ (a constant map) left out of the means.",
                f"{MISSING}: not evaluated at that layer.",
            ],
        )
        written += write_table(table, output_stem(out_dir, ds, mdl, SANITY_STEMS[0]), provenance)
    return written


def plot_sanity(
    sanity: pd.DataFrame,
    *,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Figure:
    """Spearman ρ (trained vs randomised maps) against the randomisation depth: one panel per
    randomisation × layer, one line per method."""
    require_columns(sanity, COLUMNS["sanity"], "sanity table")
    models = list(iter_models(sanity, "sanity table", dataset, model))
    if len(models) > 1:
        raise ValueError(f"sanity figure: several models {[(d, m) for d, m, _, _ in models]}")
    ds, mdl, arch, rows = models[0]
    where = f"sanity figure of {ds}/{mdl}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    modes = [m for m in ("cascading", "independent") if m in set(rows["randomisation"])]
    palette = _palette(methods)
    blocks = rows.sort_values("depth").drop_duplicates("depth")
    labels = blocks["block"].astype(str).tolist()
    with _style():
        figure = Figure(
            figsize=(2.4 * len(layers) + 1.5, 2.3 * len(modes) + 0.6), layout="constrained"
        )
        axes = np.atleast_2d(figure.subplots(len(modes), len(layers), sharey=True, squeeze=False))
        for i, mode in enumerate(modes):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                part = rows[(rows["randomisation"] == mode) & (rows["layer"] == layer)]
                for number, method in enumerate(methods):
                    line = part[part["method"] == method].sort_values("depth")
                    if line.empty:
                        continue
                    ax.plot(
                        line["depth"].to_numpy(),
                        line["spearman_mean"].to_numpy(dtype=float),
                        marker=_MARKERS[number % len(_MARKERS)],
                        color=palette[method],
                        label=method,
                        markersize=3,
                    )
                ax.axhline(0, color="0.6", linewidth=0.6)
                ax.set_ylim(-0.3, 1.05)
                ax.set_xticks(range(1, len(labels) + 1))
                ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=5)
                ax.set_title(f"{layer} ({mode})", fontsize=7)
                if j == 0:
                    ax.set_ylabel("ρ(trained, randomised)")
                if i == len(modes) - 1:
                    ax.set_xlabel("randomised block (top first)")
        handles, names = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside right center", frameon=False, fontsize=6)
        figure.suptitle(f"Model-randomisation sanity check: {ds}, {mdl} ({arch})")
    return figure


def sanity_figures(
    sanity: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
) -> list[Path]:
    """:func:`plot_sanity` for every model → ``out_dir/{dataset}/{model}/sanity_depth``."""
    return _per_model_figures(
        plot_sanity, sanity, "sanity table", SANITY_STEMS[1], out_dir,
        layer_order=layer_order, provenance=provenance, method_order=method_order,
    )  # fmt: skip


def deletion_tables(
    deletion: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
) -> list[Path]:
    """Per model: deletion AUC (lower is better) and insertion AUC (higher is better), mean over
    images, per method × baseline (rows) and layer (columns)."""
    provenance = validate_provenance(provenance)
    require_columns(deletion, COLUMNS["deletion"], "deletion table")
    written: list[Path] = []
    for ds, mdl, arch, rows in iter_models(deletion, "deletion table"):
        where = f"deletion table of {ds}/{mdl}"
        layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
        methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
        baselines = sorted(rows["baseline"].astype(str).unique())
        indexed = rows.set_index(["method", "baseline", "layer", "mode"])["auc_mean"]
        records = []
        for method in methods:
            for baseline in baselines:
                entry = {"method": method, "baseline": baseline}
                for layer in layers:
                    cell = []
                    for mode, short in (("deletion", "del"), ("insertion", "ins")):
                        key = (method, baseline, layer, mode)
                        if key in indexed.index:
                            cell.append(f"{short} {indexed[key]:.3f}")
                    entry[layer] = " / ".join(cell) or MISSING
                records.append(entry)
        display = pd.DataFrame(records, columns=["method", "baseline", *layers])
        steps = len(rows["curve"].iloc[0]) - 1
        table = RenderedTable(
            display=display,
            csv=rows.drop(columns=["dataset", "model", "arch", "curve"]).reset_index(drop=True),
            caption=(
                f"Deletion and insertion on {ds}, model {mdl} ({arch}): area under the target "
                f"class's probability as the map's top pixels are removed (del, lower is better) "
                f"or revealed (ins, higher is better) in {steps} steps, mean over images."
            ),
            label=f"deletion-{ds}-{mdl}",
            align=["l", "l"] + ["r"] * len(layers),
            notes=[
                "Baselines: blur (a Gaussian-blurred copy of the image), zero (the input set to 0).",
                f"{MISSING}: not evaluated at that layer.",
            ],
        )
        written += write_table(table, output_stem(out_dir, ds, mdl, DELETION_STEMS[0]), provenance)
    return written


def plot_deletion(
    deletion: pd.DataFrame,
    *,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Figure:
    """Mean deletion and insertion curves: one panel per (mode, baseline) × layer, one line per
    method, AUC in the legend of the first layer's panel."""
    require_columns(deletion, COLUMNS["deletion"], "deletion table")
    models = list(iter_models(deletion, "deletion table", dataset, model))
    if len(models) > 1:
        raise ValueError(f"deletion figure: several models {[(d, m) for d, m, _, _ in models]}")
    ds, mdl, arch, rows = models[0]
    where = f"deletion figure of {ds}/{mdl}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    panels = [
        (mode, baseline)
        for mode in ("deletion", "insertion")
        for baseline in sorted(rows["baseline"].astype(str).unique())
        if ((rows["mode"] == mode) & (rows["baseline"] == baseline)).any()
    ]
    palette = _palette(methods)
    with _style():
        figure = Figure(
            figsize=(2.3 * len(layers) + 1.5, 2.0 * len(panels) + 0.6), layout="constrained"
        )
        axes = figure.subplots(len(panels), len(layers), sharex=True, sharey=True, squeeze=False)
        for i, (mode, baseline) in enumerate(panels):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                part = rows[
                    (rows["mode"] == mode)
                    & (rows["baseline"] == baseline)
                    & (rows["layer"] == layer)
                ]
                for method in methods:
                    line = part[part["method"] == method]
                    if line.empty:
                        continue
                    curve = np.asarray(line["curve"].iloc[0], dtype=float)
                    x = np.linspace(0, 1, curve.size)
                    ax.plot(x, curve, color=palette[method], label=method, linewidth=1)
                ax.set_title(f"{layer}: {mode}, {baseline}", fontsize=7)
                if j == 0:
                    ax.set_ylabel("target probability")
                if i == len(panels) - 1:
                    ax.set_xlabel(
                        "fraction of pixels " + ("removed" if mode == "deletion" else "revealed")
                    )
        handles, names = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside right center", frameon=False, fontsize=6)
        figure.suptitle(f"Deletion and insertion: {ds}, {mdl} ({arch}); mean over images")
    return figure


def deletion_figures(
    deletion: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
) -> list[Path]:
    """:func:`plot_deletion` for every model → ``out_dir/{dataset}/{model}/deletion_curves``."""
    return _per_model_figures(
        plot_deletion, deletion, "deletion table", DELETION_STEMS[1], out_dir,
        layer_order=layer_order, provenance=provenance, method_order=method_order,
    )  # fmt: skip


def _per_model_figures(
    plot: Callable[..., Figure],
    table: pd.DataFrame,
    what: str,
    stem: str,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None,
) -> list[Path]:
    """One figure per (dataset, model) of ``table``, drawn by ``plot`` and saved under ``stem``."""
    provenance = validate_provenance(provenance)
    written: list[Path] = []
    for ds, mdl, _, _ in iter_models(table, what):
        figure = plot(
            table, layer_order=layer_order, method_order=method_order, dataset=ds, model=mdl
        )
        written += save_figure(figure, output_stem(out_dir, ds, mdl, stem), provenance)
    return written
