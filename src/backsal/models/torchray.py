"""TorchRay's converted Caffe models of the pointing game, fully convolutional (docs/methods.md §6.5).

Zhang et al. (ECCV 2016, excitation backprop) fine-tuned VGG16 and ResNet50 on PASCAL VOC 2007
and COCO 2014 classification in Caffe; TorchRay (facebookresearch/TorchRay,
``torchray/benchmark/models.py``) converted them to PyTorch and serves them at
https://dl.fbaipublicfiles.com/torchray/ (file names carry a sha256 prefix, checked here).

What the conversion does, rebuilt here on torchvision's modules so layer names stay familiar:

* every max-pool uses ``ceil_mode=True`` (Caffe's rounding);
* ResNet50 follows Caffe's ResNet: ``conv1`` 7×7 stride 2 padding 3 *with* bias, max-pool 3×3
  stride 2 padding 0, and the stride 2 of a downsampling block sits on its first 1×1 conv
  (``conv1``), not on the 3×3 (``conv2``) as in torchvision;
* checkpoint keys are renamed: Caffe's BatchNorm+Scale pairs ``bnN.0.*`` (statistics) and
  ``bnN.1.*`` (affine) become ``bnN.*`` (likewise ``downsample.1.0/1``); VGG16's classifier
  ``classifier.0/2/4`` (no dropout in Caffe's listing) become ``classifier.0/3/6``;
* the first conv's input channels are reordered from Caffe's BGR to RGB;
* fully convolutional: VGG16's fc6 becomes a 7×7 conv on ``features``' output (no adaptive pool),
  fc7 and fc8 1×1 convs (``classifier.0/.3/.6``; the ReLU after fc7, the contrast layer of
  contrastive excitation backprop, is ``classifier.4``); ResNet50's fc becomes a 1×1 conv after
  ``avgpool = AvgPool2d(7, stride=1)`` and nothing is flattened.

The output is a class-score map ``[B, K, h, w]`` (``K`` = 20 for VOC, 80 for COCO), the input of
the pointing seed (spatial softmax per class).

Note: TorchRay's own ``_caffe_resnet50_to_fc`` at commit 6a198ee keeps torchvision's global
``AdaptiveAvgPool2d`` (its ``AvgPool2d(7, stride 1)`` line is commented out), so there the ResNet50
score map is 1×1. ``global_pool=True`` reproduces that variant.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet

from backsal.data.download import Checksum, Resource, ensure_file, local_file
from backsal.models import ModelSpec
from backsal.models.checkpoint import (
    VERIFIED_ADVICE,
    CheckpointError,
    load_checkpoint_file,
    load_state_strict,
)
from backsal.models.layers import (
    RESNET50_COMBINATION,
    RESNET50_PROBES,
    VGG16_COMBINATION,
    VGG16_FC_PROBES,
)
from backsal.models.preprocess import CaffePreprocess

__all__ = [
    "CHECKPOINTS",
    "MODEL_SPECS",
    "NUM_CLASSES",
    "TORCHRAY_BASE_URL",
    "FullyConvResNet50",
    "FullyConvVGG16",
    "build_resnet50_fc",
    "build_vgg16_fc",
    "convert_resnet50_checkpoint",
    "convert_vgg16_checkpoint",
    "torchray_model",
]

Arch = Literal["vgg16", "resnet50"]
Dataset = Literal["voc07", "coco14"]

TORCHRAY_BASE_URL = "https://dl.fbaipublicfiles.com/torchray/"
NUM_CLASSES: dict[str, int] = {"voc07": 20, "coco14": 80}


def _checkpoint(filename: str, what: str) -> Resource:
    # The hex part of TorchRay's file names is a sha256 prefix (torch.hub's convention).
    prefix = re.search(r"-([0-9a-f]{8,})\.", filename)
    assert prefix is not None
    return Resource(
        filename=filename,
        urls=(TORCHRAY_BASE_URL + filename,),
        checksum=Checksum("sha256", prefix.group(1)),
        description=f"TorchRay's converted Caffe {what}",
    )


CHECKPOINTS: dict[tuple[str, str], Resource] = {
    ("vgg16", "voc07"): _checkpoint("vgg16_voc-b050e8c3.pth.tar", "VGG16 (PASCAL VOC 2007)"),
    ("vgg16", "coco14"): _checkpoint("vgg16_coco-d82c8150.pth.tar", "VGG16 (COCO 2014)"),
    ("resnet50", "voc07"): _checkpoint("resnet50_voc-9ca920d6.pth.tar", "ResNet50 (VOC 2007)"),
    ("resnet50", "coco14"): _checkpoint("resnet50_coco-e99468c5.pth.tar", "ResNet50 (COCO 2014)"),
}

_VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")  # fmt: skip


class FullyConvVGG16(nn.Module):
    """VGG16 with Caffe max-pools and convolutional fc6/fc7/fc8: ``classifier(features(x))``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        # Same indices as torchvision's vgg16().features, so probe names carry over.
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Conv2d(512, 4096, kernel_size=7),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Conv2d(4096, 4096, kernel_size=1),  # fc7
            nn.ReLU(inplace=True),  # classifier.4: the contrast layer
            nn.Dropout(),
            nn.Conv2d(4096, num_classes, kernel_size=1),  # fc8
        )
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# torchvision (1.5 s to import, as it pulls in torch._dynamo) is imported when a ResNet50 is
# built, not when the model registry reads this module's specs: jobs and the workflow's parse
# that never build one do not pay for it. The class is made on first use and published as
# this module's FullyConvResNet50 (PEP 562), under which name pickle finds it.
@functools.cache
def _fully_conv_resnet50() -> type[ResNet]:
    from torchvision.models.resnet import Bottleneck, ResNet

    class FullyConvResNet50(ResNet):
        """torchvision's ResNet50 patched to Caffe's layout and made fully convolutional."""

        def __init__(self, num_classes: int, *, global_pool: bool = False) -> None:
            super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
            for stage in (self.layer2, self.layer3, self.layer4):
                first = stage[0]
                assert isinstance(first, Bottleneck)
                first.conv1.stride = (2, 2)
                first.conv2.stride = (1, 1)
            self.avgpool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.AvgPool2d(7, stride=1)
            head = nn.Conv2d(2048, num_classes, kernel_size=1)  # fc as a 1x1 conv: a score map
            self.fc = head  # type: ignore[assignment]
            self.num_classes = num_classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x))

    FullyConvResNet50.__module__ = __name__
    FullyConvResNet50.__qualname__ = "FullyConvResNet50"
    return FullyConvResNet50


