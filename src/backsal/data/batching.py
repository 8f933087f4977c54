"""Batches of pointing-game queries for datasets whose images differ in size.

The paper's protocol (docs/methods.md §6.5, after TorchRay) runs one image at a time because VOC and
COCO images differ in size and the models are fully convolutional. Here queries are batched
instead, under two rules:

* images whose *preprocessed* size is equal share a batch (different original sizes may map to the
  same model input size, e.g. shorter side resized to 224);
* the queries (classes) of one image share that image: a batch holds each image once,
  ``images [U, 3, h, w]``, and ``image_index [B]`` maps each query row to its image.

The engine works on one row per query (one target per row). Its per-row view of a batch is::

    rows = batch.images.index_select(0, batch.image_index)   # [B, 3, h, w], == images[image_index]
    maps = saliency(model, rows, batch.targets, ...)           # one map per (image, class) row

and its per-image forward can be shared by computing on ``batch.images`` and indexing outputs with
``image_index``. Every row keeps its original image size (``original_sizes``) and a reference to its
query (``query_refs``: record index and query index in the dataset), so maps can be resized back
and scored at the original size (:mod:`backsal.metrics.pointing`)::

    points, hits = locate_points(maps, batch.masks(dataset), tolerance, smooth)  # per row
    # records of (class_id, in_difficult, hit) are scored by metrics.pointing_accuracies

Batches are planned first (:func:`plan_batches`: indices only, cheap and deterministic), then
loaded (:class:`QueryBatches`, a map-style ``torch.utils.data.Dataset`` of whole batches, so a
``DataLoader(..., batch_size=None, num_workers=k)`` can decode images in parallel).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from backsal.data.base import ImageRecord, PointingDataset, Query

__all__ = [
    "BatchPlan",
    "QueryBatch",
    "QueryBatches",
    "Transform",
    "plan_batches",
]

#: Model preprocessing: ``uint8 [3, H, W]`` RGB at the original size -> ``float [3, h, w]``.
Transform = Callable[[torch.Tensor], torch.Tensor]
#: Preprocessed size ``(h, w)`` of an image of original size ``(H, W)``.
SizeFunction = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class BatchPlan:
    """The indices of one batch, before any image is loaded.

    Attributes:
        size: Preprocessed size ``(h, w)`` shared by all images of the batch.
        record_indices: The dataset indices of the batch's distinct images, in batch order.
        rows: One ``(record_index, query_index)`` pair per query row.
    """

    size: tuple[int, int]
    record_indices: tuple[int, ...]
    rows: tuple[tuple[int, int], ...]


@dataclass
class QueryBatch:
    """A loaded batch: distinct images plus one row per (image, class) query.

    Attributes:
        images: ``float [U, 3, h, w]``, each distinct image once, preprocessed.
        image_index: ``long [B]``, row -> position in ``images``.
        targets: ``long [B]``, the class of each row.
        original_sizes: ``long [B, 2]``, ``(height, width)`` of each row's original image.
        in_difficult: ``bool [B]``, whether each row's query is in the ``difficult`` subset.
        query_refs: ``long [B, 2]``, ``(record index, query index)`` of each row in the dataset.
        record_indices: ``long [U]``, the dataset index of each distinct image.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    targets: torch.Tensor
    original_sizes: torch.Tensor
    in_difficult: torch.Tensor
    query_refs: torch.Tensor
    record_indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def row_images(self) -> torch.Tensor:
        """The engine's per-row view ``images[image_index]``: ``[B, 3, h, w]``."""
        return self.images.index_select(0, self.image_index)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QueryBatch:
        """A copy with every tensor on ``device``."""
        return QueryBatch(
            **{
                name: tensor.to(device, non_blocking=non_blocking)
                for name, tensor in self._tensors().items()
            }
        )

    def pin_memory(self) -> QueryBatch:
        """A copy in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return QueryBatch(**{name: tensor.pin_memory() for name, tensor in self._tensors().items()})

    def queries(self, dataset: PointingDataset) -> list[Query]:
        """The :class:`Query` of every row, looked up in ``dataset``."""
        return [dataset[int(r)].queries[int(q)] for r, q in self.query_refs.tolist()]

    def masks(
        self, dataset: PointingDataset, device: torch.device | str | None = None
    ) -> list[torch.Tensor]:
        """The ground-truth mask ``bool [H, W]`` of every row at its original size."""
        device = device if device is not None else self.images.device
        masks = []
        for (record_index, query_index), (height, width) in zip(
            self.query_refs.tolist(), self.original_sizes.tolist(), strict=True
        ):
            record = dataset[record_index]
            try:
                mask = record.queries[query_index].mask(height, width)
            except ValueError as error:
                raise ValueError(f"image {record.image_id!r} of {dataset.name}: {error}") from error
            masks.append(mask.to(device))
        return masks

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "images": self.images,
            "image_index": self.image_index,
            "targets": self.targets,
            "original_sizes": self.original_sizes,
            "in_difficult": self.in_difficult,
            "query_refs": self.query_refs,
            "record_indices": self.record_indices,
        }


def plan_batches(
    records: Sequence[ImageRecord],
    transform: Transform | None = None,
    max_rows: int = 32,
    preprocessed_size: SizeFunction | None = None,
) -> list[BatchPlan]:
    """Group the queries of ``records`` into batches of equal preprocessed image size.

    Sizes are visited in the order of their first appearance and records in dataset order, so the
    plan is deterministic. An image's queries stay in one batch unless the image alone has more
    than ``max_rows`` queries; then it is split over consecutive batches. Records without queries
    are skipped.

    Args:
        records: The dataset (any sequence of records, e.g. a :class:`PointingDataset`).
        transform: The model's preprocessing; used only to find the preprocessed size of each
            original size (applied once per distinct size to a blank image) when
            ``preprocessed_size`` is not given.
        max_rows: Most query rows per batch.
        preprocessed_size: ``(H, W) -> (h, w)``; pass it when the size is known in closed form.

    Returns:
        The batch plans, in order.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if preprocessed_size is None:
        if transform is None:
            raise ValueError("plan_batches needs the model's transform or a preprocessed_size")
        preprocessed_size = _probe_size(transform)

    groups: dict[tuple[int, int], list[int]] = {}
    for index, record in enumerate(records):
        if record.queries:
            size = preprocessed_size(record.height, record.width)
            groups.setdefault((int(size[0]), int(size[1])), []).append(index)

    plans: list[BatchPlan] = []
    for size, indices in groups.items():
        rows: list[tuple[int, int]] = []
        for index in indices:
            count = len(records[index].queries)
            if rows and len(rows) + count > max_rows:
                plans.append(_plan(size, rows))
                rows = []
            for query_index in range(count):
                rows.append((index, query_index))
                if len(rows) == max_rows:
                    plans.append(_plan(size, rows))
                    rows = []
        if rows:
            plans.append(_plan(size, rows))
    return plans


