"""The paper's figures, rendered with seaborn from the workflow's evaluation tables.

Each family has a ``plot_*`` function that returns a :class:`matplotlib.figure.Figure` for one
(dataset, model) — call it from a notebook to restyle — and a ``*_figure`` function that plots every
model in the table and writes PDF + PNG with the provenance embedded (see
:mod:`backsal.provenance`), returning the written paths. Figures are built on
``matplotlib.figure.Figure`` directly, not through pyplot: no backend is needed (a SLURM job has no
display), and a loop over many models does not pile up figures in pyplot's registry.

Output names (``out/`` is the ``out_dir`` argument; the stems are
:data:`backsal.evaluation.OUTPUTS`):

=================================================  ==============================================
``out/{dataset}/{model}/pointing_layers``          :func:`pointing_layers_figure`
``out/{dataset}/{model}/grid_{subset}``            :func:`grid_figure` (subset ``all`` by default)
``out/{dataset}/{model}/sensitivity_layers``       :func:`sensitivity_figure` (plain maps)
``out/{dataset}/{model}/meta``                     :func:`meta_figure` (every model in meta and/or
                                                   sensitivity)
``out/qualitative_{k:03d}``                        :func:`qualitative_figure`, ``k`` = the example's
                                                   index in the ``.npz`` (pass a per-model out)
=================================================  ==============================================

Each stem gets ``.pdf`` and ``.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from ..evaluation import (
    CENTER,
    COLUMNS,
    FIGURE_SUFFIXES,
    SUBSETS,
    Examples,
    read_examples,
    stem_of,
)
from ..names import PHASE1, PHASE2
from ..provenance import atomic_path, figure_metadata, validate_provenance
from ..viz import grid
from ._common import (
    LayerOrder,
    check_fraction,
    check_unique,
    is_grid_method,
    iter_models,
    layers_for,
    ordered_methods,
    output_stem,
    require_columns,
    suffixed,
)
from .tables import (
    check_sensitivity,
    plain_sensitivity,
)

__all__ = [
    "grid_figure",
    "meta_figure",
    "plot_grid",
    "plot_meta",
    "plot_pointing_layers",
    "plot_qualitative",
    "plot_sensitivity",
    "pointing_layers_figure",
    "qualitative_figure",
    "save_figure",
    "sensitivity_figure",
]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d")


@contextmanager
def _style() -> Iterator[None]:
    """The report's look, applied only while a figure is built (no global rcParams change)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        yield


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))
    return dict(zip(methods, colors, strict=True))


def _one_model(
    frame: pd.DataFrame, what: str, dataset: str | None, model: str | None
) -> tuple[str, str, str, pd.DataFrame]:
    models = list(iter_models(frame, what, dataset, model))
    if len(models) > 1:
        names = [(d, m) for d, m, _, _ in models]
        raise ValueError(f"{what}: several models {names}; pass dataset= and model=")
    return models[0]


# zlib level 3 instead of PIL's 6 for the PNG files: the map grids' PNGs are 15% larger and
# written in half the time (1.1 s -> 0.6 s for a 7 × 6 grid at 150 dpi).
_ENCODING: dict[str, dict[str, Any]] = {"png": {"pil_kwargs": {"compress_level": 3}}}


def save_figure(
    figure: Figure,
    stem: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    *,
    title: str | None = None,
    dpi: int = 150,
) -> list[Path]:
    """Write ``stem.pdf`` and ``stem.png`` atomically, each with the provenance embedded.

    Args:
        figure: The figure.
        stem: Output path without suffix.
        provenance: Record from :func:`backsal.provenance.collect`.
        title: Document title (PDF ``Title``, PNG ``Title`` chunk); default: the suptitle.
    """
    provenance = validate_provenance(provenance)
    if title is None:
        title = figure.get_suptitle() or None
    written = []
    with _laid_out_once(figure, dpi) as bbox:
        for suffix in FIGURE_SUFFIXES:
            fmt = suffix.lstrip(".")
            target = suffixed(Path(stem), suffix)
            with atomic_path(target) as tmp:
                figure.savefig(
                    tmp,
                    format=fmt,
                    dpi=dpi,
                    bbox_inches=bbox,
                    metadata=figure_metadata(provenance, fmt, title),
                    **_ENCODING.get(fmt, {}),
                )
            written.append(target)
    return written


