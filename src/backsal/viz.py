"""Saliency maps drawn over their image: one drawing code for the CLI, notebooks and the report.

* :func:`overlay` — one map over one image, with a colour bar.
* :func:`grid` — a method × layer grid of maps over one image (the image itself in the top-left
  cell), with one colour bar for the whole figure; its cells are one picture, :func:`mosaic`.
* :func:`blend` — the picture of one cell: the map over the grey image, as an RGB array.

Each map is min–max normalised on its own (only its ranking of pixels is meaningful, and
methods differ in scale by orders of magnitude) and drawn semi-transparent, in a perceptually
uniform colour map (``inferno`` by default), over a grey copy of the image, so the colours read
as saliency and the grey as the scene: ``(1 − alpha)·grey + alpha·cmap(map)``. A map of any
resolution is stretched over the whole image with bilinear interpolation, so layer-resolution
maps need no upsampling first; small images are upscaled (pixels repeated) so that the stretched
map is drawn smoothly. A constant map
(no ranking at all) is labelled as such instead of shown as a flat colour.

Both return a :class:`matplotlib.figure.Figure` built without pyplot: no display or backend is
needed (a SLURM job has none) and a loop over many images does not pile up figures in pyplot's
registry. Save with ``figure.savefig(path, dpi=..., bbox_inches="tight")``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CMAP",
    "Mosaic",
    "blend",
    "draw_overlay",
    "grid",
    "mosaic",
    "normalise",
    "overlay",
]

DEFAULT_CMAP = "inferno"
"""Perceptually uniform and readable in greyscale print (unlike ``jet``)."""

DEFAULT_ALPHA = 0.6
"""Opacity of the map over the grey image."""

_COLORBAR_LABEL = "saliency (min–max per map)"
_CONSTANT = "constant map"

# Drawing resolution: an image is upscaled (each pixel repeated) until a cell is at least
# _CELL_PIXELS on its longer side, so that a stretched layer map looks smooth, unless the whole
# drawing would pass _MAX_PIXELS.
_CELL_PIXELS = 128
_MAX_PIXELS = 24_000_000
# The grid's layout, in inches: white between cells, the band of the row labels, the space of
# the column titles and of the figure title, the colour bar with its labels, the outer margin.
_GAP_INCHES = 0.04
_LABEL_INCHES = 0.22
_TITLE_LIFT_INCHES = 0.04
_TITLES_INCHES = 0.3
_SUPTITLE_INCHES = 0.35
_BAR_PAD_INCHES = 0.1
_BAR_INCHES = 0.12
_COLORBAR_INCHES = 1.0
_MARGIN_INCHES = 0.05


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


def _stretch(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``values [h, w]`` to ``[height, width]`` (pixel centres aligned, the
    border clamped), as matplotlib's ``interpolation="bilinear"`` stretches a map over an image."""
    return _resampling(values.shape[0], height) @ values @ _resampling(values.shape[1], width).T


