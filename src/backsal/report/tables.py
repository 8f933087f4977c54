"""The paper's tables, rendered from the workflow's evaluation tables.

Every function takes the evaluation DataFrame(s), an output folder and options, writes each table
as CSV + Markdown + LaTeX (one stem, three suffixes, provenance embedded in each; see
:mod:`backsal.provenance`) and returns the written paths.

Output names (``out/`` is the ``out_dir`` argument; ``{dataset}``/``{model}`` from the tables;
the stems are :data:`backsal.evaluation.OUTPUTS`):

=====================================================  =========================================
``out/{dataset}/{model}/pointing_{subset}``            :func:`pointing_table`
``out/{dataset}/{model}/combination_{subset}``         :func:`combination_table`
``out/{dataset}/{model}/sensitivity``                  :func:`sensitivity_table` (plain, lr = 0)
``out/{dataset}/{model}/meta_pointing_{subset}``       :func:`meta_tables` (pointing vs lr)
``out/{dataset}/{model}/meta_sensitivity``             :func:`meta_tables` (ρ vs lr)
``out/reference_comparison``                           :func:`reference_comparison`
=====================================================  =========================================

Each stem gets ``.csv``, ``.md`` and ``.tex``. Accuracies are percentages with one decimal; a cell
without a value is empty in the CSV and ``–`` in Markdown/LaTeX. The LaTeX needs ``booktabs``.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation import CENTER, COLUMNS, NO_LAYER, SUBSETS, stem_of
from ..provenance import validate_provenance
from ._common import (
    MISSING,
    LayerOrder,
    check_fraction,
    check_unique,
    format_percent,
    format_rho,
    iter_models,
    layers_for,
    method_group,
    ordered_methods,
    output_stem,
    percent,
    require_columns,
)
from ._render import RenderedTable, write_table

__all__ = [
    "COMBINATION_STRATEGIES",
    "REFERENCE_COLUMNS",
    "best_single_layers",
    "combination_table",
    "compare_with_reference",
    "load_reference",
    "meta_tables",
    "pointing_table",
    "reference_comparison",
    "sensitivity_table",
]

REFERENCE_COLUMNS = (
    "dataset", "arch", "method", "meta", "layer", "subset", "pointing_accuracy", "source",
)  # fmt: skip
# The authors' code's strategies, in the order of docs/methods.md §3; unknown ones follow by name.
COMBINATION_STRATEGIES = (
    "uniform", "linear", "pointing_accuracy", "activation", "activation_in", "accuracy",
)  # fmt: skip
_MODES = ("sum", "product")
# Layers that are not a candidate "best single layer" for a combination: combinations never
# include the input (docs/methods.md §3) and NO_LAYER is the center baseline's.
_NOT_COMBINED = ("input", NO_LAYER)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _subsets(rows: pd.DataFrame) -> list[str]:
    present = [str(s) for s in rows["subset"].dropna().unique()]
    return [s for s in SUBSETS if s in present] + sorted(set(present) - set(SUBSETS))


def _unique_pivot(
    rows: pd.DataFrame, index: str | list[str], columns: str, values: str, where: str
) -> pd.DataFrame:
    """``pivot`` that names the duplicated cell instead of pandas' generic error."""
    check_unique(rows, ([index] if isinstance(index, str) else list(index)) + [columns], where)
    return rows.pivot(index=index, columns=columns, values=values)


def _center_value(rows: pd.DataFrame) -> float:
    center = rows.loc[rows["method"] == CENTER, "accuracy"]
    if len(center) > 1:
        raise ValueError(f"several center baseline rows: {center.tolist()}")
    return float(center.iloc[0]) if len(center) else math.nan


def _bold_max(display_rows: Sequence[str], values: pd.DataFrame, skip: set[str]) -> set:
    """Cells holding the best value of their column among rows not in ``skip`` (ties all)."""
    bold = set()
    for column in values.columns:
        candidates = values.loc[[r for r in values.index if r not in skip], column]
        rounded = candidates.map(percent)
        if rounded.notna().any():
            best = rounded.max()
            for label in rounded.index[rounded == best]:
                bold.add((display_rows.index(label), str(column)))
    return bold


