"""ImageNet (ILSVRC 2012) validation images for the class-sensitivity test (docs/methods.md §7).

ImageNet cannot be downloaded without an account, so this module only *finds* a copy the user
placed on disk. Accepted layouts of the configured folder:

* **ImageFolder**: one sub-folder per WordNet id (``n01440764/…``), as produced by the common
  ``valprep.sh`` script. Labels come from the folder names.
* **Official flat layout**: the 50,000 files ``ILSVRC2012_val_00000001.JPEG`` … of
  ``ILSVRC2012_img_val.tar`` (image-net.org), with the ground truth from either

  - the development kit ``ILSVRC2012_devkit_t12`` (folder or ``.tar.gz``):
    ``data/ILSVRC2012_validation_ground_truth.txt`` lists ILSVRC2012_IDs in image order and
    ``data/meta.mat`` maps them to WordNet ids; or
  - Kaggle's ``LOC_val_solution.csv`` (ImageNet Object Localization Challenge): the first WordNet
    id of each ``PredictionString`` is the label; ``LOC_synset_mapping.txt`` lists the classes.

  If the folder holds the official ``ILSVRC2012_img_val.tar`` instead, it is verified (torchvision's
  md5) and extracted into ``val/`` first.

Labels are indices into the sorted WordNet ids, which for the 1000 classes is the class order of
torchvision's ImageNet models. Class sensitivity only needs the images (its classes are the
model's most and least likely ones); the labels are kept for reporting.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import torch

from backsal.data._image import read_rgb
from backsal.data.download import Checksum, default_root, extract_archive, verify_file

__all__ = [
    "DEVKIT_MD5",
    "VAL_ARCHIVE_MD5",
    "ImageNetNotFoundError",
    "ImageNetSample",
    "ImageNetVal",
    "imagenet_val",
]

VAL_ARCHIVE_MD5 = Checksum("md5", "29b22e2961454d5413ddabcf34fc5622")
"""torchvision's md5 of ``ILSVRC2012_img_val.tar``."""
DEVKIT_MD5 = Checksum("md5", "fa75699e90414af021442c21a62c3abf")
"""torchvision's md5 of ``ILSVRC2012_devkit_t12.tar.gz``."""

_VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
_DEVKIT = "ILSVRC2012_devkit_t12"
_WNID = re.compile(r"^n\d{8}$")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.(?:JPEG|jpeg|jpg|JPG|png)$")
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}

_HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically: it needs an account. Either\n"
    "  * register at https://image-net.org/download-images.php and download, from the ILSVRC2012 "
    "page, 'Validation images (all tasks)' ILSVRC2012_img_val.tar (6.3 GB) and 'Development kit "
    "(Task 1 & 2)' ILSVRC2012_devkit_t12.tar.gz; or\n"
    "  * download Kaggle's 'imagenet-object-localization-challenge' and use "
    "ILSVRC/Data/CLS-LOC/val with LOC_val_solution.csv and LOC_synset_mapping.txt.\n"
    "Then put them in {folder}: the tar as is (it is extracted into {folder}/val) or the images "
    "in {folder}/val (flat ILSVRC2012_val_*.JPEG files, or one folder per WordNet id), with the "
    "devkit or the Kaggle csv files in {folder}; or point the configured ImageNet path at your copy."
)


class ImageNetNotFoundError(FileNotFoundError):
    """No usable ImageNet validation copy at the configured path."""


@dataclass(frozen=True)
class ImageNetSample:
    """One validation image: its name, file and label (index into the sorted WordNet ids)."""

    image_id: str
    path: Path
    label: int


def _not_found(folder: Path, problem: str) -> ImageNetNotFoundError:
    return ImageNetNotFoundError(f"{problem}\n" + _HOW_TO_GET.format(folder=folder))


def _search_upwards(start: Path, names: Sequence[str], levels: int = 4) -> Path | None:
    """First of ``names`` found in ``start`` or its ancestors (Kaggle nests the images 4 deep)."""
    for folder in [start, *list(start.parents)[:levels]]:
        for name in names:
            candidate = folder / name
            if candidate.exists():
                return candidate
    return None


