"""Input preprocessing of the paper's models, on tensors so it runs on the device.

* :class:`CaffePreprocess` — the converted Caffe models of the pointing game (TorchRay's
  ``get_transform`` for VOC/COCO, docs/methods.md §6.5): the shorter side is resized to 224 keeping the
  aspect ratio (the longer side truncated to an integer, as TorchRay computes it), bilinear with
  ``align_corners=False`` and no antialiasing; pixels stay in [0, 255] and the Caffe mean
  (R 123.68, G 116.779, B 103.939) is subtracted, without std scaling. Channels stay RGB: the
  first conv's weights are reordered from BGR when the checkpoint is loaded.
* :class:`ImageNetPreprocess` — torchvision's ImageNet models for class sensitivity
  (docs/methods.md §7): ``Resize((224, 224))`` then ImageNet mean/std. A ``uint8`` input is resized as
  ``uint8`` with antialiasing, as torchvision's ``Resize`` does on PIL images in the authors'
  pipeline, then scaled to [0, 1] and normalised.

Both take one image ``[3, H, W]`` or a batch ``[B, 3, H, W]`` of equal-size images (``uint8`` in
[0, 255] or float in the same range) and return float32 ``[3, h, w]`` or ``[B, 3, h, w]`` on the
input's device, so a preprocessing object serves both as the batch builder's per-image transform
and on whole batches already on the device. ``output_size`` tells a batch builder the model input
size of an image without loading it. :class:`PreprocessFunction` wraps any per-image function
(e.g. the offline benchmark's small models' scaling) into the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = ["CaffePreprocess", "ImageNetPreprocess", "Preprocess", "PreprocessFunction"]


@runtime_checkable
class Preprocess(Protocol):
    """What a model spec's preprocessing provides."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[3,H,W]`` or ``[B,3,H,W]`` in [0, 255] -> model input of the same rank."""
        ...

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Model input ``(h, w)`` for an image of ``(height, width)``."""
        ...

    def describe(self) -> dict[str, Any]:
        """Every setting, for result metadata."""
        ...


def _as_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``images`` as ``[B, 3, H, W]`` and whether it was a single image."""
    single = images.dim() == 3
    if single:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected images [3, H, W] or [B, 3, H, W] (RGB), got shape {tuple(images.shape)}"
        )
    return images, single


def _restore(batch: torch.Tensor, single: bool) -> torch.Tensor:
    return batch[0] if single else batch


@dataclass(frozen=True)
class CaffePreprocess:
    """Caffe preprocessing of the converted pointing-game models (TorchRay).

    Attributes:
        size: Length of the shorter side after resizing.
        mean_rgb: Per-channel mean subtracted from pixels in [0, 255], in RGB order.
    """

    size: int = 224
    mean_rgb: tuple[float, float, float] = (123.68, 116.779, 103.939)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        # Same arithmetic as TorchRay (int() truncation), so sizes match its inputs exactly.
        if width < height:
            return int(self.size * height / width), self.size
        return self.size, int(self.size * width / height)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(images)
        batch = batch.to(torch.float32)
        size = self.output_size(batch.shape[-2], batch.shape[-1])
        if size != tuple(batch.shape[-2:]):
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean_rgb, dtype=batch.dtype, device=batch.device)
        return _restore(batch - mean.view(1, 3, 1, 1), single)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "caffe",
            "shorter_side": self.size,
            "interpolation": "bilinear",
            "align_corners": False,
            "antialias": False,
            "range": "0-255",
            "mean_rgb": list(self.mean_rgb),
            "std": None,
        }


@dataclass(frozen=True)
class ImageNetPreprocess:
    """torchvision ImageNet preprocessing: fixed-size resize, then mean/std normalisation.

    Attributes:
        size: Output ``(height, width)``.
        mean: Per-channel mean in [0, 1], RGB.
        std: Per-channel standard deviation in [0, 1], RGB.
        antialias: Antialias when downsampling (torchvision's and PIL's default).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    antialias: bool = True

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(images)
        if tuple(batch.shape[-2:]) != self.size:
            from torchvision.transforms.v2 import functional as TF  # imported on use: slow

            batch = TF.resize(
                batch,
                list(self.size),
                interpolation=TF.InterpolationMode.BILINEAR,
                antialias=self.antialias,
            )
        batch = batch.to(torch.float32) / 255.0
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        return _restore((batch - mean) / std, single)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "imagenet",
            "size": list(self.size),
            "interpolation": "bilinear",
            "antialias": self.antialias,
            "range": "0-1",
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class PreprocessFunction:
    """Adapts a per-image function ``[3, H, W] -> [3, h, w]`` to :class:`Preprocess`.

    Attributes:
        function: The per-image preprocessing.
        description: What it does, for result metadata.
        size_function: ``(H, W) -> (h, w)``; ``None`` when the function keeps the size.
    """

    function: Callable[[torch.Tensor], torch.Tensor]
    description: str
    size_function: Callable[[int, int], tuple[int, int]] | None = field(default=None)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.size_function is None:
            return height, width
        return self.size_function(height, width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(images)
        if single:
            return self.function(batch[0])
        return torch.stack([self.function(image) for image in batch])

    def describe(self) -> dict[str, Any]:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return {"kind": "function", "function": name, "description": self.description}
