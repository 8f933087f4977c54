"""Public switches for the engine's performance knobs, process-wide and scoped.

None of them changes a result beyond floating-point rounding; they choose how the same numbers
are computed, for speed or for comparison in ``bench/``::

    import backsal

    backsal.get_options()                       # the current settings
    with backsal.options(fused=False):          # for a block; restored on exit, also on errors
        maps = backsal.saliency(...)
    backsal.set_options(per_row_conv="grouped")  # from now on; returns the previous settings

=================  ==========================================================================
``fused``          channel statistics of CUDA tensors in one Triton kernel
                   (:mod:`backsal._fused`); False runs the eager reference code. Default: on,
                   unless the environment sets ``BACKSAL_FUSED=0``.
``per_row_conv``   how a convolution with per-row weights (batched meta-saliency) runs:
                   ``"grouped"`` (rows as groups), ``"matmul"`` (batched matrix products:
                   directly for 1×1 kernels, through ``unfold`` for larger ones), ``"auto"``
                   (matrix products for 1×1 kernels and small ``unfold`` buffers, groups
                   otherwise; the default) or ``"loop"`` (as ``auto`` but one ordinary
                   convolution per row instead of groups).
``shared_rows``    run a convolution whose per-row weights are still all one tensor (every
                   row before its update) as one ordinary convolution with per-row weight
                   gradients. Default: on.
``conv_precision`` per-row convolutions run as matrix products follow the convolution
                   precision policy (``torch.backends.cudnn.allow_tf32``, TF32 on Ampere and
                   later) instead of the matrix-product one (exact float32 by default).
                   float32 on CUDA only. Default: off.
``low_rank_linear`` batched meta-saliency keeps a linear weight's per-row update as low-rank
                   factors instead of materialising it per row. Default: on.
=================  ==========================================================================

The settings are one process-wide value, as timm's ``set_fused_attn`` is, not a thread- or
context-local one: backward passes run on autograd's own threads, which would not see a local.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["Options", "PerRowConv", "get_options", "options", "set_options"]

PerRowConv = Literal["auto", "grouped", "matmul", "loop"]


@dataclass(frozen=True)
class Options:
    """The engine's performance settings (see the module docstring for each)."""

    fused: bool = True
    per_row_conv: PerRowConv = "auto"
    shared_rows: bool = True
    conv_precision: bool = False
    low_rank_linear: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "per_row_conv":
                if value not in get_args(PerRowConv):
                    raise ValueError(
                        f"per_row_conv={value!r}: use one of {list(get_args(PerRowConv))}."
                    )
            elif not isinstance(value, bool):
                raise TypeError(f"{field.name}={value!r}: give True or False.")


_current = Options(fused=os.environ.get("BACKSAL_FUSED", "1") != "0")


def get_options() -> Options:
    """The settings in force."""
    return _current


def set_options(**changes: object) -> Options:
    """Change some settings from now on; returns the previous ones (to restore them later).

    Raises:
        TypeError: An unknown setting, or a value of the wrong type.
        ValueError: A value outside the choices of its setting.
    """
    global _current
    known = [f.name for f in dataclasses.fields(Options)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown}; the options are {known}.")
    previous = _current
    _current = dataclasses.replace(previous, **changes)  # type: ignore[arg-type]
    return previous


@contextlib.contextmanager
def options(**changes: object) -> Iterator[Options]:
    """Change some settings for a ``with`` block; the previous ones return on exit, also when
    the block raises. Yields the settings in force inside the block."""
    global _current
    previous = set_options(**changes)
    try:
        yield _current
    finally:
        _current = previous
