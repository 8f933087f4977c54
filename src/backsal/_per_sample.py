"""Running a model with one set of parameters per batch row, with plain autograd.

Meta-saliency gives every row its own updated parameters θ'_r. Instead of ``vmap`` (whose
transforms cannot host ``torch.autograd.grad``, which the saliency engine needs), the parameters
are passed to ``torch.func.functional_call`` with a leading row dimension ``[n, *shape]`` and the
operations that consume them run per row in one call:

* ``conv1d/2d/3d`` — where all rows hold the same weight (an expanded view, as before the first
  SGD step), one ordinary convolution, with each row's weight gradient computed from its own
  inputs and output gradients; otherwise per row, as ``backsal.options(per_row_conv=...)`` chooses: batched matrix
  products, the rows as groups of a grouped convolution (the batching rule ``vmap`` itself uses),
  or one convolution per row;
* ``linear`` — a batched matrix product;
* ``batch_norm`` (eval mode) — normalisation with the running statistics, then a per-row affine.

Everything else keeps working as long as it does not touch a per-row parameter; one that does
raises :class:`UnsupportedPerSampleOp`. A parameter is per-row when it has one more dimension than
the operation expects, so shared and per-row parameters can be mixed (e.g. only a subset updated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .options import get_options

__all__ = [
    "LowRank",
    "UnsupportedPerSampleOp",
    "affine_call",
    "batch_norm_call",
    "per_sample_parameters",
]

_CONV_DIMS: Final = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
# Reading a parameter's metadata is harmless (it reports the per-row shape).
_METADATA: Final = frozenset(
    {
        Tensor.dim,
        Tensor.size,
        Tensor.numel,
        Tensor.__len__,
        Tensor.element_size,
        Tensor.is_floating_point,
        Tensor.shape.__get__,  # type: ignore[attr-defined]
        Tensor.dtype.__get__,  # type: ignore[attr-defined]
        Tensor.device.__get__,  # type: ignore[attr-defined]
        Tensor.requires_grad.__get__,  # type: ignore[attr-defined]
    }
)


class UnsupportedPerSampleOp(RuntimeError):
    """A per-row parameter reached an operation that cannot run per row."""


def _split(
    args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...]
) -> tuple[list[Any], tuple, dict]:
    values = list(args[: len(names)]) + [None] * max(0, len(names) - len(args))
    rest = dict(kwargs)
    for i, name in enumerate(names):
        if name in rest:
            values[i] = rest.pop(name)
    return values, tuple(args[len(names) :]), rest


def _conv(
    func: Callable[..., Tensor],
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> Tensor:
    spatial = _CONV_DIMS[func]
    per_row_bias = bias is not None and bias.dim() == 2
    if weight.dim() == spatial + 2:  # shared weight
        out = func(x, weight, None if per_row_bias else bias, *args, **kwargs)
    else:
        n = x.shape[0]
        if weight.shape[0] != n:
            raise ValueError(f"{n} rows but per-row weights for {weight.shape[0]}.")
        options = _conv_options(args, kwargs)
        shared_bias = None if per_row_bias else bias
        if _rows_share(weight) and not isinstance(options[1], str):
            out = _SharedRowsConv.apply(func, x, weight, *options)
            if shared_bias is not None:
                out = out + shared_bias.view(1, -1, *[1] * spatial)
        else:
            out = _per_row_conv(func, x, weight, shared_bias, options)
    if per_row_bias:
        assert bias is not None
        out = out + bias.view(*bias.shape, *([1] * spatial))
    return out


def _per_row_conv(
    func: Callable[..., Tensor],
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    options: tuple[Any, Any, Any, int],
) -> Tensor:
    """A convolution with distinct weights per row (``bias`` shared), run as
    ``backsal.options(per_row_conv=...)`` says."""
    n, spatial = x.shape[0], _CONV_DIMS[func]
    stride, padding, dilation, groups = options
    as_matmul = _matmul_conv(func, x, weight, options)
    if as_matmul is not None:
        out = as_matmul(x, weight, stride, padding, dilation)
    elif get_options().per_row_conv == "loop":
        out = torch.cat([func(x[r : r + 1], weight[r], None, *options) for r in range(n)])
    else:
        grouped = func(
            x.reshape(1, n * x.shape[1], *x.shape[2:]),
            weight.reshape(n * weight.shape[1], *weight.shape[2:]),
            None if bias is None else bias.repeat(n),
            stride,
            padding,
            dilation,
            groups * n,
        )
        return grouped.view(n, weight.shape[1], *grouped.shape[2:])
    return out if bias is None else out + bias.view(1, -1, *[1] * spatial)


# Per-row 2-d convolutions read at most this many unfolded elements per row as matrix products
# under per_row_conv="auto"; larger ones run as groups (bench/README.md: unfold at VGG16's
# full-resolution layers was slower than groups, grouped 1x1 convolutions slower than products).
_UNFOLD_LIMIT: Final = 2**21


def _rows_share(weight: Tensor) -> bool:
    """Whether all rows of a per-row parameter ``[n, ...]`` are one tensor: an expanded view,
    as every row's parameters are before its first update."""
    return get_options().shared_rows and (weight.shape[0] == 1 or weight.stride(0) == 0)


