"""The extract-and-aggregate framework of backprop saliency and its method registry.

Rebuffi, Fong, Ji, Vedaldi, *There and Back Again: Revisiting Backpropagation Saliency Methods*,
CVPR 2020, §3. For a conv layer ``z_u = W P_u(x) + b`` the weight gradient is
``∂s/∂W = Σ_u g_u P_u(x)ᵀ``; a saliency map keeps the terms of that sum apart.

Phase 1 (extract) picks a *virtual* layer inserted right after the probed tensor ``x``
(``x_u ∈ R^C`` its feature vector at location ``u``, ``g_u = ∂s/∂x_u``) and takes the spatial
contribution ``c_u`` of its parameter gradient:

=====================  ==========================================  ===========
phase 1                contribution ``c_u``                         size
=====================  ==========================================  ===========
``bias``               ``g_u``                                      C
``scaling``            ``x_u ⊙ g_u``                                C
``conv1x1``            ``g_u x_uᵀ``                                 C × C
``conv3x3``            ``g_u ⊗ P_u(x)`` (3×3 patch, zero padded)    C × 9C
``conv3x3_depthwise``  ``P_u(x)`` as ``(C, 9)`` ``⊙ g_u``           9C
``real_conv``          ``g^out_u ⊗ P_u(x^in)`` (the model's conv)   C_out × k²C_in/groups
=====================  ==========================================  ===========

Phase 2 (aggregate) collapses ``c_u`` to a scalar: ``sum`` Σ_i c_i, ``norm`` ‖c‖₂ (Frobenius),
``filter_norm`` ‖max(c, 0)‖₂, ``max`` max_i c_i, ``max_abs`` max_i |c_i|.

The outer products are never materialised (at VGG16 relu1_2 a ``C×C×H×W`` tensor is 64·64·224·224
floats per image). Every outer-product phase 1 is a (possibly grouped) convolution's weight
gradient, whose contribution at ``u`` is, per group ``G``, the outer product ``g_G ⊗ P_G`` of the
group's output gradients and its input patch; phase 2 then has closed forms in per-group
statistics of the two factors:

* ``sum``:          Σ_G (Σ g_G)(Σ P_G)
* ``norm``:         sqrt(Σ_G ‖g_G‖² ‖P_G‖²)
* ``filter_norm``:  sqrt(Σ_G ‖g_G⁺‖²‖P_G⁺‖² + ‖g_G⁻‖²‖P_G⁻‖²)   (a product is positive iff the signs agree)
* ``max``:          max_G of the four products of the factors' extremes
* ``max_abs``:      max_G max|g_G| · max|P_G|

``conv1x1`` is a 1×1 convolution with one group, ``conv3x3`` a 3×3 one, ``conv3x3_depthwise`` a 3×3
one with one group per channel, ``real_conv`` the probed ``nn.Conv2d`` itself.

**Speed.** For ``bias``, ``scaling``, ``conv1x1`` and Grad-CAM every phase 2 is a function of a
few per-location reductions over channels (Σg, Σg², max g, Σxg, ...). :class:`LayerData` computes
all the reductions that the methods of a layer need in one pass over channel chunks small enough
to stay in the CPU cache, so ``x`` and ``g`` are read from memory once per layer instead of once
per method (≈10× faster at ResNet50's ``layer1`` on a CPU); on a GPU the chunk is the whole tensor.

Method names (:mod:`backsal.names`, the registry's names without torch):
``"<phase1>/<phase2>"`` addresses the grid under the plain gradient,
``"<rule>:<phase1>/<phase2>"`` under another backward rule (see :mod:`backsal.rules`), and the named
methods of the paper's Table 2 are listed in :data:`NAMED_METHODS`. Grad-CAM and the
gradient-CAM family (Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, element-wise Grad-CAM;
:data:`GRADIENT_CAM_METHODS`, docs/methods.md §10) are aggregations of the same (x, g), so they
cost no pass of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _fused
from .names import (
    GRADIENT_CAM_METHODS,
    NAMED_METHODS,
    PHASE1,
    PHASE2,
    RULES,
    MethodName,
    available_methods,
    resolve_method,
)

__all__ = [
    "GRADIENT_CAM_METHODS",
    "NAMED_METHODS",
    "PHASE1",
    "PHASE2",
    "RULES",
    "LayerData",
    "Method",
    "available_methods",
    "get_method",
]


class _Chunk:
    """A slice of channels of one layer, with the per-channel products computed at most once."""

    def __init__(self, x: Tensor, g: Tensor) -> None:
        self.x, self.g = x, g
        self._xg: Tensor | None = None

    @property
    def xg(self) -> Tensor:
        if self._xg is None:
            self._xg = self.x * self.g
        return self._xg


# A statistic is a per-location reduction over channels: (partial on a chunk -> [B, H, W], merge).
StatisticFn = Callable[[_Chunk], Tensor]


def _statistics_of(
    name: str, term: Callable[[_Chunk], Tensor]
) -> dict[str, tuple[StatisticFn, str]]:
    def total(c: _Chunk) -> Tensor:
        return term(c).sum(1)

    def squares(c: _Chunk) -> Tensor:
        return term(c).square().sum(1)

    def positive_squares(c: _Chunk) -> Tensor:
        return term(c).clamp_min(0).square().sum(1)

    def negative_squares(c: _Chunk) -> Tensor:
        return term(c).clamp_max(0).square().sum(1)

    def largest(c: _Chunk) -> Tensor:
        return term(c).amax(1)

    def smallest(c: _Chunk) -> Tensor:
        return term(c).amin(1)

    return {
        f"{name}.sum": (total, "sum"),
        f"{name}.sq": (squares, "sum"),
        f"{name}.pos_sq": (positive_squares, "sum"),
        f"{name}.neg_sq": (negative_squares, "sum"),
        f"{name}.max": (largest, "max"),
        f"{name}.min": (smallest, "min"),
    }


_STATISTICS: Final[dict[str, tuple[StatisticFn, str]]] = {
    **_statistics_of("g", lambda c: c.g),
    **_statistics_of("x", lambda c: c.x),
    **_statistics_of("xg", lambda c: c.xg),
}


def _x_dot_mean_g(chunk: _Chunk) -> Tensor:
    """Σ_k x_k ḡ_k over the chunk's channels, as a batched GEMV (no [B, C, H, W] temporary)."""
    b, c, h, w = chunk.x.shape
    weights = chunk.g.mean(dim=(2, 3)).unsqueeze(1)  # [B, 1, c]
    return torch.bmm(weights, chunk.x.reshape(b, c, h * w)).view(b, h, w)


