"""Pointing-game jobs: compact per-query records for one shard of a (dataset, model) pair.

Each job plans the dataset's query batches (:mod:`backsal.data.batching`), takes every
``shards``-th batch starting at ``shard``, runs the engine on the device and scores the maps
there (docs/methods.md §6.2): maps are resized to the original image size (bilinear,
``align_corners=False``), input-level maps are Gaussian-smoothed (σ = 0.02·max(H, W)), the
argmax is the point, a hit is a ground-truth pixel strictly closer than the dataset's tolerance.
Only the records leave the device — one row per query × method × layer (× learning rate,
× combination) with the point and the hit — plus a few example maps for figures.

Three jobs share this module:

* :func:`run_pointing` — every method at every layer (one pass per backward rule);
* :func:`run_combination` — layer combinations (docs/methods.md §3);
* :func:`run_meta_pointing` — meta-saliency over a learning-rate grid (docs/methods.md §4).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from backsal.capture import INPUT, feeding_convs
from backsal.combination import CONSTANT_STRATEGIES, combination_weights, combine_all
from backsal.data.base import PointingDataset
from backsal.data.batching import QueryBatch, QueryBatches
from backsal.evaluation import CENTER, NO_LAYER, Examples
from backsal.explain import saliency
from backsal.meta import Strategy, meta_saliency
from backsal.methods import get_method
from backsal.metrics.pointing import (
    INPUT_SMOOTHING,
    argmax_points,
    center_hits,
    center_points,
    group_masks,
    locate_points,
    points_hit,
)
from backsal.models.layers import select_layers

from .resources import OpenedModel
from .settings import CombinationSettings, MetaSettings, PointingSettings

__all__ = [
    "LayerPlan",
    "RecordBuilder",
    "iter_shard",
    "require_examples",
    "run_combination",
    "run_examples",
    "run_meta_pointing",
    "run_pointing",
]

#: Longer side of the images and maps kept for qualitative figures.
EXAMPLE_SIZE = 224


class RecordBuilder:
    """Accumulates per-query records as arrays; :meth:`frame` builds the DataFrame once."""

    def __init__(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {}

    def add(
        self, batch: QueryBatch, points: torch.Tensor, hits: torch.Tensor, **labels: Any
    ) -> None:
        n = len(batch)
        values: dict[str, np.ndarray] = {
            "record": batch.query_refs[:, 0].cpu().numpy().astype(np.int32),
            "query": batch.query_refs[:, 1].cpu().numpy().astype(np.int16),
            "class_id": batch.targets.cpu().numpy().astype(np.int16),
            "in_difficult": batch.in_difficult.cpu().numpy(),
            "x": points[:, 0].cpu().numpy().astype(np.int32),
            "y": points[:, 1].cpu().numpy().astype(np.int32),
            "hit": hits.cpu().numpy(),
        }
        for key, label in labels.items():
            values[key] = np.full(n, label, dtype=object if isinstance(label, str) else None)
        for key, value in values.items():
            self._columns.setdefault(key, []).append(value)

    def frame(self, categorical: Sequence[str] = ()) -> pd.DataFrame:
        if not self._columns:
            return pd.DataFrame()
        frame = pd.DataFrame({key: np.concatenate(parts) for key, parts in self._columns.items()})
        for key in categorical:
            if key in frame:
                frame[key] = frame[key].astype("category")
        return frame


def iter_shard(
    dataset: PointingDataset,
    opened: OpenedModel,
    *,
    shard: int,
    shards: int,
    batch_rows: int,
    device: torch.device,
    max_queries: int | None = None,
    progress: str | None = None,
) -> Iterator[QueryBatch]:
    """The batches of one shard, on ``device``: every ``shards``-th batch plan from ``shard``.

    With ``max_queries``, only the first batches holding that many queries (in plan order, the
    same for every shard) are shared out. A shard beyond the number of batches gets none, with
    a warning.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    batches = QueryBatches(dataset, opened.spec.preprocess, max_rows=batch_rows)
    plans = batches.plans
    if max_queries is not None:
        kept, total = [], 0
        for plan in plans:
            if total >= max_queries:
                break
            kept.append(plan)
            total += len(plan.rows)
        plans = kept
    mine = plans[shard::shards]
    _warn_if_empty(shard, shards, len(plans), f"batch(es) of at most {batch_rows} rows")
    for plan in tqdm(mine, desc=progress, disable=progress is None, unit="batch", mininterval=5):
        yield batches.load(plan).to(device)


