"""torchvision's ImageNet VGG16 and ResNet50 for the class-sensitivity test (docs/methods.md §7).

The paper uses torchvision's original ImageNet weights (``pretrained=True`` in 2020, today
``IMAGENET1K_V1``): ``vgg16-397923af.pth`` and ``resnet50-0676ba61.pth`` from
https://download.pytorch.org/models/. They are fetched with :func:`backsal.data.download.ensure_file`
into the configured resources folder (not torch.hub's cache) and checked against the sha256 prefix
in their names, the same check torchvision makes (``check_hash=True``). Inputs are preprocessed by
:class:`~backsal.models.preprocess.ImageNetPreprocess` (``Resize((224, 224))``, ImageNet mean/std).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from backsal.data.download import Checksum, Resource, ensure_file, local_file
from backsal.models import ModelSpec
from backsal.models.checkpoint import VERIFIED_ADVICE, load_checkpoint_file, load_state_strict
from backsal.models.layers import (
    RESNET50_COMBINATION,
    RESNET50_PROBES,
    VGG16_COMBINATION,
    VGG16_PROBES,
)
from backsal.models.preprocess import ImageNetPreprocess

__all__ = ["IMAGENET_WEIGHTS", "MODEL_SPECS", "vision_model"]

Arch = Literal["vgg16", "resnet50"]

_BASE_URL = "https://download.pytorch.org/models/"


def _weights(filename: str, what: str) -> Resource:
    prefix = filename.rsplit("-", 1)[1].split(".")[0]
    return Resource(
        filename=filename,
        urls=(_BASE_URL + filename,),
        checksum=Checksum("sha256", prefix),
        description=f"torchvision's ImageNet {what} weights (IMAGENET1K_V1)",
    )


IMAGENET_WEIGHTS: dict[str, Resource] = {
    "vgg16": _weights("vgg16-397923af.pth", "VGG16"),
    "resnet50": _weights("resnet50-0676ba61.pth", "ResNet50"),
}


def vision_model(
    arch: Arch,
    *,
    pretrained: bool = True,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    weights: Resource | None = None,
    file: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """torchvision's ImageNet classifier ``arch`` in eval mode; output: logits ``[B, 1000]``.

    Args:
        arch: ``vgg16`` or ``resnet50``.
        pretrained: Load the ImageNet weights (else random initialisation, for tests).
        root: Resources folder; the weights go to ``root/models``.
        download: Whether missing weights may be downloaded.
        progress: Show download progress.
        weights: Override the weights resource (a mirror, another checksum).
        file: A local copy of the weights in the published format, verified against the
            resource's checksum; nothing is downloaded.
    """
    if arch not in IMAGENET_WEIGHTS:
        raise ValueError(f"no torchvision model {arch!r}; choose one of {sorted(IMAGENET_WEIGHTS)}")
    path = None
    if pretrained:  # fetch and verify first: a failed download should not wait for a model build
        resource = weights or IMAGENET_WEIGHTS[arch]
        if file is not None:
            path = local_file(file, resource, key=f"models.<name>.checkpoint of {arch}_imagenet")
        else:
            path = ensure_file(
                resource, root, subdir="models", download=download, progress=progress
            )
    import torchvision  # here, not at import: the registry reads MODEL_SPECS without it

    model: nn.Module = getattr(torchvision.models, arch)(weights=None)
    if path is not None:
        load_state_strict(
            model, load_checkpoint_file(path), source=f"weights {path}", advice=VERIFIED_ADVICE
        )
    return model.eval()


def _builder(arch: Arch) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return vision_model(arch, **kwargs)

    build.__name__ = f"build_{arch}_imagenet"
    build.__doc__ = f"torchvision's ImageNet {arch}; see :func:`vision_model`."
    return build


MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="vgg16_imagenet",
        builder=_builder("vgg16"),
        preprocess=ImageNetPreprocess(),
        seed="logit",
        num_classes=1000,
        dataset="imagenet",
        probe_layers=VGG16_PROBES,
        combination_layers=VGG16_COMBINATION,
        contrast_layer="classifier.4",
        description="torchvision VGG16, ImageNet (IMAGENET1K_V1, vgg16-397923af.pth)",
    ),
    ModelSpec(
        name="resnet50_imagenet",
        builder=_builder("resnet50"),
        preprocess=ImageNetPreprocess(),
        seed="logit",
        num_classes=1000,
        dataset="imagenet",
        probe_layers=RESNET50_PROBES,
        combination_layers=RESNET50_COMBINATION,
        contrast_layer="avgpool",
        description="torchvision ResNet50, ImageNet (IMAGENET1K_V1, resnet50-0676ba61.pth)",
    ),
)
"""The two ImageNet classifiers, registered by :mod:`backsal.models`."""