@contextmanager
def _laid_out_once(figure: Figure, dpi: float) -> Iterator[Bbox]:
    """Lay ``figure`` out once at ``dpi`` and yield its tight bounding box (inches, padded as
    ``bbox_inches="tight"`` pads it), the layout engine paused until the block ends.

    ``savefig(bbox_inches="tight")`` draws a figure twice per format (once to measure it) and
    its constrained layout runs at each draw: for the map grids, with hundreds of axes, that
    was a sixth of their time. Both formats take the positions and the box computed here.
    """
    # at the PNG's dpi, as savefig lays it out (the layout's pads depend on it)
    shown_dpi = figure.dpi
    figure.set_dpi(dpi)
    try:
        figure.draw_without_rendering()  # runs the layout engine
        pad = float(matplotlib.rcParams["savefig.pad_inches"])
        bbox = figure.get_tightbbox().padded(pad)
    finally:
        figure.set_dpi(shown_dpi)
    engine = figure.get_layout_engine()
    # no engine at all, not "none" (a placeholder, for which savefig still draws the figure
    # once more); the rc settings would otherwise turn None into an engine
    with _no_default_layout():
        figure.set_layout_engine(None)
    try:
        yield bbox
    finally:
        with _no_default_layout():
            figure.set_layout_engine(engine)


def _no_default_layout() -> AbstractContextManager[None]:
    """rc settings under which ``set_layout_engine(None)`` leaves a figure without an engine."""
    return matplotlib.rc_context(
        {"figure.autolayout": False, "figure.constrained_layout.use": False}
    )


def _layer_axis(ax: Axes, layers: Sequence[str]) -> None:
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_xlabel("layer (shallow → deep)")


# --------------------------------------------------------------------------------------------
# Pointing accuracy across layers
# --------------------------------------------------------------------------------------------