def _warn_if_empty(shard: int, shards: int, parts: int, unit: str) -> None:
    """Warn that ``shard`` gets nothing: ``shards`` exceeds the ``parts`` there are to share.

    Not an error: the empty shard's table is empty and the merged results are right; but the
    job is wasted, and lowering ``shards`` later would rerun every shard.
    """
    if shard >= parts:
        warnings.warn(
            f"shard {shard} of shards={shards} gets nothing to do: there are only {parts} "
            f"{unit} to share out; set shards to at most {max(parts, 1)}",
            UserWarning,
            stacklevel=3,
        )


def _smoothing(layer: str, smooth_input: bool) -> float:
    return INPUT_SMOOTHING if layer == INPUT and smooth_input else 0.0


Maps = dict[str, dict[str, torch.Tensor]]


def explain_by_lr(
    opened: OpenedModel,
    plan: LayerPlan,
    methods: Sequence[str],
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    image_index: torch.Tensor | None,
    lrs: Sequence[float] = (),
    steps: int = 1,
    negate: bool = False,
    strategy: Strategy = "auto",
    size: tuple[int, int] | None = None,
) -> dict[float, Maps]:
    """The plain maps as ``lr = 0``, and meta-saliency maps for every other learning rate of
    ``lrs``: with the model's seed and contrast layer, at the plan's layers."""
    model, seed, contrast = opened.model, opened.seed, opened.spec.contrast_layer
    layers, method_layers = plan.layers, plan.method_layers
    by_lr = {
        0.0: saliency(
            model, images, targets, methods, layers, seed, size, image_index=image_index,
            contrast_layer=contrast, method_layers=method_layers,
        )
    }  # fmt: skip
    grid = [float(lr) for lr in lrs if float(lr) != 0.0]
    if grid:
        by_lr.update(
            meta_saliency(
                model, images, targets, methods, layers, grid, steps=steps, negate=negate,
                strategy=strategy, seed=seed, size=size, image_index=image_index,
                contrast_layer=contrast, method_layers=method_layers,
            )
        )  # fmt: skip
    return by_lr


