"""Combining single-layer saliency maps across layers (Rebuffi et al., CVPR 2020, §5.2).

For layers ``l`` of a set, each map ``s_l`` is bilinearly upsampled to the evaluation size and
min–max normalised per image, ``ŝ_l = (s_l − min) / (max − min)``; the weights are normalised to
``w̃_l = w_l / Σ w``; then

* ``sum``:     ``S = Σ_l w̃_l ŝ_l``
* ``product``: ``S = Π_l ŝ_l^{w̃_l}``

A constant map (no spatial information, e.g. an all-zero Grad-CAM) normalises to all ones: the
neutral element of both modes, so it changes neither the sum's argmax nor the product.

Weighting strategies of the authors' code: ``uniform``; ``linear`` (``linspace(0, 1, L+1)[1:]``
from shallow to deep); the per-layer pointing accuracy (pass it as a mapping; the original code
measured it on the test set itself — a sound reproduction measures it on held-out data); and
three constant vectors for VGG16 and ResNet50 (``activation``, ``activation_in``, ``accuracy``),
shipped in ``backsal/_data/combination_weights.csv``. In the authors' code the ``activation_in``
strategy silently used the ``activation`` weights; here each name gets its own vector.

A NaN or infinite weight, or a map holding one NaN or infinite pixel, is an error naming the
layer and the rows, not a result: min–max normalisation of such a map is undefined (one NaN
pixel makes the whole map NaN), and a NaN map would send the pointing game's argmax to its first
NaN. Checking costs one device synchronisation per call.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from backsal._finite import finite_rows

__all__ = [
    "CONSTANT_STRATEGIES",
    "Weighting",
    "combination_weights",
    "combine",
    "combine_all",
    "normalize_maps",
]

CONSTANT_STRATEGIES = ("activation", "activation_in", "accuracy")


@cache
def _constant_table() -> dict[tuple[str, str], dict[str, float]]:
    table: dict[tuple[str, str], dict[str, float]] = {}
    text = resources.files("backsal").joinpath("_data/combination_weights.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        table.setdefault((row["arch"], row["strategy"]), {})[row["layer"]] = float(row["weight"])
    return table


def combination_weights(
    strategy: str, layers: Sequence[str], arch: str | None = None
) -> dict[str, float]:
    """Unnormalised weights of a named strategy for ``layers`` (ordered shallow to deep).

    Args:
        strategy: ``uniform``, ``linear`` or one of :data:`CONSTANT_STRATEGIES`.
        layers: The layers combined.
        arch: ``vgg16`` or ``resnet50``, for the constant strategies.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("No layers to combine.")
    if strategy == "uniform":
        return dict.fromkeys(layers, 1.0)
    if strategy == "linear":
        steps = torch.linspace(0, 1, len(layers) + 1, dtype=torch.float64)[1:].tolist()
        return dict(zip(layers, steps, strict=True))
    if strategy in CONSTANT_STRATEGIES:
        table = _constant_table()
        if (arch, strategy) not in table:
            archs = sorted({a for a, _ in table})
            raise ValueError(
                f"The {strategy!r} weights exist for arch in {archs}; got arch={arch!r}."
            )
        weights = table[(arch, strategy)]  # type: ignore[index]
        missing = [layer for layer in layers if layer not in weights]
        if missing:
            raise ValueError(
                f"The {strategy!r} weights of {arch} cover layers {list(weights)}; "
                f"{missing} have none."
            )
        return {layer: weights[layer] for layer in layers}
    raise ValueError(
        f"Unknown weighting strategy {strategy!r}; use 'uniform', 'linear', one of "
        f"{list(CONSTANT_STRATEGIES)}, or pass the weights as a mapping layer -> weight."
    )


def normalize_maps(maps: Tensor) -> Tensor:
    """Min–max normalise each map of ``[B, 1, H, W]`` to [0, 1]; a constant map becomes ones.

    Raises:
        ValueError: A map holds NaN or inf (its minimum or maximum is undefined).
    """
    bad = _nonfinite_rows(maps.flatten(1)).tolist()
    if any(bad):
        raise ValueError(f"The maps in rows {_rows(bad)} hold NaN or inf; {_NONFINITE_ADVICE}")
    return _normalize(maps)


_NONFINITE_ADVICE = (
    "min-max normalisation is undefined for them. Find where they come from (a NaN image, a "
    "diverged meta step) and fix it there."
)


def _nonfinite_rows(flat: Tensor) -> Tensor:
    """``bool [..., B]``: whether each row of ``flat [..., B, N]`` holds NaN or inf."""
    return ~finite_rows(flat.reshape(-1, flat.shape[-1])).view(flat.shape[:-1])


def _rows(bad: list[bool]) -> str:
    rows = [i for i, flag in enumerate(bad) if flag]
    return f"{rows[:10]}{' and more' if len(rows) > 10 else ''}"


def _normalize(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - low
    constant = span <= 0
    normalized = (flat - low) / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.ones_like(flat), normalized).view_as(maps)


#: One combination of :func:`combine_all`: ``(weights, mode)``, as :func:`combine` takes them.
Weighting = tuple[str | Sequence[float] | Mapping[str, float], Literal["sum", "product"]]