def _ntuple(value: Any, spatial: int) -> list[int]:
    return [int(value)] * spatial if isinstance(value, int) else [int(v) for v in value]


class _SharedRowsConv(torch.autograd.Function):
    """A convolution whose per-row weights ``[n, *shape]`` are all the same weight, with the
    gradient of each row's own copy.

    Before the first SGD step every row of meta-saliency holds θ. The forward and the input's
    gradient are then one ordinary convolution of the batch (no grouped convolution, no copy
    of the weight per row); only the weight's gradient is per row: ``Σ_u δ_{r,u} ⊗ patch_{r,u}``
    for each row ``r`` (:func:`_per_row_weight_grad`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        func: Callable[..., Tensor], x: Tensor, weight: Tensor, *options: Any
    ) -> Tensor:
        return func(x, weight[0], None, *options)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        func, x, weight, *options = inputs
        ctx.save_for_backward(x, weight)
        ctx.func, ctx.options = func, tuple(options)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_x = _convolution_backward(grad, x, weight[0], ctx.options, (True, False))
        if ctx.needs_input_grad[2]:
            grad_w = _per_row_weight_grad(ctx.func, grad, x, weight, ctx.options)
        return (None, grad_x, grad_w, *[None] * len(ctx.options))


def _convolution_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    options: tuple[Any, Any, Any, int],
    mask: tuple[bool, bool],
    groups_factor: int = 1,
) -> Tensor:
    """The input's (``mask=(True, False)``) or the weight's gradient of a convolution."""
    spatial = x.dim() - 2
    stride, padding, dilation, groups = options
    grads = torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        _ntuple(stride, spatial),
        _ntuple(padding, spatial),
        _ntuple(dilation, spatial),
        False,
        [0] * spatial,
        groups * groups_factor,
        [*mask, False],
    )
    return grads[0] if mask[0] else grads[1]


def _per_row_weight_grad(
    func: Callable[..., Tensor],
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    options: tuple[Any, Any, Any, int],
) -> Tensor:
    """Each row's gradient ``[n, *shape]`` of the per-row weights ``weight``, given the
    gradient ``grad`` at the convolution's output, computed as the backward of the per-row
    convolution ``backsal.options(per_row_conv=...)`` chooses would: a batched matrix product (1×1 kernels,
    small ``unfold`` buffers), one weight gradient per row (``loop``), or that of the grouped
    convolution."""
    n, cout = grad.shape[:2]
    form = _matmul_conv(func, x, weight, options)
    if form is not None:
        stride, padding, dilation, _ = options
        if form is _conv1x1_bmm:
            cols = _strided_columns(x, stride)
        else:
            cols = _unfold_columns(x, weight.shape[-2:], stride, padding, dilation)
        flat = _bmm(grad.reshape(n, cout, -1), cols.transpose(1, 2))
        return flat.view(weight.shape)
    shape = weight.shape[1:]
    if get_options().per_row_conv == "loop":
        rows = [
            _convolution_backward(grad[r : r + 1], x[r : r + 1], weight[r], options, (False, True))
            for r in range(n)
        ]
        return torch.stack(rows)
    grouped = _convolution_backward(
        grad.reshape(1, n * cout, *grad.shape[2:]),
        x.reshape(1, n * x.shape[1], *x.shape[2:]),
        weight.reshape(n * cout, *shape[1:]),  # a copy; only its shape is read
        options,
        (False, True),
        groups_factor=n,
    )
    return grouped.view(n, *shape)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _matmul_conv(
    func: Callable[..., Tensor], x: Tensor, weight: Tensor, args: tuple[Any, Any, Any, int]
) -> Callable[..., Tensor] | None:
    """The matrix-product form of a per-row ``conv2d``, where the setting and shapes allow it."""
    stride, padding, dilation, groups = args
    mode = get_options().per_row_conv
    if mode == "grouped" or func is not F.conv2d or groups != 1 or isinstance(padding, str):
        return None
    if weight.shape[-2:] == (1, 1) and _pair(padding) == (0, 0):
        return _conv1x1_bmm
    if mode == "matmul":
        return _conv_unfold_bmm
    kh, kw = weight.shape[-2:]
    oh, ow = _output_size(x, (kh, kw), stride, padding, dilation)
    return _conv_unfold_bmm if x.shape[1] * kh * kw * oh * ow <= _UNFOLD_LIMIT else None


@contextlib.contextmanager
def _conv_precision() -> Iterator[None]:
    flags = torch.backends.cuda.matmul
    before = flags.allow_tf32
    flags.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        flags.allow_tf32 = before


class _ConvBmm(torch.autograd.Function):
    """``torch.bmm(a, b)`` for a convolution: forward and backward under its precision policy."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        with _conv_precision():
            return torch.bmm(a, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        with _conv_precision():
            grad_a = torch.bmm(grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
            grad_b = torch.bmm(a.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    if get_options().conv_precision and a.is_cuda and a.dtype == torch.float32:
        return _ConvBmm.apply(a, b)  # type: ignore[no-any-return]
    return torch.bmm(a, b)


def _strided_columns(x: Tensor, stride: Any) -> Tensor:
    """The inputs a strided 1×1 convolution reads, ``[n, C, L]``."""
    sh, sw = _pair(stride)
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw]
    return x.reshape(*x.shape[:2], -1)


def _unfold_columns(x: Tensor, kernel: Any, stride: Any, padding: Any, dilation: Any) -> Tensor:
    """The patches a convolution reads, ``[n, C·kh·kw, L]``."""
    return F.unfold(x, tuple(kernel), _pair(dilation), _pair(padding), _pair(stride))


def _output_size(
    x: Tensor, kernel: Any, stride: Any, padding: Any, dilation: Any
) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, _pair(stride), _pair(padding), _pair(dilation)
    oh = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return oh, ow


def _conv1x1_bmm(x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any) -> Tensor:
    n, cout = weight.shape[:2]
    out = _bmm(weight.reshape(n, cout, -1), _strided_columns(x, stride))
    return out.view(n, cout, *_output_size(x, (1, 1), stride, 0, 1))


def _conv_unfold_bmm(x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any) -> Tensor:
    n, cout = weight.shape[:2]
    kernel = weight.shape[-2:]
    cols = _unfold_columns(x, kernel, stride, padding, dilation)
    out = _bmm(weight.reshape(n, cout, -1), cols)
    return out.view(n, cout, *_output_size(x, kernel, stride, padding, dilation))


def _conv_options(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any, int]:
    names = ("stride", "padding", "dilation", "groups")
    defaults: tuple[Any, ...] = (1, 0, 1, 1)
    values = [
        args[i] if i < len(args) else kwargs.get(name, default)
        for i, (name, default) in enumerate(zip(names, defaults, strict=True))
    ]
    return values[0], values[1], values[2], int(values[3])


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if weight.dim() == 2:
        out = F.linear(x, weight, None if bias is not None and bias.dim() == 2 else bias)
    else:
        # x [n, ..., in], weight [n, out, in]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.bmm(flat, weight.transpose(1, 2)).view(*x.shape[:-1], weight.shape[1])
        if bias is not None and bias.dim() == 1:
            out = out + bias
    if bias is not None and bias.dim() == 2:
        out = out + bias.view(bias.shape[0], *([1] * (out.dim() - 2)), bias.shape[1])
    return out


def affine_call(
    func: Callable[..., Tensor],
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> Tensor:
    """``func(x, weight, bias, ...)`` for ``conv*d``/``linear``, with shared or per-row parameters.

    Runs the raw operations: any interception (a backward rule wrapping this call, the per-row
    mode) has already happened by the time this is called.
    """
    with torch._C.DisableTorchFunction():
        if func is F.linear:
            return _linear(x, weight, bias)
        return _conv(func, x, weight, bias, *args, **kwargs)


def batch_norm_call(func: Callable[..., Tensor], x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``F.batch_norm`` with shared or per-row ``weight``/``bias`` (eval mode only when per-row)."""
    with torch._C.DisableTorchFunction():
        return _batch_norm(func, x, *args, **kwargs)


def _batch_norm(func: Callable[..., Tensor], x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    names = ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    (mean, var, weight, bias, training, momentum, eps), rest, kw = _split(args, kwargs, names)
    per_row = [t for t in (weight, bias) if t is not None and t.dim() == 2]
    if not per_row:
        return func(x, *args, **kwargs)
    if training:
        raise UnsupportedPerSampleOp("Per-row parameters need batch norm in eval mode.")
    eps = 1e-5 if eps is None else eps
    out = func(x, mean, var, None, None, False, 0.0 if momentum is None else momentum, eps)
    shape = (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
    if weight is not None:
        out = out * (weight.view(shape) if weight.dim() == 2 else weight.view(1, -1, *shape[2:]))
    if bias is not None:
        out = out + (bias.view(shape) if bias.dim() == 2 else bias.view(1, -1, *shape[2:]))
    return out


@dataclass(frozen=True)
class LowRank:
    """A linear layer's per-row weight ``W + U_rᵀ V_r``, never materialised.

    One SGD step on one row changes a linear weight by a matrix of rank at most the number of
    positions the layer sees (one for VGG16's classifier): ``−lr Σ_t δ_tᵀ a_t`` with ``a_t`` the
    layer's input and ``δ_t`` the gradient at its output. Kept as factors, the per-row copies of
    VGG16's 119M classifier weights (0.5 GB a row) are never written, nor read by the forward
    and backward: ``x W'ᵀ = x Wᵀ + (x Vᵀ) U``.

    Attributes:
        base: ``W`` ``[out, in]``, shared.
        u: ``[n, T, out]`` or ``None`` (no update yet).
        v: ``[n, T, in]`` or ``None``.
    """

    base: Tensor
    u: Tensor | None = None
    v: Tensor | None = None

    def plus(self, scale: float, delta: Tensor, inputs: Tensor) -> LowRank:
        """``W' + scale · Σ_t δ_tᵀ a_t`` per row, for ``delta [n, T, out]``, ``inputs [n, T, in]``."""
        u, v = delta * scale, inputs
        if self.u is not None and self.v is not None:
            u, v = torch.cat([self.u, u], 1), torch.cat([self.v, v], 1)
        return LowRank(self.base, u, v)

    def dense(self, rows: int) -> Tensor:
        """The per-row weights ``[n, out, in]`` (for the operations that need them whole)."""
        if self.u is None or self.v is None:
            return self.base.unsqueeze(0).expand(rows, *self.base.shape)
        return torch.baddbmm(self.base.unsqueeze(0), self.u.transpose(1, 2), self.v)

    def linear(self, x: Tensor) -> Tensor:
        """``x W'_rᵀ`` per row, for ``x [n, T', in]``."""
        out = F.linear(x, self.base)
        if self.u is None or self.v is None:
            return out
        return out + torch.bmm(torch.bmm(x, self.v.transpose(1, 2)), self.u)


Records = dict[int, list[tuple[Tensor, Tensor]]]


class _PerSample(TorchFunctionMode):
    def __init__(
        self,
        tensors: Mapping[str, Tensor],
        low_rank: Mapping[int, LowRank] | None = None,
        record: Records | None = None,
    ) -> None:
        super().__init__()
        self._names = {id(t): name for name, t in tensors.items()}
        self._low_rank = dict(low_rank or {})
        self._record = record

    def _low_rank_linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        factors = self._low_rank[id(weight)]
        with torch._C.DisableTorchFunction():
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            out = factors.linear(flat)
            if self._record is not None:
                if not out.requires_grad:  # nothing upstream is updated: start the graph here
                    out.requires_grad_(True)
                self._record.setdefault(id(weight), []).append((flat.detach(), out))
            out = out.view(*x.shape[:-1], out.shape[-1])
            if bias is not None and bias.dim() == 2:  # per row [n, out]
                bias = bias.view(bias.shape[0], *([1] * (out.dim() - 2)), bias.shape[1])
            return out if bias is None else out + bias

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _CONV_DIMS or func is F.linear:
            (x, weight, bias), rest, kw = _split(args, kwargs, ("input", "weight", "bias"))
            if id(weight) in self._low_rank:
                if func is F.linear:
                    return self._low_rank_linear(x, weight, bias)
                self._unsupported(func, weight)
            return affine_call(func, x, weight, bias, *rest, **kw)
        if func is F.batch_norm:
            (x,), rest, kw = _split(args, kwargs, ("input",))
            return batch_norm_call(func, x, *rest, **kw)
        if self._names and func not in _METADATA:
            for leaf in tree_flatten((args, kwargs))[0]:
                if isinstance(leaf, Tensor) and id(leaf) in self._names:
                    self._unsupported(func, leaf)
        return func(*args, **kwargs)

    def _unsupported(self, func: Callable[..., Any], tensor: Tensor) -> None:
        name = getattr(func, "__name__", str(func))
        raise UnsupportedPerSampleOp(
            f"Parameter {self._names.get(id(tensor), '?')!r} reaches {name}, which cannot run with "
            "per-row parameters (supported: conv1d/2d/3d, linear, batch_norm in eval mode; a "
            "linear layer's weight only in F.linear). Use Meta(strategy='loop'), or leave that "
            "parameter out of Meta(params=...)."
        )


@contextlib.contextmanager
def per_sample_parameters(
    tensors: Mapping[str, Tensor],
    low_rank: Mapping[int, LowRank] | None = None,
    record: Records | None = None,
) -> Iterator[None]:
    """Inside, conv/linear/batch_norm accept per-row parameters (see the module docstring).

    Args:
        tensors: The per-row parameters by name, for error messages naming a parameter that
            reaches an unsupported operation.
        low_rank: Linear weights given in factored form: ``{id(tensor): LowRank}`` for the
            (shared-shape) tensor that stands for the weight in ``functional_call``.
        record: If given, each low-rank linear call appends ``(input [n, T, in], output before
            the bias [n, T, out])`` under the weight's id, so that a backward can ask for the
            gradient at its output.
    """
    with _PerSample(tensors, low_rank, record):
        yield
