"""Every channel statistic of a layer in one pass over its activations and gradients (GPU).

Phase 2 of the grid reduces, at every location ``u``, the channels of ``g``, ``x`` and ``x ⊙ g``
(sums, sums of squares, of positive and negative squares, max, min) and Grad-CAM reduces
``Σ_k x_k ḡ_k``. Computed one statistic at a time, that is some twenty passes over tensors as
large as the layer's activations — on a GPU, where the forward and backward are fast, more time
than the backward itself. The Triton kernel here reads ``x`` and ``g`` once and writes every
requested statistic, accumulating in float32.

Used by :meth:`backsal.methods.LayerData.prepare` for CUDA tensors when Triton is available
(``backsal.options(fused=...)``); the eager code in :mod:`backsal.methods` stays the reference (tests run this
kernel in Triton's interpreter against it).
"""

from __future__ import annotations

import os
import warnings
from typing import Final

import torch
from torch import Tensor

from .options import get_options

__all__ = ["KEYS", "available", "channel_statistics", "try_channel_statistics"]

#: The statistics the kernel computes, in the order of its output rows.
KEYS: Final = tuple(
    f"{term}.{stat}"
    for term in ("g", "x", "xg")
    for stat in ("sum", "sq", "pos_sq", "neg_sq", "max", "min")
) + ("x.mean_g",)

# Set when the kernel failed to build or run here: the eager code takes over for the process.
_BROKEN = False

try:  # Triton ships with PyTorch's CUDA wheels; without it the eager code runs
    import triton
    import triton.language as tl

    _TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    _TRITON = False

_INTERPRET: Final = os.environ.get("TRITON_INTERPRET") == "1"


def available(x: Tensor) -> bool:
    """Whether :func:`channel_statistics` can run on ``x`` (CUDA, or Triton's interpreter)."""
    return (
        get_options().fused
        and not _BROKEN
        and _TRITON
        and (x.is_cuda or _INTERPRET)
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    )


