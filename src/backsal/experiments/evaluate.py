"""From per-query records to the evaluation tables the figures and tables are rendered from.

Pointing accuracies are scored by :func:`backsal.metrics.scores.pointing_accuracies` (the one
implementation of the protocol) for every subset of :data:`backsal.evaluation.SUBSETS`; the
columns of each table are :data:`backsal.evaluation.COLUMNS`. Class sensitivity reports mean,
std, count and the number of undefined (NaN) correlations side by side, and so does the
sanity check for its ρ; deletion keeps each curve's mean besides its area.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backsal.evaluation import CENTER, COLUMNS
from backsal.metrics.scores import pointing_accuracies
from backsal.names import resolve_method

__all__ = [
    "evaluate_combination",
    "evaluate_deletion",
    "evaluate_meta",
    "evaluate_pointing",
    "evaluate_sanity",
    "evaluate_sensitivity",
    "layer_accuracies",
]


def _method_columns(methods: pd.Series) -> pd.DataFrame:
    def describe(name: str) -> tuple[str, str | None, str | None]:
        if name == CENTER:
            return "none", None, None
        method = resolve_method(name)
        return method.rule, method.phase1, method.phase2

    described = {name: describe(name) for name in methods.unique()}
    return pd.DataFrame(
        [described[name] for name in methods],
        columns=["rule", "phase1", "phase2"],
        index=methods.index,
    )


def _labelled(table: pd.DataFrame, kind: str, **run: str) -> pd.DataFrame:
    """``table`` labelled with its run, in the columns of ``kind``'s evaluation table."""
    return table.assign(**run)[list(COLUMNS[kind])]


def evaluate_pointing(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str, num_classes: int
) -> pd.DataFrame:
    """The ``pointing`` evaluation table of one (dataset, model) from its shard records."""
    table = pointing_accuracies(records, ["method", "layer"], num_classes)
    table = pd.concat([table, _method_columns(table["method"])], axis=1)
    return _labelled(table, "pointing", dataset=dataset, model=model, arch=arch)


def layer_accuracies(pointing: pd.DataFrame, subset: str = "all") -> dict[str, dict[str, float]]:
    """``{method: {layer: accuracy}}`` of a pointing table (the pointing_accuracy weights)."""
    part = pointing[(pointing["subset"] == subset) & (pointing["method"] != CENTER)]
    result: dict[str, dict[str, float]] = {}
    for row in part.itertuples(index=False):
        result.setdefault(str(row.method), {})[str(row.layer)] = float(row.accuracy)
    return result


def evaluate_combination(
    records: pd.DataFrame,
    *,
    dataset: str,
    model: str,
    arch: str,
    num_classes: int,
    weights_from: str,
) -> pd.DataFrame:
    """The ``combination`` evaluation table of one (dataset, model)."""
    table = pointing_accuracies(records, ["method", "strategy", "mode"], num_classes)
    table["weights_from"] = np.where(
        table["strategy"] == "pointing_accuracy", weights_from, "fixed"
    )
    return _labelled(table, "combination", dataset=dataset, model=model, arch=arch)


def evaluate_meta(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str, num_classes: int
) -> pd.DataFrame:
    """The ``meta`` evaluation table (pointing accuracy against the learning rate)."""
    table = pointing_accuracies(records, ["method", "layer", "lr"], num_classes)
    return _labelled(table, "meta", dataset=dataset, model=model, arch=arch)


def evaluate_sensitivity(
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
    return pd.DataFrame(rows, columns=list(COLUMNS["sensitivity"]))


def evaluate_sanity(records: pd.DataFrame, *, dataset: str, model: str, arch: str) -> pd.DataFrame:
    """Mean and std (population) of ρ and SSIM over the rows; undefined ρ (a constant map) are
    left out of ρ's mean and counted."""
    rows = []
    keys = ["randomisation", "depth", "block", "method", "layer"]
    for key, group in records.groupby(keys, observed=True, sort=True):
        rho = group["spearman"].to_numpy(dtype=np.float64)
        finite = rho[np.isfinite(rho)]
        similarity = group["ssim"].to_numpy(dtype=np.float64)
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "arch": arch,
                **{k: (str(v) if k != "depth" else int(v)) for k, v in zip(keys, key, strict=True)},
                "spearman_mean": float(finite.mean()) if finite.size else float("nan"),
                "spearman_std": float(finite.std()) if finite.size else float("nan"),
                "ssim_mean": float(similarity.mean()),
                "ssim_std": float(similarity.std()),
                "n": int(rho.size),
                "undefined": int(rho.size - finite.size),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS["sanity"]))


def evaluate_deletion(
    records: pd.DataFrame, *, dataset: str, model: str, arch: str
) -> pd.DataFrame:
    """Mean and std (population) of the AUC over the rows, and the mean curve."""
    rows = []
    keys = ["mode", "baseline", "method", "layer"]
    for key, group in records.groupby(keys, observed=True, sort=True):
        auc = group["auc"].to_numpy(dtype=np.float64)
        curve = np.stack(group["curve"].to_list()).mean(axis=0)
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "arch": arch,
                **{k: str(v) for k, v in zip(keys, key, strict=True)},
                "auc_mean": float(auc.mean()),
                "auc_std": float(auc.std()),
                "n": int(auc.size),
                "curve": curve.tolist(),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS["deletion"]))
