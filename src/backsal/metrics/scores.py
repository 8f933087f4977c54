"""The pointing game's score from per-query hits (docs/methods.md §6): per class
``hits_c / max(hits_c + misses_c, 1)``, then the mean over all classes of the dataset, per subset.

Part of :mod:`backsal.metrics.pointing` (which re-exports it), kept apart because it needs numpy
and pandas only: the workflow's evaluation jobs score their records without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from backsal.evaluation import COUNT_COLUMNS, SUBSETS

__all__ = ["pointing_accuracies", "pointing_accuracy", "subset_mask"]


def subset_mask(in_difficult: Any, subset: str) -> np.ndarray:
    """Rows of a subset: every row for ``"all"``, the ``in_difficult`` ones for ``"difficult"``.

    Args:
        in_difficult: ``bool [B]`` per row (a tensor, an array or a pandas column).
        subset: One of :data:`SUBSETS`.

    Returns:
        ``bool [B]`` as a numpy array.
    """
    flags = _as_numpy(in_difficult).astype(bool)
    if subset == "all":
        return np.ones(flags.shape, dtype=bool)
    if subset == "difficult":
        return flags
    raise ValueError(f"unknown subset {subset!r}; use one of {SUBSETS}")


def pointing_accuracies(
    records: pd.DataFrame,
    keys: Sequence[str],
    num_classes: int,
    subsets: Sequence[str] = SUBSETS,
) -> pd.DataFrame:
    """Pointing accuracy per group of ``keys`` and subset, from per-query records.

    Per class ``hits / max(hits + misses, 1)``, then the mean over all ``num_classes`` classes (a
    class without queries counts as 0), as TorchRay's benchmark; docs/methods.md §6. This is the
    one implementation of the score: the workflow's evaluation tables and
    :func:`pointing_accuracy` both use it.

    Args:
        records: One row per query with columns ``class_id``, ``hit``, ``in_difficult`` (only
            needed for the ``difficult`` subset) and ``keys``.
        keys: Columns that identify a group (e.g. ``method, layer``); may be empty.
        num_classes: Number of classes of the dataset.
        subsets: Subsets to score, from :data:`SUBSETS`.

    Returns:
        Columns ``*keys, subset, accuracy, hits, queries``, one row per group and subset. A
        group without a query in a subset (a shard or a capped run with no ``difficult``
        image) has its row there too, with 0 queries and accuracy NaN: no classes to average
        over, so no score (tables show it as missing), and every subset keeps its table.

    Raises:
        ValueError: A class id outside ``0..num_classes-1``, or an unknown subset.
    """
    keys = list(keys)
    columns = [*keys, *COUNT_COLUMNS]
    if records.empty:
        return pd.DataFrame(columns=columns)
    _check_class_ids(records["class_id"], num_classes)
    grouped = keys or ["_group"]
    if not keys:
        records = records.assign(_group=0)
    groups = records[grouped].drop_duplicates()
    frames = []
    for subset in subsets:
        part = records if subset == "all" else records[subset_mask(records["in_difficult"], subset)]
        per_class = (
            part.groupby([*grouped, "class_id"], observed=True, sort=False)["hit"]
            .agg(hits="sum", queries="size")
            .reset_index()
        )
        per_class["class_accuracy"] = per_class["hits"] / per_class["queries"].clip(lower=1)
        summed = per_class.groupby(grouped, observed=True, sort=False).agg(
            class_accuracy=("class_accuracy", "sum"),
            hits=("hits", "sum"),
            queries=("queries", "sum"),
        )
        summed["accuracy"] = summed.pop("class_accuracy") / num_classes  # absent classes count 0
        summed = summed.reset_index()
        if len(summed) < len(groups):  # groups without a query in this subset: no accuracy
            summed = groups.merge(summed, on=grouped, how="left")
            summed[["hits", "queries"]] = summed[["hits", "queries"]].fillna(0).astype("int64")
        summed["subset"] = subset
        frames.append(summed)
    table = pd.concat(frames, ignore_index=True)
    for key in keys:
        if isinstance(table[key].dtype, pd.CategoricalDtype):
            table[key] = table[key].astype(str)
    return table[columns]


def pointing_accuracy(
    hits: Any,
    class_ids: Any,
    num_classes: int,
    keep: Any = None,
) -> float:
    """Pointing accuracy of one set of queries: :func:`pointing_accuracies` of one group.

    Args:
        hits: ``bool [B]`` (tensor or array).
        class_ids: ``[B]`` integers in ``0 .. num_classes-1``.
        num_classes: Number of classes of the dataset.
        keep: Optional ``bool [B]``: rows counted (e.g. :func:`subset_mask`).
    """
    hit_values, class_values = _as_numpy(hits), _as_numpy(class_ids)
    if hit_values.shape != class_values.shape or hit_values.ndim != 1:
        raise ValueError(
            f"hits {hit_values.shape} and class_ids {class_values.shape} must be equal [B]"
        )
    records = pd.DataFrame({"hit": hit_values.astype(bool), "class_id": class_values})
    if keep is not None:
        kept = _as_numpy(keep).astype(bool)
        if kept.shape != hit_values.shape:
            raise ValueError(f"keep {kept.shape} must match hits {hit_values.shape}")
        _check_class_ids(records["class_id"], num_classes)
        records = records[kept]
    table = pointing_accuracies(records, [], num_classes, subsets=("all",))
    return float(table["accuracy"].iloc[0]) if len(table) else 0.0


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, wherever it lives
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_class_ids(class_ids: pd.Series, num_classes: int) -> None:
    values = class_ids.to_numpy()
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(
            f"class ids must lie in 0..{num_classes - 1}, got {int(values.min())}.."
            f"{int(values.max())}: pass the dataset's num_classes"
        )