if _TRITON:

    @triton.jit
    def _accumulate(v, s_sum, s_sq, s_pos, s_neg, s_max, s_min, WANT: tl.constexpr):
        # WANT: bit 0 sum, 1 sq, 2 pos_sq, 3 neg_sq, 4 max, 5 min
        if WANT & 1:
            s_sum += v
        if WANT & 2:
            s_sq += v * v
        if WANT & 4:
            p = tl.maximum(v, 0.0)
            s_pos += p * p
        if WANT & 8:
            n = tl.minimum(v, 0.0)
            s_neg += n * n
        if WANT & 16:
            s_max = tl.maximum(s_max, v)
        if WANT & 32:
            s_min = tl.minimum(s_min, v)
        return s_sum, s_sq, s_pos, s_neg, s_max, s_min

    @triton.jit
    def _store(out_ptr, row0, stride_row, offs, mask, s_sum, s_sq, s_pos, s_neg, s_max, s_min,
               WANT: tl.constexpr):  # fmt: skip
        if WANT & 1:
            tl.store(out_ptr + (row0 + 0) * stride_row + offs, s_sum, mask=mask)
        if WANT & 2:
            tl.store(out_ptr + (row0 + 1) * stride_row + offs, s_sq, mask=mask)
        if WANT & 4:
            tl.store(out_ptr + (row0 + 2) * stride_row + offs, s_pos, mask=mask)
        if WANT & 8:
            tl.store(out_ptr + (row0 + 3) * stride_row + offs, s_neg, mask=mask)
        if WANT & 16:
            tl.store(out_ptr + (row0 + 4) * stride_row + offs, s_max, mask=mask)
        if WANT & 32:
            tl.store(out_ptr + (row0 + 5) * stride_row + offs, s_min, mask=mask)

    @triton.jit
    def _kernel(
        x_ptr, g_ptr, gbar_ptr, out_ptr, C, P, stride_row,
        WANT_G: tl.constexpr, WANT_X: tl.constexpr, WANT_XG: tl.constexpr,
        MEAN_G: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < P
        zero = tl.zeros([BLOCK], dtype=tl.float32)
        low = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
        high = tl.full([BLOCK], float("inf"), dtype=tl.float32)
        g0, g1, g2, g3, g4, g5 = zero, zero, zero, zero, low, high
        x0, x1, x2, x3, x4, x5 = zero, zero, zero, zero, low, high
        p0, p1, p2, p3, p4, p5 = zero, zero, zero, zero, low, high
        cam = zero
        base = b.to(tl.int64) * C * P
        for c in range(0, C):
            at = base + c * P + offs
            gv = tl.load(g_ptr + at, mask=mask, other=0.0).to(tl.float32)
            xv = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
            g0, g1, g2, g3, g4, g5 = _accumulate(gv, g0, g1, g2, g3, g4, g5, WANT_G)
            x0, x1, x2, x3, x4, x5 = _accumulate(xv, x0, x1, x2, x3, x4, x5, WANT_X)
            p0, p1, p2, p3, p4, p5 = _accumulate(xv * gv, p0, p1, p2, p3, p4, p5, WANT_XG)
            if MEAN_G:
                cam += xv * tl.load(gbar_ptr + b * C + c)
        # the output: [statistic (KEYS order), batch × location]
        _store(out_ptr, 0, stride_row, b * P + offs, mask, g0, g1, g2, g3, g4, g5, WANT_G)
        _store(out_ptr, 6, stride_row, b * P + offs, mask, x0, x1, x2, x3, x4, x5, WANT_X)
        _store(out_ptr, 12, stride_row, b * P + offs, mask, p0, p1, p2, p3, p4, p5, WANT_XG)
        if MEAN_G:
            tl.store(out_ptr + 18 * stride_row + b * P + offs, cam, mask=mask)


_BITS: Final = {"sum": 1, "sq": 2, "pos_sq": 4, "neg_sq": 8, "max": 16, "min": 32}


def channel_statistics(x: Tensor, g: Tensor, keys: list[str]) -> dict[str, Tensor]:
    """The statistics ``keys`` (a subset of :data:`KEYS`) of ``x``, ``g`` ``[B, C, H, W]``.

    Returns ``{key: Tensor[B, H, W]}`` in ``x``'s dtype, reductions over channels.
    """
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise ValueError(f"No fused kernel for the statistics {unknown}.")
    b, c, h, w = x.shape
    x, g = x.contiguous(), g.contiguous()
    want = dict.fromkeys(("g", "x", "xg"), 0)
    for key in keys:
        term, _, stat = key.partition(".")
        if stat in _BITS:
            want[term] |= _BITS[stat]
    mean_g = "x.mean_g" in keys
    gbar = (
        g.float().mean(dim=(2, 3)).contiguous() if mean_g else x.new_zeros(1, dtype=torch.float32)
    )
    p = h * w
    out = torch.empty(len(KEYS), b * p, device=x.device, dtype=torch.float32)
    block = min(512, max(32, triton.next_power_of_2(p)))
    grid = (b, triton.cdiv(p, block))
    _kernel[grid](
        x, g, gbar, out, c, p, out.stride(0),
        WANT_G=want["g"], WANT_X=want["x"], WANT_XG=want["xg"], MEAN_G=mean_g, BLOCK=block,
    )  # fmt: skip
    return {key: out[KEYS.index(key)].view(b, h, w).to(x.dtype) for key in keys}


def try_channel_statistics(x: Tensor, g: Tensor, keys: list[str]) -> dict[str, Tensor] | None:
    """:func:`channel_statistics`, or ``None`` if the kernel cannot be built or run here (an
    unsupported GPU or Triton version): then it warns once and the eager code takes over."""
    global _BROKEN
    try:
        return channel_statistics(x, g, keys)
    except Exception as error:  # noqa: BLE001 - any compiler or driver failure
        _BROKEN = True
        warnings.warn(
            f"backsal: the fused channel-statistics kernel failed ({type(error).__name__}: "
            f"{error}); statistics are computed without it from now on (same results, slower). "
            "Set BACKSAL_FUSED=0 or backsal.set_options(fused=False) to skip it from the start.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
