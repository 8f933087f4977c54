"""MS COCO 2014 val as a pointing-game dataset (Zhang et al., ECCV 2016, as in TorchRay).

Sources:

* Images ``val2014.zip`` and annotations ``annotations_trainval2014.zip`` from
  http://images.cocodataset.org (the COCO site publishes no digests). The sha1 digests pinned
  here are the ones NVIDIA's MLPerf COCO-2014 download scripts check with ``sha1sum -c``; the
  sizes (6,645,013,297 and 252,872,794 bytes) are what the server announces, reported
  consistently by several independent scripts.
* The EBP "difficult" flags: TorchRay's ``torchray/benchmark/pointing_game_ebp_coco_difficult.txt``
  at commit 6a198ee61d229360a3def590410378d2ed6f1f06, verified by its git blob id there,
  371a7d1815ba5ecaebd39a0e0eda92f7f57c85a0 (no sha256 is published). Each line is the image file
  name without extension (``COCO_val2014_000000000042``) and 80 tab-separated 0/1 flags in the
  order of the sorted category ids.

Protocol (docs/methods.md §6.1, TorchRay's ``coco_as_class_ids``/``coco_as_mask``): every image of the
annotation file is a record (sorted by image id, as torchvision's ``CocoDetection``); its queries
are the categories with at least one annotation; classes are numbered 0..79 by sorted category id
(the order of the fine-tuned models' outputs); the ground truth is the union of the category's
instance masks decoded by pycocotools (polygons and RLE). ``iscrowd`` annotations (uncompressed
RLE over a crowd) count like any other, both for the presence of a class and for its mask,
because TorchRay loads every annotation of an image; pass ``include_crowd=False`` to drop them.

Malformed annotations are rejected when the file is read, naming the annotation (or image) id,
rather than giving a query an empty ground truth that the pointing game would count as a miss:
a missing or empty ``segmentation``, a polygon of fewer than three points, an RLE whose size is
not the image's, whose counts do not cover the image or which marks no pixel, and an image
without ``height``/``width``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backsal.data.base import ImageFileDataset, ImageRecord, Query
from backsal.data.difficult import check_flags, in_difficult_subset, read_difficult_flags
from backsal.data.download import (
    Checksum,
    Resource,
    default_root,
    ensure_file,
    extract_archive,
)

__all__ = [
    "COCO14_ANNOTATIONS",
    "COCO14_DIFFICULT_FLAGS",
    "COCO14_VAL_COUNT",
    "COCO14_VAL_IMAGES",
    "COCOAnnotationError",
    "COCOPointing",
    "check_coco14_layout",
    "coco14_val",
]

log = logging.getLogger(__name__)

#: Images of the official COCO 2014 val split.
COCO14_VAL_COUNT = 40504

_TORCHRAY_COMMIT = "6a198ee61d229360a3def590410378d2ed6f1f06"
_TORCHRAY_RAW = f"https://raw.githubusercontent.com/facebookresearch/TorchRay/{_TORCHRAY_COMMIT}"
_ANNOTATION_MEMBER = "annotations/instances_val2014.json"

COCO14_VAL_IMAGES = Resource(
    filename="val2014.zip",
    urls=(
        "http://images.cocodataset.org/zips/val2014.zip",
        "https://s3.amazonaws.com/images.cocodataset.org/zips/val2014.zip",
    ),
    checksum=Checksum("sha1", "fbedd73593f242db65cce6bcefde193fcedcc5c0"),
    size=6_645_013_297,
    description="COCO 2014 val images",
    manual="The archive is linked from https://cocodataset.org/#download (2014 Val images).",
)

COCO14_ANNOTATIONS = Resource(
    filename="annotations_trainval2014.zip",
    urls=(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        "https://s3.amazonaws.com/images.cocodataset.org/annotations/annotations_trainval2014.zip",
    ),
    checksum=Checksum("sha1", "8e0b9df54c175f1688400e98d1a97f292e726870"),
    size=252_872_794,
    description="COCO 2014 train/val annotations",
    manual="The archive is linked from https://cocodataset.org/#download (2014 Train/Val "
    "annotations).",
)

COCO14_DIFFICULT_FLAGS = Resource(
    filename="pointing_game_ebp_coco_difficult.txt",
    urls=(f"{_TORCHRAY_RAW}/torchray/benchmark/pointing_game_ebp_coco_difficult.txt",),
    checksum=Checksum("git-blob", "371a7d1815ba5ecaebd39a0e0eda92f7f57c85a0"),
    description="TorchRay's EBP difficult flags for COCO 2014 val",
)


class COCOAnnotationError(ValueError):
    """The annotation file is missing or inconsistent."""


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with path.open() as handle:
            data = json.load(handle)
    except FileNotFoundError as error:
        raise COCOAnnotationError(
            f"annotation file {path} is missing; extract {_ANNOTATION_MEMBER} from "
            "annotations_trainval2014.zip"
        ) from error
    except ValueError as error:
        raise COCOAnnotationError(
            f"annotation file {path} is not valid JSON ({error}); extract it again"
        ) from error
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise COCOAnnotationError(
            f"{path} has no {missing}: it is not a COCO instances file (instances_val2014.json)"
        )
    return data


def _check_image(image_id: Any, image: Mapping[str, Any], path: Path) -> None:
    for key in ("id", "file_name", "height", "width"):
        if key not in image:
            raise COCOAnnotationError(
                f"{path}: image {image_id} has no {key!r}; every image entry needs id, file_name, "
                "height and width: extract the official instances file again"
            )
    for key in ("height", "width"):
        value = image[key]
        if not isinstance(value, int | float) or value != int(value) or value < 1:
            raise COCOAnnotationError(
                f"{path}: image {image_id} has {key} {image[key]!r}, not a positive integer"
            )


def _check_segmentation(ann: Mapping[str, Any], height: int, width: int, path: Path) -> None:
    """Reject a segmentation that is malformed or marks no pixel, naming the annotation id."""
    where = f"{path}: annotation {ann.get('id')} (image {ann.get('image_id')})"
    if "segmentation" not in ann:
        raise COCOAnnotationError(f"{where} has no 'segmentation'; {_FIX}")
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        if not segmentation:
            raise COCOAnnotationError(f"{where}: its segmentation is empty (no polygon); {_FIX}")
        for number, polygon in enumerate(segmentation, start=1):
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                size = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
                raise COCOAnnotationError(
                    f"{where}: polygon {number} has {size} coordinates; a polygon is a flat list "
                    f"x1, y1, x2, y2, ... of at least 3 points; {_FIX}"
                )
        return
    if not isinstance(segmentation, Mapping) or not {"size", "counts"} <= set(segmentation):
        raise COCOAnnotationError(
            f"{where}: its segmentation is neither a list of polygons nor an RLE dict with 'size' "
            f"and 'counts'; {_FIX}"
        )
    rle_size = segmentation["size"]
    rle_size = list(rle_size) if isinstance(rle_size, list | tuple) else rle_size
    if rle_size != [height, width]:
        raise COCOAnnotationError(
            f"{where}: RLE size {rle_size} is not the image's {height}x{width} (height x width); "
            + _FIX
        )
    counts = segmentation["counts"]
    try:
        runs = _rle_runs(counts) if isinstance(counts, str | bytes) else [int(c) for c in counts]
    except (TypeError, ValueError) as error:
        raise COCOAnnotationError(f"{where}: RLE counts are malformed ({error}); {_FIX}") from error
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise COCOAnnotationError(
            f"{where}: RLE counts are invalid: {len(runs)} runs of {sum(runs)} pixels in total "
            f"(negative: {sum(run < 0 for run in runs)}), but the image has {height * width}; "
            + _FIX
        )
    if not any(runs[1::2]):
        raise COCOAnnotationError(f"{where}: its RLE mask is empty (marks no pixel); {_FIX}")


_FIX = "fix or remove the annotation, or extract the official instances file again"


def _rle_runs(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` format:
    6-bit characters from ``'0'``, 5 data bits each, sign-extended, runs after the second coded
    as differences), decoded only to validate it: pycocotools reads a malformed one silently."""
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    runs: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("the string ends inside a number")
            char = data[position] - 48
            if not 0 <= char < 64:
                raise ValueError(f"character {chr(data[position])!r} is not an RLE digit")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


