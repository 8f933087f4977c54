"""PASCAL VOC 2007 test as a pointing-game dataset (Zhang et al., ECCV 2016, as in TorchRay).

Sources:

* Images and annotations: the official test archive ``VOCtest_06-Nov-2007.tar``
  (http://host.robots.ox.ac.uk/pascal/VOC/voc2007/, mirrored by torchvision at
  thor.robots.ox.ac.uk), verified by the md5 torchvision publishes for it.
* The EBP "difficult" flags (:mod:`backsal.data.difficult`): TorchRay's ``torchray/benchmark/pointing_game_ebp_voc07_difficult.txt``
  at commit 6a198ee61d229360a3def590410378d2ed6f1f06 (facebookresearch/TorchRay), verified by
  sha256 (its git blob id there is 8bd2351ea19fb505159506a397e32f857a7ecb75).

Protocol (docs/methods.md §6.1): the queries of an image are the classes present in its annotation,
except a class whose boxes are *all* marked ``difficult``; the ground truth of a query is the union
of all that class's boxes, difficult ones included, converted from VOC's 1-based inclusive pixel
coordinates to 0-based inclusive ones. A query belongs to the ``difficult`` subset unless its image
is listed in the flag file with a 0 for its class (an image absent from the file is kept).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    "VOC07_DIFFICULT_FLAGS",
    "VOC07_TEST_IMAGES",
    "VOC07_TEST_ARCHIVE",
    "VOC_CLASSES",
    "VOCAnnotation",
    "VOCAnnotationError",
    "VOCObject",
    "VOCPointing",
    "check_voc07_layout",
    "parse_voc_annotation",
    "voc07_test",
]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 PASCAL VOC classes in the official order (the order of the models' outputs)."""

log = logging.getLogger(__name__)

_TORCHRAY_COMMIT = "6a198ee61d229360a3def590410378d2ed6f1f06"
_TORCHRAY_RAW = f"https://raw.githubusercontent.com/facebookresearch/TorchRay/{_TORCHRAY_COMMIT}"

VOC07_TEST_ARCHIVE = Resource(
    filename="VOCtest_06-Nov-2007.tar",
    urls=(
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
    ),
    # The md5 torchvision pins for this archive (torchvision.datasets.voc, "2007-test").
    checksum=Checksum("md5", "b6e924de25625d8de591ea690078ad9f"),
    description="PASCAL VOC 2007 test archive",
    manual="The archive is linked from http://host.robots.ox.ac.uk/pascal/VOC/voc2007/.",
)

VOC07_DIFFICULT_FLAGS = Resource(
    filename="pointing_game_ebp_voc07_difficult.txt",
    urls=(f"{_TORCHRAY_RAW}/torchray/benchmark/pointing_game_ebp_voc07_difficult.txt",),
    checksum=Checksum("sha256", "8b1c619e8ae4b66a26efb37433d05f4a8b8ed2c3ae40e8ea50bd061e422d95c9"),
    size=232_744,
    description="TorchRay's EBP difficult flags for VOC 2007 test",
)


class VOCAnnotationError(ValueError):
    """An annotation or split file is missing or malformed."""