class QueryBatches(torch.utils.data.Dataset[QueryBatch]):
    """The batches of a pointing dataset, loaded on demand (on the CPU).

    Iterate directly, or wrap in ``torch.utils.data.DataLoader(batches, batch_size=None,
    num_workers=k, pin_memory=True)`` to load in parallel; move a batch with ``batch.to(device)``.

    Args:
        dataset: The pointing dataset.
        transform: The model's preprocessing, ``uint8 [3, H, W] -> float [3, h, w]``.
        max_rows: Most query rows per batch.
        preprocessed_size: Optional closed form of the preprocessed size (see
            :func:`plan_batches`).
    """

    def __init__(
        self,
        dataset: PointingDataset,
        transform: Transform,
        max_rows: int = 32,
        preprocessed_size: SizeFunction | None = None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.plans = plan_batches(dataset, transform, max_rows, preprocessed_size)

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> QueryBatch:
        return self.load(self.plans[index])

    def __iter__(self) -> Iterator[QueryBatch]:
        for plan in self.plans:
            yield self.load(plan)

    def load(self, plan: BatchPlan) -> QueryBatch:
        """Load and preprocess the images of ``plan`` and build its row tensors."""
        images = []
        for record_index in plan.record_indices:
            record = self.dataset[record_index]
            image = self.dataset.load_image(record)
            _check_image(image, record)
            processed = self.transform(image)
            if tuple(processed.shape[-2:]) != plan.size or processed.dim() != 3:
                raise ValueError(
                    f"image {record.image_id!r}: the transform gave shape "
                    f"{tuple(processed.shape)}, but the plan expects [C, {plan.size[0]}, "
                    f"{plan.size[1]}]; the transform must depend only on the image size (or "
                    "pass the matching preprocessed_size)"
                )
            images.append(processed)

        position = {record_index: i for i, record_index in enumerate(plan.record_indices)}
        records = [self.dataset[r] for r, _ in plan.rows]
        queries = [record.queries[q] for record, (_, q) in zip(records, plan.rows, strict=True)]
        return QueryBatch(
            images=torch.stack(images),
            image_index=torch.tensor([position[r] for r, _ in plan.rows], dtype=torch.long),
            targets=torch.tensor([query.class_id for query in queries], dtype=torch.long),
            original_sizes=torch.tensor(
                [(record.height, record.width) for record in records], dtype=torch.long
            ).reshape(-1, 2),
            in_difficult=torch.tensor([query.in_difficult for query in queries], dtype=torch.bool),
            query_refs=torch.tensor(plan.rows, dtype=torch.long).reshape(-1, 2),
            record_indices=torch.tensor(plan.record_indices, dtype=torch.long),
        )


def _plan(size: tuple[int, int], rows: list[tuple[int, int]]) -> BatchPlan:
    record_indices = tuple(dict.fromkeys(record_index for record_index, _ in rows))
    return BatchPlan(size, record_indices, tuple(rows))


def _probe_size(transform: Transform) -> SizeFunction:
    """Preprocessed size by applying ``transform`` to a blank image, once per original size."""
    cache: dict[tuple[int, int], tuple[int, int]] = {}

    def size(height: int, width: int) -> tuple[int, int]:
        key = (height, width)
        if key not in cache:
            out = transform(torch.zeros(3, height, width, dtype=torch.uint8))
            cache[key] = (int(out.shape[-2]), int(out.shape[-1]))
        return cache[key]

    return size


def _check_image(image: torch.Tensor, record: ImageRecord) -> None:
    expected = (3, record.height, record.width)
    if image.dtype != torch.uint8 or tuple(image.shape) != expected:
        raise ValueError(
            f"image {record.image_id!r}: load_image returned {image.dtype} "
            f"{tuple(image.shape)}, expected torch.uint8 {expected} (RGB at the size recorded in "
            "the manifest); fix the dataset's load_image or rebuild its manifest"
        )
