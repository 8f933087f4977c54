"""The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016),
with the protocol of TorchRay's benchmark that the paper uses (docs/methods.md §6), batched on the device.

For a query (image, class c) and a saliency map resized to the original image size:

* point ``p = argmax`` of the map (the first maximum in row-major order on ties); input-level maps
  are first smoothed by a Gaussian of σ = 0.02·max(H, W) (after resizing, with the border
  replicated and kernel radius ⌈4σ⌉, as TorchRay's ``saliency()`` calls ``imsmooth``);
* hit iff some ground-truth pixel ``q`` has ``‖q − p‖₂ < tolerance`` (strictly; 15 px);
* per-class accuracy ``hits_c / max(hits_c + misses_c, 1)``, then the mean over *all* classes of
  the dataset (a class without queries counts as 0);
* subsets: ``all``, and ``difficult`` (``Query.in_difficult``; for VOC/COCO a query is left out when
  its image is listed in the EBP flag file with the class's flag 0; an unlisted image is kept);
* baseline ``center``: the point ``(W/2, H/2)``.

Everything works on a batch of rows on the device with tensor operations only. Rows of different
original sizes are handled by *grouping by size* (:func:`evaluate_maps`, :func:`center_hits`): each
group is resized, smoothed and scored as one tensor; no padding is involved, so no mask of padded
pixels can leak into the argmax or the smoothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backsal._finite import finite_rows
from backsal.evaluation import SUBSETS

# The score from per-query hits needs no torch (the evaluation jobs import it without); it is
# part of this module's API.
from .scores import pointing_accuracies, pointing_accuracy, subset_mask

__all__ = [
    "INPUT_SMOOTHING",
    "MaskGroups",
    "POINTING_TOLERANCE",
    "SUBSETS",
    "argmax_points",
    "center_hits",
    "center_points",
    "evaluate_maps",
    "locate_points",
    "gaussian_smooth",
    "group_masks",
    "pointing_accuracies",
    "pointing_accuracy",
    "pointing_hits",
    "points_hit",
    "resize_maps",
    "subset_mask",
]

#: Hit tolerance of the protocol, in pixels of the original image.
POINTING_TOLERANCE = 15.0
#: σ of the smoothing of input-level maps, as a fraction of the larger side (TorchRay ``smooth``).
INPUT_SMOOTHING = 0.02


@dataclass(frozen=True)
class MaskGroups:
    """Ground-truth masks grouped by original size (:func:`group_masks`), once for the many maps
    of one batch: each (method, layer) of a batch is scored against the same masks.

    Attributes:
        count: The number of rows.
        groups: ``(size, row indices, stacked masks bool [n, H, W])`` per original size, in
            first-seen order.
    """

    count: int
    groups: tuple[tuple[tuple[int, int], torch.Tensor, torch.Tensor], ...]

    @property
    def whole(self) -> bool:
        """One size only: the single group holds every row, in order."""
        return len(self.groups) == 1

    @property
    def device(self) -> torch.device:
        """Where the stacked masks are (the CPU for no rows)."""
        return self.groups[0][2].device if self.groups else torch.device("cpu")


Masks = torch.Tensor | Sequence[torch.Tensor] | MaskGroups


# --------------------------------------------------------------------------- maps


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of ``maps [B, C, h, w]`` to ``size = (H, W)``."""
    _check_maps(maps)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def gaussian_smooth(maps: torch.Tensor, fraction: float = INPUT_SMOOTHING) -> torch.Tensor:
    """Gaussian smoothing with σ = ``fraction``·max(H, W) of ``maps [B, C, H, W]``.

    As TorchRay's ``saliency()`` smooths input-level maps after the resize (docs/methods.md §6):
    ``imsmooth(..., padding_mode='replicate')``, a separable kernel ``exp(−i²/2σ²)`` over
    ``|i| ≤ ⌈4σ⌉`` normalised to sum 1, the border *replicated* (zero padding would pull the
    maximum of a map that is high at the border inwards), same output size. ``fraction <= 0``
    returns the maps unchanged.

    Each 1-D pass is a product with an ``[n, n]`` matrix (the kernel on its diagonals, the taps
    that fall outside folded onto the border pixel: replication), ``A_H · map · A_Wᵀ``: a
    single-channel ``conv2d`` is slow on CPUs, while the matrix products run 4x (VOC-sized
    maps) to 13x (64²) faster in BLAS; the sums are the same, up to rounding.
    """
    _check_maps(maps)
    sigma = fraction * max(maps.shape[-2:])
    if sigma <= 0:
        return maps
    radius = math.ceil(4 * sigma)
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    height, width = maps.shape[-2:]
    rows = _smoothing_matrix(kernel, height).to(maps.dtype)
    cols = _smoothing_matrix(kernel, width).to(maps.dtype)
    return rows @ maps @ cols.T


