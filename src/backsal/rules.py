"""Backward rules: how the (pseudo-)gradient ``g`` flows back through the network.

A rule changes ``g`` only; the forward pass is untouched. Rules are context managers active
during the *forward* pass: they record, for each affected operation, an autograd function whose
backward implements the rule, so the backward can run after the context has closed.

* ``plain`` — the gradient.
* ``guided`` — guided backprop (Springenberg et al., ICLR-W 2015): every ReLU passes
  ``grad · [x_in > 0] · [grad > 0]``.
* ``deconvnet`` — deconvnet (Zeiler & Fergus, ECCV 2014): every ReLU passes ``max(grad, 0)``.
* ``excitation`` — excitation backprop (Zhang et al., ECCV 2016), marginal winning probabilities
  (MWP). An affine layer ``y = f(x; W, b)`` sends back ``p' = x ⊙ f*(W⁺, p ⊘ f(x; W⁺, 0))``, where
  ``f*`` is its vector-Jacobian product and ``W⁺ = max(W, 0)``; average pools likewise with their
  positive constant weights; batch norm passes ``p`` unchanged; ReLU and max-pool keep their
  gradient. This is TorchRay's implementation of the Caffe original.
* ``contrastive_excitation`` — c-MWP: the MWP of the target minus the MWP of its "dual" obtained by
  negating the classifier's weights, subtracted at a contrast layer (VGG16 ``classifier.4``,
  ResNet50 ``avgpool``). Every MWP backward is linear in its top-down signal, so subtracting at
  the contrast layer equals letting the classifier send back ``x ⊙ (W⁺ᵀ(p ⊘ W⁺x) − W⁻ᵀ(p ⊘ W⁻x))``
  with ``W⁻ = max(−W, 0)``: one backward instead of TorchRay's two. Layers above the contrast
  layer are outside c-MWP's definition and are rejected by :func:`backsal.saliency`.

**Skip connections under excitation backprop.** A sum ``y = a + b`` of two tensors of the graph
(ResNet's ``out += identity``) splits the MWP in proportion to each operand's share,
``p_a = p · a / (a + b)``, ``p_b = p · b / (a + b)`` (an even split where ``a + b = 0``), so that
the winning probabilities still sum to one at every layer. This is the ``EltwiseSum`` rule of
TorchRay and the Caffe EBP code for ResNets; note that TorchRay's pointing benchmark did not
install it on its torchvision ResNets, which then pass the full ``p`` to both operands.

**Non-ReLU networks** (docs/methods.md §11). Guided backprop and deconvnet are defined by what
they do at ReLUs, and excitation backprop by its rules for affine layers, ReLUs, pools, batch
norm and sums. Through any other nonlinearity (GELU, SiLU, Hardswish, ReLU6, sigmoid, tanh,
softmax, attention) — and, for excitation backprop, through layer or group normalisation and
products of two activations (attention) — the backward would silently be the plain gradient.
Instead, the forward stops there with an error that names the operation and the module calling
it; the plain rule's methods work on every network.

**Which operations are patched.** Rules intercept *functional* calls through a
:class:`torch.overrides.TorchFunctionMode`, so every ReLU is affected whether it is an
``nn.ReLU`` module (also one reused at several call sites, like the ``relu`` of torchvision's
``Bottleneck``), ``F.relu``, ``torch.relu`` or ``Tensor.relu``; nothing in the model is modified.
In-place ReLUs and in-place skip sums are computed out of place (the caller uses the returned
tensor, as every torchvision model does). Excitation backprop patches ``conv1d/2d/3d``,
``linear``, ``avg_pool*``, ``adaptive_avg_pool*``, ``mean`` (a global average pool written as
``x.mean((2, 3))``), ``batch_norm`` and tensor-tensor ``add``; other operations keep their
gradient (max-pool: winner takes all, as in the original).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._per_sample import affine_call, batch_norm_call
from .methods import RULES

__all__ = ["RULES", "backward_rule", "find_classifier_layer"]

# Added to EBP denominators, as in TorchRay and the Caffe code, so that a unit with no positive
# input (whose share of the signal is then zero anyway) does not divide by zero.
_EPS: Final = 1e-20

Handler = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


# --------------------------------------------------------------------------------------------
# Autograd functions (written with setup_context + generate_vmap_rule so that batched backward
# passes — autograd.grad(..., is_grads_batched=True) — work through them)
# --------------------------------------------------------------------------------------------


class _ReLU(torch.autograd.Function):
    """An out-of-place ReLU with the plain gradient (used where a rule keeps ReLU's gradient)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        return grad * (output > 0)


class _GuidedReLU(_ReLU):
    """Guided backprop: ``grad · [x > 0] · [grad > 0]``."""

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        return grad.clamp_min(0) * (output > 0)


class _DeconvReLU(_ReLU):
    """Deconvnet: ``max(grad, 0)``, whatever the forward input (nothing saved)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.clamp_min(0)


def _winning_probability(op: Callable[..., Tensor], x: Tensor, weight: Tensor, p: Tensor) -> Tensor:
    """``x ⊙ f*(W, p ⊘ f(x; W))`` for an affine op without bias."""
    z, vjp = torch.func.vjp(lambda t: op(t, weight, None), x)[:2]
    return x * vjp(p / (z + _EPS))[0]


class _ExcitationAffine(torch.autograd.Function):
    """MWP through ``op(x, W, b)`` (conv or linear); contrastive: W⁺ part minus W⁻ part."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, op, contrastive):  # type: ignore[override]
        return op(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _, op, contrastive = inputs
        ctx.save_for_backward(x, weight)
        ctx.op, ctx.contrastive = op, contrastive

    @staticmethod
    def backward(ctx: Any, p: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = _winning_probability(ctx.op, x, weight.clamp_min(0), p)
        if ctx.contrastive:
            grad_x = grad_x - _winning_probability(ctx.op, x, (-weight).clamp_min(0), p)
        return grad_x, None, None, None, None


class _ExcitationPool(torch.autograd.Function):
    """MWP through an average pool (an affine map with positive constant weights)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, op):  # type: ignore[override]
        return op(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.op = inputs[1]

    @staticmethod
    def backward(ctx: Any, p: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        z, vjp = torch.func.vjp(ctx.op, x)[:2]
        return x * vjp(p / (z + _EPS))[0], None


class _PassThrough(torch.autograd.Function):
    """Forward ``op(x)``, backward the identity (batch norm under excitation backprop)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, op):  # type: ignore[override]
        return op(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, p: Tensor):  # type: ignore[override]
        return p, None


class _ExcitationSum(torch.autograd.Function):
    """A skip connection ``a + b``: the MWP splits in proportion to ``a`` and ``b``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        return a + b

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx: Any, p: Tensor):  # type: ignore[override]
        a, total = ctx.saved_tensors
        share = torch.where(total != 0, a / torch.where(total != 0, total, 1), 0.5)
        return p * share, p * (1 - share)


# --------------------------------------------------------------------------------------------
# Interception
# --------------------------------------------------------------------------------------------

_RELUS: Final = (F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_)
_CONVS: Final = (F.conv1d, F.conv2d, F.conv3d)
_AVG_POOLS: Final = (
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
)
_ADDS: Final = (
    torch.add,
    Tensor.add,
    Tensor.add_,
    Tensor.__add__,
    Tensor.__iadd__,
    Tensor.__radd__,
)


class _Intercept(TorchFunctionMode):
    """Routes selected torch functions to handlers; every other call runs unchanged.

    While a handler runs, the mode is off (TorchFunctionMode semantics), so handlers call the
    real functions.
    """

    def __init__(self, handlers: Mapping[Callable[..., Any], Handler]) -> None:
        super().__init__()
        self._handlers = dict(handlers)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        handler = self._handlers.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {})


# Nonlinearities that none of the non-plain rules define, by the name an error gives them.
_UNDEFINED_NONLINEAR: Final[dict[Callable[..., Any], str]] = {
    **{f: "GELU" for f in (F.gelu,)},
    **{f: "SiLU" for f in (F.silu,)},
    **{f: "Mish" for f in (F.mish,)},
    **{f: "Hardswish" for f in (F.hardswish,)},
    **{f: "Hardsigmoid" for f in (F.hardsigmoid,)},
    **{f: "Hardtanh/ReLU6" for f in (F.hardtanh, F.hardtanh_, F.relu6)},
    **{f: "ELU/SELU/CELU" for f in (F.elu, F.elu_, F.selu, F.celu)},
    **{f: "LeakyReLU/PReLU/RReLU" for f in (F.leaky_relu, F.leaky_relu_, F.prelu, F.rrelu)},
    **{f: "Softplus" for f in (F.softplus,)},
    **{f: "GLU" for f in (F.glu,)},
    **{f: "sigmoid" for f in (torch.sigmoid, Tensor.sigmoid, F.sigmoid, F.logsigmoid)},
    **{f: "tanh" for f in (torch.tanh, Tensor.tanh, F.tanh)},
    **{f: "softmax" for f in (F.softmax, torch.softmax, Tensor.softmax, F.log_softmax)},
    **{f: "attention" for f in (F.scaled_dot_product_attention, F.multi_head_attention_forward)},
}
# Linear in each operand but outside excitation backprop's rules (they keep their gradient).
_UNDEFINED_EXCITATION: Final[dict[Callable[..., Any], str]] = {
    **{f: "LayerNorm" for f in (F.layer_norm, F.rms_norm)},
    **{f: "GroupNorm/InstanceNorm" for f in (F.group_norm, F.instance_norm)},
    **{
        f: "a product of activations (attention)"
        for f in (
            torch.matmul,
            Tensor.matmul,
            Tensor.__matmul__,
            torch.bmm,
            Tensor.bmm,
            torch.baddbmm,
            torch.einsum,
        )
    },
}


def _calling_module(model: nn.Module | None) -> str:
    """The innermost module of ``model`` (any module without one) whose forward is running.

    Read from the Python stack at the time of an error only, so that no hook runs on every
    module call of every pass.
    """
    names = {id(m): name for name, m in model.named_modules()} if model is not None else {}
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and (model is None or id(owner) in names):
            name = names.get(id(owner))
            label = "the model itself" if name == "" else repr(name) if name else "a module"
            return f"{label} ({type(owner).__name__})"
        frame = frame.f_back  # type: ignore[assignment]
    return "an unknown module"


def _undefined_handler(rule: str, what: str, model: nn.Module | None) -> Handler:
    def handle(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise ValueError(
            f"The {rule!r} backward rule has no rule for {what}, called by "
            f"{_calling_module(model)}: its backward would silently be the plain gradient. The "
            f"{rule!r} rule is defined for ReLU networks (docs/methods.md §11); on this model use "
            "the plain rule's methods (gradient, linear_approx, norm_grad, the CAM family, ...)."
        )

    return handle


def _undefined(rule: str, model: nn.Module | None) -> dict[Callable[..., Any], Handler]:
    table = dict(_UNDEFINED_NONLINEAR)
    if rule in ("excitation", "contrastive_excitation"):
        table.update(_UNDEFINED_EXCITATION)
    return {func: _undefined_handler(rule, what, model) for func, what in table.items()}


def _first_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else kwargs["input"]


def _relu_handler(function: type[torch.autograd.Function]) -> Handler:
    def handle(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        return function.apply(_first_arg(args, kwargs))  # in-place requests run out of place

    return handle


def _split_affine(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Tensor, Tensor, Any, tuple, dict]:
    """Split ``conv*/linear`` arguments into ``input, weight, bias`` and the rest."""
    names = ("input", "weight", "bias")
    values = list(args[:3]) + [None] * (3 - min(len(args), 3))
    rest = dict(kwargs)
    for i, name in enumerate(names):
        if name in rest:
            values[i] = rest.pop(name)
    return values[0], values[1], values[2], tuple(args[3:]), rest


class _ClassifierFlag:
    """Marks the classifier layer's forward so that c-MWP applies its contrastive backward."""

    def __init__(self) -> None:
        self.active = False

    @contextlib.contextmanager
    def attach(self, module: nn.Module | None) -> Iterator[None]:
        if module is None:
            yield
            return

        def enter(*_: Any) -> None:
            self.active = True

        def leave(*_: Any) -> None:
            self.active = False

        handles = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.active = False


def _excitation_handlers(flag: _ClassifierFlag | None) -> dict[Callable[..., Any], Handler]:
    def affine(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x, weight, bias, rest_args, rest_kwargs = _split_affine(args, kwargs)

        def op(t: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            # affine_call also runs per-row weights (meta-saliency), in the backward too
            return affine_call(func, t, w, b, *rest_args, **rest_kwargs)

        contrastive = flag is not None and flag.active
        return _ExcitationAffine.apply(x, weight, bias, op, contrastive)

    def pool(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = _first_arg(args, kwargs)
        rest_kwargs = {k: v for k, v in kwargs.items() if k != "input"}
        rest_args = args[1:] if args else ()
        return _ExcitationPool.apply(x, lambda t: func(t, *rest_args, **rest_kwargs))

    def batch_norm(
        func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Tensor:
        x = _first_arg(args, kwargs)
        rest_kwargs = {k: v for k, v in kwargs.items() if k != "input"}
        rest_args = args[1:] if args else ()
        return _PassThrough.apply(x, lambda t: batch_norm_call(func, t, *rest_args, **rest_kwargs))

    def add(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a = args[0] if args else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        is_skip = (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.requires_grad
            and b.requires_grad
            and a.shape == b.shape
            and kwargs.get("alpha", 1) == 1
            and len(args) <= 2
        )
        if not is_skip:
            return func(*args, **kwargs)
        return _ExcitationSum.apply(a, b)

    handlers: dict[Callable[..., Any], Handler] = {f: _relu_handler(_ReLU) for f in _RELUS}
    handlers.update({f: affine for f in (*_CONVS, F.linear)})
    handlers.update({f: pool for f in (*_AVG_POOLS, torch.mean, Tensor.mean)})
    handlers[F.batch_norm] = batch_norm
    handlers.update({f: add for f in _ADDS})
    return handlers


def find_classifier_layer(model: nn.Module) -> str:
    """Name of the last ``Linear``/``Conv`` module with a weight (TorchRay's convention)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            last = name
    if last is None:
        raise ValueError("The model has no Linear or Conv layer to serve as the classifier layer.")
    return last


@contextlib.contextmanager
def backward_rule(
    rule: str, classifier: nn.Module | None = None, *, model: nn.Module | None = None
) -> Iterator[None]:
    """Run the forward passes inside this context to give their backward the rule's semantics.

    Args:
        rule: One of :data:`RULES`.
        classifier: For ``contrastive_excitation``, the classifier module whose weights are
            negated for the dual (see :func:`find_classifier_layer`).
        model: The model, only to name the module in the error raised where the rule is
            undefined (a non-ReLU nonlinearity; module docstring).

    Example::

        with backward_rule("guided"):
            scores = model(images)
        grads = torch.autograd.grad(scores, images, one_hot)  # guided backprop

    Nothing in the model is modified; leaving the context (also on an exception) removes every
    hook it installed.
    """
    if rule not in RULES:
        raise ValueError(f"Unknown backward rule {rule!r}; known rules: {', '.join(RULES)}.")
    if rule == "contrastive_excitation" and classifier is None:
        raise ValueError("The contrastive_excitation rule needs the classifier module.")
    if rule == "plain":
        yield
        return
    flag = _ClassifierFlag()
    handlers = _undefined(rule, model)
    if rule == "guided":
        handlers.update({f: _relu_handler(_GuidedReLU) for f in _RELUS})
    elif rule == "deconvnet":
        handlers.update({f: _relu_handler(_DeconvReLU) for f in _RELUS})
    else:
        handlers.update(_excitation_handlers(flag if rule == "contrastive_excitation" else None))
    with (
        flag.attach(classifier if rule == "contrastive_excitation" else None),
        _Intercept(handlers),
    ):
        yield