class COCOPointing(ImageFileDataset):
    """A COCO instances split as pointing-game records.

    Args:
        images_dir: Folder of the images (``val2014``).
        annotation_file: The instances file (``instances_val2014.json``).
        difficult_flags: TorchRay's EBP flag file, or a mapping image name (file name without
            extension) -> flags in class order.
        include_crowd: Count ``iscrowd`` annotations (TorchRay does).
    """

    name = "coco14"

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        difficult_flags: str | os.PathLike[str] | Mapping[str, Sequence[bool]],
        *,
        include_crowd: bool = True,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.include_crowd = include_crowd
        data = _load_json(self.annotation_file)

        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids: tuple[int, ...] = tuple(c["id"] for c in categories)
        self.class_names = tuple(c["name"] for c in categories)
        class_of = {category_id: i for i, category_id in enumerate(self.category_ids)}

        if isinstance(difficult_flags, Mapping):
            flags = difficult_flags
            check_flags(flags, len(categories))
        else:
            flags = read_difficult_flags(difficult_flags, len(categories))

        images = {image.get("id"): image for image in data["images"]}
        for image_id, image in images.items():
            _check_image(image_id, image, self.annotation_file)
        segments: dict[int, dict[int, list[Any]]] = {image_id: {} for image_id in images}
        for ann in data["annotations"]:
            if ann.get("image_id") not in images:
                raise COCOAnnotationError(
                    f"{self.annotation_file}: annotation {ann.get('id')} refers to unknown image "
                    f"{ann.get('image_id')}"
                )
            if ann.get("category_id") not in class_of:
                raise COCOAnnotationError(
                    f"{self.annotation_file}: annotation {ann.get('id')} has unknown category "
                    f"{ann.get('category_id')}"
                )
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            image = images[ann["image_id"]]
            _check_segmentation(
                ann, int(image["height"]), int(image["width"]), self.annotation_file
            )
            per_class = segments[ann["image_id"]].setdefault(class_of[ann["category_id"]], [])
            per_class.append(ann["segmentation"])

        self._file_names: dict[str, str] = {}
        records = []
        for image_id in sorted(images):
            image = images[image_id]
            key = Path(image["file_name"]).stem
            self._file_names[key] = image["file_name"]
            queries = tuple(
                Query(
                    class_id=class_id,
                    segmentations=tuple(instances),
                    in_difficult=in_difficult_subset(flags, key, class_id),
                )
                for class_id, instances in sorted(segments[image_id].items())
            )
            records.append(
                ImageRecord(
                    image_id=key,
                    height=int(image["height"]),
                    width=int(image["width"]),
                    queries=queries,
                )
            )
        super().__init__(records)

    def image_path(self, record: ImageRecord) -> Path:
        """Path of the image file of ``record``."""
        return self.images_dir / self._file_names[record.image_id]


