"""Shared helpers of the report: input checks, orderings, output names, number formats."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..evaluation import CENTER, NO_LAYER
from ..names import NAMED_METHODS, PHASE1, PHASE2

__all__ = [
    "MISSING",
    "LayerOrder",
    "check_fraction",
    "check_unique",
    "format_percent",
    "format_rho",
    "is_grid_method",
    "iter_models",
    "layers_for",
    "method_group",
    "ordered_methods",
    "output_stem",
    "percent",
    "require_columns",
    "suffixed",
]

MISSING = "–"  # how an absent cell reads in Markdown and LaTeX (CSV leaves it empty)

# One order for every model, or per model / per arch (layer names differ between VGG and ResNet).
LayerOrder = Sequence[str] | Mapping[str, Sequence[str]]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def output_stem(out_dir: str | Path, dataset: str, model: str, name: str) -> Path:
    """``out_dir / dataset / model / name``: where a per-model table or figure goes (no suffix).

    ``name`` is a stem of :data:`backsal.evaluation.OUTPUTS` (:func:`backsal.evaluation.stem`).
    """
    for part, value in (("dataset", dataset), ("model", model), ("name", name)):
        if not _SAFE_NAME.match(str(value)) or str(value) in (".", ".."):
            raise ValueError(f"{part} {value!r} is not usable in a file name ([A-Za-z0-9_.+-])")
    return Path(out_dir) / str(dataset) / str(model) / str(name)


def suffixed(stem: Path, suffix: str) -> Path:
    """``stem`` plus ``suffix``; unlike ``with_suffix`` it keeps dots already in the name."""
    return stem.parent / f"{stem.name}{suffix}"


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise a ValueError naming the table and the missing columns."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing columns {missing}; it has {list(map(str, frame.columns))}"
        )
    if frame.empty:
        raise ValueError(f"{what}: the table is empty")


def check_fraction(frame: pd.DataFrame, column: str, what: str) -> None:
    """Accuracies are fractions: a value above 1 means someone already multiplied by 100."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values[(values < 0) | (values > 1)]
    if len(bad):
        raise ValueError(
            f"{what}: {column} must be a fraction in [0, 1], got {bad.iloc[0]!r} "
            f"(row {bad.index[0]!r})"
        )


def check_unique(rows: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    """Raise a ValueError naming the first duplicated cell: a table cell must come from one row."""
    duplicated = rows.duplicated(subset=list(keys), keep=False)
    if duplicated.any():
        first = rows.loc[duplicated, list(keys)].iloc[0].to_dict()
        raise ValueError(f"{where}: several rows for {first}; expected one per cell")


def iter_models(
    frame: pd.DataFrame,
    what: str,
    dataset: str | None = None,
    model: str | None = None,
) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """Yield ``(dataset, model, arch, rows)`` per model, sorted; ``dataset``/``model`` filter.

    Raises:
        ValueError: No row matches the filter (the message names it), or a model has rows of
            several architectures.
    """
    selected = frame
    if dataset is not None:
        selected = selected[selected["dataset"] == dataset]
    if model is not None:
        selected = selected[selected["model"] == model]
    if selected.empty:
        known = sorted(
            {(str(d), str(m)) for d, m in zip(frame["dataset"], frame["model"], strict=True)}
        )
        wanted = ", ".join(
            f"{name} {value!r}" for name, value in (("dataset", dataset), ("model", model)) if value
        )
        raise ValueError(f"{what}: no rows for {wanted or 'any model'}; the table has {known}")
    for (ds, mdl), rows in selected.groupby(["dataset", "model"], sort=True):
        archs = rows["arch"].dropna().unique() if "arch" in rows else []
        if len(archs) > 1:
            raise ValueError(f"{what}: model {mdl!r} on {ds!r} has several archs {list(archs)}")
        arch = str(archs[0]) if len(archs) else ""
        yield str(ds), str(mdl), arch, rows


def layers_for(
    layer_order: LayerOrder, present: Sequence[str], model: str, arch: str, what: str
) -> list[str]:
    """The layers in ``present`` (:data:`~backsal.evaluation.NO_LAYER` ignored), in the order
    ``layer_order`` gives.

    Raises:
        ValueError: A present layer is not in the order (it would have no place on the axis).
    """
    if isinstance(layer_order, Mapping):
        if model in layer_order:
            order = list(layer_order[model])
        elif arch in layer_order:
            order = list(layer_order[arch])
        else:
            raise ValueError(
                f"{what}: layer_order has no entry for model {model!r} or arch {arch!r}; "
                f"it has {sorted(layer_order)}"
            )
    elif isinstance(layer_order, str):
        raise TypeError("layer_order must be a list of layer names, not a string")
    else:
        order = list(layer_order)
    wanted = {str(layer) for layer in present if str(layer) != NO_LAYER}
    unknown = sorted(wanted - set(order))
    if unknown:
        raise ValueError(
            f"{what}: layers {unknown} of model {model!r} are not in layer_order {order}"
        )
    return [layer for layer in order if layer in wanted]


def is_grid_method(method: str) -> bool:
    """Plain-rule grid entries are named ``"<phase1>/<phase2>"``."""
    return "/" in method


def method_group(method: str) -> int:
    """0 = named method, 1 = grid entry, 2 = the center baseline (the tables' row groups)."""
    if method == CENTER:
        return 2
    return 1 if is_grid_method(method) else 0


def _default_rank(method: str) -> tuple[int, ...]:
    named = list(NAMED_METHODS)
    if method in named:
        return (named.index(method),)
    if is_grid_method(method):
        phase1, _, phase2 = method.partition("/")
        p1 = PHASE1.index(phase1) if phase1 in PHASE1 else len(PHASE1)
        p2 = PHASE2.index(phase2) if phase2 in PHASE2 else len(PHASE2)
        return (p1, p2)
    return (len(named),)


def ordered_methods(present: Sequence[str], method_order: Sequence[str] | None) -> list[str]:
    """Named methods, then grid entries, then ``center``; within a group ``method_order``.

    Methods not in ``method_order`` are kept (a table should not silently drop a row) and follow
    the listed ones in the library's registry order (then by name). Filter the table first to
    leave methods out.
    """
    listed = list(method_order) if method_order is not None else []
    unique = list(dict.fromkeys(str(m) for m in present))

    def key(method: str) -> tuple:
        if method in listed:
            return (method_group(method), 0, listed.index(method))
        return (method_group(method), 1, _default_rank(method), method)

    return sorted(unique, key=key)


def percent(value: float) -> float:
    """A fraction as a percentage with one decimal (NaN stays NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    return round(float(value) * 100.0, 1)


def format_percent(value: float) -> str:
    """``"81.2"``, or :data:`MISSING` for an absent value."""
    if value is None or pd.isna(value):
        return MISSING
    return f"{percent(value):.1f}"


def format_rho(mean: float, std: float, undefined: float) -> str:
    """``"0.412 ± 0.120 (3 undefined)"``; the count is always shown, also when it is 0."""
    if pd.isna(mean) and pd.isna(undefined):
        return MISSING
    mean_text = MISSING if pd.isna(mean) else f"{mean:.3f}"
    std_text = MISSING if pd.isna(std) else f"{std:.3f}"
    count = MISSING if pd.isna(undefined) else f"{int(undefined)}"
    return f"{mean_text} ± {std_text} ({count} undefined)"
