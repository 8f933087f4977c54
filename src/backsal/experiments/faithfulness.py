"""Evaluation beyond the pointing game: the model-randomisation sanity check (docs/methods.md §12)
and deletion / insertion (§13), as jobs on the first queries of a pointing dataset.

Both take the first ``max_queries`` (image, class present) queries in the batch plan's order, so
every run of a config scores the same rows; the target of a row is its ground-truth class. Maps
are computed at the model's input size (layer maps upsampled bilinearly on the device).

* :func:`run_sanity` — Spearman ρ and SSIM between the maps of the trained model and of the model
  with its top blocks (cascading) or one block (independent) randomised, per depth;
* :func:`run_deletion` — deletion and insertion AUCs, and the curves, per baseline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from backsal.data.base import PointingDataset
from backsal.data.batching import QueryBatch
from backsal.metrics.deletion import MODES, Baseline, Probability, deletion_insertion
from backsal.metrics.sanity import (
    RANDOMISATIONS,
    Randomisation,
    model_randomisation,
    randomisation_blocks,
)

from .pointing import LayerPlan, explain_by_lr, iter_shard
from .resources import OpenedModel

__all__ = [
    "DELETION_COLUMNS",
    "SANITY_COLUMNS",
    "class_probability",
    "deletion_table",
    "resolve_blocks",
    "run_deletion",
    "run_sanity",
    "sanity_table",
]


def class_probability(opened: OpenedModel) -> Probability:
    """``softmax`` for single-label ImageNet classifiers, ``sigmoid`` for the multi-label
    pointing models (VOC, COCO and the small models are trained with binary cross-entropy)."""
    return "softmax" if opened.spec.dataset == "imagenet" else "sigmoid"


def resolve_blocks(
    opened: OpenedModel, setting: str | Sequence[str], count: int | None
) -> list[str]:
    """The blocks to randomise: ``"auto"`` (:func:`randomisation_blocks`) or names; with
    ``count``, only the top ``count`` of them (the cascade starts at the top)."""
    blocks = randomisation_blocks(opened.model) if setting == "auto" else list(setting)
    if count is not None:
        if count < 1:
            raise ValueError(f"sanity blocks count {count}: give at least 1.")
        blocks = blocks[-count:]
    return blocks


def _first_queries(
    dataset: PointingDataset,
    opened: OpenedModel,
    max_queries: int,
    batch_rows: int,
    device: torch.device,
) -> Iterator[tuple[QueryBatch, torch.Tensor]]:
    """Batches of the first ``max_queries`` queries, as ``(batch, per-row images)``."""
    left = max_queries
    batches = iter_shard(
        dataset, opened, shard=0, shards=1, batch_rows=batch_rows, device=device,
        max_queries=max_queries,
    )  # fmt: skip
    for batch in batches:
        if left <= 0:
            break
        take = min(left, len(batch))
        left -= take
        yield batch, batch.row_images()[:take]


def _labels(batch: QueryBatch, take: int) -> dict[str, np.ndarray]:
    refs = batch.query_refs[:take].cpu().numpy()
    return {
        "record": refs[:, 0].astype(np.int32),
        "query": refs[:, 1].astype(np.int16),
        "class_id": batch.targets[:take].cpu().numpy().astype(np.int16),
    }


def run_sanity(
    dataset: PointingDataset,
    opened: OpenedModel,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    blocks: Sequence[str],
    modes: Sequence[Randomisation] = RANDOMISATIONS,
    max_queries: int = 8,
    batch_rows: int = 8,
    randomisation_seed: int = 0,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Sanity-check records: one row per query × randomisation × depth × method × layer.

    Returns:
        Columns ``record, query, class_id, randomisation, depth, block, method, layer,
        spearman, ssim``; ``depth`` 1 is the top block.
    """
    device = torch.device(device)
    plan = LayerPlan.build(opened.model, methods, layers)
    frames = []
    for batch, images in _first_queries(dataset, opened, max_queries, batch_rows, device):
        take = images.shape[0]
        labels = _labels(batch, take)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        for mode in modes:
            result = model_randomisation(
                opened.model, images, batch.targets[:take], methods, plan.layers, blocks, mode,
                seed=opened.seed, size=size, randomisation_seed=randomisation_seed,
                contrast_layer=opened.spec.contrast_layer, method_layers=plan.method_layers,
            )  # fmt: skip
            for method, layer, rho in plan.records(result.spearman):
                computed = _computed_layer(plan, method, layer)
                similarity = result.ssim[method][computed].cpu().numpy()
                for depth, block in enumerate(result.blocks):
                    frames.append(
                        pd.DataFrame(
                            {
                                **labels,
                                "randomisation": mode,
                                "depth": depth + 1,
                                "block": block,
                                "method": method,
                                "layer": layer,
                                "spearman": rho[depth].cpu().numpy(),
                                "ssim": similarity[depth],
                            }
                        )
                    )
    return _frame(frames, ("randomisation", "block", "method", "layer"))