@dataclass(frozen=True)
class VOCObject:
    """One annotated object: class name, 1-based inclusive box, VOC ``difficult`` flag."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool


@dataclass(frozen=True)
class VOCAnnotation:
    """The parts of a VOC annotation file the pointing game uses."""

    filename: str
    width: int
    height: int
    objects: tuple[VOCObject, ...]


def _text(element: ET.Element, tag: str, path: Path) -> str:
    child = element.find(tag)
    if child is None or child.text is None:
        raise VOCAnnotationError(f"{path}: <{tag}> is missing")
    return child.text.strip()


def _coordinate(element: ET.Element, tag: str, path: Path) -> int:
    value = _text(element, tag, path)
    try:
        # VOC 2007 stores integers; a few later VOC files store "273.0", hence float first.
        return int(float(value))
    except ValueError as error:
        raise VOCAnnotationError(f"{path}: <{tag}> is {value!r}, not a number") from error


def parse_voc_annotation(path: str | os.PathLike[str]) -> VOCAnnotation:
    """Read a VOC ``Annotations/<id>.xml`` file.

    Raises:
        VOCAnnotationError: The file is missing, not XML, lacks a required field, or has a box
            that covers no pixel of the image (``xmin > xmax``, ``ymin > ymax``, or wholly
            outside it); the message names the file and the object.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as error:
        raise VOCAnnotationError(
            f"annotation {path} is missing; the VOC folder is incomplete: extract the archive again"
        ) from error
    except ET.ParseError as error:
        raise VOCAnnotationError(f"annotation {path} is not valid XML ({error})") from error
    size = root.find("size")
    if size is None:
        raise VOCAnnotationError(f"{path}: <size> is missing")
    width, height = _coordinate(size, "width", path), _coordinate(size, "height", path)
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        box = obj.find("bndbox")
        if box is None:
            raise VOCAnnotationError(f"{path}: an <object> has no <bndbox>")
        difficult = obj.find("difficult")  # absent means not difficult
        parsed = VOCObject(
            name=_text(obj, "name", path),
            xmin=_coordinate(box, "xmin", path),
            ymin=_coordinate(box, "ymin", path),
            xmax=_coordinate(box, "xmax", path),
            ymax=_coordinate(box, "ymax", path),
            difficult=difficult is not None and (difficult.text or "0").strip() == "1",
        )
        _check_box(parsed, number, width, height, path)
        objects.append(parsed)
    filename_element = root.find("filename")
    filename = (
        filename_element.text.strip()
        if filename_element is not None and filename_element.text
        else path.stem + ".jpg"
    )
    return VOCAnnotation(filename=filename, width=width, height=height, objects=tuple(objects))


def _check_box(obj: VOCObject, number: int, width: int, height: int, path: Path) -> None:
    """Reject a box that covers no pixel of the image: its query would be an unwinnable miss.

    A box that only sticks out of the image is kept (the ground truth is clipped to the image).
    """
    where = f"{path}: object {number} ({obj.name!r})"
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if getattr(obj, low) > getattr(obj, high):
            raise VOCAnnotationError(
                f"{where} has an empty box: {low} {getattr(obj, low)} > {high} "
                f"{getattr(obj, high)}; fix or remove the object in the annotation file"
            )
    if obj.xmax < 1 or obj.ymax < 1 or obj.xmin > width or obj.ymin > height:
        raise VOCAnnotationError(
            f"{where} has box ({obj.xmin}, {obj.ymin})..({obj.xmax}, {obj.ymax}), outside the "
            f"{width}x{height} image (width x height, 1-based pixels); fix or remove the object "
            "in the annotation file"
        )


def _read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise VOCAnnotationError(
            f"split file {path} is missing; is the root a VOC folder (with Annotations/, "
            "JPEGImages/ and ImageSets/Main/)?"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _build_record(
    image_id: str,
    annotation: VOCAnnotation,
    flags: Mapping[str, Sequence[bool]],
    class_index: Mapping[str, int],
    path: Path,
) -> ImageRecord:
    by_class: dict[int, list[VOCObject]] = {}
    for obj in annotation.objects:
        if obj.name not in class_index:
            raise VOCAnnotationError(
                f"{path}: unknown class {obj.name!r}; expected one of {sorted(class_index)}"
            )
        by_class.setdefault(class_index[obj.name], []).append(obj)
    queries = []
    for class_id in sorted(by_class):
        objects = by_class[class_id]
        if all(obj.difficult for obj in objects):
            continue  # TorchRay skips a class that only has difficult instances
        boxes = tuple((o.xmin - 1, o.ymin - 1, o.xmax - 1, o.ymax - 1) for o in objects)
        in_difficult = in_difficult_subset(flags, image_id, class_id)
        queries.append(Query(class_id=class_id, boxes=boxes, in_difficult=in_difficult))
    return ImageRecord(
        image_id=image_id,
        height=annotation.height,
        width=annotation.width,
        queries=tuple(queries),
    )


#: Images of the official VOC 2007 test split.
VOC07_TEST_IMAGES = 4952


class VOCPointing(ImageFileDataset):
    """A PASCAL VOC split as pointing-game records.

    Every image of the split has a record, in split-file order; an image whose classes are all
    difficult has a record without queries.

    Args:
        root: The ``VOC2007`` folder (holding ``Annotations/``, ``JPEGImages/``,
            ``ImageSets/Main/``).
        difficult_flags: TorchRay's EBP flag file, or an already read mapping image id -> flags.
        split: Name of the ``ImageSets/Main`` split file.
    """

    name = "voc07"
    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        difficult_flags: str | os.PathLike[str] | Mapping[str, Sequence[bool]],
        *,
        split: str = "test",
    ) -> None:
        self.root = Path(root)
        self.split = split
        if isinstance(difficult_flags, Mapping):
            flags = difficult_flags
            check_flags(flags, len(VOC_CLASSES))
        else:
            flags = read_difficult_flags(difficult_flags, len(VOC_CLASSES))
        class_index = {name: i for i, name in enumerate(VOC_CLASSES)}
        image_ids = _read_split(self.root / "ImageSets" / "Main" / f"{split}.txt")
        records = []
        self._filenames: dict[str, str] = {}
        for image_id in image_ids:
            path = self.root / "Annotations" / f"{image_id}.xml"
            annotation = parse_voc_annotation(path)
            self._filenames[image_id] = annotation.filename
            records.append(_build_record(image_id, annotation, flags, class_index, path))
        super().__init__(records)

    def image_path(self, record: ImageRecord) -> Path:
        """Path of the JPEG of ``record``."""
        return (
            self.root
            / "JPEGImages"
            / self._filenames.get(record.image_id, f"{record.image_id}.jpg")
        )


