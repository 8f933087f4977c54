"""Meta-saliency: explain the model after one SGD step on the class being explained.

Rebuffi et al., CVPR 2020, §6 ("a meta-learning inspired paradigm"). For each row (image,
target class ``c``) separately, with the model in eval mode (BatchNorm statistics frozen)::

    θ'_r = θ − lr · ∇_θ L_r(θ)        (``steps`` times, each at the current θ'_r)
    L_r  = cross-entropy of c         (``negate=True``: −cross-entropy, the adversarial variant)

and the saliency of the row is computed with the same method and seed on θ'_r. For a model whose
output is a class-score map ``[B, K, h, w]`` every position gets target ``c`` and the loss is
their mean (method_spec §4–5). The update covers all parameters (whatever their
``requires_grad``), or a named subset.

Per-row updates are the correct semantics: the authors' code deep-copies all weights per image,
and with batch > 1 took one step shared by the whole batch, coupling the images. Here the user's
model is never written to nor deep-copied; θ'_r exists only as tensors passed to
``torch.func.functional_call``.

Two strategies compute the same maps:

* ``loop`` — one row at a time: a batch-1 step, then a batch-1 saliency pass with θ'_r. On a CPU a
  batch-1 pass already keeps the cores busy, and running rows "batched" with per-row weights
  turns every convolution into a grouped one, which CPU kernels run slower than the loop (a
  ``vmap`` over per-row weights measured 0.6× the loop for resnet18 at 64², batch 16).
* ``batched`` — chunks of rows at once: per-row parameters ``[n, *shape]`` (see
  :mod:`backsal._per_sample`); the step's per-row gradients come from one backward of the summed
  per-row losses, since row ``r``'s loss depends on its own parameters only; the saliency pass then
  runs the whole chunk with its per-row θ'. On a GPU this replaces ``n`` launches-bound batch-1
  passes by one. The chunk size bounds memory (per-row parameters of VGG16 are 0.55 GB each).

``auto`` picks ``batched`` on CUDA and ``loop`` elsewhere.

Over a grid of learning rates with ``steps=1``, the gradient does not depend on the learning
rate: :func:`meta_saliency` computes it once per row and only the update and the saliency pass
are repeated per learning rate.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._per_sample import per_sample_parameters
from .explain import Plan, Rows, Seed, _eval_mode

__all__ = ["Meta", "default_chunk_size", "meta_saliency", "select_parameters"]


Strategy = Literal["auto", "loop", "batched"]


@dataclass(frozen=True)
class Meta:
    """Meta-saliency settings for :func:`backsal.saliency`.

    Attributes:
        lr: Learning rate of the SGD step(s), ≥ 0 (0 gives the plain maps).
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
        _check_lr(self.lr)
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


