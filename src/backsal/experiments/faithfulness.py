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

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from backsal.data.base import PointingDataset
from backsal.data.batching import QueryBatch
from backsal.metrics.deletion import MODES, Baseline, Probability, deletion_insertion
from backsal.metrics.sanity import (
    RANDOMISATIONS,
    Randomisation,
    model_randomisations,
    randomisation_blocks,
)
from backsal.models.layers import select_layers

from .pointing import LayerPlan, explain_by_lr, iter_shard
from .resources import OpenedModel
from .settings import DeletionSettings, SanitySettings

__all__ = ["class_probability", "resolve_blocks", "run_deletion", "run_sanity"]


def class_probability(opened: OpenedModel) -> Probability:
    """``softmax`` for single-label ImageNet classifiers, ``sigmoid`` for the multi-label
    pointing models (VOC, COCO and the small models are trained with binary cross-entropy)."""
    return "softmax" if opened.spec.dataset == "imagenet" else "sigmoid"


def resolve_blocks(
    opened: OpenedModel, setting: str | Sequence[str] | Mapping[str, Any], count: int | None
) -> list[str]:
    """The blocks to randomise: ``"auto"`` (:func:`randomisation_blocks`), names, or a mapping
    model name -> one of those (a model it does not name gets ``"auto"``); with ``count``, only
    the top ``count`` of them (the cascade starts at the top)."""
    if isinstance(setting, Mapping):
        setting = setting.get(opened.name, "auto")
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
    settings: SanitySettings,
    *,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Sanity-check records: one row per query × randomisation × depth × method × layer.

    Args:
        settings: ``methods``, ``layers`` and ``input``, ``blocks`` and ``max_blocks``,
            ``randomisations``, ``randomisation_seed``, ``max_queries`` and ``batch_rows``.

    Returns:
        Columns ``record, query, class_id, randomisation, depth, block, method, layer,
        spearman, ssim``; ``depth`` 1 is the top block.
    """
    device = torch.device(device)
    methods = list(settings.methods)
    layers = select_layers(settings.layers, opened.spec, opened.name, input=settings.input)
    blocks = resolve_blocks(opened, settings.blocks, settings.max_blocks)
    modes: list[Randomisation] = [m for m in RANDOMISATIONS if m in settings.randomisations]
    randomisation_seed = settings.randomisation_seed
    plan = LayerPlan.build(opened.model, methods, layers)
    frames = []
    queries = _first_queries(dataset, opened, settings.max_queries, settings.batch_rows, device)
    for batch, images in queries:
        take = images.shape[0]
        labels = _labels(batch, take)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        results = model_randomisations(
            opened.model, images, batch.targets[:take], methods, plan.layers, blocks, modes,
            seed=opened.seed, size=size, randomisation_seed=randomisation_seed,
            contrast_layer=opened.spec.contrast_layer, method_layers=plan.method_layers,
        )  # fmt: skip
        for mode, result in results.items():
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
    settings: DeletionSettings,
    *,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Deletion / insertion records: one row per query × mode × baseline × method × layer.

    Args:
        settings: ``methods``, ``layers`` and ``input``, ``steps``, ``baselines``,
            ``max_queries``, ``batch_rows`` and ``batch_size``.

    Returns:
        Columns ``record, query, class_id, mode, baseline, method, layer, auc, curve``
        (``curve``: the ``steps + 1`` probabilities, as a list).
    """
    device = torch.device(device)
    methods = list(settings.methods)
    layers = select_layers(settings.layers, opened.spec, opened.name, input=settings.input)
    baselines: list[Baseline] = list(settings.baselines)  # type: ignore[arg-type]
    steps, batch_size = settings.steps, settings.batch_size
    plan = LayerPlan.build(opened.model, methods, layers)
    probability = class_probability(opened)
    frames = []
    queries = _first_queries(dataset, opened, settings.max_queries, settings.batch_rows, device)
    for batch, images in queries:
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
