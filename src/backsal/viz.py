"""Saliency maps drawn over their image: one drawing code for the CLI, notebooks and the report.

* :func:`overlay` — one map over one image, with a colour bar.
* :func:`grid` — a method × layer grid of maps over one image (the image itself in the top-left
  cell), with one colour bar for the whole figure.

Each map is min–max normalised on its own (only its ranking of pixels is meaningful, and
methods differ in scale by orders of magnitude) and drawn semi-transparent, in a perceptually
uniform colour map (``inferno`` by default), over a grey copy of the image, so the colours read
as saliency and the grey as the scene. A map of any resolution is stretched over the whole image
with bilinear interpolation, so layer-resolution maps need no upsampling first. A constant map
(no ranking at all) is labelled as such instead of shown as a flat colour.

Both return a :class:`matplotlib.figure.Figure` built without pyplot: no display or backend is
needed (a SLURM job has none) and a loop over many images does not pile up figures in pyplot's
registry. Save with ``figure.savefig(path, dpi=..., bbox_inches="tight")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

__all__ = ["DEFAULT_ALPHA", "DEFAULT_CMAP", "draw_overlay", "grid", "normalise", "overlay"]

DEFAULT_CMAP = "inferno"
"""Perceptually uniform and readable in greyscale print (unlike ``jet``)."""

DEFAULT_ALPHA = 0.6
"""Opacity of the map over the grey image."""

_COLORBAR_LABEL = "saliency (min–max per map)"


def _image_hwc(image: Any) -> np.ndarray:
    """``uint8``/float image ``[3, H, W]`` or ``[H, W, 3]`` (tensor or array) -> ``[H, W, 3]``."""
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.ndim == 3 and array.shape[0] in (1, 3):  # channels first, torch's layout
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [3, H, W] or [H, W, 3], got shape {np.shape(image)}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return array


def _map_hw(saliency: Any) -> np.ndarray:
    """A map ``[h, w]``, ``[1, h, w]`` or ``[1, 1, h, w]`` (tensor or array) -> ``[h, w]``."""
    array = np.asarray(
        saliency.detach().float().cpu() if hasattr(saliency, "detach") else saliency,
        dtype=np.float32,
    )
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"a saliency map must be [h, w] (or [1, h, w]), got {np.shape(saliency)}")
    return array


def normalise(saliency: Any) -> np.ndarray | None:
    """Min–max to [0, 1] (non-finite values count as the minimum); ``None`` for a constant map."""
    values = _map_hw(saliency)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() == finite.min():
        return None
    low, high = finite.min(), finite.max()
    return np.clip(
        (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) / (high - low), 0.0, 1.0
    )


def draw_overlay(
    ax: Axes,
    image: Any,
    saliency: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
) -> AxesImage | None:
    """Draw ``saliency`` over a grey ``image`` into ``ax``; returns the map's artist.

    Returns ``None`` (and writes "constant map" in the cell) when the map has no ranking.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = _image_hwc(image)
    height, width = rgb.shape[:2]
    extent = (0, width, height, 0)
    ax.imshow(rgb.astype(np.float32).mean(axis=2), cmap="gray", vmin=0, vmax=255, extent=extent)
    normalised = normalise(saliency)
    artist = None
    if normalised is None:
        ax.text(width / 2, height / 2, "constant map", ha="center", va="center", fontsize=6,
                color="red")  # fmt: skip
    else:
        artist = ax.imshow(normalised, cmap=cmap, alpha=alpha, extent=extent, vmin=0, vmax=1,
                           interpolation="bilinear")  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def _colorbar(figure: Figure, axes: Any, cmap: str, alpha: float) -> None:
    mappable = ScalarMappable(Normalize(0.0, 1.0), cmap=cmap)
    bar = figure.colorbar(mappable, ax=axes, shrink=0.8, aspect=25, pad=0.02, ticks=[0, 1])
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label(_COLORBAR_LABEL)
    if bar.solids is not None:  # the bar shows the colours as they appear over the image
        bar.solids.set_alpha(alpha)


def overlay(
    image: Any,
    saliency: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    title: str | None = None,
    colorbar: bool = True,
    size: float = 3.2,
) -> Figure:
    """One saliency map over its image.

    Args:
        image: ``[3, H, W]`` or ``[H, W, 3]``, ``uint8`` (or float in [0, 1]).
        saliency: ``[h, w]`` (or ``[1, h, w]``, ``[1, 1, h, w]``), any resolution.
        alpha: Opacity of the map.
        cmap: A matplotlib colour map name.
        title: Figure title.
        colorbar: Draw the colour bar.
        size: Height of the image in inches.
    """
    rgb = _image_hwc(image)
    aspect = rgb.shape[1] / rgb.shape[0]
    figure = Figure(figsize=(size * aspect + (0.9 if colorbar else 0.0), size + 0.4),
                    layout="constrained")  # fmt: skip
    ax = figure.subplots()
    draw_overlay(ax, rgb, saliency, alpha=alpha, cmap=cmap)
    if colorbar:
        _colorbar(figure, ax, cmap, alpha)
    if title:
        ax.set_title(title)
    return figure


def grid(
    maps: Mapping[str, Mapping[str, Any]],
    image: Any,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    title: str | None = None,
    colorbar: bool = True,
    cell: float = 1.6,
    image_title: str = "image",
) -> Figure:
    """A method × layer grid of maps over one image, the image itself in the top-left cell.

    Args:
        maps: ``maps[method][layer]`` is one map ``[h, w]`` (or ``[1, h, w]``) of this image, as
            :func:`backsal.saliency` returns for one row (index it first). A missing
            (method, layer) leaves its cell empty.
        image: ``[3, H, W]`` or ``[H, W, 3]``, ``uint8`` (or float in [0, 1]).
        methods: Rows, in order (default: the keys of ``maps``).
        layers: Columns, in order (default: every layer in ``maps``, first seen first).
        alpha: Opacity of the maps.
        cmap: A matplotlib colour map name.
        title: Figure title (e.g. the model and the explained class).
        colorbar: Draw one colour bar for the whole figure.
        cell: Height of one cell in inches (the width follows the image's aspect ratio).
        image_title: Title of the image's cell.
    """
    methods = list(maps) if methods is None else list(methods)
    if layers is None:
        layers = list(dict.fromkeys(layer for m in methods for layer in maps.get(m, {})))
    layers = list(layers)
    if not methods or not layers:
        raise ValueError("grid: no maps to draw (give at least one method and one layer)")
    rgb = _image_hwc(image)
    aspect = rgb.shape[1] / rgb.shape[0]
    figure = Figure(
        figsize=(
            cell * aspect * (len(layers) + 1) + 0.3 + (0.9 if colorbar else 0.0),
            cell * len(methods) + (0.55 if title else 0.3),
        ),
        layout="constrained",
    )
    axes = figure.subplots(len(methods), len(layers) + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title(image_title)
    for ax in axes[1:, 0]:
        ax.set_axis_off()
    for row, method in enumerate(methods):
        for column, layer in enumerate(layers, start=1):
            ax = axes[row, column]
            if row == 0:
                ax.set_title(layer)
            if column == 1:
                # vertical, so a long method name does not push the grid away from the image
                ax.set_ylabel(method)
            saliency = maps.get(method, {}).get(layer)
            if saliency is None:
                for side in ax.spines.values():
                    side.set_visible(False)
                continue
            draw_overlay(ax, rgb, saliency, alpha=alpha, cmap=cmap)
    if colorbar:
        _colorbar(figure, axes[:, 1:], cmap, alpha)
    if title:
        figure.suptitle(title)
    return figure
