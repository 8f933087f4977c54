"""Deletion and insertion (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation
of Black-box Models", BMVC 2018), batched on the device (docs/methods.md §13).

A map ranks the pixels of an image. With ``N = H·W`` pixels and ``k`` steps, step ``i = 0 … k``
perturbs the ``n_i = round(i·N / k)`` pixels that the map ranks highest (all channels of a pixel
at once; ties go to the pixel first in row-major order):

* ``deletion``: those pixels are replaced by the baseline's (the rest stays the image);
* ``insertion``: those pixels are the image's, the rest is the baseline.

The curve is the target class's probability at each step, and the score is its area under the
curve over ``i/k ∈ [0, 1]`` by the trapezoidal rule. A good map gives a *low* deletion AUC (the
probability drops as soon as the salient pixels go) and a *high* insertion AUC.

Baselines (:data:`BASELINES`):

* ``blur``: the image smoothed by :func:`backsal.metrics.pointing.gaussian_smooth` with
  σ = :data:`BLUR_FRACTION`·max(H, W) (5 px at 224², the σ of Petsiuk et al.'s code; zero padding,
  full kernel of radius ⌈4σ⌉ rather than their 11-tap one). Petsiuk et al. insert into it.
* ``zero``: the preprocessed input set to 0, which is the dataset mean for mean-subtracted
  inputs (Petsiuk et al. delete to a constant).

The probability is ``softmax`` over the logits, or ``sigmoid`` of the target logit for multi-label
models trained with binary cross-entropy (the VOC/COCO models and the small models); a score map
``[B, K, h, w]`` is averaged over positions first. Every perturbed image of a row is built from a
rank map by one comparison, and all of them go through the model in batches; there is no loop
over pixels. A step that perturbs no pixel or every pixel (``i = 0``, ``i = k``, and any other
step with ``n_i ∈ {0, N}``) shows the image or the baseline whatever the map and the mode: those
two images go through the model once per row, and every curve of the row shares them, so a call
with ``M`` maps and both modes runs at most ``B·(2 + 2·M·(k − 1))`` images, not ``B·2·M·(k + 1)``.

The images of all curves go through the model as one stream of full batches. On a CPU those are
sized and laid out for its caches (:func:`forward_batch_size`, ``memory_format``): a few 224²
images per forward, channels-last (the measurements behind both are in bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._engine import check_devices, eval_mode, model_output
from .._finite import finite_rows
from .pointing import gaussian_smooth

__all__ = [
    "BASELINES",
    "BLUR_FRACTION",
    "CPU_FORWARD_PIXELS",
    "DEVICE_FORWARD_IMAGES",
    "MEMORY_FORMATS",
    "MODES",
    "PROBABILITIES",
    "DeletionResult",
    "baseline_images",
    "curve_auc",
    "deletion_insertion",
    "forward_batch_size",
    "pixel_ranks",
    "step_counts",
]

Mode = Literal["deletion", "insertion"]
Baseline = Literal["blur", "zero"]
Probability = Literal["softmax", "sigmoid"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]

#: The two curves.
MODES: tuple[Mode, ...] = ("deletion", "insertion")
#: The documented baselines.
BASELINES: tuple[Baseline, ...] = ("blur", "zero")
#: How a class probability is read from the model's output.
PROBABILITIES: tuple[Probability, ...] = ("softmax", "sigmoid")
#: σ of the ``blur`` baseline as a fraction of the larger side: 5 px at 224 px.
BLUR_FRACTION = 5 / 224
#: How the perturbed images are laid out in memory for the forward (see ``deletion_insertion``).
MEMORY_FORMATS: tuple[MemoryFormat, ...] = ("auto", "channels_last", "contiguous")
#: Pixels per forward on a CPU when no ``batch_size`` is given: 4 images at 224², 49 at 64²
#: (past that a forward gets slower per image as its activations leave the caches; the
#: measurements are in bench/README.md).
CPU_FORWARD_PIXELS = 4 * 224 * 224
#: Images per forward on other devices (GPUs) when no ``batch_size`` is given.
DEVICE_FORWARD_IMAGES = 64


def step_counts(pixels: int, steps: int) -> list[int]:
    """``n_i = round(i·N/k)`` for ``i = 0 … k`` (half to even, as Python's ``round``)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r}: give a positive number of perturbation steps.")
    return [round(i * pixels / steps) for i in range(steps + 1)]


def pixel_ranks(maps: Tensor) -> Tensor:
    """Rank of each pixel in the map's order, 0 = most salient; ties by row-major position.

    Args:
        maps: ``[B, H, W]`` or ``[B, 1, H, W]``.

    Returns:
        ``long [B, H·W]``.
    """
    flat = maps.reshape(maps.shape[0], -1)
    if not bool(finite_rows(flat).all()):
        raise ValueError("The maps hold NaN or inf values; they cannot order the pixels.")
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def forward_batch_size(images: Tensor) -> int:
    """Perturbed images per forward when ``deletion_insertion`` is given no ``batch_size``: on a
    CPU as many as hold :data:`CPU_FORWARD_PIXELS` pixels (at least one), elsewhere
    :data:`DEVICE_FORWARD_IMAGES`.

    Args:
        images: ``[B, C, H, W]``, on the device the model runs on.
    """
    if images.device.type != "cpu":
        return DEVICE_FORWARD_IMAGES
    return max(1, CPU_FORWARD_PIXELS // (images.shape[-2] * images.shape[-1]))


def baseline_images(images: Tensor, baseline: Baseline) -> Tensor:
    """The image each pixel is replaced by (deletion) or revealed from (insertion)."""
    if baseline == "blur":
        return gaussian_smooth(images, BLUR_FRACTION)
    if baseline == "zero":
        return torch.zeros_like(images)
    raise ValueError(f"Unknown baseline {baseline!r}; use one of {BASELINES}.")


def curve_auc(curves: Tensor) -> Tensor:
    """Trapezoidal area under ``[..., k+1]`` curves sampled at ``i/k``, ``i = 0 … k``."""
    steps = curves.shape[-1] - 1
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) / 2) / steps