def coco14_val(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    include_crowd: bool = True,
    images: Resource = COCO14_VAL_IMAGES,
    annotations: Resource = COCO14_ANNOTATIONS,
    flags: Resource = COCO14_DIFFICULT_FLAGS,
    path: str | os.PathLike[str] | None = None,
) -> COCOPointing:
    """COCO 2014 val with TorchRay's difficult flags, downloaded into ``root/coco14``.

    Downloads (if needed) and verifies the image archive, the annotation archive and the flag
    file, extracts ``val2014/`` and ``annotations/instances_val2014.json`` and parses them. With
    ``path`` (a copy you already have) nothing but the small flag file is fetched: the layout of
    ``path`` is checked instead.

    Args:
        root: Resources folder (default :func:`backsal.data.download.default_root`).
        download: Whether missing files may be downloaded.
        progress: Show download progress.
        include_crowd: Count ``iscrowd`` annotations (TorchRay does).
        images: The image archive resource (override for a mirror).
        annotations: The annotation archive resource (override for a mirror).
        flags: The flag file resource (override for a mirror).
        path: A folder holding ``val2014/`` and ``annotations/instances_val2014.json``.

    Returns:
        The dataset (40,504 images for the official files; a different count is logged).
    """
    folder = (Path(root) if root is not None else default_root()) / "coco14"
    base = check_coco14_layout(path) if path is not None else None  # before any download
    flags_path = ensure_file(flags, folder, download=download, progress=progress)
    if base is None:
        annotations_path = ensure_file(annotations, folder, download=download, progress=progress)
        images_path = ensure_file(images, folder, download=download, progress=progress)
        extract_archive(annotations_path, folder, members=[_ANNOTATION_MEMBER], progress=progress)
        extract_archive(images_path, folder, progress=progress)
        base = folder
    dataset = COCOPointing(
        base / "val2014",
        base / _ANNOTATION_MEMBER,
        flags_path,
        include_crowd=include_crowd,
    )
    dataset.expected_images = COCO14_VAL_COUNT
    if len(dataset) != COCO14_VAL_COUNT:
        log.warning(
            "%s lists %d images, not the official %d: results are not comparable with the "
            "paper's", base / _ANNOTATION_MEMBER, len(dataset), COCO14_VAL_COUNT,
        )  # fmt: skip
    return dataset


def check_coco14_layout(path: str | os.PathLike[str]) -> Path:
    """``path`` after checking it holds ``val2014/`` and ``annotations/instances_val2014.json``.

    Raises:
        FileNotFoundError: Something is missing; the message names every missing piece.
    """
    base = Path(path).expanduser()
    needed = [base / "val2014", base / _ANNOTATION_MEMBER]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"datasets.coco14.path = {base} is not a COCO 2014 val copy: missing "
            + ", ".join(missing)
            + ". Point it at the folder where val2014.zip and annotations_trainval2014.zip were "
            "extracted (it holds val2014/ and annotations/), or remove path to download them."
        )
    return base