def plot_pointing_layers(
    pointing: pd.DataFrame,
    *,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Figure:
    """Pointing accuracy (%) vs layer, one line per named method, one panel per subset.

    The center baseline is a dashed horizontal line. A method missing at a layer leaves a gap in
    its line rather than a segment bridging the layer (seaborn's lineplot drops missing values
    and would draw that bridge, so the lines are drawn with matplotlib in seaborn's style).
    """
    require_columns(pointing, COLUMNS["pointing"], "pointing table")
    check_fraction(pointing, "accuracy", "pointing table")
    ds, mdl, arch, rows = _one_model(pointing, "pointing table", dataset, model)
    named_rows = rows[~rows["method"].astype(str).map(is_grid_method) & (rows["method"] != CENTER)]
    if named_rows.empty:
        raise ValueError(f"pointing figure of {ds}/{mdl}: no named method rows")
    where = f"pointing figure of {ds}/{mdl}"
    layers = layers_for(layer_order, named_rows["layer"].astype(str).tolist(), mdl, arch, where)
    methods = ordered_methods(named_rows["method"].astype(str).tolist(), method_order)
    palette = _palette(methods)
    subsets = [s for s in SUBSETS if s in set(rows["subset"])]
    subsets += sorted(set(rows["subset"].astype(str)) - set(subsets))
    with _style():
        figure = Figure(figsize=(4.2 * len(subsets) + 2.2, 3.6), layout="constrained")
        axes = figure.subplots(1, len(subsets), sharey=True, squeeze=False)[0]
        for ax, subset in zip(axes, subsets, strict=True):
            part = named_rows[named_rows["subset"] == subset]
            grid = part.pivot_table(
                index="method", columns="layer", values="accuracy", aggfunc="first"
            )
            grid = grid.reindex(index=methods, columns=layers)
            for number, method in enumerate(methods):
                ax.plot(
                    range(len(layers)),
                    100 * grid.loc[method].to_numpy(dtype=float),
                    marker=_MARKERS[number % len(_MARKERS)],
                    color=palette[method],
                    label=method,
                )
            center = rows.loc[(rows["method"] == CENTER) & (rows["subset"] == subset), "accuracy"]
            if len(center):
                ax.axhline(100 * float(center.iloc[0]), color="0.3", linestyle="--", label="center")
            _layer_axis(ax, layers)
            ax.set_title(f"subset: {subset}")
        axes[0].set_ylabel("pointing accuracy (%)")
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside right center", frameon=False)
        figure.suptitle(f"Pointing accuracy across layers: {ds}, {mdl} ({arch})")
    return figure


def pointing_layers_figure(
    pointing: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """:func:`plot_pointing_layers` for every model → ``out_dir/{dataset}/{model}/pointing_layers``."""
    provenance = validate_provenance(provenance)
    require_columns(pointing, COLUMNS["pointing"], "pointing table")
    written: list[Path] = []
    for ds, mdl, _, _ in iter_models(pointing, "pointing table", dataset, model):
        figure = plot_pointing_layers(
            pointing, layer_order=layer_order, method_order=method_order, dataset=ds, model=mdl
        )
        written += save_figure(
            figure, output_stem(out_dir, ds, mdl, stem_of("pointing_layers_figure")), provenance
        )
    return written


# --------------------------------------------------------------------------------------------
# Phase-1 × phase-2 grid
# --------------------------------------------------------------------------------------------


def _grid_phases(rows: pd.DataFrame) -> pd.DataFrame:
    """Grid rows with phase1/phase2 filled from the name where the columns are empty."""
    rows = rows[rows["method"].astype(str).map(is_grid_method)].copy()
    from_name = rows["method"].astype(str).str.partition("/")
    rows["phase1"] = rows["phase1"].where(rows["phase1"].notna(), from_name[0])
    rows["phase2"] = rows["phase2"].where(rows["phase2"].notna(), from_name[2])
    return rows


def plot_grid(
    pointing: pd.DataFrame,
    *,
    layer_order: LayerOrder,
    dataset: str | None = None,
    model: str | None = None,
    subset: str = "all",
    layers: Sequence[str] | None = None,
) -> Figure:
    """Heat maps of pointing accuracy (%): phase 1 (rows) × phase 2 (columns), one per layer.

    All panels share one colour scale; values are written in the cells; a combination not
    evaluated at a layer (e.g. ``real_conv`` where there is no conv) is left blank. ``layers``
    limits the panels (default: every layer with grid entries).
    """
    require_columns(pointing, COLUMNS["pointing"], "pointing table")
    check_fraction(pointing, "accuracy", "pointing table")
    ds, mdl, arch, rows = _one_model(pointing, "pointing table", dataset, model)
    rows = rows[rows["subset"] == subset]
    grid_rows = _grid_phases(rows)
    if layers is not None:
        grid_rows = grid_rows[grid_rows["layer"].astype(str).isin([str(x) for x in layers])]
    if grid_rows.empty:
        raise ValueError(
            f"grid figure of {ds}/{mdl}: no grid entries (phase1/phase2) in subset {subset!r}"
        )
    where = f"grid figure of {ds}/{mdl}"
    layers = layers_for(layer_order, grid_rows["layer"].astype(str).tolist(), mdl, arch, where)
    present1, present2 = set(grid_rows["phase1"]), set(grid_rows["phase2"])
    phase1 = [p for p in PHASE1 if p in present1] + sorted(present1 - set(PHASE1))
    phase2 = [p for p in PHASE2 if p in present2] + sorted(present2 - set(PHASE2))
    values = 100 * grid_rows["accuracy"].astype(float)
    vmin, vmax = float(values.min()), float(values.max())
    columns = min(len(layers), 3)
    lines = math.ceil(len(layers) / columns)
    # "white": the whitegrid lines would run through the blank (not evaluated) cells
    with _style(), sns.axes_style("white"):
        figure = Figure(
            figsize=(1.0 + 0.75 * len(phase2) * columns, 0.6 + 0.45 * len(phase1) * lines),
            layout="constrained",
        )
        axes = figure.subplots(lines, columns, squeeze=False)
        for number, ax in enumerate(axes.flat):
            if number >= len(layers):
                ax.set_visible(False)
                continue
            layer = layers[number]
            part = grid_rows[grid_rows["layer"].astype(str) == layer]
            table = part.pivot_table(
                index="phase1", columns="phase2", values="accuracy", aggfunc="first"
            )
            table = 100 * table.reindex(index=phase1, columns=phase2).astype(float)
            sns.heatmap(
                table,
                ax=ax,
                vmin=vmin,
                vmax=vmax,
                cmap="viridis",
                annot=True,
                fmt=".1f",
                annot_kws={"fontsize": 6},
                cbar=False,
                linewidths=0.5,
                linecolor="white",
            )
            ax.set_title(layer)
            ax.set_xlabel("phase 2" if number // columns == lines - 1 else "")
            ax.set_ylabel("phase 1" if number % columns == 0 else "")
            ax.tick_params(axis="x", rotation=45)
            ax.tick_params(axis="y", rotation=0)
        mappable = next(
            ax.collections[0] for ax in axes.flat if ax.get_visible() and ax.collections
        )
        figure.colorbar(mappable, ax=axes, label="pointing accuracy (%)", shrink=0.8)
        center = rows.loc[rows["method"] == CENTER, "accuracy"]
        baseline = f"; center baseline {100 * float(center.iloc[0]):.1f}%" if len(center) else ""
        figure.suptitle(
            f"Phase 1 × phase 2 pointing accuracy (%)\n{ds}, {mdl} ({arch}), subset {subset}{baseline}"
        )
    return figure


def grid_figure(
    pointing: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    subset: str = "all",
    dataset: str | None = None,
    model: str | None = None,
    layers: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """:func:`plot_grid` for every model with grid entries → ``out_dir/{dataset}/{model}/grid_{subset}``.

    ``layers``: the panels, one list or a mapping model -> list (default: every layer).
    """
    provenance = validate_provenance(provenance)
    require_columns(pointing, COLUMNS["pointing"], "pointing table")
    written: list[Path] = []
    for ds, mdl, _, rows in iter_models(pointing, "pointing table", dataset, model):
        if not rows["method"].astype(str).map(is_grid_method).any():
            continue  # a model evaluated on named methods only has no grid to show
        shown = layers.get(mdl) if isinstance(layers, Mapping) else layers
        figure = plot_grid(
            pointing, layer_order=layer_order, dataset=ds, model=mdl, subset=subset, layers=shown
        )
        written += save_figure(
            figure, output_stem(out_dir, ds, mdl, stem_of("grid_figure", subset=subset)), provenance
        )
    if not written:
        raise ValueError("grid figure: no model has grid entries ('<phase1>/<phase2>' methods)")
    return written


# --------------------------------------------------------------------------------------------
# Class sensitivity
# --------------------------------------------------------------------------------------------


def _undefined_label(method: str, undefined: int) -> str:
    return f"{method} ({undefined} undefined)"


def plot_sensitivity(
    sensitivity: pd.DataFrame,
    *,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Figure:
    """Mean Spearman ρ (± std) of the plain maps (lr = 0) per method and layer.

    Undefined ρ (constant maps) are visible three ways: each legend entry gives the method's
    count over all layers, the title gives the total, and every point with undefined cases is
    annotated with its count.
    """
    plain = plain_sensitivity(sensitivity, "sensitivity figure")
    ds, mdl, arch, rows = _one_model(plain, "sensitivity table (lr = 0)", dataset, model)
    where = f"sensitivity figure of {ds}/{mdl}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
    check_unique(rows, ["method", "layer"], where)
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    palette = _palette(methods)
    width = 0.7 / max(len(methods), 1)  # methods side by side within a layer's slot
    total_undefined = int(rows["undefined"].sum())
    with _style():
        figure = Figure(figsize=(max(5.0, 0.9 * len(layers) + 2.5), 3.8), layout="constrained")
        ax = figure.subplots()
        for number, method in enumerate(methods):
            part = rows[rows["method"] == method]
            part = part.set_index(part["layer"].astype(str)).reindex(layers)
            offset = (number - (len(methods) - 1) / 2) * width
            x = np.arange(len(layers)) + offset
            undefined = int(part["undefined"].fillna(0).sum())
            ax.errorbar(
                x,
                part["mean"].to_numpy(dtype=float),
                yerr=part["std"].to_numpy(dtype=float),
                fmt=_MARKERS[number % len(_MARKERS)],
                color=palette[method],
                capsize=2,
                label=_undefined_label(method, undefined),
            )
            for xi, mean, count in zip(x, part["mean"], part["undefined"], strict=True):
                if not pd.isna(count) and count > 0:
                    y = 0.0 if pd.isna(mean) else float(mean)
                    ax.annotate(
                        f"{int(count)}×undef.",
                        (xi, y),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        fontsize=5,
                        color=palette[method],
                    )
        _layer_axis(ax, layers)
        ax.set_ylabel("Spearman ρ, most vs least likely class\n(lower = more class sensitive)")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=6)
        figure.suptitle(
            f"Class sensitivity: {ds}, {mdl} ({arch}); mean ± std; "
            f"{total_undefined} undefined ρ (constant maps) left out"
        )
    return figure


def sensitivity_figure(
    sensitivity: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """:func:`plot_sensitivity` for every model → ``out_dir/{dataset}/{model}/sensitivity_layers``."""
    provenance = validate_provenance(provenance)
    plain = plain_sensitivity(sensitivity, "sensitivity figure")
    written: list[Path] = []
    for ds, mdl, _, _ in iter_models(plain, "sensitivity table (lr = 0)", dataset, model):
        figure = plot_sensitivity(
            plain, layer_order=layer_order, method_order=method_order, dataset=ds, model=mdl
        )
        written += save_figure(
            figure, output_stem(out_dir, ds, mdl, stem_of("sensitivity_figure")), provenance
        )
    return written


# --------------------------------------------------------------------------------------------
# Meta-saliency vs learning rate
# --------------------------------------------------------------------------------------------


def _rows_of(frame: pd.DataFrame | None, dataset: str, model: str) -> pd.DataFrame | None:
    if frame is None:
        return None
    rows = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
    return rows if len(rows) else None


def _lr_panel(
    ax: Axes,
    rows: pd.DataFrame,
    value: str,
    methods: Sequence[str],
    palette: Mapping[str, Any],
    scale: float,
    error: str | None,
) -> None:
    """One layer: value vs lr > 0 on a log axis; lr = 0 as a dotted line in the method's colour."""
    if rows.empty:
        ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
        return
    positive = rows.loc[rows["lr"] > 0, "lr"].astype(float)
    for number, method in enumerate(methods):
        part = rows[rows["method"] == method].sort_values("lr")
        if part.empty:
            continue
        stepped = part[part["lr"] > 0]
        if len(stepped):
            ax.errorbar(
                stepped["lr"].astype(float),
                scale * stepped[value].astype(float),
                yerr=None if error is None else scale * stepped[error].astype(float),
                marker=_MARKERS[number % len(_MARKERS)],
                color=palette[method],
                capsize=2,
            )
        plain = part[part["lr"] == 0]
        if len(plain):
            ax.axhline(scale * float(plain[value].iloc[0]), color=palette[method], linestyle=":")
    if len(positive):
        ax.set_xscale("log")
        low, high = float(positive.min()), float(positive.max())
        ax.set_xlim(low / 2, high * 2)
    ax.set_xlabel("meta-step learning rate (log)")


def plot_meta(
    meta: pd.DataFrame | None,
    sensitivity: pd.DataFrame | None,
    *,
    layer_order: LayerOrder,
    dataset: str,
    model: str,
    method_order: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    subset: str = "all",
) -> Figure:
    """Meta-saliency vs learning rate for one model: pointing accuracy (top row, from ``meta``)
    and mean ρ ± std (bottom row, from ``sensitivity``), one column per layer.

    The plain map (lr = 0) cannot sit on a log axis; it is a dotted horizontal line in the
    method's colour. A row is left out when its table has no rows for this model.
    """
    meta_rows = _rows_of(meta, dataset, model)
    if meta_rows is not None:
        require_columns(meta_rows, COLUMNS["meta"], "meta table")
        check_fraction(meta_rows, "accuracy", "meta table")
        meta_rows = meta_rows[meta_rows["subset"] == subset]
        meta_rows = meta_rows if len(meta_rows) else None
    sens_rows = _rows_of(sensitivity, dataset, model)
    if sens_rows is not None:
        check_sensitivity(sens_rows)
    if layers is not None:
        wanted = [str(layer) for layer in layers]
        if meta_rows is not None:
            meta_rows = meta_rows[meta_rows["layer"].astype(str).isin(wanted)]
        if sens_rows is not None:
            sens_rows = sens_rows[sens_rows["layer"].astype(str).isin(wanted)]
    meta_rows = meta_rows if meta_rows is not None and len(meta_rows) else None
    sens_rows = sens_rows if sens_rows is not None and len(sens_rows) else None
    frames = [f for f in (meta_rows, sens_rows) if f is not None]
    if not frames:
        raise ValueError(
            f"meta figure: no meta (subset {subset!r}) or sensitivity rows for dataset "
            f"{dataset!r}, model {model!r}"
            + ("" if layers is None else f" at layers {list(layers)}")
        )
    combined = pd.concat([f[["method", "layer", "arch"]] for f in frames], ignore_index=True)
    arch = str(combined["arch"].dropna().iloc[0]) if combined["arch"].notna().any() else ""
    where = f"meta figure of {dataset}/{model}"
    shown_layers = layers_for(
        layer_order, combined["layer"].astype(str).tolist(), model, arch, where
    )
    methods = ordered_methods(combined["method"].astype(str).tolist(), method_order)
    palette = _palette(methods)
    panels = [("pointing", meta_rows)] if meta_rows is not None else []
    panels += [("sensitivity", sens_rows)] if sens_rows is not None else []
    with _style():
        figure = Figure(
            figsize=(2.8 * len(shown_layers) + 2.4, 2.6 * len(panels)), layout="constrained"
        )
        axes = figure.subplots(len(panels), len(shown_layers), squeeze=False, sharey="row")
        for line, (kind, rows) in enumerate(panels):
            for column, layer in enumerate(shown_layers):
                ax = axes[line, column]
                part = rows[rows["layer"].astype(str) == layer]
                if kind == "pointing":
                    _lr_panel(ax, part, "accuracy", methods, palette, 100.0, None)
                    ax.set_ylabel("pointing accuracy (%)" if column == 0 else "")
                else:
                    _lr_panel(ax, part, "mean", methods, palette, 1.0, "std")
                    ax.set_ylabel("Spearman ρ (mean ± std)" if column == 0 else "")
                ax.set_title(layer if line == 0 else "")
        handles = []
        for number, method in enumerate(methods):
            label = method
            if sens_rows is not None:
                undefined = int(sens_rows.loc[sens_rows["method"] == method, "undefined"].sum())
                label = _undefined_label(method, undefined)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=palette[method],
                    marker=_MARKERS[number % len(_MARKERS)],
                    label=label,
                )
            )
        handles.append(
            Line2D([], [], color="0.3", linestyle=":", label="dotted: lr = 0 (plain map)")
        )
        figure.legend(handles=handles, loc="outside right center", frameon=False, fontsize=6)
        title = f"Meta-saliency vs learning rate: {dataset}, {model} ({arch})"
        if meta_rows is not None:
            title += f"; pointing subset {subset}"
        if sens_rows is not None:
            title += f"; {int(sens_rows['undefined'].sum())} undefined ρ left out"
        figure.suptitle(title)
    return figure


def meta_figure(
    meta: pd.DataFrame | None,
    sensitivity: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    subset: str = "all",
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """:func:`plot_meta` for every model of either table → ``out_dir/{dataset}/{model}/meta``.

    Args:
        meta: Meta-saliency pointing table, or None.
        sensitivity: Sensitivity table (all lrs), or None.
        out_dir: Root folder of the figures.
        layer_order: Layers shallow → deep (list, or mapping model/arch → list).
        provenance: Record from :func:`backsal.provenance.collect`.
        method_order: Preferred order of methods.
        layers: The layers to show (default: every evaluated one).
        subset: Pointing subset of the top row.
        dataset: Only this dataset. model: Only this model.
    """
    provenance = validate_provenance(provenance)
    if meta is None and sensitivity is None:
        raise ValueError("meta figure: give meta and/or sensitivity")
    keys: set[tuple[str, str]] = set()
    for frame, what, columns in (
        (meta, "meta table", COLUMNS["meta"]),
        (sensitivity, "sensitivity table", COLUMNS["sensitivity"]),
    ):
        if frame is not None:
            require_columns(frame, columns, what)
            keys |= set(zip(frame["dataset"].astype(str), frame["model"].astype(str), strict=True))
    selected = sorted(
        (d, m)
        for d, m in keys
        if (dataset is None or d == dataset) and (model is None or m == model)
    )
    if not selected:
        raise ValueError(
            f"meta figure: no rows for dataset {dataset!r}, model {model!r}; have {sorted(keys)}"
        )
    written: list[Path] = []
    for ds, mdl in selected:
        figure = plot_meta(
            meta,
            sensitivity,
            layer_order=layer_order,
            dataset=ds,
            model=mdl,
            method_order=method_order,
            layers=layers,
            subset=subset,
        )
        written += save_figure(
            figure, output_stem(out_dir, ds, mdl, stem_of("meta_figure")), provenance
        )
    return written


# --------------------------------------------------------------------------------------------
# Qualitative examples
# --------------------------------------------------------------------------------------------


def _example_axes(
    examples: Examples,
    methods: Sequence[str] | None,
    layers: Sequence[str] | None,
    method_order: Sequence[str] | None,
    layer_order: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    available = list(examples.maps)
    if methods is None:
        named = [m for m in available if not is_grid_method(m)]
        methods = ordered_methods(named or available, method_order)
    unknown = [m for m in methods if m not in examples.maps]
    if unknown:
        raise ValueError(f"examples: no maps for methods {unknown}; have {sorted(available)}")
    all_layers = {layer for m in methods for layer in examples.maps[m]}
    if layers is None:
        if layer_order is None:
            raise ValueError(
                "examples: give layers= or layer_order= (the maps do not order layers)"
            )
        extra = sorted(all_layers - set(layer_order))
        if extra:
            raise ValueError(f"examples: layers {extra} are not in layer_order {list(layer_order)}")
        layers = [layer for layer in layer_order if layer in all_layers]
    return list(methods), list(layers)


def plot_qualitative(
    examples: Examples,
    index: int,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    method_order: Sequence[str] | None = None,
    layer_order: Sequence[str] | None = None,
) -> Figure:
    """Saliency maps of one example image: rows = methods, columns = layers, over the image.

    Drawn by :func:`backsal.viz.grid` (the CLI's figures too): the image once, in the top-left
    cell; each map min–max normalised over a grey copy of the image, one colour bar; a constant
    map says so; a method without a map at a layer leaves the cell empty.
    """
    if not 0 <= index < examples.images.shape[0]:
        raise IndexError(f"example {index} out of range 0..{examples.images.shape[0] - 1}")
    methods, layers = _example_axes(examples, methods, layers, method_order, layer_order)
    class_name = examples.class_names[int(examples.targets[index])]
    maps = {
        method: {layer: array[index] for layer, array in examples.maps.get(method, {}).items()}
        for method in methods
    }
    with _style(), sns.axes_style("white"):
        return grid(
            maps,
            examples.images[index],
            methods=methods,
            layers=layers,
            title=f"{examples.image_ids[index]}: class {class_name}",
            cell=1.5,
        )


def qualitative_figure(
    examples: Examples | str | os.PathLike[str],
    out_dir: str | Path,
    *,
    provenance: Mapping[str, Any],
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    method_order: Sequence[str] | None = None,
    layer_order: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """:func:`plot_qualitative` for each example → ``out_dir/qualitative_{k:03d}.{pdf,png}``.

    Args:
        examples: :class:`Examples` or the path of the workflow's ``.npz``.
        out_dir: Folder of the figures (e.g. ``report/{dataset}/{model}``).
        provenance: Record from :func:`backsal.provenance.collect`.
        methods: Rows (default: every named method present, in ``method_order``).
        layers: Columns (default: every layer present, in ``layer_order``).
        method_order: Preferred method order. layer_order: Layers shallow → deep.
        indices: Which examples (default: all); ``k`` in the file name is the example's index.
    """
    provenance = validate_provenance(provenance)
    if not isinstance(examples, Examples):
        examples = read_examples(examples)
    chosen = range(examples.images.shape[0]) if indices is None else list(indices)
    written: list[Path] = []
    for index in chosen:
        figure = plot_qualitative(
            examples,
            index,
            methods=methods,
            layers=layers,
            method_order=method_order,
            layer_order=layer_order,
        )
        written += save_figure(
            figure, Path(out_dir) / stem_of("qualitative_figure", index=index), provenance
        )
    return written