@dataclass(frozen=True)
class DeletionResult:
    """Curves and their areas, per mode, method and layer.

    Attributes:
        curves: ``{mode: {method: {layer: [B, k+1]}}}``: the target's probability per step.
        auc: ``{mode: {method: {layer: [B]}}}``.
        baseline: The baseline used.
        fractions: ``n_i / N`` per step (the x axis of the curves).
    """

    curves: dict[str, dict[str, dict[str, Tensor]]]
    auc: dict[str, dict[str, dict[str, Tensor]]]
    baseline: str
    fractions: tuple[float, ...]

    def records(self) -> list[dict[str, object]]:
        """One flat record per (mode, method, layer, row), for a table."""
        out: list[dict[str, object]] = []
        for mode, by_method in self.auc.items():
            for method, by_layer in by_method.items():
                for layer, auc in by_layer.items():
                    for row, value in enumerate(auc.cpu().tolist()):
                        out.append(
                            {
                                "mode": mode,
                                "baseline": self.baseline,
                                "method": method,
                                "layer": layer,
                                "row": row,
                                "auc": value,
                            }
                        )
        return out


def _probability(output: Tensor, targets: Tensor, probability: Probability) -> Tensor:
    if output.dim() == 4:  # a class-score map: its mean over positions scores the image
        output = output.mean(dim=(-2, -1))
    if output.dim() != 2:
        raise ValueError(f"The model outputs {tuple(output.shape)}; need [B, K] or [B, K, h, w].")
    if probability == "softmax":
        return output.softmax(dim=1).gather(1, targets[:, None])[:, 0]
    return output.gather(1, targets[:, None])[:, 0].sigmoid()


