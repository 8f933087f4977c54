"""TorchRay's EBP "difficult" flag files for the pointing game's ``difficult`` subset.

Zhang et al. (ECCV 2016) evaluate the pointing game also on a *difficult* subset of (image, class)
queries; TorchRay ships those flags as ``torchray/benchmark/pointing_game_ebp_voc07_difficult.txt``
and ``pointing_game_ebp_coco_difficult.txt`` (facebookresearch/TorchRay). Each line is an image name
(the image file name without extension) followed by one tab-separated 0/1 flag per class, in the
dataset's class order. A query is kept in the subset unless its image is listed and its class flag
is 0; an image absent from the file keeps all its queries (TorchRay's ``PointingGameBenchmark``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DifficultFlagsError", "check_flags", "in_difficult_subset", "read_difficult_flags"]


class DifficultFlagsError(ValueError):
    """A flag file does not have the expected layout."""


def read_difficult_flags(
    path: str | os.PathLike[str], num_classes: int
) -> dict[str, tuple[bool, ...]]:
    """Read a flag file.

    Args:
        path: The flag file.
        num_classes: Number of flags expected on every line.

    Returns:
        Image name -> flags.

    Raises:
        DifficultFlagsError: A line has the wrong number of columns, a flag other than 0/1, or an
            image name repeats.
    """
    flags: dict[str, tuple[bool, ...]] = {}
    with Path(path).open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            columns = line.rstrip("\r\n").split("\t")
            if len(columns) != num_classes + 1 or any(c not in ("0", "1") for c in columns[1:]):
                raise DifficultFlagsError(
                    f"{path}, line {number}: expected an image name and {num_classes} tab-separated "
                    f"0/1 flags, got {len(columns)} columns; this is not the expected flag file"
                )
            if columns[0] in flags:
                raise DifficultFlagsError(f"{path}, line {number}: image {columns[0]} repeats")
            flags[columns[0]] = tuple(c == "1" for c in columns[1:])
    return flags


def in_difficult_subset(
    flags: Mapping[str, Sequence[bool]], image_name: str, class_id: int
) -> bool:
    """Whether the query (``image_name``, ``class_id``) belongs to the difficult subset."""
    row = flags.get(image_name)
    return row is None or bool(row[class_id])


def check_flags(flags: Mapping[str, Sequence[bool]], num_classes: int) -> None:
    """Raise :class:`DifficultFlagsError` unless every row has ``num_classes`` flags."""
    for image_name, row in flags.items():
        if len(row) != num_classes:
            raise DifficultFlagsError(
                f"difficult flags of image {image_name} have {len(row)} entries, "
                f"expected {num_classes}"
            )
