"""Meta-saliency: explain the model after one SGD step on the class being explained.

Rebuffi et al., CVPR 2020, §6 ("a meta-learning inspired paradigm"). For each row (image,
target class ``c``) separately, with the model in eval mode (BatchNorm statistics frozen)::

    θ'_r = θ − lr · ∇_θ L_r(θ)        (``steps`` times, each at the current θ'_r)
    L_r  = cross-entropy of c         (``negate=True``: −cross-entropy, the adversarial variant)

and the saliency of the row is computed with the same method and seed on θ'_r. For a model whose
output is a class-score map ``[B, K, h, w]`` every position gets target ``c`` and the loss is
their mean (docs/methods.md §4 and §5). The update covers all parameters (whatever their
``requires_grad``), or a named subset.

Per-row updates are the correct semantics: the authors' code deep-copies all weights per image,
and with batch > 1 took one step shared by the whole batch, coupling the images. Here the user's
model is never written to nor deep-copied; θ'_r exists only as tensors passed to
``torch.func.functional_call``.

Two strategies compute the same maps:

* ``loop`` — one row at a time: a batch-1 step, then a batch-1 saliency pass with θ'_r. On a CPU a
  batch-1 pass at full resolution already keeps the cores busy, and per-row convolutions run
  slower than the CPU's ordinary ones (bench/README.md has the measurements).
* ``batched`` — chunks of rows at once: per-row parameters ``[n, *shape]`` (see
  :mod:`backsal._per_sample`); the step's per-row gradients come from one backward of the summed
  per-row losses, since row ``r``'s loss depends on its own parameters only (all rows still hold
  θ there, so its convolutions run as ordinary ones and only their weight gradients are per row);
  the saliency pass then runs the whole chunk with its per-row θ'. On a GPU this replaces ``n``
  launch-bound batch-1 passes by one. Per-row convolutions run as batched matrix products where
  that is faster, and the per-row update of a linear weight is kept as low-rank factors (one SGD
  step on one image changes VGG16's 0.5 GB classifier by a rank-1 matrix), so it is neither
  written nor read whole. The chunk size bounds memory.

``auto`` picks ``batched`` on CUDA and ``loop`` elsewhere. With small images ``batched`` is faster
on a CPU too (bench/README.md).

Over a grid of learning rates with ``steps=1``, the gradient does not depend on the learning
rate: :func:`meta_saliency` computes it once per row and only the update and the saliency pass
are repeated per learning rate.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._engine import Maps, Plan, Rows, Seed, check_devices, engine_mode, model_output
from ._finite import finite_rows
from ._per_sample import LowRank, Records, per_sample_parameters
from .options import get_options

__all__ = [
    "Meta",
    "Strategy",
    "default_chunk_size",
    "low_rank_names",
    "meta_saliency",
    "select_parameters",
]


Strategy = Literal["auto", "loop", "batched"]


@dataclass(frozen=True)
class Meta:
    """Meta-saliency settings for :func:`backsal.saliency`.

    Pass one to :func:`backsal.saliency` (``meta=Meta(...)``) for one learning rate; for a grid
    of them, :func:`meta_saliency` shares each row's gradient across the grid.

    Attributes:
        lr: Learning rate of the SGD step(s), ≥ 0 (0 gives the plain maps): a Python or NumPy
            number or a 0-d tensor, stored as a float.
        steps: Number of SGD steps, ≥ 1.
        negate: Ascend the cross-entropy instead (the "adversarial" variant).
        params: Names of parameters, or of modules whose parameters, to update (default: all).
        strategy: ``"loop"``, ``"batched"`` or ``"auto"`` (batched on CUDA, loop elsewhere).
        chunk_size: Rows per batched chunk (default: :func:`default_chunk_size`).
    """

    lr: float = 1e-4
    steps: int = 1
    negate: bool = False
    params: tuple[str, ...] | None = None
    strategy: Strategy = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _as_lr(self.lr))
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(
                f"Meta(steps={self.steps!r}): the number of SGD steps must be an integer ≥ 1."
            )
        if self.strategy not in ("auto", "loop", "batched"):
            raise ValueError(f"Meta(strategy={self.strategy!r}): use 'auto', 'loop' or 'batched'.")
        if self.chunk_size is not None and (
            not isinstance(self.chunk_size, int) or self.chunk_size < 1
        ):
            raise ValueError(
                f"Meta(chunk_size={self.chunk_size!r}): give a positive number of rows."
            )
        if isinstance(self.params, str):  # a single name
            object.__setattr__(self, "params", (self.params,))
        elif self.params is not None:
            object.__setattr__(self, "params", tuple(self.params))
            if not self.params:
                raise ValueError(
                    "Meta(params=()) selects no parameter; pass None to update all of them."
                )

    def run_plan(
        self,
        plan: Plan,
        images: Tensor,
        targets: Tensor | Sequence[int],
        image_index: Tensor | None,
    ) -> Maps:
        """The maps of ``plan`` on each row's updated parameters: how :func:`backsal.saliency`
        runs ``meta=self`` (:class:`backsal._engine.PlanRunner`)."""
        return _run_grid(plan, images, targets, [self.lr], self, image_index)[self.lr]


def _as_lr(lr: object) -> float:
    """A learning rate as a float: Python and NumPy numbers and 0-d tensors or arrays are taken;
    booleans, other shapes, NaN, infinities and negative values are errors."""
    value: object = lr
    if not isinstance(lr, bool) and getattr(lr, "ndim", None) == 0 and hasattr(lr, "item"):
        value = lr.item()  # a 0-d tensor or array
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Meta learning rate {lr!r} must be a number (a float, a NumPy scalar or a 0-d "
            "tensor); for several learning rates use backsal.meta_saliency(..., lrs=[...])."
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Meta learning rate {lr!r} must be a finite number ≥ 0.")
    return value


def select_parameters(model: nn.Module, names: Sequence[str] | None) -> dict[str, Tensor]:
    """The parameters to update: all, or those named (a module name selects all of its own)."""
    named: dict[str, Tensor] = dict(model.named_parameters())
    if names is None:
        return named
    chosen: dict[str, Tensor] = {}
    for name in names:
        matches = {k: v for k, v in named.items() if k == name or k.startswith(name + ".")}
        if not matches:
            raise ValueError(
                f"Meta(params=...): {name!r} names no parameter of the model. Give parameter "
                f"names or module names; the parameters are: {', '.join(named)}."
            )
        chosen.update(matches)
    return chosen


def default_chunk_size(
    model: nn.Module,
    params: dict[str, Tensor],
    device: torch.device,
    rows: int,
    input_bytes: int = 0,
) -> int:
    """Rows per batched chunk that fit in about half the free memory of ``device``.

    Per row: its updated parameters and, for a moment, their gradient, estimated at 4 copies of
    the parameters that are materialised per row (not the factored linear weights, see
    :func:`low_rank_names`), plus activations estimated at 512 times the row's input
    (``input_bytes``); both factors come from the memory measured per row on a GPU
    (bench/README.md). A chunk that still runs out of memory is halved and retried.
    """
    low = low_rank_names(model, params)
    dense = sum(p.numel() * p.element_size() for n, p in params.items() if n not in low)
    per_row = 4 * dense + 512 * input_bytes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            import psutil

            free = psutil.virtual_memory().available
        except ImportError:  # pragma: no cover - psutil ships with snakemake
            free = 8 * 2**30
    return max(1, min(rows, int(0.5 * free // max(per_row, 1))))


def _loss(output: Tensor, rows: Rows, negate: bool) -> Tensor:
    """Per-row cross-entropy of the target; for a score map the mean over positions."""
    output = model_output(output)
    if output.dim() not in (2, 4):
        raise ValueError(
            f"Meta-saliency needs logits [B, K] or score maps [B, K, h, w]; got {tuple(output.shape)}."
        )
    rows.check_targets(output.shape[1])  # here, not as a device assert inside cross_entropy
    targets = rows.targets
    if output.dim() == 2:
        loss = F.cross_entropy(output, targets, reduction="none")
    else:
        per_position = targets.view(-1, 1, 1).expand(-1, *output.shape[2:])
        loss = F.cross_entropy(output, per_position, reduction="none").flatten(1).mean(1)
    return -loss if negate else loss


def meta_saliency(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    methods: Sequence[str],
    layers: Sequence[str],
    lrs: Sequence[float],
    *,
    steps: int = 1,
    negate: bool = False,
    params: Sequence[str] | None = None,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
    seed: Seed = "logit",
    size: tuple[int, int] | None = None,
    image_index: Tensor | None = None,
    contrast_layer: str | None = None,
    classifier_layer: str | None = None,
    method_layers: Mapping[str, Sequence[str]] | None = None,
) -> dict[float, dict[str, dict[str, Tensor]]]:
    """Meta-saliency maps for every learning rate of a grid, set up once.

    The arguments are those of :func:`backsal.saliency` and of :class:`Meta`. With ``steps=1``
    each row's gradient is computed once and shared by all learning rates: that sharing is why
    this is an entry point of its own beside ``saliency(meta=Meta(lr))``, which is one point of
    the grid.

    A learning rate whose step diverges (non-finite maps) is reported by a ``RuntimeWarning``
    naming the rows; the maps of the other learning rates are returned as computed.

    Returns:
        ``{lr: {method: {layer: Tensor[B, 1, h, w]}}}``, keyed by each learning rate as a float.
    """
    plan = Plan.build(
        model, methods, layers, seed, size, contrast_layer, classifier_layer, method_layers
    )
    chosen = None if params is None else tuple(params)
    meta = Meta(0.0, steps, negate, chosen, strategy, chunk_size)
    return _run_grid(plan, images, targets, lrs, meta, image_index)


def _run_grid(
    plan: Plan,
    images: Tensor,
    targets: Tensor | Sequence[int],
    lrs: Sequence[float],
    meta: Meta,
    image_index: Tensor | None,
) -> dict[float, dict[str, dict[str, Tensor]]]:
    if isinstance(lrs, str) or not isinstance(lrs, Sequence) or not lrs:
        raise TypeError(f"lrs must be a non-empty list of learning rates; got {lrs!r}.")
    grid = list(dict.fromkeys(_as_lr(lr) for lr in lrs))
    model = plan.model
    rows = Rows.build(images, targets, image_index, share_forward=False)  # one θ' per row
    check_devices(model, rows.images)
    params = select_parameters(model, meta.params)
    strategy = meta.strategy
    if strategy == "auto":
        strategy = "batched" if rows.images.is_cuda else "loop"
    with engine_mode(model):
        if strategy == "loop":
            maps = _loop(plan, rows, params, grid, meta)
        else:
            image = rows.images[0]
            chunk = meta.chunk_size or default_chunk_size(
                model, params, image.device, rows.rows, image.numel() * image.element_size()
            )
            maps = _batched(plan, rows, params, grid, meta, chunk)
    _warn_diverged(maps, meta)
    return maps


def _warn_diverged(maps: dict[float, Maps], meta: Meta) -> None:
    """Warn, per learning rate, naming the rows whose maps are not finite: their step diverged
    (the inputs were checked finite). One check per learning rate, after all passes."""
    for lr, by_method in maps.items():
        finite = torch.stack(
            [finite_rows(m) for layers in by_method.values() for m in layers.values()]
        ).all(0)
        if finite.is_meta or bool(finite.all()):  # a meta tensor has no values to check
            continue
        rows = (~finite).nonzero().flatten().tolist()
        warnings.warn(
            f"backsal: meta-saliency at lr={lr:g} ({meta.steps} step(s)) diverged for rows "
            f"{rows}: their maps hold NaN or infinite values. Use a smaller learning rate.",
            RuntimeWarning,
            stacklevel=4,
        )


def _concat(parts: list[dict[str, dict[str, Tensor]]]) -> dict[str, dict[str, Tensor]]:
    first = parts[0]
    if len(parts) == 1:  # one chunk: its maps as they are, not copies
        return first
    return {
        m: {layer: torch.cat([p[m][layer] for p in parts]) for layer in first[m]} for m in first
    }


def _row_slice(rows: Rows, start: int, stop: int) -> Rows:
    return Rows(
        rows.images[start:stop],
        rows.targets[start:stop],
        None,
        None,
        1,
        rows.target_values[start:stop],
    )


def _gradient(model: nn.Module, theta: dict[str, Tensor], rows: Rows, negate: bool) -> list[Tensor]:
    """∇ of the summed losses with respect to ``theta`` (one row: the loop strategy)."""
    leaves = {name: t.detach().requires_grad_(True) for name, t in theta.items()}
    output = torch.func.functional_call(model, leaves, (rows.images.detach(),))
    loss = _loss(output, rows, negate).sum()
    return list(
        torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
    )


def _step(
    theta: dict[str, Tensor], gradient: list[Tensor], lr: float, reuse: bool
) -> dict[str, Tensor]:
    """θ − lr·g. With ``reuse`` the result is written into the gradient's own buffer: the
    gradients are ours, and skipping a fresh parameter-sized allocation (0.55 GB for VGG16) is
    what keeps the CPU loop ahead of the deep-copy reference loop. Autograd may hand several
    parameters one buffer (the operands of a sum where no reduction separates them), so only a
    buffer that no other gradient shares is reused."""
    owners = Counter(g.untyped_storage().data_ptr() for g in gradient)
    result = {}
    for (name, t), g in zip(theta.items(), gradient, strict=True):
        if reuse and owners[g.untyped_storage().data_ptr()] == 1:
            result[name] = torch.add(t, g, alpha=-lr, out=g)  # one pass, as SGD's add_
        else:
            result[name] = torch.add(t, g, alpha=-lr)
    return result


def _updated(
    model: nn.Module,
    theta: dict[str, Tensor],
    first_gradient: list[Tensor],
    lr: float,
    meta: Meta,
    rows: Rows,
    last: bool = False,
) -> dict[str, Tensor]:
    """θ after ``meta.steps`` SGD steps, the first one's gradient given.

    ``last``: no later learning rate needs ``first_gradient``, so its buffers may be reused.
    """
    current = _step(theta, first_gradient, lr, reuse=last)
    for _ in range(meta.steps - 1):
        gradient = _gradient(model, current, rows, meta.negate)
        current = _step(current, gradient, lr, reuse=True)
    return current


def _loop(
    plan: Plan, rows: Rows, params: dict[str, Tensor], lrs: list[float], meta: Meta
) -> dict[float, dict[str, dict[str, Tensor]]]:
    model = plan.model
    theta = {name: p.detach() for name, p in params.items()}
    per_lr: dict[float, list[dict[str, dict[str, Tensor]]]] = {lr: [] for lr in lrs}
    for r in range(rows.rows):
        row = _row_slice(rows, r, r + 1)
        first = _gradient(model, theta, row, meta.negate)
        for lr in lrs:
            updated = _updated(model, theta, first, lr, meta, row, last=lr == lrs[-1])

            def forward(x: Tensor, p: dict[str, Tensor] = updated) -> Tensor:
                return torch.func.functional_call(model, p, (x,))

            per_lr[lr].append(plan.run(row, forward))
    return {lr: _concat(parts) for lr, parts in per_lr.items()}


def _batched(
    plan: Plan, rows: Rows, params: dict[str, Tensor], lrs: list[float], meta: Meta, chunk: int
) -> dict[float, dict[str, dict[str, Tensor]]]:
    per_lr: dict[float, list[dict[str, dict[str, Tensor]]]] = {lr: [] for lr in lrs}
    start = 0
    while start < rows.rows:
        stop = min(rows.rows, start + chunk)
        try:
            results = _batched_chunk(plan, _row_slice(rows, start, stop), params, lrs, meta)
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)  # nothing computed so far is lost: retry smaller
            torch.cuda.empty_cache()
            continue
        for lr in lrs:
            per_lr[lr].append(results[lr])
        start = stop
    return {lr: _concat(parts) for lr, parts in per_lr.items()}


def low_rank_names(model: nn.Module, params: Mapping[str, Tensor]) -> set[str]:
    """The selected parameters that the batched strategy keeps in factored form: the weights of
    ``nn.Linear`` modules (see :class:`backsal._per_sample.LowRank`)."""
    if not get_options().low_rank_linear:
        return set()
    modules = dict(model.named_modules())
    names = set()
    for name in params:
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and isinstance(modules.get(owner), nn.Linear):
            names.add(name)
    return names


def _stand_ins(factored: dict[str, LowRank]) -> tuple[dict[str, Tensor], dict[int, LowRank]]:
    """A fresh tensor per factored weight to pass to ``functional_call`` in its place (the
    shared weight's shape), and the table by which the per-row mode recognises it."""
    stand_ins = {name: f.base.view_as(f.base) for name, f in factored.items()}
    return stand_ins, {id(stand_ins[name]): f for name, f in factored.items()}


def _batched_gradient(
    model: nn.Module,
    dense: dict[str, Tensor],
    factored: dict[str, LowRank],
    rows: Rows,
    negate: bool,
) -> tuple[list[Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """Per-row gradients: ``[n, *shape]`` for the dense parameters, and for each factored linear
    weight the factors ``(δ [n, T, out], a [n, T, in])`` of ``Σ_t δ_tᵀ a_t``."""
    leaves = {name: t.detach().requires_grad_(True) for name, t in dense.items()}
    stand_ins, table = _stand_ins(factored)
    record: Records = {}
    tensors = {**leaves, **stand_ins}
    with per_sample_parameters(tensors, table, record):
        output = torch.func.functional_call(model, tensors, (rows.images.detach(),))
    loss = _loss(output, rows, negate).sum()
    outputs = [out for name in factored for _, out in record.get(id(stand_ins[name]), [])]
    grads = torch.autograd.grad(
        loss, [*leaves.values(), *outputs], allow_unused=True, materialize_grads=True
    )
    dense_grads, at = list(grads[: len(leaves)]), len(leaves)
    factors = {}
    for name in factored:
        calls = record.get(id(stand_ins[name]), [])
        if calls:  # a weight the forward never used has a zero gradient: no factor
            deltas = grads[at : at + len(calls)]
            factors[name] = (torch.cat(list(deltas), 1), torch.cat([a for a, _ in calls], 1))
            at += len(calls)
    return dense_grads, factors


def _batched_chunk(
    plan: Plan, rows: Rows, params: dict[str, Tensor], lrs: list[float], meta: Meta
) -> dict[float, dict[str, dict[str, Tensor]]]:
    model, n = plan.model, rows.rows
    low = low_rank_names(model, params)
    # Each row starts from θ: an expanded view (no copy) whose gradient is per row. Seeing that
    # its rows share one tensor, a convolution runs as an ordinary one with per-row weight
    # gradients (backsal._per_sample._SharedRowsConv).
    theta = {name: p.detach().expand(n, *p.shape) for name, p in params.items() if name not in low}
    start = {name: LowRank(params[name].detach()) for name in low}
    first_dense, first_low = _batched_gradient(model, theta, start, rows, meta.negate)
    results = {}
    for lr in lrs:
        dense = _step(theta, first_dense, lr, reuse=lr == lrs[-1])
        factored = _low_rank_step(start, first_low, lr)
        for _ in range(meta.steps - 1):
            grads, factors = _batched_gradient(model, dense, factored, rows, meta.negate)
            dense = _step(dense, grads, lr, reuse=True)
            factored = _low_rank_step(factored, factors, lr)
        results[lr] = plan.run(
            rows, per_rule=functools.partial(_rule_pass, model, dense, factored, n)
        )
    return results


def _low_rank_step(
    current: dict[str, LowRank], factors: dict[str, tuple[Tensor, Tensor]], lr: float
) -> dict[str, LowRank]:
    return {
        name: f.plus(-lr, *factors[name]) if name in factors and lr else f
        for name, f in current.items()
    }


# The rules that replace a linear layer's backward by one reading its weights (W⁺, W⁻ of
# excitation backprop): they get the per-row weights whole.
_WEIGHT_RULES = ("excitation", "contrastive_excitation")


def _rule_pass(
    model: nn.Module,
    dense: dict[str, Tensor],
    factored: dict[str, LowRank],
    rows: int,
    rule: str,
) -> tuple[Callable[[Tensor], Tensor], Callable[[], contextlib.AbstractContextManager[None]]]:
    """The forward and its context for one rule's pass on per-row parameters."""
    if rule in _WEIGHT_RULES or not factored:
        tensors = {**dense, **{name: f.dense(rows) for name, f in factored.items()}}
        table: dict[int, LowRank] = {}
    else:
        stand_ins, table = _stand_ins(factored)
        tensors = {**dense, **stand_ins}

    def forward(inputs: Tensor) -> Tensor:
        return torch.func.functional_call(model, tensors, (inputs,))

    return forward, functools.partial(per_sample_parameters, tensors, table)