class _TargetProbability:
    """``[len(batch)]``: each image's target probability under ``model``, the batch in the
    memory format that ``deletion_insertion`` was given (see there)."""

    def __init__(
        self,
        model: nn.Module,
        probability: Probability,
        memory_format: MemoryFormat,
        images: Tensor,
    ) -> None:
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"Unknown memory_format {memory_format!r}; use one of {MEMORY_FORMATS}."
            )
        self.model, self.probability = model, probability
        self.fall_back = memory_format == "auto"
        self.channels_last = memory_format == "channels_last" or (
            self.fall_back and images.device.type == "cpu" and images.dtype == torch.float32
        )

    def __call__(self, batch: Tensor, targets: Tensor) -> Tensor:
        if self.channels_last:
            try:
                return self._run(batch.contiguous(memory_format=torch.channels_last), targets)
            except RuntimeError as error:
                if not self.fall_back:
                    raise RuntimeError(
                        f"The model failed on a channels-last batch ({error}); pass "
                        "memory_format='contiguous' (or 'auto', which falls back by itself)."
                    ) from error
                # a model that views its activations as contiguous (x.view(...)) cannot take
                # this layout: the rest of the call, this batch included, runs NCHW
                self.channels_last = False
        return self._run(batch, targets)

    def _run(self, batch: Tensor, targets: Tensor) -> Tensor:
        return _probability(model_output(self.model(batch)), targets, self.probability)


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    maps: Mapping[str, Mapping[str, Tensor]],
    *,
    steps: int = 32,
    modes: Sequence[Mode] = MODES,
    baseline: Baseline = "blur",
    probability: Probability = "softmax",
    batch_size: int | None = None,
    memory_format: MemoryFormat = "auto",
) -> DeletionResult:
    """Deletion and insertion curves and AUCs of every map.

    Args:
        model: The classifier; it runs in eval mode without gradients and is not changed.
        images: ``[B, C, H, W]`` preprocessed, one row per target.
        targets: ``[B]`` class whose probability is followed.
        maps: ``{method: {layer: Tensor[B, 1, h, w]}}`` as :func:`backsal.saliency` returns;
            maps not at ``H×W`` are resized bilinearly (``align_corners=False``) first.
        steps: ``k``, the number of perturbation steps (``k + 1`` points per curve).
        modes: Any of ``"deletion"``, ``"insertion"``.
        baseline: ``"blur"`` or ``"zero"`` (see the module docstring).
        probability: ``"softmax"`` or ``"sigmoid"``.
        batch_size: Perturbed images per forward; ``None``: :func:`forward_batch_size`.
        memory_format: Layout of the batches fed to the model. ``"channels_last"`` (NHWC in
            memory, the same tensor to the model's code) is the faster layout of CPU
            convolutions; ``"contiguous"`` is NCHW. ``"auto"`` takes channels-last for
            ``float32`` images on a CPU and NCHW otherwise, and goes back to NCHW for the rest of
            the call if the model raises on a channels-last batch (as a model that calls ``view``
            on an activation does). The model's parameters are never converted. The layout changes
            the probabilities only by rounding (about 1e-7 in float32).

    Returns:
        A :class:`DeletionResult`.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be a tensor [B, C, H, W].")
    rows, _, height, width = images.shape
    targets = torch.as_tensor(targets, device=images.device).long()
    if targets.shape != (rows,):
        raise ValueError(f"targets must be [B] = [{rows}], got {tuple(targets.shape)}.")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; use one of {MODES}.")
    if probability not in PROBABILITIES:
        raise ValueError(f"Unknown probability {probability!r}; use one of {PROBABILITIES}.")
    if batch_size is None:
        batch_size = forward_batch_size(images)
    elif batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give a positive number of images.")
    forward = _TargetProbability(model, probability, memory_format, images)
    counts = step_counts(height * width, steps)
    pairs = [(method, layer) for method, by_layer in maps.items() for layer in by_layer]
    if not pairs:
        raise ValueError("No map given.")
    curves: dict[str, dict[str, dict[str, Tensor]]] = {
        mode: {method: {} for method in maps} for mode in modes
    }
    pixels = height * width
    # the steps whose image depends on the map; the others show the image or the baseline
    inner = [i for i, n in enumerate(counts) if 0 < n < pixels]
    untouched = [i for i, n in enumerate(counts) if n == 0]
    replaced = [i for i, n in enumerate(counts) if n == pixels]
    check_devices(model, images)
    with eval_mode(model), torch.no_grad():
        images = images.detach()
        base = baseline_images(images, baseline)
        # the target's probability on the image itself and on the baseline: one pass per row,
        # shared by every map and mode (both in the same batches)
        ends = torch.cat([images, base])
        on_ends = torch.cat(
            [
                forward(chunk, chunk_targets)
                for chunk, chunk_targets in zip(
                    ends.split(batch_size), targets.repeat(2).split(batch_size), strict=True
                )
            ]
        ).to(images.dtype)
        on_image, on_base = on_ends[:rows], on_ends[rows:]
        limits = torch.tensor([counts[i] for i in inner], device=images.device)
        order = [(pair, mode) for pair in range(len(pairs)) for mode in modes]
        ranked: dict[int, Tensor] = {}

        def ranks_of(pair: int) -> Tensor:
            if pair not in ranked:
                ranked.clear()  # the curves run in order: the earlier maps' are all built
                method, layer = pairs[pair]
                ranked[pair] = pixel_ranks(_resized(maps[method][layer], rows, (height, width)))
            return ranked[pair]

        values = _run_curves(forward, images, base, targets, limits, order, ranks_of, batch_size)
        for index, (pair, mode) in enumerate(order):
            method, layer = pairs[pair]
            if not inner:
                ranks_of(pair)  # the maps are checked whether or not a step needs them
            # deletion starts from the image, insertion from the baseline
            start, end = (on_image, on_base) if mode == "deletion" else (on_base, on_image)
            curve = torch.empty(rows, len(counts), dtype=images.dtype, device=images.device)
            curve[:, untouched] = start[:, None]
            curve[:, replaced] = end[:, None]
            curve[:, inner] = values[index]
            curves[mode][method][layer] = curve
    auc = {
        mode: {m: {layer: curve_auc(c) for layer, c in by.items()} for m, by in by_mode.items()}
        for mode, by_mode in curves.items()
    }
    fractions = tuple(n / pixels for n in counts)
    return DeletionResult(curves, auc, baseline, fractions)


def _resized(maps: Tensor, rows: int, size: tuple[int, int]) -> Tensor:
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[0] != rows or maps.shape[1] != 1:
        raise ValueError(f"maps must be [B, 1, h, w] with B = {rows}, got {tuple(maps.shape)}.")
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps.detach(), size=size, mode="bilinear", align_corners=False)
    return maps.detach()


def _run_curves(
    forward: _TargetProbability,
    images: Tensor,
    base: Tensor,
    targets: Tensor,
    limits: Tensor,
    order: Sequence[tuple[int, Mode]],
    ranks_of: Callable[[int], Tensor],
    batch_size: int,
) -> Tensor:
    """``[len(order), B, len(limits)]`` probabilities, one per curve (map, mode), row and step
    limit ``n`` (none without limits). The (curve, row, step) images are built and run
    ``batch_size`` at a time, one stream across the curves, so that a batch is full even when a
    curve has fewer images."""
    rows, _, height, width = images.shape
    points = limits.numel()
    per_curve = rows * points
    total = len(order) * per_curve
    out = torch.empty(total, dtype=images.dtype, device=images.device)
    for start in range(0, total, batch_size):
        stop = min(total, start + batch_size)
        pictures, picture_targets = [], []
        for curve in range(start // per_curve, (stop - 1) // per_curve + 1):
            offset = curve * per_curve
            index = torch.arange(
                max(start, offset) - offset, min(stop, offset + per_curve) - offset,
                device=images.device,
            )  # fmt: skip
            row, step = index // points, index % points
            pair, mode = order[curve]
            # pixel p is perturbed at step i iff its rank is below n_i
            perturbed = (ranks_of(pair)[row] < limits[step][:, None]).view(-1, 1, height, width)
            if mode == "deletion":
                pictures.append(torch.where(perturbed, base[row], images[row]))
            else:
                pictures.append(torch.where(perturbed, images[row], base[row]))
            picture_targets.append(targets[row])
        out[start:stop] = forward(torch.cat(pictures), torch.cat(picture_targets)).to(out.dtype)
    return out.view(len(order), rows, points)