# ------------------------------------------------------------------------------ ground truth


def _read_member(devkit: Path, member: str) -> bytes:
    if devkit.is_dir():
        return (devkit / member).read_bytes()
    with tarfile.open(devkit) as tar:
        handle = tar.extractfile(f"{_DEVKIT}/{member}")
        if handle is None:
            raise KeyError(member)
        return handle.read()


def _devkit_ground_truth(devkit: Path) -> tuple[list[str], dict[str, str]]:
    """WordNet ids of the leaf classes and image id -> WordNet id, from the devkit."""
    import scipy.io  # only this layout needs it

    if devkit.is_file() and devkit.name.endswith(".tar.gz") and devkit.name.startswith(_DEVKIT):
        verify_file(devkit, DEVKIT_MD5, use_stamp=True)
    try:
        meta = scipy.io.loadmat(io.BytesIO(_read_member(devkit, "data/meta.mat")), squeeze_me=True)[
            "synsets"
        ]
        truth = _read_member(devkit, "data/ILSVRC2012_validation_ground_truth.txt").decode()
    except (KeyError, FileNotFoundError, ValueError, tarfile.TarError) as error:
        raise ImageNetNotFoundError(
            f"{devkit} is not a complete ILSVRC2012 devkit (needs data/meta.mat and "
            f"data/ILSVRC2012_validation_ground_truth.txt): {error}"
        ) from error
    ids = [int(x) for x in meta["ILSVRC2012_ID"]]
    wnids = [str(x) for x in meta["WNID"]]
    leaves = [int(x) == 0 for x in meta["num_children"]]
    id_to_wnid = {i: w for i, w, leaf in zip(ids, wnids, leaves, strict=True) if leaf}
    labels = {}
    for number, line in enumerate(truth.split(), start=1):
        labels[f"ILSVRC2012_val_{number:08d}"] = id_to_wnid[int(line)]
    return sorted(id_to_wnid.values()), labels


def _kaggle_ground_truth(solution: Path) -> tuple[list[str], dict[str, str]]:
    """Classes and image id -> WordNet id from ``LOC_val_solution.csv`` (+ synset mapping)."""
    labels: dict[str, str] = {}
    with solution.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                labels[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError) as error:
                raise ImageNetNotFoundError(
                    f"{solution} is not Kaggle's LOC_val_solution.csv (columns ImageId, "
                    "PredictionString)"
                ) from error
    mapping = solution.with_name("LOC_synset_mapping.txt")
    if mapping.is_file():
        wnids = sorted(line.split()[0] for line in mapping.read_text().splitlines() if line)
    else:
        wnids = sorted(set(labels.values()))
    return wnids, labels


# ------------------------------------------------------------------------------ dataset