def voc07_test(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    archive: Resource = VOC07_TEST_ARCHIVE,
    flags: Resource = VOC07_DIFFICULT_FLAGS,
    path: str | os.PathLike[str] | None = None,
) -> VOCPointing:
    """PASCAL VOC 2007 test with TorchRay's difficult flags, downloaded into ``root/voc07``.

    Downloads (if needed) and verifies the test archive and the flag file, extracts the archive
    into ``root/voc07/VOCdevkit/VOC2007`` and parses the annotations. With ``path`` (a copy you
    already have) the archive is neither downloaded nor extracted: its layout is checked instead;
    the small flag file still comes from ``root/voc07`` (or is downloaded there).

    Args:
        root: Resources folder (default :func:`backsal.data.download.default_root`).
        download: Whether missing files may be downloaded.
        progress: Show download progress.
        archive: The test archive resource (override for a mirror).
        flags: The flag file resource (override for a mirror).
        path: An extracted ``VOCdevkit`` folder (holding ``VOC2007/``), or ``VOC2007`` itself.

    Returns:
        The dataset (4,952 images for the official archive; ``expected_images`` says so, and a
        different count is logged).
    """
    folder = (Path(root) if root is not None else default_root()) / "voc07"
    voc = check_voc07_layout(path) if path is not None else None  # before any download
    flags_path = ensure_file(flags, folder, download=download, progress=progress)
    if voc is None:
        archive_path = ensure_file(archive, folder, download=download, progress=progress)
        extract_archive(archive_path, folder, progress=progress)
        voc = folder / "VOCdevkit" / "VOC2007"
    dataset = VOCPointing(voc, flags_path, split="test")
    dataset.expected_images = VOC07_TEST_IMAGES
    if len(dataset) != VOC07_TEST_IMAGES:
        log.warning(
            "%s lists %d test images, not the official %d: results are not comparable with the "
            "paper's", voc / "ImageSets" / "Main" / "test.txt", len(dataset), VOC07_TEST_IMAGES,
        )  # fmt: skip
    return dataset


def check_voc07_layout(path: str | os.PathLike[str]) -> Path:
    """The ``VOC2007`` folder of a ``VOCdevkit`` copy at ``path``, after checking its layout.

    Raises:
        FileNotFoundError: Something is missing; the message names every missing piece.
    """
    given = Path(path).expanduser()
    voc = given if given.name == "VOC2007" else given / "VOC2007"
    if not voc.is_dir() and (given / "VOCdevkit" / "VOC2007").is_dir():
        voc = given / "VOCdevkit" / "VOC2007"
    needed = [voc / "Annotations", voc / "JPEGImages", voc / "ImageSets" / "Main" / "test.txt"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"datasets.voc07.path = {given} is not an extracted VOC 2007 test set: missing "
            + ", ".join(missing)
            + ". Point it at the VOCdevkit folder that VOCtest_06-Nov-2007.tar extracts (it "
            "holds VOC2007/{Annotations,JPEGImages,ImageSets/Main/test.txt}), or remove path to "
            "download the archive."
        )
    return voc
