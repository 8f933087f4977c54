"""From per-query records to the evaluation tables the figures and tables are rendered from.

Pointing accuracy follows the protocol (docs/methods.md §6.3): per class, hits / max(hits + misses, 1),
then the mean over ALL classes of the dataset (a class without queries counts as 0), for the
``all`` subset and the ``difficult`` one (queries with ``in_difficult``). Class sensitivity
reports mean, std, count and the number of undefined (NaN) correlations side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from backsal.methods import get_method

__all__ = [
    "combination_table",
    "layer_accuracies",
    "meta_table",
    "pointing_table",
    "sensitivity_table",
    "subset_accuracies",
]

SUBSETS = ("all", "difficult")


def subset_accuracies(records: pd.DataFrame, keys: Sequence[str], num_classes: int) -> pd.DataFrame:
    """Pointing accuracy per group of ``keys`` and subset, averaged over all ``num_classes``.

    Returns:
        Columns ``*keys, subset, accuracy, hits, queries``.
    """
    keys = list(keys)
    if records.empty:
        return pd.DataFrame(columns=[*keys, "subset", "accuracy", "hits", "queries"])
    frames = []
    for subset in SUBSETS:
        part = records if subset == "all" else records[records["in_difficult"].astype(bool)]
        per_class = (
            part.groupby([*keys, "class_id"], observed=True, sort=False)["hit"]
            .agg(hits="sum", queries="size")
            .reset_index()
        )
        per_class["class_accuracy"] = per_class["hits"] / per_class["queries"].clip(lower=1)
        summed = per_class.groupby(keys, observed=True, sort=False).agg(
            class_accuracy=("class_accuracy", "sum"),
            hits=("hits", "sum"),
            queries=("queries", "sum"),
        )
        summed["accuracy"] = summed.pop("class_accuracy") / num_classes  # absent classes count as 0
        summed["subset"] = subset
        frames.append(summed.reset_index())
    table = pd.concat(frames, ignore_index=True)
    for key in keys:
        if isinstance(table[key].dtype, pd.CategoricalDtype):
            table[key] = table[key].astype(str)
    return table[[*keys, "subset", "accuracy", "hits", "queries"]]


def _method_columns(methods: pd.Series) -> pd.DataFrame:
    def describe(name: str) -> tuple[str, str | None, str | None]:
        if name == "center":
            return "none", None, None
        method = get_method(name)
        return method.rule, method.phase1, method.phase2

    described = {name: describe(name) for name in methods.unique()}
    return pd.DataFrame(
        [described[name] for name in methods],
        columns=["rule", "phase1", "phase2"],
        index=methods.index,
    )


_RUN = ["dataset", "model", "arch"]
_COUNTS = ["subset", "accuracy", "hits", "queries"]


def _labelled(table: pd.DataFrame, columns: list[str], **run: str) -> pd.DataFrame:
    """``table`` with the run's ``dataset, model, arch`` first, then ``columns``."""
    return table.assign(**run)[[*_RUN, *columns]]


def pointing_table(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str, num_classes: int
) -> pd.DataFrame:
    """The ``pointing`` evaluation table of one (dataset, model) from its shard records."""
    table = subset_accuracies(records, ["method", "layer"], num_classes)
    table = pd.concat([table, _method_columns(table["method"])], axis=1)
    columns = ["method", "rule", "phase1", "phase2", "layer", *_COUNTS]
    return _labelled(table, columns, dataset=dataset, model=model, arch=arch)


def layer_accuracies(pointing: pd.DataFrame, subset: str = "all") -> dict[str, dict[str, float]]:
    """``{method: {layer: accuracy}}`` of a pointing table (the pointing_accuracy weights)."""
    part = pointing[(pointing["subset"] == subset) & (pointing["method"] != "center")]
    result: dict[str, dict[str, float]] = {}
    for row in part.itertuples(index=False):
        result.setdefault(str(row.method), {})[str(row.layer)] = float(row.accuracy)
    return result


def combination_table(
    records: pd.DataFrame,
    *,
    dataset: str,
    model: str,
    arch: str,
    num_classes: int,
    weights_from: str,
) -> pd.DataFrame:
    """The ``combination`` evaluation table of one (dataset, model)."""
    table = subset_accuracies(records, ["method", "strategy", "mode"], num_classes)
    table["weights_from"] = np.where(
        table["strategy"] == "pointing_accuracy", weights_from, "fixed"
    )
    columns = ["method", "strategy", "mode", "weights_from", *_COUNTS]
    return _labelled(table, columns, dataset=dataset, model=model, arch=arch)


def meta_table(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str, num_classes: int
) -> pd.DataFrame:
    """The ``meta`` evaluation table (pointing accuracy against the learning rate)."""
    table = subset_accuracies(records, ["method", "layer", "lr"], num_classes)
    return _labelled(
        table, ["method", "layer", "lr", *_COUNTS], dataset=dataset, model=model, arch=arch
    )


def sensitivity_table(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str
) -> pd.DataFrame:
    """Mean, std (population) and counts of ρ per method, layer and learning rate; NaN counted."""
    rows = []
    for (method, layer, lr), group in records.groupby(
        ["method", "layer", "lr"], observed=True, sort=False
    ):
        rho = group["rho"].to_numpy(dtype=np.float64)
        finite = rho[np.isfinite(rho)]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "arch": arch,
                "method": str(method),
                "layer": str(layer),
                "lr": float(lr),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std()) if finite.size else float("nan"),
                "n": int(finite.size),
                "undefined": int(rho.size - finite.size),
            }
        )
    return pd.DataFrame(
        rows, columns=[*_RUN, "method", "layer", "lr", "mean", "std", "n", "undefined"]
    )
