"""Class-sensitivity job (docs/methods.md §7): Spearman ρ between maps of the most and least likely class.

Per image: ``c_max`` / ``c_min`` are the argmax / argmin of the softmax; the maps of both classes
for a method at a layer (logit seed, upsampled to the model's input size, not smoothed) are
compared by their Spearman rank correlation. Lower ρ = more class-sensitive. The two rows of an
image share its forward. With a learning-rate grid, meta-saliency maps are compared the same way
(each class on its own updated parameters). Records hold one ρ per image × method × layer × lr
(``lr = 0``: plain); a constant map gives ``NaN``, kept in the records and counted downstream.
Each row also holds the model's probability of the image's ground-truth class (``p_true``, its
most probable one where it has several), read from the same forward's logits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from backsal.evaluation import P_TRUE, SENSITIVITY_RECORD_COLUMNS
from backsal.meta import Strategy
from backsal.metrics.sensitivity import extreme_classes, spearman, true_class_probability
from backsal.models.layers import select_layers

from .faithfulness import class_probability
from .pointing import LayerPlan, _warn_if_empty, explain_by_lr
from .resources import OpenedModel
from .settings import SensitivitySettings

__all__ = ["run_sensitivity", "sensitivity_indices"]


def sensitivity_indices(total: int, max_images: int | None, shard: int, shards: int) -> list[int]:
    """The image indices of one shard: every ``shards``-th of the first ``max_images``.

    A shard beyond the number of images gets none, with a warning.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    count = total if max_images is None else min(total, max_images)
    _warn_if_empty(shard, shards, count, "images")
    return list(range(shard, count, shards))


def _load(dataset: object, index: int) -> torch.Tensor:
    """uint8 [3, H, W] of image ``index`` of a pointing dataset or of ImageNet val."""
    # both a PointingDataset (records) and ImageNetVal (samples) load what they index
    return dataset.load_image(dataset[index])  # type: ignore[attr-defined,index]


def _true_classes(dataset: object, index: int) -> list[int]:
    """The ground-truth classes of image ``index``: the classes of a pointing record's queries,
    or an ImageNet sample's label."""
    item = dataset[index]  # type: ignore[index]
    if hasattr(item, "label"):
        return [int(item.label)]
    return sorted({query.class_id for query in item.queries})


def _truth(dataset: object, chunk: list[int], classes: int, device: torch.device) -> torch.Tensor:
    """``bool [len(chunk), classes]``: the ground-truth classes of the images of ``chunk``."""
    truth = torch.zeros(len(chunk), classes, dtype=torch.bool)
    for row, index in enumerate(chunk):
        labels = _true_classes(dataset, index)
        if any(not 0 <= label < classes for label in labels):
            raise ValueError(
                f"image {index} has ground-truth classes {labels} but the model has {classes} "
                "outputs: the dataset and the model do not share a class order"
            )
        truth[row, labels] = True
    return truth.to(device)


def _batches(
    dataset: object, indices: list[int], preprocess, batch_images: int, progress: str | None
) -> Iterator[tuple[list[int], torch.Tensor]]:
    chunks = [indices[i : i + batch_images] for i in range(0, len(indices), batch_images)]
    for chunk in tqdm(chunks, desc=progress, disable=progress is None, unit="batch", mininterval=5):
        images = [preprocess(_load(dataset, i)) for i in chunk]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) != 1:
            raise ValueError(
                f"class sensitivity needs one input size per batch, got {sorted(shapes)}: use a "
                "preprocessing with a fixed output size (ImageNet: Resize((224, 224)))"
            )
        yield chunk, torch.stack(images)


def run_sensitivity(
    dataset: object,
    opened: OpenedModel,
    settings: SensitivitySettings,
    *,
    shard: int = 0,
    steps: int = 1,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> pd.DataFrame:
    """Spearman ρ records of one shard.

    Args:
        settings: ``methods``, ``layers`` and ``input``, ``lrs`` (meta-saliency learning rates
            besides the plain maps), ``strategy``, ``max_images``, ``shards`` and
            ``batch_images``.
        steps: Meta-saliency steps per image.

    Returns:
        :data:`~backsal.evaluation.SENSITIVITY_RECORD_COLUMNS`: ``record, class_max,
        class_min, p_true, method, layer, lr, rho``.
    """
    methods, lrs, batch_images = settings.methods, settings.lrs, settings.batch_images
    strategy: Strategy = settings.strategy  # type: ignore[assignment]
    layers = select_layers(settings.layers, opened.spec, opened.name, input=settings.input)
    if opened.seed != "logit":
        raise ValueError(
            f"class sensitivity compares classifier maps (logit seed); model {opened.name} "
            f"uses the {opened.seed!r} seed"
        )
    device = torch.device(device)
    total = len(dataset)  # type: ignore[arg-type]
    indices = sensitivity_indices(total, settings.max_images, shard, settings.shards)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in SENSITIVITY_RECORD_COLUMNS}
    probability = class_probability(opened)
    plan = LayerPlan.build(opened.model, methods, layers)
    for chunk, images in _batches(dataset, indices, opened.spec.preprocess, batch_images, progress):
        images = images.to(device)
        n = len(chunk)
        with torch.no_grad():
            logits = opened.model(images)
        c_max, c_min = extreme_classes(logits)
        # from the logits c_max / c_min come from: no forward of its own
        truth = _truth(dataset, chunk, int(logits.shape[1]), device)
        p_true = true_class_probability(logits, truth, probability).cpu().numpy()
        targets = torch.cat([c_max, c_min])
        index = torch.arange(n, device=device).repeat(2)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        by_lr = explain_by_lr(
            opened, plan, methods, images, targets, image_index=index,
            lrs=lrs, steps=steps, strategy=strategy, size=size,
        )  # fmt: skip
        for lr, computed in by_lr.items():
            for method, by_layer in plan.renamed(computed).items():
                for layer, layer_maps in by_layer.items():
                    rho = spearman(layer_maps[:n], layer_maps[n:]).cpu().numpy()
                    columns["record"].append(np.asarray(chunk, dtype=np.int32))
                    columns["class_max"].append(c_max.cpu().numpy().astype(np.int32))
                    columns["class_min"].append(c_min.cpu().numpy().astype(np.int32))
                    columns[P_TRUE].append(p_true.astype(np.float64))
                    columns["method"].append(np.full(n, method, dtype=object))
                    columns["layer"].append(np.full(n, layer, dtype=object))
                    columns["lr"].append(np.full(n, lr))
                    columns["rho"].append(rho.astype(np.float64))
    if not columns["record"]:
        return pd.DataFrame({k: [] for k in columns})
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    frame["method"] = frame["method"].astype("category")
    frame["layer"] = frame["layer"].astype("category")
    return frame