def _resampling(size: int, target: int) -> np.ndarray:
    """``[target, size]`` matrix of the 1-D bilinear resize with pixel centres aligned."""
    centres = np.clip((np.arange(target) + 0.5) * size / target - 0.5, 0, size - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = centres - low
    matrix = np.zeros((target, size))
    np.add.at(matrix, (np.arange(target), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(target), high), weight)
    return matrix


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel of ``image [H, W, ...]`` repeated ``factor`` × ``factor`` times."""
    return image if factor == 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def blend(
    image: Any,
    saliency: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    factor: int = 1,
) -> tuple[np.ndarray, bool]:
    """The map over a grey copy of the image, as one ``float [factor·H, factor·W, 3]`` RGB image
    in ``[0, 1]``: ``(1 − alpha)·grey + alpha·cmap(map)``, the map min–max normalised
    (:func:`normalise`) and stretched bilinearly over the whole image.

    Returns:
        ``(rgb, drawn)``; ``drawn`` is ``False`` for a constant map, whose cell is the grey image
        alone (nothing to rank).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = _image_hwc(image)
    grey = _upscale(rgb.astype(np.float64).mean(axis=2) / 255.0, factor)
    grey = np.repeat(grey[..., None], 3, axis=2)
    normalised = normalise(saliency)
    if normalised is None:
        return grey, False
    stretched = np.clip(_stretch(normalised.astype(np.float64), *grey.shape[:2]), 0.0, 1.0)
    colours = colormaps[cmap](stretched)[..., :3]
    return (1.0 - alpha) * grey + alpha * colours, True


class _PixelImage(AxesImage):
    """An image that vector backends (PDF, SVG) embed at its own pixels, the viewer scaling it,
    while raster ones (PNG) resample it as ``interpolation`` says.

    Resampled to the figure's dpi, a map grid's PDF held 3.5 times its pixels (128 pixels per
    cell drawn at 150 dpi): most of the time spent writing it, and of its size.
    """

    def _check_unsampled_image(self) -> bool:
        # asked only where the renderer can scale an image itself (option_scale_image)
        return True


def _show_pixels(ax: Axes, pixels: np.ndarray, width: float, height: float) -> AxesImage:
    """``ax.imshow(pixels, extent=(0, width, height, 0), interpolation="antialiased")``, as a
    :class:`_PixelImage`."""
    image = _PixelImage(
        ax,
        interpolation="antialiased",
        resample=matplotlib.rcParams["image.resample"],
        extent=(0, width, height, 0),
    )
    ax.set_aspect(matplotlib.rcParams["image.aspect"])
    image.set_data(pixels)
    image.set_clip_path(ax.patch)
    image.set_extent(image.get_extent())  # the axes' limits fit the image, as imshow's do
    ax.add_image(image)
    return image


def draw_overlay(
    ax: Axes,
    image: Any,
    saliency: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
) -> bool:
    """Draw :func:`blend` of ``image`` and ``saliency`` into ``ax``.

    Returns ``False`` (and writes "constant map" in the cell) when the map has no ranking.
    """
    rgb = _image_hwc(image)
    height, width = rgb.shape[:2]
    factor = _factor(height, width)
    shown, drawn = blend(rgb, saliency, alpha=alpha, cmap=cmap, factor=factor)
    _show_pixels(ax, shown, width, height)
    if not drawn:
        ax.text(width / 2, height / 2, _CONSTANT, ha="center", va="center", fontsize=6,
                color="red")  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


def _factor(height: int, width: int, cells: int = 1) -> int:
    """Upscaling of an image so that a stretched map is drawn at ≥ :data:`_CELL_PIXELS` per side,
    the whole drawing kept under :data:`_MAX_PIXELS`."""
    factor = max(1, math.ceil(_CELL_PIXELS / max(height, width)))
    while factor > 1 and cells * (factor * height) * (factor * width) > _MAX_PIXELS:
        factor -= 1
    return factor


def _colorbar(figure: Figure, cmap: str, alpha: float, *, ax: Axes | None = None,
              cax: Axes | None = None) -> None:  # fmt: skip
    """The colour bar beside ``ax`` (taking room from it), or drawn into ``cax``."""
    mappable = ScalarMappable(Normalize(0.0, 1.0), cmap=cmap)
    if cax is not None:
        bar = figure.colorbar(mappable, cax=cax, ticks=[0, 1])
    else:
        bar = figure.colorbar(mappable, ax=ax, shrink=0.8, aspect=25, pad=0.02, ticks=[0, 1])
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
        _colorbar(figure, cmap, alpha, ax=ax)
    if title:
        ax.set_title(title)
    return figure


@dataclass(frozen=True)
class Mosaic:
    """A grid of cells drawn as one image (:func:`mosaic`).

    Attributes:
        pixels: ``float [H, W, 3]`` RGB in ``[0, 1]``, white between and in empty cells.
        row_tops: The first pixel row of each grid row (one per method).
        column_lefts: The first pixel column of each grid column: the image's, then one per layer.
        cell_size: ``(height, width)`` of every cell in pixels.
        drawn: The ``(row, column)`` cells holding a picture: ``(0, 0)`` (the image) and every
            map that was given.
        constant: The cells of constant maps (drawn as the grey image alone).
        pixels_per_inch: The drawing's scale at the figure size :func:`grid` gives it.
    """

    pixels: np.ndarray
    row_tops: tuple[int, ...]
    column_lefts: tuple[int, ...]
    cell_size: tuple[int, int]
    drawn: frozenset[tuple[int, int]]
    constant: frozenset[tuple[int, int]]
    pixels_per_inch: float

    def box(self, row: int, column: int) -> tuple[slice, slice]:
        """The ``(rows, columns)`` slices of one cell in :attr:`pixels`."""
        top, left = self.row_tops[row], self.column_lefts[column]
        return slice(top, top + self.cell_size[0]), slice(left, left + self.cell_size[1])

    def centre(self, row: int, column: int) -> tuple[float, float]:
        """``(x, y)`` of a cell's centre, in pixels."""
        rows, columns = self.box(row, column)
        return (columns.start + columns.stop) / 2, (rows.start + rows.stop) / 2


def mosaic(
    maps: Mapping[str, Mapping[str, Any]],
    image: Any,
    methods: Sequence[str],
    layers: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    cell: float = 1.6,
) -> Mosaic:
    """The cells of :func:`grid` as one image: the image in colour at the top left, then per
    method (row) and layer (column) its :func:`blend`; a missing map leaves its cell white.

    One image rather than one axes per cell: matplotlib spends tens of milliseconds laying out,
    drawing and encoding each axes, which made a 7 × 6 grid take about 6 s to save.
    """
    rgb = _image_hwc(image)
    height, width = rgb.shape[:2]
    factor = _factor(height, width, cells=len(methods) * (len(layers) + 1))
    cell_h, cell_w = factor * height, factor * width
    per_inch = cell_h / cell
    gap = max(1, round(_GAP_INCHES * per_inch))
    band = round(_LABEL_INCHES * per_inch)  # room for the row labels, left of the first map
    lefts = (0, *(cell_w + band + k * (cell_w + gap) for k in range(len(layers))))
    tops = tuple(row * (cell_h + gap) for row in range(len(methods)))
    result = Mosaic(
        np.ones((tops[-1] + cell_h, lefts[-1] + cell_w, 3)), tops, lefts, (cell_h, cell_w),
        frozenset(), frozenset(), per_inch,
    )  # fmt: skip
    drawn, constant = {(0, 0)}, set()
    result.pixels[result.box(0, 0)] = _upscale(rgb, factor) / 255.0
    for row, method in enumerate(methods):
        for column, layer in enumerate(layers, start=1):
            saliency = maps.get(method, {}).get(layer)
            if saliency is None:
                continue
            shown, ranked = blend(rgb, saliency, alpha=alpha, cmap=cmap, factor=factor)
            result.pixels[result.box(row, column)] = shown
            drawn.add((row, column))
            if not ranked:
                constant.add((row, column))
    return dataclasses.replace(result, drawn=frozenset(drawn), constant=frozenset(constant))


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

    The cells are one image (:func:`mosaic`) in one axes, ``figure.axes[0]``, in pixel
    coordinates; the column titles, row labels and "constant map" notes are its texts (``gid``
    ``"column"``, ``"row"``, ``"constant"``); ``figure.axes[1]`` is the colour bar.

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
    drawn = mosaic(maps, image, methods, layers, alpha=alpha, cmap=cmap, cell=cell)
    height, width = drawn.pixels.shape[:2]
    per_inch = drawn.pixels_per_inch
    inches = (width / per_inch, height / per_inch)
    top = _TITLES_INCHES + (_SUPTITLE_INCHES if title else 0.0)
    right = _COLORBAR_INCHES if colorbar else _MARGIN_INCHES
    size = (_MARGIN_INCHES + inches[0] + right, _MARGIN_INCHES + inches[1] + top)
    figure = Figure(figsize=size)
    ax = figure.add_axes((_MARGIN_INCHES / size[0], _MARGIN_INCHES / size[1],
                          inches[0] / size[0], inches[1] / size[1]))  # fmt: skip
    # as 8-bit RGB, which matplotlib draws and the PDF embeds without a conversion
    pixels = np.round(drawn.pixels * 255.0).astype(np.uint8)
    _show_pixels(ax, pixels, width, height)
    ax.set_axis_off()
    lift = _TITLE_LIFT_INCHES * per_inch
    for column, label in enumerate([image_title, *layers]):
        x, _ = drawn.centre(0, column)
        ax.text(x, -lift, label, ha="center", va="bottom", gid="column")
    band_centre = drawn.column_lefts[1] - _LABEL_INCHES * per_inch / 2
    for row, method in enumerate(methods):
        # vertical, so a long method name does not push the grid away from the image
        _, y = drawn.centre(row, 1)
        ax.text(band_centre, y, method, rotation=90, ha="center", va="center", gid="row")
    for row, column in sorted(drawn.constant):
        ax.text(*drawn.centre(row, column), _CONSTANT, ha="center", va="center", fontsize=6,
                color="red", gid="constant")  # fmt: skip
    if colorbar:
        bar = figure.add_axes(((_MARGIN_INCHES + inches[0] + _BAR_PAD_INCHES) / size[0],
                               (_MARGIN_INCHES + 0.1 * inches[1]) / size[1],
                               _BAR_INCHES / size[0], 0.8 * inches[1] / size[1]))  # fmt: skip
        _colorbar(figure, cmap, alpha, cax=bar)
    if title:
        figure.suptitle(title, y=1.0 - 0.3 * _SUPTITLE_INCHES / size[1], va="top")
    return figure