def _group_breaks(methods: Sequence[str]) -> list[int]:
    return [
        i
        for i in range(1, len(methods))
        if method_group(methods[i]) != method_group(methods[i - 1])
    ]


def _lr_label(lr: float) -> str:
    return "0 (plain)" if lr == 0 else f"{lr:g}"


# --------------------------------------------------------------------------------------------
# Pointing table
# --------------------------------------------------------------------------------------------


def pointing_table(
    pointing: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """Pointing accuracy (%) per method (rows) and layer (columns); one table per subset.

    Rows: named methods, then the phase-1/phase-2 grid, then the ``center`` baseline (its one
    value repeated under every layer, as it is the bar every layer must clear). The best value
    of each column (center excluded) is bold in Markdown/LaTeX.

    Args:
        pointing: The pointing evaluation table (:data:`~backsal.evaluation.COLUMNS` ``["pointing"]``).
        out_dir: Root folder; tables go to ``out_dir/{dataset}/{model}/pointing_{subset}.*``.
        layer_order: Layers shallow → deep: one list, or a mapping model or arch → list.
        provenance: Record from :func:`backsal.provenance.collect`.
        method_order: Preferred order of methods within the named / grid groups.
        dataset: Only this dataset. model: Only this model.

    Returns:
        The written ``.csv``, ``.md`` and ``.tex`` paths of every table.
    """
    provenance = validate_provenance(provenance)
    require_columns(pointing, COLUMNS["pointing"], "pointing table")
    check_fraction(pointing, "accuracy", "pointing table")
    written: list[Path] = []
    for ds, mdl, arch, rows in iter_models(pointing, "pointing table", dataset, model):
        for subset in _subsets(rows):
            part = rows[rows["subset"] == subset]
            table = _pointing_rendered(part, ds, mdl, arch, subset, layer_order, method_order)
            stem = output_stem(out_dir, ds, mdl, stem_of("pointing_table", subset=subset))
            written += write_table(table, stem, provenance)
    return written


def _pointing_rendered(
    rows: pd.DataFrame,
    dataset: str,
    model: str,
    arch: str,
    subset: str,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None,
) -> RenderedTable:
    where = f"pointing table of {dataset}/{model}, subset {subset}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), model, arch, where)
    if not layers:
        raise ValueError(f"{where}: no method rows at any layer (only the center baseline?)")
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    per_layer = rows[rows["method"] != CENTER]
    grid = _unique_pivot(per_layer, "method", "layer", "accuracy", where)
    grid = grid.reindex(index=[m for m in methods if m != CENTER], columns=layers)
    if CENTER in methods:
        grid.loc[CENTER] = _center_value(rows)
    grid = grid.reindex(index=methods).astype(float)

    csv = grid.map(percent)
    csv.index.name = "method"
    csv.columns.name = None
    display = pd.DataFrame({"method": methods})
    for layer in layers:
        display[layer] = [format_percent(v) for v in grid[layer]]
    return RenderedTable(
        display=display,
        csv=csv,
        caption=(
            f"Pointing accuracy (%) on {dataset}, model {model} ({arch}), subset {subset}: "
            "methods (rows) at each layer (columns, shallow to deep)."
        ),
        label=f"pointing-{dataset}-{model}-{subset}",
        align=["l"] + ["r"] * len(layers),
        bold=_bold_max(methods, grid, {CENTER}),
        group_breaks=_group_breaks(methods),
        notes=[f"{MISSING}: not evaluated at that layer."]
        + (
            ["center: the image-centre baseline (same at every layer)."]
            if CENTER in methods
            else []
        ),
    )


# --------------------------------------------------------------------------------------------
# Combination table
# --------------------------------------------------------------------------------------------


def best_single_layers(pointing: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, subset, method): the best layer (input excluded) and its accuracy.

    Returns:
        Columns ``dataset, model, subset, method, best_layer, best_accuracy`` (fractions); ties go
        to the layer listed first in ``pointing``.
    """
    require_columns(
        pointing, ("dataset", "model", "subset", "method", "layer", "accuracy"), "pointing table"
    )
    candidates = pointing[~pointing["layer"].astype(str).isin(_NOT_COMBINED)]
    candidates = candidates.dropna(subset=["accuracy"])
    keys = ["dataset", "model", "subset", "method"]
    best = candidates.loc[candidates.groupby(keys, sort=True)["accuracy"].idxmax()]
    return (
        best[keys + ["layer", "accuracy"]]
        .rename(columns={"layer": "best_layer", "accuracy": "best_accuracy"})
        .reset_index(drop=True)
    )


def _weights_label(weights_from: Any) -> str:
    """Where the weights came from, or "" when the strategy has no learnt weights."""
    if weights_from is None or pd.isna(weights_from):
        return ""
    text = str(weights_from).strip()
    return "" if text.lower() in ("n/a", "none") else text


def _strategy_rank(strategy: str) -> tuple[int, str]:
    if strategy in COMBINATION_STRATEGIES:
        return (COMBINATION_STRATEGIES.index(strategy), strategy)
    return (len(COMBINATION_STRATEGIES), strategy)


def combination_table(
    combination: pd.DataFrame,
    out_dir: str | Path,
    *,
    provenance: Mapping[str, Any],
    pointing: pd.DataFrame | None = None,
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """Pointing accuracy (%) of layer combinations: methods × (strategy, mode) + best single layer.

    A strategy whose weights came from somewhere (``weights_from``, e.g. ``test`` for the authors'
    pointing-accuracy weights tuned on the test set) gets that source in its column header, and a
    note under the table says when weights were tuned on the data they are evaluated on.

    Args:
        combination: The combination evaluation table (:data:`~backsal.evaluation.COLUMNS` ``["combination"]``).
        out_dir: Tables go to ``out_dir/{dataset}/{model}/combination_{subset}.*``.
        provenance: Record from :func:`backsal.provenance.collect`.
        pointing: If given, the best single layer of each method (input excluded) is added as the
            last columns, for comparison.
        method_order: Preferred order of methods.
        dataset: Only this dataset. model: Only this model.
    """
    provenance = validate_provenance(provenance)
    require_columns(combination, COLUMNS["combination"], "combination table")
    check_fraction(combination, "accuracy", "combination table")
    best = None
    if pointing is not None:
        check_fraction(pointing, "accuracy", "pointing table")
        best = best_single_layers(pointing)
    written: list[Path] = []
    for ds, mdl, arch, rows in iter_models(combination, "combination table", dataset, model):
        for subset in _subsets(rows):
            part = rows[rows["subset"] == subset]
            best_part = None
            if best is not None:
                best_part = best[
                    (best["dataset"] == ds) & (best["model"] == mdl) & (best["subset"] == subset)
                ].set_index("method")
            table = _combination_rendered(part, best_part, ds, mdl, arch, subset, method_order)
            written += write_table(
                table,
                output_stem(out_dir, ds, mdl, stem_of("combination_table", subset=subset)),
                provenance,
            )
    return written


def _combination_rendered(
    rows: pd.DataFrame,
    best: pd.DataFrame | None,
    dataset: str,
    model: str,
    arch: str,
    subset: str,
    method_order: Sequence[str] | None,
) -> RenderedTable:
    where = f"combination table of {dataset}/{model}, subset {subset}"
    rows = rows.copy()
    rows["weights"] = [_weights_label(w) for w in rows["weights_from"]]
    keys = (
        rows[["strategy", "weights", "mode"]].drop_duplicates().itertuples(index=False, name=None)
    )
    keys = sorted(
        keys,
        key=lambda k: (
            _strategy_rank(str(k[0])),
            str(k[1]),
            _MODES.index(k[2]) if k[2] in _MODES else len(_MODES),
            str(k[2]),
        ),
    )
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    csv = pd.DataFrame(index=pd.Index(methods, name="method"))
    display = pd.DataFrame({"method": methods})
    values = pd.DataFrame(index=methods)
    tuned_on_test = []
    for strategy, weights, mode in keys:
        chosen = rows[
            (rows["strategy"] == strategy) & (rows["mode"] == mode) & (rows["weights"] == weights)
        ]
        if chosen.duplicated(subset=["method"]).any():
            duplicate = chosen.loc[chosen.duplicated(subset=["method"]), "method"].iloc[0]
            raise ValueError(f"{where}: several rows for {duplicate!r}, {strategy}/{mode}")
        column = chosen.set_index("method")["accuracy"].reindex(methods).astype(float)
        source = f"[{weights}]" if weights else ""
        csv_name = f"{strategy}{source}/{mode}"
        shown = f"{strategy} [weights: {weights}] ({mode})" if weights else f"{strategy} ({mode})"
        csv[csv_name] = column.map(percent).to_numpy()
        values[shown] = column.to_numpy()
        display[shown] = [format_percent(v) for v in column]
        if weights == "test":
            tuned_on_test.append(strategy)
    notes = [f"{MISSING}: not evaluated."]
    if tuned_on_test:
        notes.append(
            f"weights: test — the {', '.join(sorted(set(tuned_on_test)))} weights were tuned on "
            "the evaluation (test) set itself, as in the authors' code: an optimistic number."
        )
    align = ["l"] + ["r"] * len(keys)
    if best is not None:
        best = best.reindex(methods)
        csv["best_single_layer"] = best["best_accuracy"].astype(float).map(percent).to_numpy()
        csv["best_single_layer_name"] = best["best_layer"].to_numpy()
        display["best single layer"] = [
            MISSING if pd.isna(acc) else f"{format_percent(acc)} ({layer})"
            for acc, layer in zip(best["best_accuracy"], best["best_layer"], strict=True)
        ]
        align.append("r")
        notes.append(
            "best single layer: the method's best layer in the pointing table (input excluded)."
        )
    return RenderedTable(
        display=display,
        csv=csv,
        caption=(
            f"Pointing accuracy (%) of layer combinations on {dataset}, model {model} ({arch}), "
            f"subset {subset}: methods (rows) per weighting strategy and mode (columns)."
        ),
        label=f"combination-{dataset}-{model}-{subset}",
        align=align,
        bold=_bold_max(methods, values, {CENTER}),
        group_breaks=_group_breaks(methods),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Class sensitivity
# --------------------------------------------------------------------------------------------


def check_sensitivity(sensitivity: pd.DataFrame) -> None:
    """Columns, ρ range and the undefined counts of a sensitivity table (else ValueError)."""
    require_columns(sensitivity, COLUMNS["sensitivity"], "sensitivity table")
    mean = pd.to_numeric(sensitivity["mean"], errors="coerce")
    if ((mean < -1 - 1e-9) | (mean > 1 + 1e-9)).any():
        raise ValueError("sensitivity table: 'mean' is a Spearman ρ and must lie in [-1, 1]")
    if sensitivity["undefined"].isna().any():
        # The count of undefined ρ is part of the result: a missing count would hide it.
        raise ValueError("sensitivity table: 'undefined' has missing counts")


def plain_sensitivity(sensitivity: pd.DataFrame, what: str) -> pd.DataFrame:
    """The checked rows of the plain maps (lr = 0); ``what`` names the caller in the error."""
    check_sensitivity(sensitivity)
    plain = sensitivity[sensitivity["lr"] == 0]
    if plain.empty:
        raise ValueError(f"{what}: no plain rows (lr == 0)")
    return plain


def _tidy_sensitivity(rows: pd.DataFrame, methods: list[str], layers: list[str]) -> pd.DataFrame:
    tidy = rows[["method", "layer", "lr", "mean", "std", "n", "undefined"]].copy()
    tidy["method"] = pd.Categorical(tidy["method"].astype(str), categories=methods, ordered=True)
    tidy["layer"] = pd.Categorical(tidy["layer"].astype(str), categories=layers, ordered=True)
    tidy = tidy.sort_values(["method", "layer", "lr"]).reset_index(drop=True)
    tidy["method"] = tidy["method"].astype(str)
    tidy["layer"] = tidy["layer"].astype(str)
    tidy["undefined"] = tidy["undefined"].astype("int64")
    return tidy


def sensitivity_table(
    sensitivity: pd.DataFrame,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """Class sensitivity of the plain maps (lr = 0): "ρ mean ± std (k undefined)" per method × layer.

    Lower ρ = more class sensitive. ``k`` counts the images whose ρ is undefined (a constant map);
    it is always printed, also when 0. The CSV is tidy: one row per (method, layer) with the raw
    ``mean, std, n, undefined``.

    Args:
        sensitivity: The sensitivity table (:data:`~backsal.evaluation.COLUMNS` ``["sensitivity"]``).
        out_dir: Tables go to ``out_dir/{dataset}/{model}/sensitivity.*``.
        layer_order: Layers shallow → deep (list, or mapping model/arch → list).
        provenance: Record from :func:`backsal.provenance.collect`.
        method_order: Preferred order of methods.
        dataset: Only this dataset. model: Only this model.
    """
    provenance = validate_provenance(provenance)
    plain_all = plain_sensitivity(sensitivity, "sensitivity table")
    written: list[Path] = []
    for ds, mdl, arch, rows in iter_models(plain_all, "sensitivity table (lr = 0)", dataset, model):
        where = f"sensitivity table of {ds}/{mdl}"
        layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), mdl, arch, where)
        methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
        mean = _unique_pivot(rows, "method", "layer", "mean", where).reindex(
            index=methods, columns=layers
        )
        std = rows.pivot(index="method", columns="layer", values="std").reindex(
            index=methods, columns=layers
        )
        undefined = rows.pivot(index="method", columns="layer", values="undefined").reindex(
            index=methods, columns=layers
        )
        display = pd.DataFrame({"method": methods})
        for layer in layers:
            display[layer] = [
                format_rho(m, s, u)
                for m, s, u in zip(mean[layer], std[layer], undefined[layer], strict=True)
            ]
        total_undefined = int(rows["undefined"].sum())
        table = RenderedTable(
            display=display,
            csv=_tidy_sensitivity(rows, methods, layers),
            caption=(
                f"Class sensitivity on {ds}, model {mdl} ({arch}): Spearman ρ between the maps of "
                "the most and least likely class, mean ± std over images (lower = more class "
                "sensitive), with the number of images whose ρ is undefined."
            ),
            label=f"sensitivity-{ds}-{mdl}",
            align=["l"] + ["r"] * len(layers),
            notes=[
                f"undefined: a map was constant, so ρ has no value; {total_undefined} such cases "
                "in this table, left out of mean and std.",
                f"{MISSING}: not evaluated at that layer.",
            ],
        )
        written += write_table(
            table, output_stem(out_dir, ds, mdl, stem_of("sensitivity_table")), provenance
        )
    return written


# --------------------------------------------------------------------------------------------
# Meta-saliency tables
# --------------------------------------------------------------------------------------------


def _method_layer_rows(
    rows: pd.DataFrame, methods: list[str], layers: list[str]
) -> list[tuple[str, str]]:
    present = set(zip(rows["method"].astype(str), rows["layer"].astype(str), strict=True))
    return [(m, layer) for m in methods for layer in layers if (m, layer) in present]


def meta_tables(
    meta: pd.DataFrame | None,
    sensitivity: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    layer_order: LayerOrder,
    provenance: Mapping[str, Any],
    method_order: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> list[Path]:
    """Meta-saliency vs learning rate: rows ``method@layer``, columns lr (0 = the plain map).

    * from ``meta``: pointing accuracy (%), one table per subset
      (``out_dir/{dataset}/{model}/meta_pointing_{subset}.*``; CSV: index ``method, layer``,
      columns ``lr=<lr>``);
    * from ``sensitivity``: "ρ mean ± std (k undefined)"
      (``out_dir/{dataset}/{model}/meta_sensitivity.*``; CSV tidy with the raw numbers).

    Args:
        meta: The meta-saliency pointing table (:data:`~backsal.evaluation.COLUMNS` ``["meta"]``), or None.
        sensitivity: The sensitivity table (:data:`~backsal.evaluation.COLUMNS` ``["sensitivity"]``), or None.
        out_dir: Root folder of the tables.
        layer_order: Layers shallow → deep (list, or mapping model/arch → list).
        provenance: Record from :func:`backsal.provenance.collect`.
        method_order: Preferred order of methods.
        layers: Only these layers (default: all).
        dataset: Only this dataset. model: Only this model.
    """
    provenance = validate_provenance(provenance)
    if meta is None and sensitivity is None:
        raise ValueError("meta_tables: give meta and/or sensitivity")
    written: list[Path] = []
    if meta is not None:
        require_columns(meta, COLUMNS["meta"], "meta table")
        check_fraction(meta, "accuracy", "meta table")
        selected = meta if layers is None else meta[meta["layer"].isin(list(layers))]
        for ds, mdl, arch, rows in iter_models(selected, "meta table", dataset, model):
            for subset in _subsets(rows):
                part = rows[rows["subset"] == subset]
                table = _meta_pointing_rendered(
                    part, ds, mdl, arch, subset, layer_order, method_order
                )
                stem = output_stem(out_dir, ds, mdl, stem_of("meta_pointing_table", subset=subset))
                written += write_table(table, stem, provenance)
    if sensitivity is not None:
        check_sensitivity(sensitivity)
        selected = (
            sensitivity if layers is None else sensitivity[sensitivity["layer"].isin(list(layers))]
        )
        for ds, mdl, arch, rows in iter_models(selected, "sensitivity table", dataset, model):
            table = _meta_sensitivity_rendered(rows, ds, mdl, arch, layer_order, method_order)
            written += write_table(
                table, output_stem(out_dir, ds, mdl, stem_of("meta_sensitivity_table")), provenance
            )
    return written


def _meta_pointing_rendered(
    rows: pd.DataFrame,
    dataset: str,
    model: str,
    arch: str,
    subset: str,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None,
) -> RenderedTable:
    where = f"meta table of {dataset}/{model}, subset {subset}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), model, arch, where)
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    pairs = _method_layer_rows(rows, methods, layers)
    lrs = sorted(float(lr) for lr in rows["lr"].unique())
    grid = _unique_pivot(
        rows.assign(lr=rows["lr"].astype(float)), ["method", "layer"], "lr", "accuracy", where
    )
    grid = grid.reindex(
        index=pd.MultiIndex.from_tuples(pairs, names=["method", "layer"]), columns=lrs
    )
    csv = grid.map(percent)
    csv.columns = [f"lr={lr:g}" for lr in lrs]
    labels = [f"{m}@{layer}" for m, layer in pairs]
    display = pd.DataFrame({"method@layer": labels})
    values = pd.DataFrame(grid.to_numpy(), index=labels, columns=[_lr_label(lr) for lr in lrs])
    for lr in lrs:
        display[_lr_label(lr)] = [format_percent(v) for v in grid[lr]]
    # Bold the best lr of each row: the question a meta table answers is "which lr helps here".
    bold = set()
    for position, label in enumerate(labels):
        rounded = values.loc[label].map(percent)
        if rounded.notna().any():
            bold |= {(position, c) for c in rounded.index[rounded == rounded.max()]}
    return RenderedTable(
        display=display,
        csv=csv,
        caption=(
            f"Meta-saliency pointing accuracy (%) on {dataset}, model {model} ({arch}), subset "
            f"{subset}, per learning rate of the meta step (lr 0 = the plain map on the same queries)."
        ),
        label=f"meta-pointing-{dataset}-{model}-{subset}",
        align=["l"] + ["r"] * len(lrs),
        bold=bold,
        notes=[f"{MISSING}: not evaluated. Bold: the best learning rate of each row."],
    )


def _meta_sensitivity_rendered(
    rows: pd.DataFrame,
    dataset: str,
    model: str,
    arch: str,
    layer_order: LayerOrder,
    method_order: Sequence[str] | None,
) -> RenderedTable:
    where = f"meta sensitivity table of {dataset}/{model}"
    layers = layers_for(layer_order, rows["layer"].astype(str).tolist(), model, arch, where)
    methods = ordered_methods(rows["method"].astype(str).tolist(), method_order)
    pairs = _method_layer_rows(rows, methods, layers)
    rows = rows.assign(lr=rows["lr"].astype(float))
    lrs = sorted(rows["lr"].unique())
    index = pd.MultiIndex.from_tuples(pairs, names=["method", "layer"])
    mean = _unique_pivot(rows, ["method", "layer"], "lr", "mean", where).reindex(
        index=index, columns=lrs
    )
    std = rows.pivot(index=["method", "layer"], columns="lr", values="std").reindex(
        index=index, columns=lrs
    )
    undefined = rows.pivot(index=["method", "layer"], columns="lr", values="undefined").reindex(
        index=index, columns=lrs
    )
    display = pd.DataFrame({"method@layer": [f"{m}@{layer}" for m, layer in pairs]})
    for lr in lrs:
        display[_lr_label(lr)] = [
            format_rho(m, s, u) for m, s, u in zip(mean[lr], std[lr], undefined[lr], strict=True)
        ]
    return RenderedTable(
        display=display,
        csv=_tidy_sensitivity(rows, methods, layers),
        caption=(
            f"Class sensitivity of meta-saliency on {dataset}, model {model} ({arch}): Spearman ρ "
            "(most vs least likely class; lower = more class sensitive) per learning rate "
            "(lr 0 = the plain map), with the number of undefined ρ."
        ),
        label=f"meta-sensitivity-{dataset}-{model}",
        align=["l"] + ["r"] * len(lrs),
        notes=[
            f"undefined: a map was constant, so ρ has no value ({int(rows['undefined'].sum())} "
            f"such cases in this table), left out of mean and std. {MISSING}: not evaluated."
        ],
    )


# --------------------------------------------------------------------------------------------
# Comparison with the reference numbers
# --------------------------------------------------------------------------------------------


def load_reference() -> pd.DataFrame:
    """The packaged reference pointing accuracies (``backsal/_data/pointing_reference.csv``).

    ``meta`` is parsed to bool; see docs/methods.md §9 for what each ``source`` means.
    """
    resource = importlib.resources.files("backsal").joinpath("_data/pointing_reference.csv")
    with resource.open("r", encoding="utf-8") as handle:
        # "n/a" (the center baseline's layer) is one of pandas' default NA strings: keep it text
        reference = pd.read_csv(handle, dtype={"layer": str}, keep_default_na=False, na_values=[""])
    reference["meta"] = reference["meta"].map(_parse_bool)
    return reference


def _parse_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"reference table: 'meta' must be true/false, got {value!r}")


def compare_with_reference(
    pointing: pd.DataFrame | None,
    meta: pd.DataFrame | None = None,
    reference: pd.DataFrame | None = None,
    *,
    restrict_to_ours: bool = True,
) -> pd.DataFrame:
    """Our pointing accuracies beside the reference ones, as fractions.

    Every reference row is kept (``ours`` NaN when we have no counterpart); one row per our model
    (and, for meta-saliency, per learning rate > 0: the reference does not record its lr).

    Args:
        pointing: Our pointing table (plain maps; ``meta = False``).
        meta: Our meta-saliency table; its rows with lr > 0 compare with ``meta = True`` ones.
        reference: Reference rows (:data:`REFERENCE_COLUMNS`); default :func:`load_reference`.
        restrict_to_ours: Keep only reference rows of a (dataset, arch) we evaluated.

    Returns:
        Columns ``dataset, arch, model, method, meta, lr, layer, subset, source, reference,
        ours, difference`` where ``difference = 100 · (ours − reference)`` (percentage points).
    """
    reference = load_reference() if reference is None else reference.copy()
    require_columns(reference, REFERENCE_COLUMNS, "reference table")
    reference["meta"] = reference["meta"].map(_parse_bool)
    reference["layer"] = reference["layer"].astype(str)
    ours = []
    if pointing is not None:
        require_columns(
            pointing,
            ("dataset", "model", "arch", "method", "layer", "subset", "accuracy"),
            "pointing table",
        )
        check_fraction(pointing, "accuracy", "pointing table")
        plain = pointing[
            ["dataset", "arch", "model", "method", "layer", "subset", "accuracy"]
        ].copy()
        plain["meta"], plain["lr"] = False, math.nan
        ours.append(plain)
    if meta is not None:
        require_columns(meta, COLUMNS["meta"], "meta table")
        check_fraction(meta, "accuracy", "meta table")
        stepped = meta.loc[
            meta["lr"] > 0,
            ["dataset", "arch", "model", "method", "layer", "subset", "lr", "accuracy"],
        ].copy()
        stepped["meta"] = True
        ours.append(stepped)
    if not ours:
        raise ValueError("compare_with_reference: give our pointing and/or meta table")
    ours_frame = pd.concat(ours, ignore_index=True)
    ours_frame["layer"] = ours_frame["layer"].astype(str)
    ours_frame["lr"] = ours_frame["lr"].astype(float)
    keys = ["dataset", "arch", "method", "meta", "layer", "subset"]
    duplicated = ours_frame.duplicated(subset=keys + ["model", "lr"], keep=False)
    if duplicated.any():
        first = ours_frame.loc[duplicated, keys + ["model"]].iloc[0].to_dict()
        raise ValueError(f"compare_with_reference: several of our rows for {first}")
    if restrict_to_ours:
        evaluated = set(
            zip(ours_frame["dataset"].astype(str), ours_frame["arch"].astype(str), strict=True)
        )
        keep = [
            (str(d), str(a)) in evaluated
            for d, a in zip(reference["dataset"], reference["arch"], strict=True)
        ]
        reference = reference[keep]
        if reference.empty:
            raise ValueError(
                f"compare_with_reference: no reference rows for our (dataset, arch) pairs "
                f"{sorted(evaluated)}; the reference covers voc07/coco14 × vgg16/resnet50"
            )
    merged = reference.rename(columns={"pointing_accuracy": "reference"}).merge(
        ours_frame.rename(columns={"accuracy": "ours"}), on=keys, how="left", sort=False
    )
    merged["difference"] = 100.0 * (
        merged["ours"].astype(float) - merged["reference"].astype(float)
    )
    columns = ["dataset", "arch", "model", "method", "meta", "lr", "layer", "subset", "source",
               "reference", "ours", "difference"]  # fmt: skip
    return merged[columns].reset_index(drop=True)


def reference_comparison(
    pointing: pd.DataFrame | None,
    meta: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    provenance: Mapping[str, Any],
    reference: pd.DataFrame | None = None,
    restrict_to_ours: bool = True,
) -> list[Path]:
    """Write ``out_dir/reference_comparison.{csv,md,tex}``: ours vs reference, in %.

    See :func:`compare_with_reference` for the rows. The CSV holds ``reference``, ``ours`` (%, one
    decimal) and ``difference`` (ours − reference in percentage points, from the unrounded
    fractions, one decimal), plus ``source``.
    """
    provenance = validate_provenance(provenance)
    compared = compare_with_reference(pointing, meta, reference, restrict_to_ours=restrict_to_ours)
    csv = compared.copy()
    csv["reference"] = csv["reference"].map(percent)
    csv["ours"] = csv["ours"].map(percent)
    csv["difference"] = csv["difference"].round(1)
    csv = csv.set_index(["dataset", "arch", "model", "method", "meta", "lr", "layer", "subset"])
    display = pd.DataFrame(
        {
            "dataset": compared["dataset"].astype(str),
            "arch": compared["arch"].astype(str),
            "model": compared["model"].map(lambda m: MISSING if pd.isna(m) else str(m)),
            "method": compared["method"].astype(str),
            "meta": [
                f"lr {lr:g}" if is_meta and not pd.isna(lr) else ("yes" if is_meta else "no")
                for is_meta, lr in zip(compared["meta"], compared["lr"], strict=True)
            ],
            "layer": compared["layer"].astype(str),
            "subset": compared["subset"].astype(str),
            "source": compared["source"].astype(str),
            "reference": [format_percent(v) for v in compared["reference"]],
            "ours": [format_percent(v) for v in compared["ours"]],
            "difference (pp)": [
                MISSING if pd.isna(d) else f"{d:+.1f}" for d in compared["difference"]
            ],
        }
    )
    missing = int(compared["ours"].isna().sum())
    table = RenderedTable(
        display=display,
        csv=csv,
        caption=(
            "Our pointing accuracy (%) against the reference numbers; difference = ours − "
            "reference in percentage points."
        ),
        label="reference-comparison",
        align=["l"] * 8 + ["r"] * 3,
        notes=[
            "source authors_code_per_layer: per-layer constants stored in the authors' benchmark "
            "code (VOC07, subset all); torchray_published: TorchRay's docs/pointing.csv.",
            f"{missing} reference rows have no counterpart in our results (ours: {MISSING}).",
        ],
    )
    return write_table(table, Path(out_dir) / stem_of("reference_table"), provenance)