def combine(
    maps_by_layer: Mapping[str, Tensor],
    weights: str | Sequence[float] | Mapping[str, float] = "uniform",
    mode: Literal["sum", "product"] = "sum",
    size: tuple[int, int] | None = None,
    *,
    layers: Sequence[str] | None = None,
    arch: str | None = None,
) -> Tensor:
    """Combine per-layer maps into one map ``[B, 1, H, W]``.

    Args:
        maps_by_layer: ``{layer: Tensor[B, 1, h_l, w_l]}``.
        weights: A strategy name (see :func:`combination_weights`), a mapping layer -> weight,
            or one weight per layer of ``layers``, in that order. Normalised to sum to one.
        mode: ``"sum"`` or ``"product"``.
        size: Evaluation size ``(H, W)``; default: the largest map's size.
        layers: The layers to combine, shallow to deep (default: all of ``maps_by_layer``).
            Required where the weights depend on the order (a sequence of weights, or
            ``"linear"``), so that they never land on layers by the dictionary's order.
        arch: Architecture, for the constant strategies.

    Raises:
        ValueError: Unknown strategy or mode; a weight missing, negative, NaN or infinite;
            maps of different batch sizes; a map holding NaN or inf (layer and rows named).
    """
    return combine_all(maps_by_layer, [(weights, mode)], size, layers=layers, arch=arch)[0]


def combine_all(
    maps_by_layer: Mapping[str, Tensor],
    weightings: Sequence[Weighting],
    size: tuple[int, int] | None = None,
    *,
    layers: Sequence[str] | None = None,
    arch: str | None = None,
) -> list[Tensor]:
    """:func:`combine` of the same maps under several ``(weights, mode)`` pairs, in their order.

    Each layer's map is upsampled and normalised once for all of them, not once per pair (a
    combination table has strategies × modes pairs per method); the results are those of
    :func:`combine` called once per pair, to the bit.
    """
    positional = [w for w, _ in weightings if w == "linear" or not isinstance(w, (str, Mapping))]
    if layers is None:
        if positional:
            shown = positional[0] if isinstance(positional[0], str) else "a list of weights"
            raise ValueError(
                f"weights={shown!r} depend on the layers' order: pass layers=[...] shallow to "
                "deep (or weights as a mapping layer -> weight)."
            )
        layers = list(maps_by_layer)
    else:
        if isinstance(layers, str):
            raise TypeError(f"layers must be a list of names, got the string {layers!r}.")
        layers = list(layers)
        missing = [layer for layer in layers if layer not in maps_by_layer]
        if missing:
            raise ValueError(
                f"No maps for layers {missing}; the maps are of {list(maps_by_layer)}."
            )
    if not layers:
        raise ValueError("No maps to combine.")
    for _, mode in weightings:
        if mode not in ("sum", "product"):
            raise ValueError(f"Unknown combination mode {mode!r}; use 'sum' or 'product'.")
    checked = [(_weights_of(weights, layers, arch), mode) for weights, mode in weightings]
    totals = [sum(weight_of.values()) for weight_of, _ in checked]

    shapes = {tuple(maps_by_layer[layer].shape[:2]) for layer in layers}
    if len(shapes) != 1 or next(iter(shapes))[1] != 1:
        raise ValueError(f"Maps must all be [B, 1, h, w] with the same B; got shapes {shapes}.")
    # one synchronisation for all layers
    bad = torch.stack([_nonfinite_rows(maps_by_layer[layer].flatten(1)) for layer in layers])
    if bool(bad.any()):
        for layer, rows in zip(layers, bad.tolist(), strict=True):
            if any(rows):
                raise ValueError(
                    f"The maps of layer {layer!r} in rows {_rows(rows)} hold NaN or inf; "
                    + _NONFINITE_ADVICE
                )
    if size is None:
        size = max(
            (tuple(maps_by_layer[la].shape[-2:]) for la in layers), key=lambda s: s[0] * s[1]
        )  # type: ignore[assignment]
    combined: list[Tensor | None] = [None] * len(checked)
    for layer in layers:
        m = maps_by_layer[layer]
        if tuple(m.shape[-2:]) != tuple(size):  # type: ignore[arg-type]
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        m = _normalize(m)
        for i, (weight_of, mode) in enumerate(checked):
            w = weight_of[layer] / totals[i]
            term = w * m if mode == "sum" else m.pow(w)
            so_far = combined[i]
            if so_far is None:
                combined[i] = term
            else:
                combined[i] = so_far + term if mode == "sum" else so_far * term
    return [c for c in combined if c is not None]


def _weights_of(
    weights: str | Sequence[float] | Mapping[str, float], layers: list[str], arch: str | None
) -> dict[str, float]:
    """The weight of each layer, checked finite and non-negative with a positive sum."""
    if isinstance(weights, str):
        weight_of = combination_weights(weights, layers, arch)
    elif isinstance(weights, Mapping):
        missing = [layer for layer in layers if layer not in weights]
        if missing:
            raise ValueError(f"No weight given for layers {missing}.")
        weight_of = {layer: float(weights[layer]) for layer in layers}
    else:
        values = [float(w) for w in weights]
        if len(values) != len(layers):
            raise ValueError(f"{len(values)} weights for {len(layers)} layers.")
        weight_of = dict(zip(layers, values, strict=True))
    for layer, w in weight_of.items():
        if not math.isfinite(w):
            raise ValueError(
                f"The weight of layer {layer!r} is {w}, not a finite number: give finite, "
                "non-negative weights."
            )
    if any(w < 0 for w in weight_of.values()) or sum(weight_of.values()) <= 0:
        raise ValueError(f"Weights must be non-negative with a positive sum; got {weight_of}.")
    return weight_of
