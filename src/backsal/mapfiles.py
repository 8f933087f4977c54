"""Saliency maps of a user's images saved as arrays, with the provenance record: ``.npz`` or ``.pt``.

``backsal explain --save-maps PATH`` writes one of these; :func:`load_maps` reads either back
into the same :class:`SavedMaps`. Each row is one (image, class) pair; its maps are at the
image's original size, raw (not normalised), ``float32 [H, W]``.

``.npz`` (``numpy.load(path)``, no pickle): string arrays ``images`` (paths), ``methods``,
``layers`` and ``class_names`` (``""`` where unknown); ``image_index``, ``targets`` and
``probabilities`` per row; ``provenance`` (a JSON string); one array per row, method and layer,
``map__<row>__<method>__<layer>`` (``/`` of grid method names stored as ``-``, as the workflow's
example files do).

``.pt`` (``torch.load(path, weights_only=True)``): ``{"schema", "provenance", "methods",
"layers", "rows": [{"image", "image_index", "target", "class_name", "probability", "maps":
{method: {layer: Tensor[H, W]}}}]}``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backsal.provenance import atomic_path, validate_provenance

__all__ = ["MAP_FILE_SUFFIXES", "MapRow", "SavedMaps", "check_maps_path", "load_maps", "save_maps"]

MAPS_SCHEMA = "backsal.maps/1"
MAP_FILE_SUFFIXES: tuple[str, ...] = (".npz", ".pt")
_KEY = re.compile(r"^map__(?P<row>\d+)__(?P<method>.+?)__(?P<layer>.+)$")


@dataclass
class MapRow:
    """The maps of one (image, class) pair.

    Attributes:
        image: The image file.
        image_index: Index of the image among the run's distinct images.
        target: The explained class.
        class_name: Its name, where known.
        probability: The model's probability (or score) for it.
        maps: ``maps[method][layer]`` is ``float32 [H, W]`` at the image's size.
    """

    image: str
    image_index: int
    target: int
    class_name: str | None
    probability: float
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


@dataclass
class SavedMaps:
    """What a maps file holds."""

    rows: list[MapRow]
    methods: list[str]
    layers: list[str]
    provenance: dict[str, Any]


def check_maps_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if its suffix is a maps format, else a ``ValueError`` naming the formats."""
    path = Path(path)
    if path.suffix.lower() not in MAP_FILE_SUFFIXES:
        raise ValueError(
            f"cannot save maps as {path.suffix or 'a file without suffix'!r} ({path}): use "
            f"{' or '.join(MAP_FILE_SUFFIXES)}"
        )
    return path


def _stored(method: str) -> str:
    return method.replace("/", "-")


def save_maps(
    path: str | os.PathLike[str],
    rows: Sequence[MapRow],
    methods: Sequence[str],
    layers: Sequence[str],
    provenance: Mapping[str, Any],
) -> Path:
    """Write ``rows`` to ``path`` (``.npz`` or ``.pt``, by suffix), atomically."""
    path = check_maps_path(path)
    record = validate_provenance(provenance)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".pt":
            payload = {
                "schema": MAPS_SCHEMA,
                "provenance": record,
                "methods": list(methods),
                "layers": list(layers),
                "rows": [
                    {
                        "image": row.image,
                        "image_index": row.image_index,
                        "target": row.target,
                        "class_name": row.class_name,
                        "probability": row.probability,
                        "maps": {
                            m: {k: v.float().cpu() for k, v in per.items()}
                            for m, per in row.maps.items()
                        },  # fmt: skip
                    }
                    for row in rows
                ],
            }
            torch.save(payload, tmp)
        else:
            arrays: dict[str, np.ndarray] = {
                "schema": np.array(MAPS_SCHEMA),
                "provenance": np.array(json.dumps(record)),
                "methods": np.array(list(methods), dtype=str),
                "layers": np.array(list(layers), dtype=str),
                "images": np.array([row.image for row in rows], dtype=str),
                "image_index": np.array([row.image_index for row in rows], dtype=np.int64),
                "targets": np.array([row.target for row in rows], dtype=np.int64),
                "class_names": np.array([row.class_name or "" for row in rows], dtype=str),
                "probabilities": np.array([row.probability for row in rows], dtype=np.float64),
            }
            for number, row in enumerate(rows):
                for method, per_layer in row.maps.items():
                    for layer, value in per_layer.items():
                        key = f"map__{number}__{_stored(method)}__{layer}"
                        arrays[key] = value.float().cpu().numpy()
            with open(tmp, "wb") as handle:  # a file object: savez would append ".npz" to a name
                np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return path


def load_maps(path: str | os.PathLike[str]) -> SavedMaps:
    """Read a file written by :func:`save_maps` (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".pt":
        payload = torch.load(path, map_location="cpu", weights_only=True)
        rows = [
            MapRow(
                r["image"],
                int(r["image_index"]),
                int(r["target"]),
                r["class_name"],
                float(r["probability"]),
                r["maps"],
            )  # fmt: skip
            for r in payload["rows"]
        ]
        return SavedMaps(rows, list(payload["methods"]), list(payload["layers"]),
                         dict(payload["provenance"]))  # fmt: skip
    with np.load(path, allow_pickle=False) as archive:
        methods = [str(m) for m in archive["methods"]]
        by_stored = {_stored(m): m for m in methods}
        rows = [
            MapRow(str(image), int(index), int(target), str(name) or None, float(p))
            for image, index, target, name, p in zip(
                archive["images"],
                archive["image_index"],
                archive["targets"],
                archive["class_names"],
                archive["probabilities"],
                strict=True,
            )  # fmt: skip
        ]
        for key in archive.files:
            match = _KEY.match(key)
            if match is not None:
                method = by_stored[match["method"]]
                row = rows[int(match["row"])]
                row.maps.setdefault(method, {})[match["layer"]] = torch.from_numpy(archive[key])
        return SavedMaps(rows, methods, [str(k) for k in archive["layers"]],
                         json.loads(str(archive["provenance"])))  # fmt: skip