_STATISTICS["x.mean_g"] = (_x_dot_mean_g, "sum")


def _x_dot_channel_weights(weights: Callable[[_Chunk], Tensor]) -> StatisticFn:
    """``Σ_k x_k w_k`` for per-channel weights ``w [B, c]`` that each chunk computes for its own
    channels (every CAM weight pools over space only, so a channel chunk holds all it needs)."""

    def statistic(chunk: _Chunk) -> Tensor:
        b, c, h, w = chunk.x.shape
        return torch.bmm(weights(chunk).unsqueeze(1), chunk.x.reshape(b, c, h * w)).view(b, h, w)

    return statistic


# pytorch-grad-cam 1.5.7's constants (grad_cam_plusplus.py, xgrad_cam.py), kept so that the maps
# equal its maps.
_GRAD_CAM_PLUS_PLUS_EPS: Final = 1e-6
_XGRAD_CAM_EPS: Final = 1e-7


def _grad_cam_plus_plus_weights(chunk: _Chunk) -> Tensor:
    """Grad-CAM++'s channel weights (Chattopadhay et al. 2018, eq. 19, with exp(S) ≈ identity):
    ``w_k = Σ_u max(g_uk, 0) α_uk``, ``α = g² / (2g² + (Σ_u x_uk) g³ + ε)``, ``α = 0`` where g = 0."""
    g = chunk.g
    g2 = g.square()
    total = chunk.x.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * (g2 * g) + _GRAD_CAM_PLUS_PLUS_EPS)
    alpha = torch.where(g != 0, alpha, 0)
    return (g.clamp_min(0) * alpha).sum(dim=(2, 3))


def _xgrad_cam_weights(chunk: _Chunk) -> Tensor:
    """XGrad-CAM's channel weights (Fu et al. 2020): ``w_k = Σ_u g_uk x_uk / (Σ_u x_uk + ε)``."""
    total = chunk.x.sum(dim=(2, 3), keepdim=True)
    return (chunk.xg / (total + _XGRAD_CAM_EPS)).sum(dim=(2, 3))


