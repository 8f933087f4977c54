"""Image decoding shared by the dataset loaders: one place that turns a file into ``uint8 [3,H,W]``.

Images are decoded with Pillow, as torchvision's VOC and COCO datasets (and therefore TorchRay's
benchmark) do, and converted to RGB (grayscale and CMYK files exist in COCO and ImageNet). EXIF
orientation is deliberately *not* applied: the datasets' annotations refer to the stored pixel grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageLoadError", "read_rgb"]


class ImageLoadError(RuntimeError):
    """An image file is missing, unreadable, truncated or not the size its annotation says."""


def read_rgb(
    path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Decode an image file as RGB.

    Args:
        path: The image file.
        expected_size: ``(height, width)`` the annotation gives, checked against the file.

    Returns:
        ``uint8`` tensor ``[3, H, W]``.

    Raises:
        ImageLoadError: The file is missing or corrupt, or its size differs from ``expected_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(
            f"image {path} is missing; the dataset folder is incomplete: download or extract it "
            "again"
        )
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(
            f"image {path} is corrupt or unreadable ({error}); restore it by extracting the "
            "dataset archive again (delete the '.<archive>.extracted' marker beside the extracted "
            "folder and rerun)"
        ) from error
    width, height = rgb.size
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ImageLoadError(
            f"image {path} is {height}x{width} (HxW) but its annotation says "
            f"{expected_size[0]}x{expected_size[1]}; the image and annotation files do not belong "
            "together"
        )
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
