"""A user's own images: files, folders and glob patterns -> a sorted list of image files.

What ``backsal explain`` accepts as inputs. Decoding is the datasets' (:mod:`backsal.data._image`:
Pillow, converted to RGB, so grayscale, palette and RGBA files work; the alpha channel is
dropped), with messages about the user's files instead of a dataset's.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ._image import ImageLoadError, read_rgb

__all__ = ["IMAGE_SUFFIXES", "ImageFileError", "find_images", "image_size", "read_image"]

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
)
"""File suffixes a folder is searched for (case-insensitive)."""


class ImageFileError(ValueError):
    """An input path matches no image, or an image file cannot be decoded."""


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_images(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The image files that ``inputs`` name, in order, each once.

    Each input is a file (taken whatever its suffix), a folder (its image files, not recursive,
    sorted by name) or a glob pattern (``*``, ``?``, ``[...]``, ``**`` for any depth; matches
    sorted, non-image matches skipped).

    Raises:
        ImageFileError: An input that exists nowhere, a folder or pattern without images, or
            no input at all.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            images = _folder_images(path)
            if not images:
                raise ImageFileError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            images = [path]
        elif glob.has_magic(text):
            images = [
                Path(p)
                for p in sorted(glob.glob(text, recursive=True))
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
            ]
            if not images:
                raise ImageFileError(f"no image file matches {text!r}")
        else:
            raise ImageFileError(f"image {path} does not exist")
        found.update(dict.fromkeys(images))
    if not found:
        raise ImageFileError("no input image given")
    return list(found)


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode one image file as ``uint8`` RGB ``[3, H, W]``.

    Raises:
        ImageFileError: The file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"image {path} does not exist")
    try:
        return read_rgb(path)
    except ImageLoadError as error:
        cause = error.__cause__ or error
        raise ImageFileError(f"cannot read image {path}: {cause}") from error


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header (nothing is decoded).

    Raises:
        ImageFileError: The file is missing or is not an image Pillow knows.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageFileError(f"cannot read image {path}: {error}") from error
    return height, width