FullyConvResNet50: type[ResNet]  # declared, bound by __getattr__ on first use


def __getattr__(name: str) -> Any:
    if name == "FullyConvResNet50":
        return _fully_conv_resnet50()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_vgg16_fc(num_classes: int) -> FullyConvVGG16:
    """The fully convolutional Caffe VGG16, randomly initialised, in eval mode."""
    return FullyConvVGG16(num_classes).eval()


def build_resnet50_fc(num_classes: int, *, global_pool: bool = False) -> ResNet:
    """The fully convolutional Caffe ResNet50 (:class:`FullyConvResNet50`), randomly
    initialised, in eval mode."""
    return _fully_conv_resnet50()(num_classes, global_pool=global_pool).eval()


# ------------------------------------------------------------------------------ checkpoints


def _bgr_to_rgb(weight: torch.Tensor, key: str) -> torch.Tensor:
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise CheckpointError(f"{key} has shape {tuple(weight.shape)}, expected [C, 3, k, k]")
    return weight[:, [2, 1, 0]].contiguous()


def convert_vgg16_checkpoint(
    state: Mapping[str, torch.Tensor], num_classes: int
) -> dict[str, torch.Tensor]:
    """Map TorchRay's VGG16 checkpoint onto :class:`FullyConvVGG16`'s state dict.

    ``classifier.0/2/4`` -> ``classifier.0/3/6``, their weights reshaped to conv kernels (fc6
    ``[4096, 25088]`` -> ``[4096, 512, 7, 7]``: Caffe and PyTorch both flatten C, H, W), and
    ``features.0.weight`` reordered from BGR to RGB.
    """
    renames = {"classifier.2.": "classifier.3.", "classifier.4.": "classifier.6."}
    kernel_shapes = {
        "classifier.0.weight": (4096, 512, 7, 7),
        "classifier.3.weight": (4096, 4096, 1, 1),
        "classifier.6.weight": (num_classes, 4096, 1, 1),
    }
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        if key == "features.0.weight":
            value = _bgr_to_rgb(value, key)
        elif key in kernel_shapes:
            if value.numel() != torch.Size(kernel_shapes[key]).numel():
                raise CheckpointError(
                    f"{key} has shape {tuple(value.shape)}, which cannot become the conv kernel "
                    f"{kernel_shapes[key]}"
                )
            value = value.reshape(kernel_shapes[key])
        converted[key] = value
    return converted


_BN_SPLIT = re.compile(r"(bn\d|downsample\.\d)\.[01]\.")