def _check_lr(lr: float) -> None:
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"Meta learning rate {lr!r} must be a finite number ≥ 0.")


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
    model: nn.Module, params: dict[str, Tensor], device: torch.device, rows: int
) -> int:
    """Rows per batched chunk that fit in about half the free memory of ``device``.

    Each row holds its own updated parameters and, for a moment, their gradient, plus its
    activations: estimated at 4 parameter copies per row (measured on an H100 at 224²: 0.72 GB
    per row for VGG16, 1.3 copies). A chunk that still runs out of memory is halved and retried.
    """
    per_row = 4 * sum(p.numel() * p.element_size() for p in params.values())
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            import psutil

            free = psutil.virtual_memory().available
        except ImportError:  # pragma: no cover - psutil ships with snakemake
            free = 8 * 2**30
    return max(1, min(rows, int(0.5 * free // max(per_row, 1))))


def _loss(output: Tensor, targets: Tensor, negate: bool) -> Tensor:
    """Per-row cross-entropy of the target; for a score map the mean over positions."""
    if output.dim() == 2:
        loss = F.cross_entropy(output, targets, reduction="none")
    elif output.dim() == 4:
        per_position = targets.view(-1, 1, 1).expand(-1, *output.shape[2:])
        loss = F.cross_entropy(output, per_position, reduction="none").flatten(1).mean(1)
    else:
        raise ValueError(
            f"Meta-saliency needs logits [B, K] or score maps [B, K, h, w]; got {tuple(output.shape)}."
        )
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
    each row's gradient is computed once and shared by all learning rates.

    Returns:
        ``{lr: {method: {layer: Tensor[B, 1, h, w]}}}``.
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
    if not lrs:
        raise ValueError("No learning rate given.")
    for lr in lrs:
        _check_lr(lr)
    lrs = list(dict.fromkeys(float(lr) for lr in lrs))
    model = plan.model
    rows = Rows.build(images, targets, image_index, share_forward=False)  # one θ' per row
    params = select_parameters(model, meta.params)
    strategy = meta.strategy
    if strategy == "auto":
        strategy = "batched" if rows.images.is_cuda else "loop"
    with _eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        if strategy == "loop":
            return _loop(plan, rows, params, lrs, meta)
        chunk = meta.chunk_size or default_chunk_size(model, params, rows.images.device, rows.rows)
        return _batched(plan, rows, params, lrs, meta, chunk)


def _concat(parts: list[dict[str, dict[str, Tensor]]]) -> dict[str, dict[str, Tensor]]:
    first = parts[0]
    return {
        m: {layer: torch.cat([p[m][layer] for p in parts]) for layer in first[m]} for m in first
    }


def _row_slice(rows: Rows, start: int, stop: int) -> Rows:
    return Rows(rows.images[start:stop], rows.targets[start:stop], None, None, 1)


def _gradient(
    model: nn.Module,
    theta: dict[str, Tensor],
    x: Tensor,
    targets: Tensor,
    negate: bool,
    context: Callable[[dict[str, Tensor]], object] | None = None,
) -> list[Tensor]:
    """∇ of the summed per-row losses with respect to ``theta`` (per-row when ``theta`` is)."""
    leaves = {name: t.detach().requires_grad_(True) for name, t in theta.items()}
    if context is None:
        output = torch.func.functional_call(model, leaves, (x,))
    else:
        with context(leaves):  # type: ignore[attr-defined]
            output = torch.func.functional_call(model, leaves, (x,))
    loss = _loss(output, targets, negate).sum()
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
    x: Tensor,
    targets: Tensor,
    context: Callable[[dict[str, Tensor]], object] | None = None,
    last: bool = False,
) -> dict[str, Tensor]:
    """θ after ``meta.steps`` SGD steps, the first one's gradient given.

    ``last``: no later learning rate needs ``first_gradient``, so its buffers may be reused.
    """
    current = _step(theta, first_gradient, lr, reuse=last)
    for _ in range(meta.steps - 1):
        gradient = _gradient(model, current, x, targets, meta.negate, context)
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
        first = _gradient(model, theta, row.images.detach(), row.targets, meta.negate)
        for lr in lrs:
            last = lr == lrs[-1]
            updated = _updated(
                model, theta, first, lr, meta, row.images.detach(), row.targets, last=last
            )

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


def _batched_chunk(
    plan: Plan, rows: Rows, params: dict[str, Tensor], lrs: list[float], meta: Meta
) -> dict[float, dict[str, dict[str, Tensor]]]:
    model, n = plan.model, rows.rows
    x = rows.images.detach()
    # Each row starts from θ: an expanded view (no copy) whose gradient is per row.
    theta = {name: p.detach().unsqueeze(0).expand(n, *p.shape) for name, p in params.items()}
    first = _gradient(model, theta, x, rows.targets, meta.negate, per_sample_parameters)
    results = {}
    for lr in lrs:
        last = lr == lrs[-1]
        updated = _updated(
            model, theta, first, lr, meta, x, rows.targets, per_sample_parameters, last=last
        )

        def forward(inputs: Tensor, p: dict[str, Tensor] = updated) -> Tensor:
            return torch.func.functional_call(model, p, (inputs,))

        results[lr] = plan.run(
            rows, forward, context=functools.partial(per_sample_parameters, updated)
        )
    return results
