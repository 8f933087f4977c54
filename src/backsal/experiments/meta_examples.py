"""Meta-saliency maps of a few images over the learning-rate grid, with the loss descended
(+L, the meta step of docs/methods.md §4) and ascended (−L, ``negate``), as the authors compared
them: the input of :func:`backsal.report.maps.meta_maps_figures`.

Stored as the qualitative examples are (:class:`backsal.evaluation.Examples`), each map under
the method label :func:`meta_label` ``(method, sign, lr)``; ``lr = 0`` is the plain map.
"""

from __future__ import annotations

import numpy as np
import torch

from backsal.data.base import PointingDataset
from backsal.data.batching import QueryBatches
from backsal.evaluation import Examples
from backsal.models import ModelSpec
from backsal.models.layers import INPUT, select_layers

from .pointing import LayerPlan, _ExampleKeeper, explain_by_lr
from .resources import OpenedModel
from .settings import MetaSettings

__all__ = ["SIGNS", "meta_label", "meta_maps_layers", "parse_meta_label", "run_meta_examples"]

#: ``+L``: one SGD step down the target's cross-entropy; ``−L``: up it (``negate``).
SIGNS = ("+L", "-L")
_SEPARATOR = "~"


def _lr_text(lr: float) -> str:
    # positional, never "1e-05": the example archive turns "-" in method names into "/"
    return np.format_float_positional(float(lr), trim="-")


def meta_label(method: str, sign: str, lr: float) -> str:
    """The method label a meta map is stored under, e.g. ``norm_grad~+L~0.001``."""
    if sign not in SIGNS:
        raise ValueError(f"sign {sign!r}: use one of {SIGNS}")
    return _SEPARATOR.join([method, "+L" if sign == "+L" else "neg", _lr_text(lr)])


def parse_meta_label(label: str) -> tuple[str, str, float] | None:
    """``(method, sign, lr)`` of a :func:`meta_label`, or None for another label."""
    parts = label.split(_SEPARATOR)
    if len(parts) != 3:
        return None
    method, sign, lr = parts
    return method, "+L" if sign == "+L" else "-L", float(lr)


def meta_maps_layers(spec: ModelSpec, model: str, settings: MetaSettings) -> list[str]:
    """The layer of the meta maps figure for config model ``model``: the deepest layer of
    ``settings.layers`` (the input when that is all there is)."""
    layers = select_layers(settings.layers, spec, model, input=settings.input)
    deep = [layer for layer in layers if layer != INPUT]
    return [deep[-1] if deep else layers[-1]]


def run_meta_examples(
    dataset: PointingDataset,
    opened: OpenedModel,
    settings: MetaSettings,
    count: int,
    *,
    device: torch.device | str = "cpu",
) -> Examples | None:
    """Plain and meta maps (both signs, every lr of ``settings.lrs``, ``settings.steps``) of
    ``settings.methods`` at the deepest of the meta layers, for the first ``count`` images'
    first query (``settings.negate`` is ignored: both signs are drawn)."""
    device = torch.device(device)
    methods, lrs, steps = list(settings.methods), settings.lrs, settings.steps
    layers = meta_maps_layers(opened.spec, opened.name, settings)
    keep = _ExampleKeeper(dataset, count)
    plan = LayerPlan.build(opened.model, methods, layers)
    batches = QueryBatches(dataset, opened.spec.preprocess, max_rows=max(1, count))
    grid = [float(lr) for lr in lrs if float(lr) != 0.0]
    for batch_plan in batches.plans:
        if keep.full:
            break
        batch = batches.load(batch_plan).to(device)
        labelled: dict[str, dict[str, torch.Tensor]] = {}
        for sign in SIGNS:
            by_lr = explain_by_lr(
                opened, plan, methods, batch.images, batch.targets, image_index=batch.image_index,
                lrs=grid, steps=steps, negate=sign == "-L", strategy="auto",
            )  # fmt: skip
            for lr, maps in by_lr.items():
                if lr == 0.0 and sign == "-L":
                    continue  # the plain map once, under +L
                for method, by_layer in plan.renamed(maps).items():
                    labelled[meta_label(method, sign, lr)] = by_layer
        keep.add(batch, labelled)
    return keep.result()