@dataclass(frozen=True)
class LayerPlan:
    """Where each method is computed, and under which layer name its maps are recorded.

    Methods defined on the model's own convolutions (``real_conv``: ``norm_grad_proper``,
    ``real_conv/*``) are computed at the conv feeding each probe layer
    (:func:`backsal.capture.feeding_convs`) and recorded under the probe layer's name, so that
    every method lines up in the tables; they have no input-level map.
    """

    layers: list[str]
    method_layers: dict[str, list[str]]
    recorded_as: dict[str, dict[str, list[str]]]  # method -> computed layer -> recorded names

    @staticmethod
    def build(model: torch.nn.Module, methods: Sequence[str], layers: Sequence[str]) -> LayerPlan:
        convs = feeding_convs(model, layers)
        method_layers: dict[str, list[str]] = {}
        recorded: dict[str, dict[str, list[str]]] = {}
        for method in methods:
            if get_method(method).needs_layer_input:
                method_layers[method] = list(dict.fromkeys(convs.values()))
                by_conv: dict[str, list[str]] = {}
                for layer, conv in convs.items():
                    by_conv.setdefault(conv, []).append(layer)
                recorded[method] = by_conv
            else:
                recorded[method] = {layer: [layer] for layer in layers}
        return LayerPlan(list(layers), method_layers, recorded)

    def records(
        self, maps: Mapping[str, Mapping[str, torch.Tensor]]
    ) -> Iterator[tuple[str, str, torch.Tensor]]:
        """``(method, recorded layer, maps)`` for every computed map."""
        for method, by_layer in maps.items():
            for layer, layer_maps in by_layer.items():
                for name in self.recorded_as[method].get(layer, [layer]):
                    yield method, name, layer_maps

    def renamed(
        self, maps: Mapping[str, Mapping[str, torch.Tensor]]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """The engine's maps keyed by recorded layer names."""
        result: dict[str, dict[str, torch.Tensor]] = {}
        for method, layer, layer_maps in self.records(maps):
            result.setdefault(method, {})[layer] = layer_maps
        return result


def run_pointing(
    dataset: PointingDataset,
    opened: OpenedModel,
    settings: PointingSettings,
    *,
    shard: int = 0,
    also_layers: Sequence[str] = (),
    with_center: bool = False,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> tuple[pd.DataFrame, Examples | None]:
    """Per-query pointing records of every method at every layer for one shard.

    Args:
        dataset: The pointing dataset.
        opened: The model.
        settings: The stage's settings: ``methods`` (any mix of backward rules; the workflow
            gives one rule per job), ``layers`` and ``input``, ``smooth_input`` (smooth
            input-level maps, as TorchRay), ``shards`` and ``batch_rows``, and ``examples``
            (keep the maps of the shard's first ``examples`` images for figures).
        shard: Which part of the batches (``0 .. settings.shards - 1``).
        also_layers: Layers evaluated besides the setting's (the combination layers, whose
            accuracies weight the combination and are compared with it).
        with_center: Also record the ``center`` baseline (method ``center``, layer ``n/a``).
        device: Where the engine and the metric run.
        progress: Progress-bar label (``None``: silent).

    Returns:
        ``(records, examples)``; records have columns ``record, query, class_id, in_difficult,
        method, layer, x, y, hit``.
    """
    methods, smooth_input = settings.methods, settings.smooth_input
    layers = select_layers(
        settings.layers, opened.spec, opened.name, input=settings.input, also=also_layers
    )
    device = torch.device(device)
    builder = RecordBuilder()
    keep = _ExampleKeeper(dataset, settings.examples)
    tolerance = dataset.pointing_tolerance
    plan = LayerPlan.build(opened.model, methods, layers)
    batches = iter_shard(
        dataset,
        opened,
        shard=shard,
        shards=settings.shards,
        batch_rows=settings.batch_rows,
        device=device,
        progress=progress,
    )
    for batch in batches:
        maps = explain_by_lr(
            opened, plan, methods, batch.images, batch.targets, image_index=batch.image_index
        )[0.0]
        masks = group_masks(batch.masks(dataset, device))  # once for all maps
        for method, layer, layer_maps in plan.records(maps):
            points, hits = locate_points(
                layer_maps, masks, tolerance, _smoothing(layer, smooth_input)
            )
            builder.add(batch, points, hits, method=method, layer=layer)
        if with_center:
            points = center_points(batch.original_sizes.to(device))
            builder.add(batch, points, center_hits(masks, tolerance), method=CENTER, layer=NO_LAYER)
        keep.add(batch, plan.renamed(maps))
    return builder.frame(categorical=("method", "layer")), keep.result()


def require_examples(examples: Examples | None, wanted: int, key: str, dataset: str) -> Examples:
    """``examples``, if it holds the ``wanted`` images that the figure rules declared.

    The figures' outputs are declared before the dataset is read, so too few examples is
    reported here, naming the config ``key`` to lower, not as a missing output later.

    Raises:
        RuntimeError: No image with a query, or fewer than ``wanted`` of one display size.
    """
    if examples is None:
        raise RuntimeError(f"dataset {dataset} has no image with a query")
    found = examples.images.shape[0]
    if found < wanted:
        raise RuntimeError(
            f"dataset {dataset} has {found} image(s) of one display size with a query, fewer "
            f"than {key} = {wanted}: lower it"
        )
    return examples


def run_examples(
    dataset: PointingDataset,
    opened: OpenedModel,
    settings: PointingSettings,
    *,
    device: torch.device | str = "cpu",
) -> Examples | None:
    """Maps of every method at every layer of ``settings`` for its first ``examples`` images
    with queries."""
    methods, count = settings.methods, settings.examples
    layers = select_layers(settings.layers, opened.spec, opened.name, input=settings.input)
    device = torch.device(device)
    keep = _ExampleKeeper(dataset, count)
    plan = LayerPlan.build(opened.model, methods, layers)
    batches = QueryBatches(dataset, opened.spec.preprocess, max_rows=max(1, count))
    for batch_plan in batches.plans:
        if keep.full:
            break
        batch = batches.load(batch_plan).to(device)
        maps = explain_by_lr(
            opened, plan, methods, batch.images, batch.targets, image_index=batch.image_index
        )[0.0]
        keep.add(batch, plan.renamed(maps))
    return keep.result()


def run_combination(
    dataset: PointingDataset,
    opened: OpenedModel,
    settings: CombinationSettings,
    *,
    accuracy_weights: Mapping[str, Mapping[str, float]] | None = None,
    shard: int = 0,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> pd.DataFrame:
    """Per-query records of layer combinations (docs/methods.md §3) for one shard.

    The model's combination layers are combined. Every map is upsampled to the row's original
    image size before normalising (the evaluation size), then combined with each strategy's
    weights in each mode.

    Args:
        settings: ``methods``, ``strategies`` (``uniform``, ``linear``, ``pointing_accuracy``
            (needs ``accuracy_weights``) and the constant vectors, VGG16 and ResNet50 only:
            skipped for other architectures), ``modes``, ``shards`` and ``batch_rows``.
        accuracy_weights: ``{method: {layer: pointing accuracy}}``, measured elsewhere.

    Returns:
        Records with columns ``record, query, class_id, in_difficult, method, strategy, mode, x, y, hit``.
    """
    methods, strategies, modes = settings.methods, settings.strategies, settings.modes
    layers = list(opened.spec.combination_layers)
    device = torch.device(device)
    weights: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        weights[method] = {}
        for strategy in strategies:
            if strategy == "pointing_accuracy":
                if accuracy_weights is None or method not in accuracy_weights:
                    raise ValueError(f"pointing_accuracy weights of {method!r} are missing")
                weights[method][strategy] = {
                    layer: float(accuracy_weights[method][layer]) for layer in layers
                }
            elif strategy in CONSTANT_STRATEGIES:
                if opened.arch in ("vgg16", "resnet50"):
                    weights[method][strategy] = combination_weights(
                        strategy, layers, arch=opened.arch
                    )
            else:
                weights[method][strategy] = combination_weights(strategy, layers)
    builder = RecordBuilder()
    tolerance = dataset.pointing_tolerance
    for batch in iter_shard(
        dataset,
        opened,
        shard=shard,
        shards=settings.shards,
        batch_rows=settings.batch_rows,
        device=device,
        progress=progress,
    ):
        maps = saliency(
            opened.model,
            batch.images,
            batch.targets,
            methods,
            layers,
            seed=opened.seed,
            image_index=batch.image_index,
            contrast_layer=opened.spec.contrast_layer,
        )
        masks = group_masks(batch.masks(dataset, device))  # once for all maps
        for method in methods:
            # every (strategy, mode) of a method from one upsampling and normalisation per layer
            pairs = [(s, mode) for s in weights[method] for mode in modes]
            points = torch.zeros(len(pairs), len(batch), 2, dtype=torch.long, device=device)
            hits = torch.zeros(len(pairs), len(batch), dtype=torch.bool, device=device)
            for size, rows, truth in masks.groups:
                combined = combine_all(
                    {layer: maps[method][layer].index_select(0, rows) for layer in layers},
                    [(weights[method][s], mode) for s, mode in pairs],  # type: ignore[misc]
                    size=size,
                    layers=layers,
                )
                for i, one in enumerate(combined):
                    group_points = argmax_points(one)
                    points[i, rows] = group_points
                    hits[i, rows] = points_hit(group_points, truth, tolerance)
            for i, (strategy, mode) in enumerate(pairs):
                builder.add(batch, points[i], hits[i], method=method, strategy=strategy, mode=mode)
    return builder.frame(categorical=("method", "strategy", "mode"))


def run_meta_pointing(
    dataset: PointingDataset,
    opened: OpenedModel,
    settings: MetaSettings,
    *,
    shard: int = 0,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> pd.DataFrame:
    """Per-query records of meta-saliency over ``settings.lrs``, plus the plain maps as ``lr = 0``.

    Args:
        settings: ``methods``, ``layers`` and ``input``, ``lrs``, ``steps``, ``strategy``,
            ``max_queries``, ``smooth_input``, ``shards``, ``batch_rows`` and ``negate`` (step
            up the loss: :func:`backsal.meta.meta_saliency`).

    Returns:
        Records with columns ``record, query, class_id, in_difficult, method, layer, lr, x, y, hit``.
    """
    methods, lrs, steps = settings.methods, settings.lrs, settings.steps
    strategy: Strategy = settings.strategy  # type: ignore[assignment]
    smooth_input = settings.smooth_input
    layers = select_layers(settings.layers, opened.spec, opened.name, input=settings.input)
    device = torch.device(device)
    builder = RecordBuilder()
    tolerance = dataset.pointing_tolerance
    plan = LayerPlan.build(opened.model, methods, layers)
    batches = iter_shard(
        dataset,
        opened,
        shard=shard,
        shards=settings.shards,
        batch_rows=settings.batch_rows,
        device=device,
        max_queries=settings.max_queries,
        progress=progress,
    )
    for batch in batches:
        by_lr = explain_by_lr(
            opened, plan, methods, batch.images, batch.targets, image_index=batch.image_index,
            lrs=lrs, steps=steps, negate=settings.negate, strategy=strategy,
        )  # fmt: skip
        masks = group_masks(batch.masks(dataset, device))  # once for all maps
        for lr, maps in by_lr.items():
            for method, layer, layer_maps in plan.records(maps):
                points, hits = locate_points(
                    layer_maps, masks, tolerance, _smoothing(layer, smooth_input)
                )
                builder.add(batch, points, hits, method=method, layer=layer, lr=lr)
    return builder.frame(categorical=("method", "layer"))


class _ExampleKeeper:
    """Keeps the first ``count`` images of one display size and their first query's maps.

    Only images of the first kept image's display size are kept (figures stack them), so with
    images of many sizes (VOC) the keeper looks further until it has ``count``.
    """

    def __init__(self, dataset: PointingDataset, count: int) -> None:
        self.dataset, self.count = dataset, count
        self.size: tuple[int, int] | None = None
        self.images: list[np.ndarray] = []
        self.targets: list[int] = []
        self.ids: list[str] = []
        self.maps: dict[str, dict[str, list[np.ndarray]]] = {}

    @property
    def full(self) -> bool:
        return len(self.images) >= self.count

    def add(self, batch: QueryBatch, maps: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        seen: set[int] = set()
        for row, (record_index, _) in enumerate(batch.query_refs.tolist()):
            if self.full:
                return
            if record_index in seen:
                continue
            seen.add(record_index)
            record = self.dataset[record_index]
            size = _display_size(record.height, record.width)
            if self.size is None:
                self.size = size
            elif size != self.size:
                continue
            image = self.dataset.load_image(record)[None].float()
            shown_image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            self.images.append(shown_image[0].round().clamp(0, 255).to(torch.uint8).numpy())
            self.targets.append(int(batch.targets[row]))
            self.ids.append(record.image_id)
            for method, by_layer in maps.items():
                for layer, layer_maps in by_layer.items():
                    shown = F.interpolate(
                        layer_maps[row : row + 1].float(),
                        size=size,
                        mode="bilinear",
                        align_corners=False,
                    )
                    self.maps.setdefault(method, {}).setdefault(layer, []).append(
                        shown[0, 0].cpu().numpy().astype(np.float16)
                    )

    def result(self) -> Examples | None:
        if not self.images:
            return None
        return Examples(
            images=np.stack(self.images),
            targets=np.array(self.targets, dtype=np.int64),
            class_names=[str(name) for name in getattr(self.dataset, "class_names", ()) or ()],
            image_ids=list(self.ids),
            maps={
                method: {layer: np.stack(values) for layer, values in by_layer.items()}
                for method, by_layer in self.maps.items()
            },
        )


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, EXAMPLE_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))