_STATISTICS["x.w_grad_cam_pp"] = (_x_dot_channel_weights(_grad_cam_plus_plus_weights), "sum")
_STATISTICS["x.w_xgrad_cam"] = (_x_dot_channel_weights(_xgrad_cam_weights), "sum")
# Σ_k x_k max(g_k, 0) (LayerCAM) and Σ_k max(x_k g_k, 0) (element-wise Grad-CAM)
_STATISTICS["x.g_pos"] = (lambda c: (c.x * c.g.clamp_min(0)).sum(1), "sum")
_STATISTICS["xg.pos_sum"] = (lambda c: c.xg.clamp_min(0).sum(1), "sum")
_MERGE: Final[dict[str, Callable[[Tensor, Tensor], Tensor]]] = {
    "sum": torch.add,
    "max": torch.maximum,
    "min": torch.minimum,
}
# Elements per channel chunk on the CPU: ~2 MiB of float32 per tensor, which stays in cache while
# every statistic reads it.
_CHUNK_ELEMENTS: Final = 1 << 19


@dataclass
class LayerData:
    """What the probe of one layer collected in one pass.

    Attributes:
        x: The layer's output ``[B, C, H, W]`` (a ``[B, C]`` output is viewed as ``[B, C, 1, 1]``).
        g: The (pseudo-)gradient of the seed with respect to ``x``, same shape.
        x_in: The layer's input, only for ``real_conv`` (the conv's input ``x^in``).
        module: The probed module (``None`` for the input image).
        stats: Per-location channel statistics computed so far (see :meth:`prepare`).
    """

    x: Tensor
    g: Tensor
    x_in: Tensor | None = None
    module: nn.Module | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)

    def prepare(self, keys: Iterable[str]) -> None:
        """Compute the missing statistics ``keys`` together: on a GPU in one fused kernel
        (:mod:`backsal._fused`), otherwise in one pass over cache-sized channel chunks."""
        todo = [k for k in dict.fromkeys(keys) if k not in self.stats]
        if not todo:
            return
        fused = [k for k in todo if k in _fused.KEYS]
        if fused and _fused.available(self.x):  # one kernel reads x and g once for all of them
            self.stats.update(_fused.try_channel_statistics(self.x, self.g, fused) or {})
            todo = [k for k in todo if k not in self.stats]
            if not todo:
                return
        b, c, h, w = self.x.shape
        per_chunk = c if self.x.is_cuda else max(2, _CHUNK_ELEMENTS // max(1, b * h * w))
        totals: dict[str, Tensor] = {}
        for start in range(0, c, per_chunk):
            chunk = _Chunk(
                self.x[:, start : start + per_chunk], self.g[:, start : start + per_chunk]
            )
            for key in todo:
                partial, merge = _STATISTICS[key]
                value = partial(chunk)
                totals[key] = value if key not in totals else _MERGE[merge](totals[key], value)
        self.stats.update(totals)

    def stat(self, key: str) -> Tensor:
        if key not in self.stats:
            self.prepare([key])
        return self.stats[key]

    def cached(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        """A per-layer intermediate shared by several methods (computed on first use)."""
        if key not in self.stats:
            self.stats[key] = compute()
        return self.stats[key]


@dataclass(frozen=True)
class Method:
    """A saliency method: a backward rule plus an aggregation of (x, g) into a map.

    Attributes:
        name: Registry name.
        rule: Backward rule whose pass provides ``g`` (one of :data:`RULES`).
        phase1: Phase-1 option, or ``None`` for methods outside the grid (Grad-CAM).
        phase2: Phase-2 option, or ``None`` likewise.
        aggregate: ``LayerData -> Tensor[B, H, W]``.
        description: One line for listings.
        statistics: The channel statistics ``aggregate`` reads, so that all the methods of a
            layer can have them computed in one pass (:meth:`LayerData.prepare`).
    """

    name: str
    rule: str
    phase1: str | None
    phase2: str | None
    aggregate: Callable[[LayerData], Tensor] = field(repr=False, compare=False)
    description: str = ""
    statistics: tuple[str, ...] = ()

    @property
    def needs_layer_input(self) -> bool:
        """``real_conv`` reads the probed conv's input as well as its output gradient."""
        return self.phase1 == "real_conv"


# --------------------------------------------------------------------------------------------
# Phase 2 on a per-channel contribution c [B, C, H, W] (phase 1 = bias or scaling)
# --------------------------------------------------------------------------------------------


def _channel_phase2(
    term: str, phase2: str
) -> tuple[tuple[str, ...], Callable[[LayerData], Tensor]]:
    """Phase 2 of a per-channel contribution ``term`` (``g`` or ``xg``) from its statistics."""
    if phase2 == "sum":
        return (f"{term}.sum",), lambda d: d.stat(f"{term}.sum")
    if phase2 == "norm":
        return (f"{term}.sq",), lambda d: d.stat(f"{term}.sq").sqrt()
    if phase2 == "filter_norm":
        return (f"{term}.pos_sq",), lambda d: d.stat(f"{term}.pos_sq").sqrt()
    if phase2 == "max":
        return (f"{term}.max",), lambda d: d.stat(f"{term}.max")
    # max_abs = max(max c, -min c): no |c| temporary
    return (f"{term}.max", f"{term}.min"), lambda d: torch.maximum(
        d.stat(f"{term}.max"), -d.stat(f"{term}.min")
    )


def _extreme_product(g_max: Tensor, g_min: Tensor, x_max: Tensor, x_min: Tensor) -> Tensor:
    """max of ``g·x`` over ``g ∈ [g_min, g_max]``, ``x ∈ [x_min, x_max]``: the largest of the four
    corner products, element-wise (a product is bilinear, so its maximum is at a corner).

    Chained ``torch.maximum`` rather than a ``stack`` and ``amax``: the same values without a
    four-fold copy (the copy was 3% of a small-VGG pointing job).
    """
    return torch.maximum(
        torch.maximum(g_max * x_max, g_max * x_min), torch.maximum(g_min * x_max, g_min * x_min)
    )


def _conv1x1_phase2(phase2: str) -> tuple[tuple[str, ...], Callable[[LayerData], Tensor]]:
    """Phase 2 of ``g_u x_uᵀ`` (the outer-product closed forms with one group, 1×1 patch)."""
    if phase2 == "sum":
        return ("g.sum", "x.sum"), lambda d: d.stat("g.sum") * d.stat("x.sum")
    if phase2 == "norm":
        return ("g.sq", "x.sq"), lambda d: (d.stat("g.sq") * d.stat("x.sq")).sqrt()
    if phase2 == "filter_norm":
        keys = ("g.pos_sq", "x.pos_sq", "g.neg_sq", "x.neg_sq")
        return keys, lambda d: (
            d.stat("g.pos_sq") * d.stat("x.pos_sq") + d.stat("g.neg_sq") * d.stat("x.neg_sq")
        ).sqrt()
    keys = ("g.max", "g.min", "x.max", "x.min")
    if phase2 == "max":
        return keys, lambda d: _extreme_product(*(d.stat(k) for k in keys))
    return (
        keys,
        lambda d: (
            torch.maximum(d.stat("g.max"), -d.stat("g.min"))
            * torch.maximum(d.stat("x.max"), -d.stat("x.min"))
        ),
    )


# --------------------------------------------------------------------------------------------
# Phase 2 on an outer-product contribution g_u ⊗ P_u, per group, in closed form
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Patch geometry of a (virtual or real) convolution."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # F.pad order: left, right, top, bottom
    padding_mode: str = "zeros"
    groups: int = 1  # 0 means one group per channel (depthwise)

    @staticmethod
    def of(conv: nn.Conv2d) -> _Geometry:
        pad = tuple(getattr(conv, "_reversed_padding_repeated_twice", ()))
        if len(pad) != 4:  # only for exotic subclasses that do not keep the attribute
            ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
            pad = (pw, pw, ph, ph)
        return _Geometry(
            kernel=tuple(conv.kernel_size),  # type: ignore[arg-type]
            stride=tuple(conv.stride),  # type: ignore[arg-type]
            dilation=tuple(conv.dilation),  # type: ignore[arg-type]
            pad=pad,  # type: ignore[arg-type]
            padding_mode=conv.padding_mode,
            groups=conv.groups,
        )


_CONV1X1: Final = _Geometry(kernel=(1, 1))
_CONV3X3: Final = _Geometry(kernel=(3, 3), pad=(1, 1, 1, 1))
_CONV3X3_DEPTHWISE: Final = _Geometry(kernel=(3, 3), pad=(1, 1, 1, 1), groups=0)


def _padded(t: Tensor, geometry: _Geometry) -> Tensor:
    if not any(geometry.pad):
        return t
    if geometry.padding_mode == "zeros":
        return F.pad(t, geometry.pad)
    return F.pad(t, geometry.pad, mode=geometry.padding_mode)


def _groups(geometry: _Geometry, channels: int) -> int:
    return channels if geometry.groups == 0 else geometry.groups


def _group_view(t: Tensor, groups: int) -> Tensor:
    """``[B, C, H, W] -> [B, G, C/G, H, W]``."""
    b, c, h, w = t.shape
    return t.view(b, groups, c // groups, h, w)


def _window_reduce(
    t: Tensor, geometry: _Geometry, combine: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """``combine`` (``torch.add`` or ``torch.maximum``) over each kernel window of a padded
    ``t [B, G, H, W]``, with the geometry's stride and dilation: ``[B, G, H', W']``.

    Both reductions are separable, so the window is reduced along H, then along W, by combining
    ``k`` strided slices: ``2k`` element-wise ops on whole tensors, which CPUs run much faster
    than ``avg_pool2d`` / ``max_pool2d`` over many channels (the measurement: bench/README.md).
    ``tests/test_methods_reference.py`` checks every grid entry, strided, dilated and grouped
    geometries included, against materialised contributions.
    """
    for dim, k, s, d in ((-2, *_at(geometry, 0)), (-1, *_at(geometry, 1))):
        span = t.shape[dim] - d * (k - 1)
        if span < 1:
            raise ValueError(f"a {geometry.kernel} window does not fit a map of {tuple(t.shape)}")
        out = (span - 1) // s + 1
        reduced = None
        for i in range(k):
            part = t.narrow(dim, i * d, (out - 1) * s + 1)
            if s > 1:
                part = part[..., ::s, :] if dim == -2 else part[..., ::s]
            reduced = part if reduced is None else combine(reduced, part)
        assert reduced is not None
        t = reduced
    return t


def _at(geometry: _Geometry, axis: int) -> tuple[int, int, int]:
    """(kernel, stride, dilation) of the geometry along ``axis`` (0: H, 1: W)."""
    return geometry.kernel[axis], geometry.stride[axis], geometry.dilation[axis]


def _patch_sum(t: Tensor, geometry: _Geometry) -> Tensor:
    """Σ over each group's channels and the patch feeding every output location: ``[B, G, H', W']``."""
    groups = _groups(geometry, t.shape[1])
    t = _padded(t, geometry)
    if groups < t.shape[1]:
        t = _group_view(t, groups).sum(2)
    return _window_reduce(t, geometry, torch.add)


def _patch_max(t: Tensor, geometry: _Geometry) -> Tensor:
    """max over each group's channels and patch (padding values included): ``[B, G, H', W']``."""
    groups = _groups(geometry, t.shape[1])
    if groups < t.shape[1]:
        t = _group_view(t, groups).amax(2)
    return _window_reduce(_padded(t, geometry), geometry, torch.maximum)


def _group_sum(t: Tensor, groups: int) -> Tensor:
    return t if groups == t.shape[1] else _group_view(t, groups).sum(2)


def _group_max(t: Tensor, groups: int) -> Tensor:
    return t if groups == t.shape[1] else _group_view(t, groups).amax(2)


def _outer(data: LayerData, phase1: str, phase2: str) -> Tensor:
    """Phase 2 of ``g_u ⊗ P_u(x)`` per group, in closed form. Returns ``[B, H', W']``.

    The per-group statistics of both factors are kept in ``data.stats`` under ``phase1:...``
    keys, so the five phase-2 options of one phase 1 share their patch sums and pools.
    """
    geometry = _OUTER_GEOMETRY[phase1]
    if geometry is _REAL:
        conv = data.module
        assert isinstance(conv, nn.Conv2d) and data.x_in is not None
        geometry, x = _Geometry.of(conv), data.x_in
    else:
        x = data.x
    g = data.g
    groups = _groups(geometry, x.shape[1])

    def stat(key: str, compute: Callable[[], Tensor]) -> Tensor:
        return data.cached(f"{phase1}:{key}", compute)

    def patch_sum(key: str, term: Callable[[], Tensor]) -> Tensor:
        return stat(f"P.{key}", lambda: _patch_sum(term(), geometry))

    def group_sum(key: str, term: Callable[[], Tensor]) -> Tensor:
        return stat(f"g.{key}", lambda: _group_sum(term(), groups))

    if phase2 == "sum":
        return (group_sum("sum", lambda: g) * patch_sum("sum", lambda: x)).sum(1)
    if phase2 == "norm":
        return (group_sum("sq", g.square) * patch_sum("sq", x.square)).sum(1).sqrt()
    if phase2 == "filter_norm":
        same_sign = group_sum("pos_sq", lambda: g.clamp_min(0).square()) * patch_sum(
            "pos_sq", lambda: x.clamp_min(0).square()
        )
        same_sign = same_sign + group_sum("neg_sq", lambda: g.clamp_max(0).square()) * patch_sum(
            "neg_sq", lambda: x.clamp_max(0).square()
        )
        return same_sign.sum(1).sqrt()
    g_max = stat("g.max", lambda: _group_max(g, groups))
    g_min = stat("g.min", lambda: -_group_max(-g, groups))
    x_max = stat("P.max", lambda: _patch_max(x, geometry))
    x_min = stat("P.min", lambda: -_patch_max(-x, geometry))
    if phase2 == "max":
        return _extreme_product(g_max, g_min, x_max, x_min).amax(1)
    if phase2 == "max_abs":  # max |v| over a set = max(max v, -min v): no |x| pools
        return (torch.maximum(g_max, -g_min) * torch.maximum(x_max, -x_min)).amax(1)
    raise AssertionError(phase2)


_REAL: Final = _Geometry(kernel=(0, 0))  # sentinel: the probed module's own geometry
_OUTER_GEOMETRY: Final[dict[str, _Geometry]] = {
    "conv1x1": _CONV1X1,
    "conv3x3": _CONV3X3,
    "conv3x3_depthwise": _CONV3X3_DEPTHWISE,
    "real_conv": _REAL,
}


def _grid_aggregate(
    phase1: str, phase2: str
) -> tuple[tuple[str, ...], Callable[[LayerData], Tensor]]:
    """(statistics read, aggregate) of a grid entry."""
    if phase1 == "bias":
        return _channel_phase2("g", phase2)
    if phase1 == "scaling":
        return _channel_phase2("xg", phase2)
    if phase1 == "conv1x1":
        return _conv1x1_phase2(phase2)
    return (), lambda data: _outer(data, phase1, phase2)


def _grad_cam(data: LayerData) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ``max(0, Σ_k x_{u,k} ḡ_k)``, ḡ the spatial mean of g."""
    return data.stat("x.mean_g").clamp_min(0)


# --------------------------------------------------------------------------------------------
# The gradient-CAM family (docs/methods.md §10): pytorch-grad-cam 1.5.7's definitions, each a
# function of the (x, g) that the pass captured. pytorch-grad-cam applies max(·, 0) to every
# layer's map (BaseCAM.compute_cam_per_layer) before its min-max scaling; so do we (and no
# scaling: maps stay comparable with the rest of the registry, docs/methods.md §3 normalises).
# --------------------------------------------------------------------------------------------


def _grad_cam_plus_plus(data: LayerData) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): ``max(0, Σ_k w_k x_uk)`` with
    ``w_k = Σ_v max(g_vk, 0) α_vk``, ``α_vk = g_vk² / (2 g_vk² + (Σ_v' x_v'k) g_vk³ + 1e-6)``.

    Framework (docs/methods.md §10): Grad-CAM's point — phase 1 ``scaling`` with ``g`` replaced by
    a per-channel weight pooled over space, phase 2 ``sum``, then a ReLU — with a different pooled
    weight. It is outside the phase-1 × phase-2 grid for the same reason as Grad-CAM: the
    contribution at ``u`` depends on the gradient at every location, not on ``g_u`` alone.
    """
    return data.stat("x.w_grad_cam_pp").clamp_min(0)


def _xgrad_cam(data: LayerData) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020): ``max(0, Σ_k w_k x_uk)``,
    ``w_k = Σ_v g_vk x_vk / (Σ_v x_vk + 1e-7)``.

    Framework (docs/methods.md §10): Grad-CAM's point with ``ḡ_k`` replaced by the
    activation-weighted spatial mean of ``g_k``; outside the grid, like Grad-CAM (a pooled weight).
    """
    return data.stat("x.w_xgrad_cam").clamp_min(0)


def _layer_cam(data: LayerData) -> Tensor:
    """LayerCAM (Jiang et al., TIP 2021): ``max(0, Σ_k x_uk max(g_uk, 0))``.

    Framework (docs/methods.md §10): phase 1 ``scaling`` on the positive part of the gradient
    (``x_u ⊙ g_u⁺``), phase 2 ``sum``, then a ReLU (a no-op where ``x ≥ 0``, e.g. after a ReLU).
    Clamping ``g`` at the probe only is not a backward rule: the network's backward is plain.
    """
    return data.stat("x.g_pos").clamp_min(0)


def _hires_cam(data: LayerData) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): ``max(0, Σ_k x_uk g_uk)``.

    Framework (docs/methods.md §10): a grid point plus a ReLU — phase 1 ``scaling``, phase 2
    ``sum``, i.e. ``max(0, linear_approx)``.
    """
    return data.stat("xg.sum").clamp_min(0)


def _grad_cam_elementwise(data: LayerData) -> Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``): ``Σ_k max(x_uk g_uk, 0)``.

    Framework (docs/methods.md §10): phase 1 ``scaling``, phase 2 the sum of the positive part
    ``Σ_i max(c_i, 0)`` — the ℓ1 counterpart of ``filter_norm`` (‖max(c, 0)‖₂, the paper's
    selective NormGrad), not one of the paper's five phase-2 options. The final ReLU is a no-op.
    """
    return data.stat("xg.pos_sum")


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

#: The gradient-CAM family's aggregations and the channel statistics each reads (their names and
#: descriptions: :data:`backsal.names.GRADIENT_CAM_METHODS`).
_GRADIENT_CAMS: Final[dict[str, tuple[Callable[[LayerData], Tensor], tuple[str, ...]]]] = {
    "grad_cam": (_grad_cam, ("x.mean_g",)),
    "grad_cam_plus_plus": (_grad_cam_plus_plus, ("x.w_grad_cam_pp",)),
    "xgrad_cam": (_xgrad_cam, ("x.w_xgrad_cam",)),
    "layer_cam": (_layer_cam, ("x.g_pos",)),
    "hires_cam": (_hires_cam, ("xg.sum",)),
    "grad_cam_elementwise": (_grad_cam_elementwise, ("xg.pos_sum",)),
}

#: Named methods whose map keeps only its positive part: TorchRay's contrastive excitation
#: backprop returns ``max(Σ_k g_k, 0)`` (``gradient_to_contrastive_excitation_backprop_saliency``),
#: clamped before any resize, so the pointing game sees the same map (docs/methods.md §6).
_CLAMPED: Final = frozenset({"contrastive_excitation_backprop"})


def _method(named: MethodName) -> Method:
    """The method ``named`` stands for, with its aggregation."""
    if named.phase1 is None or named.phase2 is None:
        aggregate, statistics = _GRADIENT_CAMS[named.name]
    else:
        statistics, aggregate = _grid_aggregate(named.phase1, named.phase2)
        if named.name in _CLAMPED:
            unclamped = aggregate

            def aggregate(data: LayerData) -> Tensor:
                return unclamped(data).clamp_min(0)

    return Method(
        name=named.name,
        rule=named.rule,
        phase1=named.phase1,
        phase2=named.phase2,
        aggregate=aggregate,
        description=named.description,
        statistics=statistics,
    )


_REGISTRY: Final[dict[str, Method]] = {
    name: _method(resolve_method(name)) for name in available_methods()
}


def get_method(name: str) -> Method:
    """Resolve a method name (see :mod:`backsal.names` for the accepted forms).

    Raises:
        ValueError: An unknown name; the message suggests close ones.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    return _method(resolve_method(name))