def _computed_layer(plan: LayerPlan, method: str, recorded: str) -> str:
    for computed, names in plan.recorded_as[method].items():
        if recorded in names:
            return computed
    return recorded


def run_deletion(
    dataset: PointingDataset,
    opened: OpenedModel,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    steps: int = 16,
    baselines: Sequence[Baseline] = ("blur", "zero"),
    max_queries: int = 8,
    batch_rows: int = 8,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Deletion / insertion records: one row per query × mode × baseline × method × layer.

    Returns:
        Columns ``record, query, class_id, mode, baseline, method, layer, auc, curve``
        (``curve``: the ``steps + 1`` probabilities, as a list).
    """
    device = torch.device(device)
    plan = LayerPlan.build(opened.model, methods, layers)
    probability = class_probability(opened)
    frames = []
    for batch, images in _first_queries(dataset, opened, max_queries, batch_rows, device):
        take = images.shape[0]
        labels = _labels(batch, take)
        targets = batch.targets[:take]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        maps = plan.renamed(
            explain_by_lr(opened, plan, methods, images, targets, image_index=None, size=size)[0.0]
        )
        for baseline in baselines:
            result = deletion_insertion(
                opened.model, images, targets, maps, steps=steps, modes=MODES,
                baseline=baseline, probability=probability, batch_size=batch_size,
            )  # fmt: skip
            for mode, by_method in result.auc.items():
                for method, by_layer in by_method.items():
                    for layer, auc in by_layer.items():
                        curves = result.curves[mode][method][layer].cpu().numpy()
                        frames.append(
                            pd.DataFrame(
                                {
                                    **labels,
                                    "mode": mode,
                                    "baseline": baseline,
                                    "method": method,
                                    "layer": layer,
                                    "auc": auc.cpu().numpy().astype(np.float64),
                                    "curve": list(curves.astype(np.float64)),
                                }
                            )
                        )
    return _frame(frames, ("mode", "baseline", "method", "layer"))


def _frame(frames: list[pd.DataFrame], categorical: Sequence[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    for key in categorical:
        frame[key] = frame[key].astype("category")
    return frame


_RUN = ["dataset", "model", "arch"]
#: Columns of the ``sanity`` evaluation table (one row per run, randomisation, depth, method, layer).
SANITY_COLUMNS = (
    *_RUN, "randomisation", "depth", "block", "method", "layer",
    "spearman_mean", "spearman_std", "ssim_mean", "ssim_std", "n", "undefined",
)  # fmt: skip
#: Columns of the ``deletion`` evaluation table (one row per run, mode, baseline, method, layer).
DELETION_COLUMNS = (
    *_RUN, "mode", "baseline", "method", "layer", "auc_mean", "auc_std", "n", "curve",
)  # fmt: skip


def sanity_table(records: pd.DataFrame, *, dataset: str, model: str, arch: str) -> pd.DataFrame:
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
    return pd.DataFrame(rows, columns=list(SANITY_COLUMNS))


def deletion_table(records: pd.DataFrame, *, dataset: str, model: str, arch: str) -> pd.DataFrame:
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
    return pd.DataFrame(rows, columns=list(DELETION_COLUMNS))
