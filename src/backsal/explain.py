"""The public entry point: every requested method at every requested layer, one pass per rule.

For each backward rule that the requested methods need, :func:`saliency` runs one forward pass
(with probes on every requested layer) and one backward pass from the seed to all probes at
once; every (method, layer) pair of that rule is then aggregated from the same activations and
gradients, on the device, and optionally upsampled there. The passes themselves live in
:mod:`backsal._engine`, which meta-saliency (:mod:`backsal.meta`) shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ._engine import Maps, Plan, PlanRunner, Rows, Seed, check_devices, engine_mode
from .capture import Reshape

__all__ = ["Seed", "saliency"]


def saliency(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    methods: Sequence[str],
    layers: Sequence[str],
    seed: Seed = "logit",
    size: tuple[int, int] | None = None,
    *,
    image_index: Tensor | None = None,
    share_forward: bool | None = None,
    contrast_layer: str | None = None,
    classifier_layer: str | None = None,
    meta: PlanRunner | None = None,
    method_layers: Mapping[str, Sequence[str]] | None = None,
    reshape: Reshape | Mapping[str, Reshape] | None = None,
) -> Maps:
    """Saliency maps of many methods at many layers.

    Args:
        model: A classifier whose forward returns scores: a tensor, a mapping with a
            ``"logits"`` tensor, or a tuple whose first item is the tensor. It runs in eval mode
            during the call (its training flags are restored afterwards); nothing else about it
            changes.
        images: ``[B, 3, H, W]``, one row per target — or, with ``image_index``, the distinct
            images ``[U, 3, H, W]``.
        targets: ``[B]`` class per row (several rows may share an image); a list, or a tensor on
            any device.
        methods: A list of registry names (:func:`backsal.methods.available_methods`).
        layers: A list of names from ``model.named_modules()``, plus ``"input"`` for the image.
        seed: ``"logit"`` — one-hot on the target logit of ``[B, K]`` scores; ``"pointing"`` —
            for a class-score map ``[B, K, h, w]``, the spatial softmax of the target channel.
        size: ``(H, W)`` to upsample every map to (bilinear, ``align_corners=False``, on the
            device); ``None`` keeps each layer's resolution.
        image_index: Optional ``[B]`` index of each row's image in ``images``.
        share_forward: Run each distinct image once when rows repeat an image (default: on
            the CPU, where it pays; on a GPU one forward per row is faster).
        contrast_layer: For ``contrastive_excitation_backprop``: the contrast layer (default:
            VGG ``classifier.4``, ResNet ``avgpool``).
        classifier_layer: For the same: the classifier whose weights are negated (default: the
            last Linear/Conv module).
        meta: Meta-saliency (:class:`backsal.meta.Meta`): explain each row on parameters
            updated by its own SGD step(s) on its target's cross-entropy. One learning rate per
            call; :func:`backsal.meta_saliency` takes a grid of them and shares each row's
            gradient across it, which one ``Meta`` cannot express: hence the two entry points.
        method_layers: Layers for particular methods instead of ``layers`` (e.g. the conv
            layers for ``norm_grad_proper``), still in the same passes.
        reshape: Converts a layer's output to ``[B, C, H, W]`` (for every layer, or
            ``{layer: fn}``), as pytorch-grad-cam's ``reshape_transform``; without it channels-last
            and token layouts are detected (:mod:`backsal.capture`, docs/methods.md §11).

    Returns:
        ``{method: {layer: Tensor[B, 1, h, w]}}``: methods and layers in the order requested.

    Raises:
        TypeError, ValueError: Bad arguments, named, before any pass runs: unknown methods or
            layers, a bare string for a list, targets out of range or of the wrong shape, NaN
            or infinite pixels (the rows are named), images on another device than the model.
    """
    plan = Plan.build(
        model, methods, layers, seed, size, contrast_layer, classifier_layer, method_layers
    )
    plan.reshape = reshape
    if meta is not None:
        return meta.run_plan(plan, images, targets, image_index)
    rows = Rows.build(images, targets, image_index, share_forward)
    check_devices(model, rows.images)
    with engine_mode(model):
        return plan.run(rows)
