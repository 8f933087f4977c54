"""Registry of the models the workflow can run: name -> :class:`ModelSpec`.

A spec bundles what the saliency engine and the workflow need to know about a model besides its
weights: how to build it, how to preprocess images for it, which backward seed suits its output
(``"pointing"`` for class-score maps, ``"logit"`` for classifiers; docs/methods.md §5), which layers to
probe and combine, the contrast layer of contrastive excitation backprop, and its number of classes.

Built-in specs live next to their models, in a module-level ``MODEL_SPECS`` tuple of each module
listed in ``_SPEC_MODULES``; they are imported on the first lookup, so importing this package
stays cheap. Adding a family of models is one ``ModelSpec`` per model in its module plus the
module's name in ``_SPEC_MODULES``; user code can also call :func:`register`.

Built in: TorchRay's converted Caffe models ``vgg16_voc07``, ``resnet50_voc07``,
``vgg16_coco14``, ``resnet50_coco14`` (:mod:`backsal.models.torchray`) and torchvision's ImageNet
classifiers ``vgg16_imagenet``, ``resnet50_imagenet`` (:mod:`backsal.models.vision`); the offline
benchmark's ``small_vgg`` and ``small_resnet`` (:mod:`backsal.models.small`, registered by
:mod:`backsal.models.train`, which loads their checkpoints).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backsal._lazy import lazy_names

if TYPE_CHECKING:
    from torch import nn

    from backsal.explain import Seed  # the one home of the seed names (docs/methods.md §5)
    from backsal.models.blocks import block_layers
    from backsal.models.preprocess import (
        CaffePreprocess,
        ImageNetPreprocess,
        Preprocess,
        PreprocessFunction,
    )

#: Names this package re-exports, imported on first use (PEP 562), so that the torch-free
#: modules (:mod:`backsal.models.layers`, the specs' registry below) import without torch.
_LAZY = {
    "Seed": "backsal.explain",
    "block_layers": "backsal.models.blocks",
    "CaffePreprocess": "backsal.models.preprocess",
    "ImageNetPreprocess": "backsal.models.preprocess",
    "Preprocess": "backsal.models.preprocess",
    "PreprocessFunction": "backsal.models.preprocess",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "CaffePreprocess",
    "ImageNetPreprocess",
    "ModelSpec",
    "Preprocess",
    "PreprocessFunction",
    "Seed",
    "available_models",
    "block_layers",
    "build_model",
    "get_spec",
    "register",
]


# Modules that define a MODEL_SPECS tuple; the offline benchmark's models join this list.
_SPEC_MODULES: tuple[str, ...] = (
    "backsal.models.torchray",
    "backsal.models.vision",
    "backsal.models.train",  # the small models, whose builder loads their checkpoints
)

_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


@dataclass(frozen=True)
class ModelSpec:
    """Everything the workflow needs to run one model.

    Attributes:
        name: Registry key (``<arch>_<dataset>``).
        builder: Returns the model; :meth:`build` forwards its keyword arguments. The built-in
            builders accept ``pretrained`` (load the trained weights; ``False`` gives a random
            initialisation for tests), ``root`` (resources folder for downloaded weights),
            ``download`` and ``progress``; other families document their own keywords.
        preprocess: Turns ``uint8`` images ``[3,H,W]`` or ``[B,3,H,W]`` into model inputs and
            tells their size (wrap a plain function with :class:`PreprocessFunction`).
        seed: Backward seed for its output: ``"pointing"`` (spatial softmax of a class-score map
            ``[B,K,h,w]``) or ``"logit"`` (one-hot on a logit vector ``[B,K]``).
        num_classes: Number of output classes ``K``.
        dataset: Name of the dataset its classes come from (``voc07``, ``coco14``,
            ``imagenet``, ...).
        probe_layers: Every layer offered for per-layer saliency, shallow to deep.
        combination_layers: The layers the paper combines (a subset of ``probe_layers``).
        contrast_layer: Layer whose output is negated for contrastive excitation backprop.
        description: One line for listings and result metadata.
    """

    name: str
    builder: Callable[..., nn.Module]
    preprocess: Preprocess
    seed: Seed
    num_classes: int
    dataset: str
    probe_layers: tuple[str, ...]
    combination_layers: tuple[str, ...]
    contrast_layer: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.seed not in ("pointing", "logit"):
            raise ValueError(f"{self.name}: seed must be 'pointing' or 'logit', not {self.seed!r}")
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be positive")
        stray = [layer for layer in self.combination_layers if layer not in self.probe_layers]
        if stray:
            raise ValueError(f"{self.name}: combination layers {stray} are not probe layers")

    def build(self, **kwargs: Any) -> nn.Module:
        """Build the model (in eval mode); ``kwargs`` go to the builder."""
        return self.builder(**kwargs).eval()

    def describe(self) -> dict[str, Any]:
        """The spec as plain data, for result metadata."""
        return {
            "name": self.name,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "dataset": self.dataset,
            "probe_layers": list(self.probe_layers),
            "combination_layers": list(self.combination_layers),
            "contrast_layer": self.contrast_layer,
            "preprocess": self.preprocess.describe(),
            "description": self.description,
        }


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: The name is taken and ``replace`` is false.
    """
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    for module_name in _SPEC_MODULES:
        module = importlib.import_module(module_name)
        for spec in module.MODEL_SPECS:
            register(spec)
    _LOADED = True


def available_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``.

    Raises:
        KeyError: Unknown name; the message lists the known ones.
    """
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (see :meth:`ModelSpec.build`)."""
    return get_spec(name).build(**kwargs)
