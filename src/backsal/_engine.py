"""The engine core that :func:`backsal.saliency` and meta-saliency share.

It owns what one call computes and how: the :class:`Plan` (methods and layers, validated and
grouped by backward rule), the :class:`Rows` (distinct images, one target per row, the row ->
image map), the backward seed (docs/methods.md §5), eval mode for the call, and the one-rule
pass: one forward with probes on every requested layer, one backward from the seed to all of
them, then every (method, layer) of that rule aggregated from the same activations and
gradients, on the device.

:mod:`backsal.explain` (plain maps) and :mod:`backsal.meta` (maps on per-row updated
parameters) both build on this module; neither imports the other.

Rows that repeat an image (one image, several target classes) share its forward: the image is
run once and the backward is *batched* over the rows of each image
(``torch.autograd.grad(..., is_grads_batched=True)``), so every row still gets its own gradient.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._finite import finite_rows
from .capture import INPUT, ProbeSet, Reshape, resolve_layers
from .methods import RULES, LayerData, Method, get_method
from .rules import backward_rule, find_classifier_layer

__all__ = [
    "Maps",
    "Plan",
    "PlanRunner",
    "Rows",
    "Seed",
    "check_devices",
    "engine_mode",
    "eval_mode",
    "model_output",
]

Seed = Literal["logit", "pointing"]

#: ``{method: {layer: Tensor[B, 1, h, w]}}``, methods and layers in the order requested.
Maps = dict[str, dict[str, Tensor]]

# Per model, the probed layers whose output something downstream wrote into in place (see
# backsal.capture): their probes hand the network a copy from then on.
_OVERWRITTEN: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()

# Contrast layers of the paper's architectures (docs/methods.md §2.5): module names that identify them.
_CONTRAST_LAYERS = (("classifier.4", "features"), ("avgpool", "fc"))


class PlanRunner(Protocol):
    """What ``saliency(meta=...)`` needs of its ``meta`` argument (:class:`backsal.meta.Meta`):
    a way to compute a plan's maps. The engine names the interface so that :mod:`backsal.explain`
    can hand a plan to meta-saliency without importing :mod:`backsal.meta`."""

    def run_plan(
        self,
        plan: Plan,
        images: Tensor,
        targets: Tensor | Sequence[int],
        image_index: Tensor | None,
    ) -> Maps: ...


# --------------------------------------------------------------------------------------------
# The plan: validated methods and layers, grouped by backward rule
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What to compute, validated once; :meth:`run` computes it for a batch of rows."""

    model: nn.Module
    methods: list[Method]
    by_rule: dict[str, list[Method]]
    layers_of: dict[str, list[str]]  # method name -> its layers
    seed: Seed
    size: tuple[int, int] | None
    contrast_layer: str | None
    classifier_layer: str | None
    reshape: Reshape | Mapping[str, Reshape] | None = None  # per-layer layouts (backsal.capture)

    @staticmethod
    def build(
        model: nn.Module,
        methods: Sequence[str],
        layers: Sequence[str],
        seed: Seed,
        size: tuple[int, int] | None,
        contrast_layer: str | None,
        classifier_layer: str | None,
        method_layers: Mapping[str, Sequence[str]] | None = None,
    ) -> Plan:
        """Validate the request once: methods resolved, each method's layers, rules in order.

        Methods and layers keep the order given (repeats dropped); the rules run in the order of
        :data:`backsal.methods.RULES`. Raises ``TypeError``/``ValueError`` naming the bad
        argument before any pass runs.
        """
        _check_names(methods, "methods", "['gradient', 'grad_cam']")
        _check_names(layers, "layers", "['layer3', 'input']")
        for name, names in (method_layers or {}).items():
            _check_names(names, f"method_layers[{name!r}]", "['features.28']")
        resolved = [get_method(name) for name in dict.fromkeys(methods)]
        if not resolved:
            raise ValueError("No method requested; see backsal.methods.available_methods().")
        if seed not in ("logit", "pointing"):
            raise ValueError(f"Unknown seed {seed!r}; use 'logit' or 'pointing'.")
        method_layers = dict(method_layers or {})
        stray = [name for name in method_layers if name not in {m.name for m in resolved}]
        if stray:
            raise ValueError(f"method_layers names methods that are not requested: {stray}.")
        layers_of = {
            m.name: list(dict.fromkeys(method_layers.get(m.name, layers))) for m in resolved
        }
        for method in resolved:
            names = layers_of[method.name]
            if not names:
                raise ValueError(
                    f"No layer requested for {method.name!r}; pass names from "
                    "model.named_modules() or 'input'."
                )
            _check_real_conv([method], resolve_layers(model, names))
        by_rule: dict[str, list[Method]] = defaultdict(list)
        for method in resolved:
            by_rule[method.rule].append(method)
        ordered: dict[str, list[Method]] = {
            rule: by_rule[rule] for rule in RULES if rule in by_rule
        }
        return Plan(
            model, resolved, ordered, layers_of, seed, size, contrast_layer, classifier_layer
        )

    def run(
        self,
        rows: Rows,
        forward: Callable[[Tensor], Tensor] | None = None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        per_rule: Callable[
            [str],
            tuple[Callable[[Tensor], Tensor], Callable[[], contextlib.AbstractContextManager[Any]]],
        ]
        | None = None,
    ) -> dict[str, dict[str, Tensor]]:
        """Every method at every layer for ``rows``: one forward and one backward per rule.

        Args:
            rows: The batch.
            forward: Runs the model (default: ``self.model``); meta-saliency passes a
                functional call with per-row parameters.
            context: Entered around each forward, outside the backward rule's interception.
            per_rule: ``rule -> (forward, context)``, instead of the two above, where they
                depend on the rule.

        The caller provides eval mode and grad mode (:func:`engine_mode`).

        Returns:
            Methods and, within each, layers in the order requested, whatever order the backward
            made them in (deepest first).
        """
        maps: Maps = {m.name: {} for m in self.methods}
        for rule, methods in self.by_rule.items():
            run, enter = per_rule(rule) if per_rule else (forward or self.model, context)
            _one_rule(self, rows, rule, methods, maps, run, enter)
        return {
            m.name: {layer: maps[m.name][layer] for layer in self.layers_of[m.name]}
            for m in self.methods
        }