def convert_resnet50_checkpoint(
    state: Mapping[str, torch.Tensor], num_classes: int
) -> dict[str, torch.Tensor]:
    """Map TorchRay's ResNet50 checkpoint onto :class:`FullyConvResNet50`'s state dict.

    Caffe's BatchNorm (``.0``: running statistics) and Scale (``.1``: weight, bias) layers are one
    ``BatchNorm2d`` here, so ``bn2.0.running_mean`` -> ``bn2.running_mean``, ``bn2.1.weight`` ->
    ``bn2.weight`` (also ``downsample.1.0/1``); ``conv1.weight`` is reordered from BGR to RGB and
    ``fc.weight`` ``[K, 2048]`` becomes a 1×1 kernel.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _BN_SPLIT.sub(r"\1.", key)
        if key == "conv1.weight":
            value = _bgr_to_rgb(value, key)
        elif key == "fc.weight":
            if value.numel() != num_classes * 2048:
                raise CheckpointError(
                    f"fc.weight has shape {tuple(value.shape)}, expected [{num_classes}, 2048]"
                )
            value = value.reshape(num_classes, 2048, 1, 1)
        if key in converted:
            raise CheckpointError(f"checkpoint maps two tensors onto {key}")
        converted[key] = value
    return converted


def torchray_model(
    arch: Arch,
    dataset: Dataset,
    *,
    pretrained: bool = True,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    global_pool: bool = False,
    checkpoint: Resource | None = None,
    file: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """One of TorchRay's four pointing-game models, fully convolutional, in eval mode.

    Args:
        arch: ``vgg16`` or ``resnet50``.
        dataset: ``voc07`` (20 classes) or ``coco14`` (80 classes).
        pretrained: Load the converted Caffe weights (else random initialisation, for tests).
        root: Resources folder; the checkpoint goes to ``root/models``.
        download: Whether a missing checkpoint may be downloaded.
        progress: Show download progress.
        global_pool: ResNet50 only: global average pooling (TorchRay's code) instead of
            ``AvgPool2d(7, stride=1)`` (the specification).
        checkpoint: Override the checkpoint resource (a mirror, another checksum).
        file: A local copy of the checkpoint in the published format, verified against the
            resource's checksum; nothing is downloaded.

    Returns:
        The model; its output is a class-score map ``[B, K, h, w]``.
    """
    if dataset not in NUM_CLASSES or arch not in ("vgg16", "resnet50"):
        raise ValueError(
            f"no TorchRay model for arch={arch!r}, dataset={dataset!r}; choose arch in "
            f"('vgg16', 'resnet50') and dataset in {tuple(NUM_CLASSES)}"
        )
    if arch == "vgg16" and global_pool:
        raise ValueError("global_pool applies to resnet50 only")
    num_classes = NUM_CLASSES[dataset]
    path = None
    if pretrained:  # fetch and verify first: a failed download should not wait for a model build
        resource = checkpoint or CHECKPOINTS[(arch, dataset)]
        if file is not None:
            path = local_file(file, resource, key=f"models.<name>.checkpoint of {arch}_{dataset}")
        else:
            path = ensure_file(
                resource, root, subdir="models", download=download, progress=progress
            )
    model: nn.Module
    if arch == "vgg16":
        model = build_vgg16_fc(num_classes)
    else:
        model = build_resnet50_fc(num_classes, global_pool=global_pool)
    if path is not None:
        raw = load_checkpoint_file(path)
        convert = convert_vgg16_checkpoint if arch == "vgg16" else convert_resnet50_checkpoint
        load_state_strict(
            model, convert(raw, num_classes), source=f"checkpoint {path}", advice=VERIFIED_ADVICE
        )
    return model.eval()


def _builder(arch: Arch, dataset: Dataset) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return torchray_model(arch, dataset, **kwargs)

    build.__name__ = f"build_{arch}_{dataset}"
    build.__doc__ = f"TorchRay's {arch} fine-tuned on {dataset}; see :func:`torchray_model`."
    return build


def _specs() -> tuple[ModelSpec, ...]:
    specs = []
    for (arch, dataset), resource in CHECKPOINTS.items():
        vgg = arch == "vgg16"
        specs.append(
            ModelSpec(
                name=f"{arch}_{dataset}",
                builder=_builder(arch, dataset),  # type: ignore[arg-type]
                preprocess=CaffePreprocess(),
                seed="pointing",
                num_classes=NUM_CLASSES[dataset],
                dataset=dataset,
                probe_layers=VGG16_FC_PROBES if vgg else RESNET50_PROBES,
                combination_layers=VGG16_COMBINATION if vgg else RESNET50_COMBINATION,
                contrast_layer="classifier.4" if vgg else "avgpool",
                description=f"{resource.description}, fully convolutional ({resource.filename})",
            )
        )
    return tuple(specs)


MODEL_SPECS: tuple[ModelSpec, ...] = _specs()
"""The four pointing-game models, registered by :mod:`backsal.models`."""
