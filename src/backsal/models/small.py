"""Small CNNs for the offline benchmark (:mod:`backsal.data.synthetic`), trainable on a laptop CPU.

They mirror the two architectures of the paper (VGG16 and ResNet50, docs/methods.md §6.5) at a tiny
scale, with torchvision's module naming so layers are addressed the same way:

* :func:`small_vgg`: a VGG with BatchNorm (``features.N``: conv, bn, relu, max-pool), widths
  8/16/32/64 with (1, 1, 2, 2) convs per block, then a global-average-pool head (``avgpool``,
  ``classifier``). About 72k parameters. Without BatchNorm this network did not train. Its
  max-pools are :class:`TrainingMaxPool`: ``nn.MaxPool2d(2, 2)``, trained on the CPU through a
  faster kernel with the same bits.
* :func:`small_resnet`: a ResNet with a stride-2 3×3 stem (``conv1``, ``bn1``, ``relu``), one
  torchvision ``BasicBlock`` per stage (``layer1`` … ``layer4``, widths 16/32/64/128), ``avgpool``
  and ``fc``. About 309k parameters. The blocks are torchvision's own, which call their single
  ``relu`` module twice: the engine's ReLU patching must handle such reuse (docs/methods.md §2.5).

Both take the output of :func:`small_transform` (``uint8`` RGB scaled to ``[0, 1]``) and return
logits ``[B, num_classes]`` for multi-label training with BCE. ``SMALL_MODELS`` lists, per model,
its builder, the layers to probe (every ReLU / block output) and the layers combined in the
multi-layer maps (the last ReLU of each VGG block, the four ResNet stages, as docs/methods.md §3 does
for VGG16 and ResNet50), so the model registry can take each with one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from torchvision.models.resnet import BasicBlock

__all__ = [
    "SMALL_MODELS",
    "SMALL_RESNET_COMBINATION_LAYERS",
    "SMALL_RESNET_PROBE_LAYERS",
    "SMALL_VGG_COMBINATION_LAYERS",
    "SMALL_VGG_PROBE_LAYERS",
    "SmallModelSpec",
    "SmallResNet",
    "SmallVGG",
    "TrainingMaxPool",
    "small_resnet",
    "small_transform",
    "small_vgg",
]

_VGG_WIDTHS = (8, 16, 32, 64)
_VGG_CONVS_PER_BLOCK = (1, 1, 2, 2)
_RESNET_WIDTHS = (16, 32, 64, 128)


def small_transform(image: torch.Tensor) -> torch.Tensor:
    """Preprocessing of the small models: ``uint8 [3, H, W]`` -> ``float32`` in ``[0, 1]``.

    No mean subtraction: the canvases' background is near 0, so input-level ``x ⊙ g`` maps vanish
    on the background as they do for natural images after Caffe's mean subtraction; BatchNorm
    takes care of the scale.
    """
    if image.dtype != torch.uint8:
        raise TypeError(f"small_transform expects a uint8 image, got {image.dtype}")
    return image.to(torch.float32) / 255.0


class _FastMaxPool(torch.autograd.Function):
    """2×2 max pooling of an NCHW CPU tensor through the channels-last kernel, with the
    gradient scattered by the NCHW kernel's own backward."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        pooled, indices = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last), 2, 2, return_indices=True
        )
        return pooled.contiguous(), indices.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


class TrainingMaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` whose training-mode CPU pass is about twice as fast, bit for bit.

    ATen's NCHW max-pooling kernel on the CPU is scalar code: it was a fifth of the small VGG's
    training step. While training on the CPU this module pools through the channels-last
    kernel (vectorised) and scatters the gradient with the NCHW kernel's backward, from the same
    indices: both kernels keep the first maximum of a window in row-major order, so the values,
    the indices and the gradients are those of ``nn.MaxPool2d`` exactly
    (``tests/test_small_models_train.py`` trains both and compares every parameter). In eval
    mode, where every saliency method runs, and on other devices it is ``nn.MaxPool2d``.
    """

    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled():
            return _FastMaxPool.apply(x)[0]
        return super().forward(x)


def _vgg_features(in_channels: int) -> tuple[nn.Sequential, list[str], list[str]]:
    layers: list[nn.Module] = []
    relus: list[str] = []
    block_outputs: list[str] = []
    channels = in_channels
    last = len(_VGG_WIDTHS) - 1
    for block, (width, convs) in enumerate(zip(_VGG_WIDTHS, _VGG_CONVS_PER_BLOCK, strict=True)):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU(inplace=True))
            relus.append(f"features.{len(layers) - 1}")
            channels = width
        block_outputs.append(relus[-1])
        # no pooling after the last block keeps an 8×8 last-layer map on a 64×64 canvas
        if block != last:
            layers.append(TrainingMaxPool())
    return nn.Sequential(*layers), relus, block_outputs


class SmallVGG(nn.Module):
    """VGG-style network with BatchNorm and a global-average-pool head (see :func:`small_vgg`)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features, _, _ = _vgg_features(in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_VGG_WIDTHS[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _basic_block(in_channels: int, width: int, stride: int) -> BasicBlock:
    """One torchvision BasicBlock, with a 1×1 projection shortcut when the shape changes."""
    # imported here: jobs of the small VGG never import torchvision (1.5 s)
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, stride=stride, bias=False),
            nn.BatchNorm2d(width),
        )
    return BasicBlock(in_channels, width, stride, downsample)


class SmallResNet(nn.Module):
    """ResNet with one torchvision ``BasicBlock`` per stage (see :func:`small_resnet`)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        stem = _RESNET_WIDTHS[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        widths = _RESNET_WIDTHS
        self.layer1 = _basic_block(stem, widths[0], stride=1)
        self.layer2 = _basic_block(widths[0], widths[1], stride=2)
        self.layer3 = _basic_block(widths[1], widths[2], stride=2)
        self.layer4 = _basic_block(widths[2], widths[3], stride=2)
        channels = widths[3]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def small_vgg(num_classes: int = 10) -> SmallVGG:
    """The small VGG with BatchNorm (≈72k parameters at 10 classes)."""
    return SmallVGG(num_classes)


def small_resnet(num_classes: int = 10) -> SmallResNet:
    """The small ResNet with one BasicBlock per stage (≈309k parameters at 10 classes)."""
    return SmallResNet(num_classes)


_, _VGG_RELUS, _VGG_BLOCK_OUTPUTS = _vgg_features(3)

#: Every ReLU of the small VGG (each conv's output after BN and ReLU), shallow to deep.
SMALL_VGG_PROBE_LAYERS: tuple[str, ...] = tuple(_VGG_RELUS)
#: The last ReLU of each block: the analogue of VGG16's relu1_2 … relu5_3.
SMALL_VGG_COMBINATION_LAYERS: tuple[str, ...] = tuple(_VGG_BLOCK_OUTPUTS)
#: The stem ReLU and every stage output of the small ResNet.
SMALL_RESNET_PROBE_LAYERS: tuple[str, ...] = ("relu", "layer1", "layer2", "layer3", "layer4")
#: The four stages, as for ResNet50.
SMALL_RESNET_COMBINATION_LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class SmallModelSpec:
    """What the model registry needs to know about a small model.

    Attributes:
        name: Registry name.
        builder: ``num_classes -> nn.Module``.
        probe_layers: Layers at which saliency is computed (shallow to deep).
        combination_layers: Layers combined into multi-layer maps (docs/methods.md §3).
        last_conv_layer: The deepest probe (Grad-CAM's usual layer).
        transform: Preprocessing ``uint8 [3, H, W] -> float [3, H, W]``.
    """

    name: str
    builder: Callable[[int], nn.Module]
    probe_layers: tuple[str, ...]
    combination_layers: tuple[str, ...]
    last_conv_layer: str
    transform: Callable[[torch.Tensor], torch.Tensor] = small_transform


#: The small models by name.
SMALL_MODELS: dict[str, SmallModelSpec] = {
    "small_vgg": SmallModelSpec(
        "small_vgg",
        small_vgg,
        SMALL_VGG_PROBE_LAYERS,
        SMALL_VGG_COMBINATION_LAYERS,
        SMALL_VGG_PROBE_LAYERS[-1],
    ),
    "small_resnet": SmallModelSpec(
        "small_resnet",
        small_resnet,
        SMALL_RESNET_PROBE_LAYERS,
        SMALL_RESNET_COMBINATION_LAYERS,
        SMALL_RESNET_PROBE_LAYERS[-1],
    ),
}