# --------------------------------------------------------------------------------------------
# Rows: targets, distinct images and the row -> image map
# --------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A batch as the engine runs it: distinct images, one target per row, the row -> image map.

    When rows repeat images, each image is forwarded once and its rows get their gradients from
    one batched backward: row ``r`` seeds slot ``slot[r]`` of image ``image_index[r]``, and the
    backward runs ``slots`` (the most rows of one image) seeds at once.
    """

    images: Tensor  # [U, 3, H, W] distinct images (leaf, requires grad)
    targets: Tensor  # [B]
    image_index: Tensor | None  # [B] row -> image, None when rows and images coincide
    slot: Tensor | None  # [B] rank of the row among the rows of its image
    slots: int  # max rows per image
    # The targets on the host, read once when the rows are built, so that checking them against
    # the model's classes never waits for the device in the middle of a pass.
    target_values: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.targets.numel()

    @staticmethod
    def build(
        images: Tensor,
        targets: Tensor | Sequence[int],
        image_index: Tensor | None,
        share_forward: bool | None,
    ) -> Rows:
        """Check a batch and lay it out for the passes.

        Args:
            images: ``[B, C, H, W]`` (one row per target) or, with ``image_index``, the distinct
                images ``[U, C, H, W]``.
            targets: ``[B]`` integer classes, on any device (they move to the images').
            image_index: Optional ``[B]`` image of each row.
            share_forward: Forward each distinct image once (``None``: on the CPU only); with
                ``False`` every row gets its own copy of its image.

        Raises ``TypeError``/``ValueError`` naming the rows at fault: wrong rank or dtype, NaN or
        infinite pixels, too few or too many targets, image indices out of range.
        """
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor [B, C, H, W]; got {shape}.")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point (preprocessed); got {images.dtype}.")
        if images.is_inference():  # made under inference_mode: copy into a normal tensor
            with torch.inference_mode(False):
                images = images.clone()
        if isinstance(targets, Tensor) and targets.is_meta:
            raise ValueError(
                "targets are on the 'meta' device, which holds no values: pass them as a list "
                "or as a tensor on the CPU or the images' device."
            )
        # Where the caller has them: a list stays on the host. An empty list is no class at all,
        # not the float tensor torch.as_tensor makes of it.
        targets = torch.as_tensor(targets, dtype=torch.long if _empty(targets) else None)
        if targets.dim() != 1 or targets.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
        ):
            raise ValueError(
                f"targets must be integer class indices of shape [B]; got {targets.dtype} {tuple(targets.shape)}."
            )
        if targets.numel() == 0:
            raise ValueError(
                "No rows to explain: targets is empty. Skip the call for an empty batch (there is "
                "nothing to compute, and the maps' sizes are only known after a forward)."
            )
        target_values = tuple(targets.tolist())
        targets = targets.to(images.device).long()
        _check_finite(images, image_index)
        if share_forward is None:
            # bench/bench_shared_forward.py (figures in bench/README.md): it pays on a CPU, and
            # loses on a GPU, where a forward is cheap next to the batched seeds.
            share_forward = not images.is_cuda
        if image_index is not None:
            image_index = torch.as_tensor(image_index, device=images.device).long()
            if image_index.shape != targets.shape:
                raise ValueError(
                    f"image_index has {image_index.numel()} entries but targets has "
                    f"{targets.numel()}: give one image index per target row."
                )
            if image_index.numel() and (
                image_index.min() < 0 or image_index.max() >= images.shape[0]
            ):
                raise ValueError(f"image_index must lie in [0, {images.shape[0]}).")
            if share_forward is False:  # the caller wants one forward per row
                images, image_index = images[image_index], None
        else:
            if targets.numel() != images.shape[0]:
                raise ValueError(
                    f"targets has {targets.numel()} entries but images has {images.shape[0]} rows: "
                    "give one target class per image row (repeat an image for several classes)."
                )
            if share_forward is not False:
                images, image_index = _distinct(images)
        slot, slots = None, 1
        if image_index is not None:
            rank: list[int] = []
            seen: dict[int, int] = defaultdict(int)
            for u in image_index.tolist():
                rank.append(seen[u])
                seen[u] += 1
            slots = max(seen.values(), default=1)
            if slots == 1:  # no image has two rows: a plain batch in row order
                images, image_index = images[image_index], None
            else:
                slot = torch.tensor(rank, device=images.device)
        leaf = images.detach().requires_grad_(True)
        return Rows(leaf, targets, image_index, slot, slots, target_values)

    def check_targets(self, classes: int) -> None:
        """Raise if a target is not a class of a model with ``classes`` outputs."""
        bad = [t for t in self.target_values if not 0 <= t < classes]
        if bad:
            raise ValueError(
                f"Target classes {bad} are out of range for a model with {classes} classes."
            )

    def row_view(self, t: Tensor) -> Tensor:
        """Per-image tensor ``[U, ...]`` -> per-row ``[B, ...]``."""
        return t if self.image_index is None else t[self.image_index]


def _distinct(images: Tensor) -> tuple[Tensor, Tensor | None]:
    """Distinct rows of ``images`` and the index of each row's copy, or ``(images, None)``."""
    n = images.shape[0]
    flat = images.detach().flatten(1)
    # A cheap per-row fingerprint narrows the exact comparisons down to likely duplicates.
    fingerprint = flat[:, :: max(1, flat.shape[1] // 4096)].double().sum(1).tolist()
    first_of: dict[float, list[int]] = defaultdict(list)
    index = list(range(n))
    for row in range(n):
        for candidate in first_of[fingerprint[row]]:
            if torch.equal(flat[candidate], flat[row]):
                index[row] = candidate
                break
        else:
            first_of[fingerprint[row]].append(row)
    distinct = sorted(set(index))
    if len(distinct) == n:
        return images, None
    position = {row: i for i, row in enumerate(distinct)}
    return images[distinct], torch.tensor([position[i] for i in index], device=images.device)


# --------------------------------------------------------------------------------------------
# One rule: one forward, one backward, then every method at every layer
# --------------------------------------------------------------------------------------------


def _one_rule(
    plan: Plan,
    rows: Rows,
    rule: str,
    methods: list[Method],
    maps: Maps,
    forward: Callable[[Tensor], Any],
    context: Callable[[], contextlib.AbstractContextManager[Any]],
) -> None:
    """One backward rule's pass: fill ``maps[method][layer]`` for every method of ``rule``.

    Probes on the union of those methods' layers (plus the contrast layer for contrastive
    excitation) capture activations in one forward under ``rule``; one backward from the seed
    then reaches every probe, and each layer's maps are aggregated as soon as its gradient
    exists. A probed output that the network overwrites in place is detected and the forward
    rerun once with copies. Probes are released on every exit path.
    """
    model, seed, size = plan.model, plan.seed, plan.size
    contrast_layer, classifier_layer = plan.contrast_layer, plan.classifier_layer
    layer_names = list(dict.fromkeys(n for m in methods for n in plan.layers_of[m.name]))
    keep_input = list(
        dict.fromkeys(n for m in methods if m.needs_layer_input for n in plan.layers_of[m.name])
    )
    probed = [n for n in layer_names if n != INPUT]
    classifier = contrast = None
    if rule == "contrastive_excitation":
        contrast = contrast_layer or _default_contrast_layer(model)
        classifier_name = classifier_layer or find_classifier_layer(model)
        classifier = resolve_layers(model, [classifier_name])[classifier_name]
        if contrast not in probed:
            probed = [*probed, contrast]
    keep = [n for n in keep_input if n != INPUT]
    known = _OVERWRITTEN.setdefault(model, set())
    probes = ProbeSet(model, probed, keep_input=keep, copy=known, reshape=plan.reshape)
    with context(), probes, backward_rule(rule, classifier, model=model):
        output = model_output(forward(rows.images))
    if probes.overwritten:  # rare: rerun once with copies for those layers, and remember them
        known.update(probes.overwritten)
        probes.release()
        probes = ProbeSet(model, probed, keep_input=keep, copy=known, reshape=plan.reshape)
        with context(), probes, backward_rule(rule, classifier, model=model):
            output = model_output(forward(rows.images))
    try:
        if contrast is not None:
            _check_below_contrast(probes, layer_names, contrast)
        grad_outputs = _seed(output, rows, seed)
        captured = {n: rows.images if n == INPUT else probes.probes[n].output for n in layer_names}

        def aggregate(name: str, g: Tensor) -> None:
            x = captured[name]
            assert x is not None
            probe = probes.probes.get(name)
            to_map = _as_map if probe is None else probe.to_map  # the layer's layout
            data = LayerData(
                x=to_map(rows.row_view(x.detach())),
                g=to_map(g),
                x_in=None if probe is None or probe.input is None else rows.row_view(probe.input),
                module=None if probe is None else probe.module,
            )
            here = [m for m in methods if name in plan.layers_of[m.name]]
            data.prepare(key for method in here for key in method.statistics)
            for method in here:
                result = method.aggregate(data).unsqueeze(1)
                if size is not None:
                    result = F.interpolate(result, size=size, mode="bilinear", align_corners=False)
                maps[method.name][name] = result

        if rows.image_index is None:
            _backward_with_hooks(output, grad_outputs, captured, aggregate)
        else:  # a batched backward (vmap): take the gradients, then each row's slot
            grads = torch.autograd.grad(
                output,
                list(captured.values()),  # type: ignore[arg-type]
                grad_outputs,
                allow_unused=True,
                materialize_grads=True,
                is_grads_batched=True,
            )
            del output, grad_outputs
            for name, g in zip(captured, grads, strict=True):
                aggregate(name, g[rows.slot, rows.image_index])
    finally:
        probes.release()


def _lowest(tensors: dict[str, Tensor]) -> list[str]:
    """The probes with no other probe below them in the autograd graph.

    A backward to these runs through every other probe: a probe above one of them lies on a path
    from the output to it.
    """
    node_of = {name: t.grad_fn for name, t in tensors.items()}
    nodes = {id(node): name for name, node in node_of.items() if node is not None}
    lowest = []
    for name, start in node_of.items():
        if start is None:  # a leaf (the image): nothing below it
            lowest.append(name)
            continue
        below, stack, seen = False, [start], {id(start)}
        while stack and not below:
            for child, _ in stack.pop().next_functions:
                if child is None or id(child) in seen:
                    continue
                if id(child) in nodes and nodes[id(child)] != name:
                    below = True
                    break
                seen.add(id(child))
                stack.append(child)
        if not below:
            lowest.append(name)
    return lowest


def _backward_with_hooks(
    output: Tensor,
    grad_outputs: Tensor,
    captured: dict[str, Tensor | None],
    aggregate: Callable[[str, Tensor], None],
) -> None:
    """One backward, down to the lowest probes only; each probe's maps are made as soon as its
    gradient exists.

    Tensor hooks hand the gradient of each probe above the lowest ones to ``aggregate`` during the
    backward, so a layer's gradient is freed once the layers below have used it, instead of all of
    them (1.7 GB for VGG16 at batch 32) staying alive until the backward ends; the backward stops
    at the lowest requested layer, not at the input.
    """
    tensors = {name: tensor for name, tensor in captured.items() if tensor is not None}
    targets = _lowest(tensors)
    seen: set[str] = set()
    handles = []

    def hook(name: str) -> Callable[[Tensor], None]:
        def run(grad: Tensor) -> None:
            seen.add(name)
            aggregate(name, grad)

        return run

    for name, tensor in tensors.items():
        if name not in targets:
            handles.append(tensor.register_hook(hook(name)))
    try:
        grads = torch.autograd.grad(
            output,
            [tensors[name] for name in targets],
            grad_outputs,
            allow_unused=True,
            materialize_grads=True,
        )
    finally:
        for handle in handles:
            handle.remove()
    for name, grad in zip(targets, grads, strict=True):
        aggregate(name, grad)
    for name, tensor in tensors.items():  # a probe the output does not depend on: zero gradient
        if name not in targets and name not in seen:
            aggregate(name, torch.zeros_like(tensor))


def _as_map(t: Tensor) -> Tensor:
    return t[:, :, None, None] if t.dim() == 2 else t


def _seed(output: Tensor, rows: Rows, seed: Seed) -> Tensor:
    """The backward seed per row; ``[slots, U, ...]`` when rows share their images' forward."""
    if seed == "logit" and output.dim() != 2:
        raise ValueError(
            f"The model outputs {tuple(output.shape)}; seed='logit' needs logits [B, K]. "
            "For a class-score map [B, K, h, w] use seed='pointing'."
        )
    if seed == "pointing" and output.dim() != 4:
        raise ValueError(
            f"The model outputs {tuple(output.shape)}; seed='pointing' needs a class-score map "
            "[B, K, h, w]. For logits [B, K] use seed='logit'."
        )
    rows.check_targets(output.shape[1])
    targets = rows.targets
    image = (
        rows.image_index
        if rows.image_index is not None
        else torch.arange(rows.rows, device=output.device)
    )
    slot = rows.slot if rows.slot is not None else torch.zeros_like(image)
    out = output.detach()
    grad = out.new_zeros((rows.slots, *out.shape))
    if seed == "logit":
        grad[slot, image, targets] = 1
    else:
        channel = out[image, targets].flatten(1)
        grad[slot, image, targets] = torch.softmax(channel, dim=1).view(-1, *out.shape[2:])
    return grad if rows.image_index is not None else grad[0]


def _check_real_conv(methods: list[Method], modules: dict[str, nn.Module | None]) -> None:
    for method in methods:
        if method.needs_layer_input:
            for name, module in modules.items():
                if not isinstance(module, nn.Conv2d):
                    kind = "the input image" if module is None else type(module).__name__
                    raise ValueError(
                        f"Method {method.name!r} (real_conv) needs an nn.Conv2d layer, but "
                        f"{name!r} is {kind}. Probe the conv layers themselves for it, or use "
                        "'norm_grad' / 'conv1x1/norm' at other layers."
                    )


def _default_contrast_layer(model: nn.Module) -> str:
    names = {n for n, _ in model.named_modules()}
    for layer, marker in _CONTRAST_LAYERS:
        if layer in names and marker in names:
            return layer
    raise ValueError(
        "contrastive_excitation_backprop needs a contrast layer and none is known for this "
        "architecture: pass contrast_layer=<name> (the paper uses VGG16 'classifier.4', "
        "ResNet50 'avgpool')."
    )


def _check_below_contrast(probes: ProbeSet, layer_names: list[str], contrast: str) -> None:
    limit = probes.probes[contrast].order
    above = [n for n in layer_names if n != INPUT and probes.probes[n].order > limit]
    if above:
        raise ValueError(
            f"contrastive_excitation_backprop is defined at and below its contrast layer "
            f"{contrast!r}; {above} run after it. Choose earlier layers or another contrast_layer."
        )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BatchNorm statistics, no dropout); restores every flag after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def engine_mode(model: nn.Module) -> Iterator[None]:
    """What every pass runs under: eval mode, and gradients on even inside the caller's
    ``torch.no_grad()`` or ``torch.inference_mode()`` (saliency is a gradient)."""
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        yield


def model_output(output: Any) -> Tensor:
    """The scores a model returned: the tensor itself, the ``"logits"`` entry of a mapping (as
    Hugging Face models return), or the first item of a tuple or list (as models with auxiliary
    outputs return); anything else is an error that says what to do."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    kind = type(output).__name__
    keys = f" with keys {list(output)}" if isinstance(output, Mapping) else ""
    raise TypeError(
        f"The model returned a {kind}{keys}; backsal needs its scores as a tensor ([B, K] logits "
        "or a [B, K, h, w] score map), a mapping with a 'logits' tensor, or a tuple whose first "
        "item is that tensor. Wrap the model in a module whose forward returns the scores."
    )


def check_devices(model: nn.Module, images: Tensor) -> None:
    """Raise if the model's parameters all lie on one device and the images on another."""
    devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if len(devices) == 1 and images.device not in devices:
        (device,) = devices
        raise ValueError(
            f"The images are on {images.device} but the model is on {device}: move them to the "
            f"model's device first (images.to({str(device)!r}))."
        )


def _check_names(names: object, what: str, example: str) -> None:
    """``names`` must be a sequence of strings, not one bare string (which would read as its
    characters) or anything else."""
    if isinstance(names, str):
        raise TypeError(
            f"{what} must be a list of names, got the string {names!r}: pass [{names!r}]."
        )
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what} must be a list of names such as {example}; got {names!r}.")


def _empty(values: object) -> bool:
    return isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 0


def _check_finite(images: Tensor, image_index: Tensor | Sequence[int] | None) -> None:
    """Raise naming the rows whose images hold NaN or infinite pixels: their logits would be NaN,
    yet some methods (the gradient through ReLU masks) would still return finite maps."""
    # One read for the batch, before any pass is queued (a meta tensor has no values to check).
    if images.is_meta:
        return
    finite = finite_rows(images.detach())
    if bool(finite.all()):
        return
    bad_images = (~finite).nonzero().flatten().tolist()
    if image_index is None:
        where = f"rows {bad_images}"
    else:
        index = torch.as_tensor(image_index).tolist()
        rows = [r for r, u in enumerate(index) if u in set(bad_images)]
        where = f"images {bad_images} (rows {rows})"
    raise ValueError(
        f"The images of {where} hold NaN or infinite pixels, so their scores would be NaN: fix "
        "the preprocessing or leave those images out."
    )
