"""Datasets and models named in the workflow's configuration, opened the same way by every job.

A config entry says what a dataset or model *is* (``kind`` plus its parameters); this module turns
it into objects and checksums. The workflow's first jobs call these with ``download=True``
(fetch, verify, extract, or generate/train); every later job opens the same entry with
``download=False`` and so never touches the network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backsal.data.base import PointingDataset
from backsal.data.download import localize
from backsal.models import ModelSpec, Seed, get_spec

__all__ = [
    "DATASET_KINDS",
    "MODEL_KINDS",
    "OpenedModel",
    "architecture_layers",
    "check_device",
    "dataset_checksum",
    "open_dataset",
    "open_model",
    "pick_device",
    "records_checksum",
]

DATASET_KINDS = ("cluttered_digits", "voc07", "coco14", "imagenet")
MODEL_KINDS = ("small", "registry")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} was asked for but no CUDA device is visible; use device: auto or cpu"
        )
    return device


def check_device(name: str) -> None:
    """Raise now, not in every job, when the config asks for a device this machine lacks.

    Raises:
        RuntimeError: ``cuda`` without a visible CUDA device (the message says what to do).
    """
    if name != "auto":
        pick_device(name)


def architecture_layers(name: str, entry: Mapping[str, Any]) -> list[str]:
    """The module names of a config model's architecture, built without weights.

    The architecture is known before training or downloading: the model is built on PyTorch's
    ``meta`` device (no memory, no initialisation cost), so that a config's layer names can be
    checked when it is read.
    """
    kind = entry.get("kind")
    with torch.device("meta"):
        if kind == "small":
            model = get_spec(entry["arch"]).build()
        elif kind == "registry":
            options = dict(entry.get("options") or {})
            model = get_spec(entry.get("registry") or name).build(pretrained=False, **options)
        else:
            raise ValueError(
                f"model {name!r}: unknown kind {kind!r}; use one of {', '.join(MODEL_KINDS)}"
            )
    return [module_name for module_name, _ in model.named_modules() if module_name]


def open_dataset(
    name: str,
    entry: Mapping[str, Any],
    resources: str | Path,
    *,
    download: bool = False,
    mirror: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> Any:
    """The dataset of a config entry.

    Args:
        name: The entry's name (for messages).
        entry: ``{"kind": ..., ...}`` (see ``config/README.md``); ``path`` names a copy already
            on disk (nothing but the small flag file is then fetched).
        resources: The resources folder (downloads, generated data).
        download: Allow fetching or generating missing files (the workflow's first jobs only).
        mirror: A folder or base URL tried before the official URLs
            (:func:`backsal.data.download.localize`).
        checksums: File name -> checksum of copies that are not the published files.
    """
    kind = entry.get("kind")
    resources = Path(resources)
    if kind == "cluttered_digits":
        from backsal.data.synthetic import cluttered_digits

        cache = resources / "datasets" / "cluttered_digits"
        if not download and not cache.is_dir():
            raise FileNotFoundError(
                f"dataset {name!r}: no generated canvases in {cache}; run its make_dataset rule first"
            )
        return cluttered_digits(
            entry["split"],
            num_images=int(entry["images"]),
            seed=int(entry.get("seed", 0)),
            cache_dir=cache,
        )
    if kind == "voc07":
        from backsal.data.voc import VOC07_DIFFICULT_FLAGS, VOC07_TEST_ARCHIVE, voc07_test

        return voc07_test(
            resources, download=download, progress=download, path=entry.get("path"),
            archive=localize(VOC07_TEST_ARCHIVE, mirror, checksums),
            flags=localize(VOC07_DIFFICULT_FLAGS, mirror, checksums),
        )  # fmt: skip
    if kind == "coco14":
        from backsal.data import coco

        return coco.coco14_val(
            resources, download=download, progress=download, path=entry.get("path"),
            images=localize(coco.COCO14_VAL_IMAGES, mirror, checksums),
            annotations=localize(coco.COCO14_ANNOTATIONS, mirror, checksums),
            flags=localize(coco.COCO14_DIFFICULT_FLAGS, mirror, checksums),
        )  # fmt: skip
    if kind == "imagenet":
        from backsal.data.imagenet import imagenet_val

        folder = entry.get("path") or resources / "imagenet"
        return imagenet_val(folder, limit=entry.get("limit"), progress=False)
    raise ValueError(
        f"dataset {name!r}: unknown kind {kind!r}; use one of {', '.join(DATASET_KINDS)}"
    )


def records_checksum(dataset: PointingDataset) -> str:
    """sha256 of a pointing dataset's records: image ids, sizes, queries and ground truth."""
    digest = hashlib.sha256()
    for record in dataset.records:
        digest.update(
            json.dumps(
                [record.image_id, record.height, record.width], separators=(",", ":")
            ).encode()
        )
        for query in record.queries:
            item = [query.class_id, query.boxes, bool(query.in_difficult), len(query.segmentations)]
            digest.update(json.dumps(item, separators=(",", ":"), default=list).encode())
    return digest.hexdigest()


def dataset_checksum(dataset: Any) -> str:
    """A checksum that changes when the dataset's content does."""
    content = getattr(dataset, "content_hash", None)  # the synthetic set hashes its pixels
    if isinstance(content, str):
        return content
    if isinstance(dataset, PointingDataset):
        return records_checksum(dataset)
    digest = hashlib.sha256()  # a classification set: its file list and labels
    for item in getattr(dataset, "samples", []):
        digest.update(repr(item).encode())
    return digest.hexdigest()


@dataclass
class OpenedModel:
    """A model ready for the engine, with what the workflow records about it."""

    name: str
    model: nn.Module
    spec: ModelSpec
    checksum: str
    arch: str

    @property
    def seed(self) -> Seed:
        return self.spec.seed


def _arch_of(spec: ModelSpec) -> str:
    for arch in ("vgg16", "resnet50"):
        if spec.name.startswith(arch):
            return arch
    return spec.name


def _state_checksum(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _weights_options(
    name: str, mirror: str | None, checksums: Mapping[str, str] | None
) -> dict[str, Any]:
    """The builder keyword naming the published weights of a built-in registry model, localized
    (a mirror first, another checksum); none for models registered by users."""
    from backsal.models.torchray import CHECKPOINTS
    from backsal.models.vision import IMAGENET_WEIGHTS

    arch, _, dataset = name.partition("_")
    if (arch, dataset) in CHECKPOINTS:
        return {"checkpoint": localize(CHECKPOINTS[(arch, dataset)], mirror, checksums)}
    if dataset == "imagenet" and arch in IMAGENET_WEIGHTS:
        return {"weights": localize(IMAGENET_WEIGHTS[arch], mirror, checksums)}
    return {}


def open_model(
    name: str,
    entry: Mapping[str, Any],
    resources: str | Path,
    *,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    download: bool = False,
    mirror: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> OpenedModel:
    """The model of a config entry, in eval mode on ``device``.

    Args:
        name: The entry's name.
        entry: ``{"kind": "small", "arch": ...}`` or ``{"kind": "registry", "registry": ...,
            "options": {...}, "checkpoint": <a local copy of the published weights or null>}``.
        resources: The resources folder (downloaded weights).
        checkpoint: For ``small`` models, the trained checkpoint.
        device: Where to put the model.
        download: Allow downloading missing weights (the workflow's download job only).
        mirror: A folder or base URL tried before the official URLs.
        checksums: File name -> checksum of weights that are not the published files.
    """
    kind = entry.get("kind")
    if kind == "small":
        spec = get_spec(entry["arch"])
        if checkpoint is None:
            raise ValueError(
                f"model {name!r}: a small model needs its trained checkpoint; run its train_model rule"
            )
        model = spec.build(checkpoint=str(checkpoint))
    elif kind == "registry":
        spec = get_spec(entry.get("registry") or name)
        options = dict(entry.get("options") or {})
        options.update(_weights_options(spec.name, mirror, checksums))
        if entry.get("checkpoint"):
            options["file"] = str(entry["checkpoint"])
        model = spec.build(
            pretrained=True, root=str(resources), download=download, progress=download, **options
        )
    else:
        raise ValueError(
            f"model {name!r}: unknown kind {kind!r}; use one of {', '.join(MODEL_KINDS)}"
        )
    model = model.to(device).eval()
    return OpenedModel(
        name=name, model=model, spec=spec, checksum=_state_checksum(model), arch=_arch_of(spec)
    )