def _smoothing_matrix(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """``[size, size]`` matrix ``A``: ``(A v)_i = Σ_o kernel[o + r] · v[clamp(i + o, 0, size − 1)]``."""
    radius = (kernel.numel() - 1) // 2
    index = torch.arange(size, device=kernel.device)
    offsets = torch.arange(-radius, radius + 1, device=kernel.device)
    taps = (index[:, None] + offsets[None, :]).clamp(0, size - 1)  # replicated border
    matrix = torch.zeros(size, size, dtype=kernel.dtype, device=kernel.device)
    return matrix.scatter_add_(1, taps, kernel.expand(size, -1).contiguous())


def argmax_points(maps: torch.Tensor) -> torch.Tensor:
    """The maximum of each map ``[B, 1, H, W]`` as ``long [B, 2]`` points ``(x, y)``.

    Ties go to the first maximum in row-major order (``torch.argmax`` returns the first index).
    """
    _check_maps(maps, single_channel=True)
    width = maps.shape[-1]
    flat_index = maps.flatten(1).argmax(dim=1)
    return torch.stack([flat_index % width, flat_index // width], dim=1)


def center_points(sizes: torch.Tensor) -> torch.Tensor:
    """The centre ``(W/2, H/2)`` of images of sizes ``[B, 2] = (H, W)``, as ``float [B, 2]``."""
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise ValueError(f"sizes must be [B, 2] (height, width), got {tuple(sizes.shape)}")
    return sizes.flip(1).to(torch.float32) / 2


# --------------------------------------------------------------------------- hits


def points_hit(
    points: torch.Tensor, masks: torch.Tensor, tolerance: float = POINTING_TOLERANCE
) -> torch.Tensor:
    """Whether each point lies strictly within ``tolerance`` px of its ground-truth mask.

    Args:
        points: ``[B, 2]`` points ``(x, y)`` in pixel coordinates (integer or fractional).
        masks: ``bool [B, H, W]`` ground truth.
        tolerance: Hit radius in pixels; a pixel at exactly ``tolerance`` does not count.

    Returns:
        ``bool [B]``.
    """
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool [B, H, W], got {masks.dtype} {tuple(masks.shape)}")
    if points.shape != (masks.shape[0], 2):
        raise ValueError(f"points must be [{masks.shape[0]}, 2], got {tuple(points.shape)}")
    # float32 is exact here: squared distances of integer or half-integer coordinates below
    # 2**24 are representable, so the strict comparison at the boundary is exact.
    points = points.to(device=masks.device, dtype=torch.float32)
    side = 2 * (math.floor(tolerance) + 1) + 1
    if side * side < masks.shape[1] * masks.shape[2]:
        return _hits_in_window(points, masks, float(tolerance))
    return _hits_on_grid(points, masks, float(tolerance))


def _hits_on_grid(points: torch.Tensor, masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Hit test against every pixel: ``[B, H, W]`` work, for tolerances as large as the image."""
    _, height, width = masks.shape
    rows = torch.arange(height, device=masks.device, dtype=torch.float32)
    cols = torch.arange(width, device=masks.device, dtype=torch.float32)
    dy2 = (rows.view(1, -1, 1) - points[:, 1].view(-1, 1, 1)) ** 2
    dx2 = (cols.view(1, 1, -1) - points[:, 0].view(-1, 1, 1)) ** 2
    near = (dy2 + dx2) < tolerance**2
    return (near & masks).flatten(1).any(dim=1)


def _hits_in_window(points: torch.Tensor, masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Hit test against the pixels of a square window around each point only.

    Every pixel closer than ``tolerance`` lies within ``floor(tolerance) + 1`` rows and columns of
    the point's floor, so gathering that ``(2r + 1)²`` window per row gives the same answer as the
    full grid at a cost independent of the image size.
    """
    _, height, width = masks.shape
    reach = math.floor(tolerance) + 1
    offsets = torch.arange(-reach, reach + 1, device=masks.device)
    ys = points[:, 1].floor().long().view(-1, 1) + offsets  # [B, K]
    xs = points[:, 0].floor().long().view(-1, 1) + offsets
    dy2 = (ys.to(torch.float32) - points[:, 1:2]) ** 2
    dx2 = (xs.to(torch.float32) - points[:, 0:1]) ** 2
    near = (dy2[:, :, None] + dx2[:, None, :]) < tolerance**2  # [B, K, K]
    inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
    flat_index = ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None, :]
    truth = masks.flatten(1).gather(1, flat_index.flatten(1)).view_as(near)
    return (near & inside & truth).flatten(1).any(dim=1)


def pointing_hits(
    maps: torch.Tensor,
    masks: torch.Tensor,
    tolerance: float = POINTING_TOLERANCE,
    check_finite: bool = True,
) -> torch.Tensor:
    """Pointing-game hits of maps already at the original image size.

    Args:
        maps: ``[B, 1, H, W]`` saliency maps at the original image size.
        masks: ``bool [B, H, W]`` ground truth.
        tolerance: Hit radius in pixels (strict).
        check_finite: Raise on NaN / inf maps (costs one device sync); ``torch.argmax`` would
            otherwise point at the first NaN.

    Returns:
        ``bool [B]``.
    """
    _check_maps(maps, single_channel=True)
    if masks.shape != (maps.shape[0], *maps.shape[-2:]):
        raise ValueError(
            f"masks {tuple(masks.shape)} do not match maps {tuple(maps.shape)}: resize the maps "
            "to the original image size first (resize_maps / evaluate_maps)"
        )
    if check_finite:
        _check_finite(maps)
    return points_hit(argmax_points(maps), masks, tolerance)


def locate_points(
    maps: torch.Tensor,
    masks: Masks,
    tolerance: float = POINTING_TOLERANCE,
    smooth: float = 0.0,
    check_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointing-game points and hits of maps at any resolution, rows of different original sizes.

    Rows are grouped by original size (the shape of their mask); each group is resized
    bilinearly to its size, smoothed if asked, and scored in one go.

    Args:
        maps: ``[B, 1, h, w]`` maps at a common resolution (e.g. the layer's).
        masks: ``bool [B, H, W]``, or a sequence of ``B`` masks ``bool [H_i, W_i]`` whose shapes
            are the original sizes, or both already grouped by :func:`group_masks` (for many
            maps of the same rows).
        tolerance: Hit radius in pixels (strict).
        smooth: σ of the Gaussian smoothing as a fraction of the larger original side;
            :data:`INPUT_SMOOTHING` for input-level maps, 0 (no smoothing) for layer maps.
        check_finite: See :func:`pointing_hits`.

    Returns:
        ``(points long [B, 2] as (x, y) at the original size, hits bool [B])`` on the maps' device.
    """
    _check_maps(maps, single_channel=True)
    if check_finite:
        _check_finite(maps)
    grouped = group_masks(masks, maps.shape[0], maps.device)

    def located(group: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        group = resize_maps(group, size)
        return argmax_points(gaussian_smooth(group, smooth) if smooth > 0 else group)

    if grouped.whole:
        ((size, _, truth),) = grouped.groups
        points = located(maps, size)
        return points, points_hit(points, truth, tolerance)
    hits = torch.zeros(maps.shape[0], dtype=torch.bool, device=maps.device)
    points = torch.zeros(maps.shape[0], 2, dtype=torch.long, device=maps.device)
    for size, rows, truth in grouped.groups:
        group_points = located(maps.index_select(0, rows), size)
        points[rows] = group_points
        hits[rows] = points_hit(group_points, truth, tolerance)
    return points, hits


def evaluate_maps(
    maps: torch.Tensor,
    masks: Masks,
    tolerance: float = POINTING_TOLERANCE,
    smooth: float = 0.0,
    check_finite: bool = True,
) -> torch.Tensor:
    """Pointing-game hits of maps at any resolution (see :func:`locate_points`): ``bool [B]``."""
    return locate_points(maps, masks, tolerance, smooth, check_finite)[1]


def center_hits(masks: Masks, tolerance: float = POINTING_TOLERANCE) -> torch.Tensor:
    """Hits of the ``center`` baseline, the point ``(W/2, H/2)``; ``masks`` as in
    :func:`evaluate_maps`."""
    grouped = group_masks(masks)
    device = grouped.device
    hits = torch.zeros(grouped.count, dtype=torch.bool, device=device)
    for size, rows, truth in grouped.groups:
        sizes = torch.tensor([size], device=device).expand(len(rows), 2)
        hits[rows] = points_hit(center_points(sizes), truth, tolerance)
    return hits


# --------------------------------------------------------------------------- helpers


def _check_maps(maps: torch.Tensor, single_channel: bool = False) -> None:
    if maps.dim() != 4 or not maps.is_floating_point():
        raise ValueError(f"maps must be floating [B, C, H, W], got {maps.dtype} {maps.shape}")
    if single_channel and maps.shape[1] != 1:
        raise ValueError(f"maps must have one channel [B, 1, H, W], got {tuple(maps.shape)}")


def _check_finite(maps: torch.Tensor) -> None:
    finite = finite_rows(maps)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"saliency maps of rows {bad[:10]}{'…' if len(bad) > 10 else ''} contain NaN or inf: "
            "the method produced an undefined map (e.g. a 0/0 normalisation); fix it upstream or "
            "pass check_finite=False to let argmax point at the first NaN"
        )


def _first_device(masks: Sequence[torch.Tensor]) -> torch.device:
    return masks[0].device if len(masks) else torch.device("cpu")


def group_masks(
    masks: Masks, count: int | None = None, device: torch.device | str | None = None
) -> MaskGroups:
    """The masks of ``count`` rows grouped by original size, on ``device``.

    Args:
        masks: ``bool [B, H, W]``, a sequence of ``B`` masks ``bool [H_i, W_i]``, or groups
            already made (returned as they are, after the checks).
        count: The number of rows the masks must have (default: as many as given).
        device: Where the stacked masks go (default: the masks' device).
    """
    if isinstance(masks, MaskGroups):
        if count is not None and masks.count != count:
            raise ValueError(f"mask groups of {masks.count} rows for {count} maps")
        return masks
    if isinstance(masks, torch.Tensor):
        count = masks.shape[0] if count is None else count
        if masks.dim() != 3 or masks.shape[0] != count:
            raise ValueError(f"masks must be bool [{count}, H, W], got {tuple(masks.shape)}")
        device = masks.device if device is None else device
        rows = torch.arange(count, device=device)
        size = (int(masks.shape[1]), int(masks.shape[2]))
        return MaskGroups(count, ((size, rows, masks.to(device)),))
    count = len(masks) if count is None else count
    if len(masks) != count:
        raise ValueError(f"{len(masks)} masks for {count} maps")
    device = _first_device(masks) if device is None else device
    by_size: dict[tuple[int, int], list[int]] = {}
    for row, mask in enumerate(masks):
        if mask.dim() != 2:
            raise ValueError(f"mask of row {row} must be [H, W], got {tuple(mask.shape)}")
        by_size.setdefault((int(mask.shape[0]), int(mask.shape[1])), []).append(row)
    return MaskGroups(
        count,
        tuple(
            (
                size,
                torch.tensor(rows, device=device, dtype=torch.long),
                torch.stack([masks[row] for row in rows]).to(device),
            )
            for size, rows in by_size.items()
        ),
    )