class ImageNetVal(Sequence[ImageNetSample]):
    """ImageNet validation images with labels, from an ImageFolder or the official flat layout.

    Args:
        images_dir: Folder of the images (flat ``ILSVRC2012_val_*.JPEG`` or one folder per WordNet
            id).
        ground_truth: For the flat layout: the devkit (folder or ``.tar.gz``) or
            ``LOC_val_solution.csv``; searched next to ``images_dir`` and above when omitted.
        num_classes: Number of classes the labels must span (1000, so labels are torchvision's
            class indices); ``None`` accepts any number.
        limit: Keep only the first ``limit`` images (sorted by name).
    """

    name = "imagenet_val"

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        *,
        ground_truth: str | os.PathLike[str] | None = None,
        num_classes: int | None = 1000,
        limit: int | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise _not_found(self.images_dir, f"ImageNet images not found at {self.images_dir}.")
        class_dirs = sorted(
            p for p in self.images_dir.iterdir() if p.is_dir() and _WNID.match(p.name)
        )
        if class_dirs:
            self.layout: Literal["imagefolder", "flat"] = "imagefolder"
            self.wnids = tuple(p.name for p in class_dirs)
            samples = [
                ImageNetSample(path.stem, path, label)
                for label, folder in enumerate(class_dirs)
                for path in sorted(folder.iterdir())
                if path.suffix.lower() in _IMAGE_SUFFIXES
            ]
            samples.sort(key=lambda s: s.image_id)
        else:
            self.layout = "flat"
            files = sorted(p for p in self.images_dir.iterdir() if _VAL_NAME.match(p.name))
            if not files:
                raise _not_found(
                    self.images_dir,
                    f"{self.images_dir} holds neither ILSVRC2012_val_*.JPEG files nor one folder "
                    "per WordNet id.",
                )
            wnids, labels = self._ground_truth(ground_truth)
            self.wnids = tuple(wnids)
            index = {wnid: i for i, wnid in enumerate(self.wnids)}
            samples = []
            for path in files:
                if path.stem not in labels:
                    raise ImageNetNotFoundError(
                        f"{path.name} has no entry in the ground truth; the images and the "
                        "ground-truth file do not belong together"
                    )
                samples.append(ImageNetSample(path.stem, path, index[labels[path.stem]]))
        if num_classes is not None and len(self.wnids) != num_classes:
            raise ImageNetNotFoundError(
                f"found {len(self.wnids)} classes in {self.images_dir} (expected {num_classes}); "
                "labels would not be the models' class indices. Use the complete validation set "
                "(and LOC_synset_mapping.txt beside LOC_val_solution.csv)."
            )
        if not samples:
            raise _not_found(self.images_dir, f"no images found in {self.images_dir}.")
        self.samples: list[ImageNetSample] = samples[:limit] if limit is not None else samples

    def _ground_truth(
        self, ground_truth: str | os.PathLike[str] | None
    ) -> tuple[list[str], dict[str, str]]:
        source = (
            Path(ground_truth)
            if ground_truth is not None
            else _search_upwards(
                self.images_dir, ["LOC_val_solution.csv", _DEVKIT, f"{_DEVKIT}.tar.gz"]
            )
        )
        if source is None or not source.exists():
            raise _not_found(
                self.images_dir.parent,
                f"no ground truth for the flat ImageNet images in {self.images_dir}: expected "
                f"{_DEVKIT}(.tar.gz) or LOC_val_solution.csv beside them or above.",
            )
        if source.suffix == ".csv":
            return _kaggle_ground_truth(source)
        return _devkit_ground_truth(source)

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> ImageNetSample: ...
    @overload
    def __getitem__(self, index: slice) -> list[ImageNetSample]: ...
    def __getitem__(self, index: int | slice) -> ImageNetSample | list[ImageNetSample]:
        return self.samples[index]

    def __iter__(self) -> Iterator[ImageNetSample]:
        return iter(self.samples)

    def load_image(self, sample: ImageNetSample) -> torch.Tensor:
        """The image of ``sample`` as ``uint8 [3, H, W]`` RGB at its original size."""
        return read_rgb(sample.path)


def imagenet_val(
    folder: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = 1000,
    limit: int | None = None,
    progress: bool = True,
) -> ImageNetVal:
    """Find the ImageNet validation set in ``folder`` (default ``<resources>/imagenet``).

    ``folder`` may itself hold the images (flat or one folder per WordNet id) or hold them in
    ``val/``; an official ``ILSVRC2012_img_val.tar`` placed there is verified and extracted into
    ``val/`` first.

    Args:
        folder: Where the user put ImageNet.
        num_classes: See :class:`ImageNetVal`.
        limit: See :class:`ImageNetVal`.
        progress: Log the extraction.

    Raises:
        ImageNetNotFoundError: Nothing usable there; the message says how to get ImageNet and
            where to put it.
    """
    folder = Path(folder) if folder is not None else default_root() / "imagenet"
    if not folder.is_dir():
        raise _not_found(folder, f"ImageNet validation set not found: {folder} does not exist.")
    archive = folder / _VAL_ARCHIVE
    if archive.is_file():
        # hashing 6.3 GB takes a while: the stamp lets later calls skip an unchanged archive
        verify_file(archive, VAL_ARCHIVE_MD5, use_stamp=True)
        extract_archive(archive, folder / "val", progress=progress)
    images_dir = folder / "val" if (folder / "val").is_dir() else folder
    return ImageNetVal(images_dir, num_classes=num_classes, limit=limit)
