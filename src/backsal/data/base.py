"""Types shared by every dataset: images with their original size and their queries.

A *query* is one (image, class) question of the pointing game (Zhang et al., ECCV 2016): the
class, its ground truth (boxes or instance segmentations) and whether the query belongs to the
``difficult`` subset. Datasets yield :class:`ImageRecord` objects; the batch builder
(:mod:`backsal.data.batching`) turns records into model inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._image import read_rgb

__all__ = ["ImageFileDataset", "ImageRecord", "PointingDataset", "Query"]


@dataclass(frozen=True)
class Query:
    """One (image, class) query.

    Attributes:
        class_id: Index of the class in the dataset's ``class_names``.
        boxes: Ground-truth boxes as 0-based *inclusive* pixel ranges ``(x0, y0, x1, y1)`` at the
            original image size (a VOC box ``xmin..xmax`` in 1-based coordinates is
            ``xmin-1..xmax-1`` here).
        segmentations: COCO-style instance segmentations (polygon lists or RLE dicts) at the
            original image size; the ground truth is their union, together with ``boxes``.
        in_difficult: Whether the query is kept in the ``difficult`` subset.
    """

    class_id: int
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    segmentations: tuple[Any, ...] = ()
    in_difficult: bool = True

    def mask(self, height: int, width: int) -> torch.Tensor:
        """Ground truth as a boolean mask ``[height, width]``: the union of boxes and segments.

        Raises:
            ValueError: The mask is empty (every box and segment lies outside the image, or
                there is none). The pointing game cannot score such a query (any point would be
                a miss), so it is an error rather than a silent miss; the loaders reject the
                annotations that cause it when they read them (:mod:`backsal.data.voc`,
                :mod:`backsal.data.coco`).
        """
        mask = np.zeros((height, width), dtype=bool)
        for x0, y0, x1, y1 in self.boxes:
            mask[max(y0, 0) : min(y1, height - 1) + 1, max(x0, 0) : min(x1, width - 1) + 1] = True
        if self.segmentations:
            from pycocotools import mask as mask_utils  # optional at import time

            for segmentation in self.segmentations:
                if isinstance(segmentation, list):  # polygons of one instance
                    rles = mask_utils.frPyObjects(segmentation, height, width)
                    rle = mask_utils.merge(rles)
                elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(segmentation, height, width)
                else:  # compressed RLE
                    rle = segmentation
                mask |= mask_utils.decode(rle).astype(bool)
        if not mask.any():
            raise ValueError(
                f"The ground-truth mask is empty for class {self.class_id} in a {height}x{width} "
                f"(height x width) image: its boxes {list(self.boxes)} and "
                f"{len(self.segmentations)} segments cover no pixel; fix the annotation"
            )
        return torch.from_numpy(mask)


@dataclass(frozen=True)
class ImageRecord:
    """An image of a pointing-game dataset, its original size and its queries."""

    image_id: str
    height: int
    width: int
    queries: tuple[Query, ...] = field(default_factory=tuple)


class PointingDataset(Sequence[ImageRecord]):
    """Base class of the pointing-game datasets: a sequence of records plus an image loader.

    Subclasses set ``name`` and ``class_names``, fill ``self.records`` and implement
    :meth:`load_image`; a dataset of small images may scale ``pointing_tolerance``.
    """

    name: str = ""
    class_names: tuple[str, ...] = ()
    #: Pointing-game hit radius in pixels at the original image size (docs/methods.md §6.3: 15 px).
    pointing_tolerance: float = 15.0
    #: Images of the official split, where there is one (``None``: no fixed size).
    expected_images: int | None = None

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records: list[ImageRecord] = list(records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """The image of ``record`` as ``uint8 [3, H, W]`` RGB at its original size."""
        raise NotImplementedError

    def num_queries(self) -> int:
        return sum(len(r.queries) for r in self.records)


class ImageFileDataset(PointingDataset):
    """A pointing dataset whose images are files (JPEG, PNG), checked against the recorded size.

    Subclasses implement :meth:`image_path`.
    """

    def image_path(self, record: ImageRecord) -> Path:
        """Path of the image file of ``record``."""
        raise NotImplementedError

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """The image of ``record`` as ``uint8 [3, H, W]`` RGB at its original size."""
        return read_rgb(self.image_path(record), expected_size=(record.height, record.width))
