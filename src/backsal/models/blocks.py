"""The block outputs of a model: the default layers to explain (docs/methods.md §11).

A *block* is a repeated unit of the architecture whose output is a map of the image: torchvision's
ResNet ``BasicBlock``/``Bottleneck``, ViT ``EncoderBlock``, Swin ``SwinTransformerBlock``,
ConvNeXt ``CNBlock``, EfficientNet ``MBConv``/``FusedMBConv``, MobileNet and ShuffleNet
``InvertedResidual``, RegNet ``ResBottleneckBlock``, DenseNet ``_DenseBlock``, SqueezeNet
``Fire``, MaxViT ``MaxVitBlock``, and so on. The rules, generic first:

* **Units of a sequence.** A child of an ``nn.Sequential`` or ``nn.ModuleList`` that has
  submodules and is not itself a ``Sequential`` (so a stage, or torchvision's
  ``Conv2dNormActivation``, is not a block, while the units inside it are). The search does not
  descend into a block.
* **Conv-activation sequences.** A ``Sequential`` of single layers with several convolutions
  (VGG's and AlexNet's ``features``): the activation after each conv (or its batch norm).
* **Inception modules** (GoogLeNet, Inception v3), whose modules are attributes of the model,
  not a sequence: the model's children named by an ``Inception*`` class (the auxiliary heads,
  which run only in training, excluded).
* **Repeated units among the model's children**, where nothing above applies (blocks that are
  attributes of the model, as in the offline benchmark's ``small_resnet``): the children with
  submodules whose class occurs more than once.

A block that is the last unit of a plain ``Sequential`` stage has the stage's output, and is
listed under the stage's name (ResNet50's ``layer1.2`` is ``layer1``), as in
:data:`backsal.models.layers.RESNET50_PROBES`. The list is in registration order, which is the
forward order of every torchvision classifier.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

__all__ = ["block_layers"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _is_unit(module: nn.Module) -> bool:
    return not _is_leaf(module) and not isinstance(module, nn.Sequential)


def _conv_activations(prefix: str, sequence: nn.Sequential) -> list[str]:
    """The activations after each conv of a sequence of single layers (VGG, AlexNet)."""
    children = list(sequence.named_children())
    names, after_conv = [], False
    for name, child in children:
        if isinstance(child, _CONVS):
            after_conv = True
        elif isinstance(child, _ACTIVATIONS) and after_conv:
            names.append(prefix + name)
            after_conv = False
        elif not isinstance(child, nn.modules.batchnorm._BatchNorm):
            after_conv = False
    return names


def _search(prefix: str, module: nn.Module, found: list[str]) -> None:
    if isinstance(module, nn.Sequential | nn.ModuleList):
        children = list(module.named_children())
        if (
            isinstance(module, nn.Sequential)
            and children
            and all(_is_leaf(child) for _, child in children)
            and sum(isinstance(child, _CONVS) for _, child in children) >= 2
        ):
            found.extend(_conv_activations(prefix, module))
            return
        plain_stage = isinstance(module, nn.Sequential) and (
            type(module).forward is nn.Sequential.forward
        )
        for i, (name, child) in enumerate(children):
            if _is_unit(child):
                last = i == len(children) - 1
                # the last unit of a plain stage outputs the stage's output: named by the stage
                found.append(
                    prefix.rstrip(".") if last and plain_stage and prefix else prefix + name
                )
            else:
                _search(f"{prefix}{name}.", child, found)
        return
    for name, child in module.named_children():
        _search(f"{prefix}{name}.", child, found)


def block_layers(model: nn.Module) -> list[str]:
    """The names of the block outputs of ``model``, shallow to deep (rules: module docstring).

    Raises:
        ValueError: No rule finds a block (a model built of single layers only); the message
            says what to pass instead.
    """
    found: list[str] = []
    inception = [
        name
        for name, child in model.named_children()
        if type(child).__name__.startswith("Inception") and "Aux" not in type(child).__name__
    ]
    if inception:
        found = inception
    else:
        _search("", model, found)
    if not found:  # blocks as attributes of the model: its children of a repeated unit class
        units = [(n, c) for n, c in model.named_children() if _is_unit(c)]
        counts = Counter(type(c) for _, c in units)
        found = [n for n, c in units if counts[type(c)] > 1]
    if not found:
        raise ValueError(
            f"No blocks found in {type(model).__name__}: it has no sequence of repeated units "
            "and no conv-activation sequence. Pass layer names from model.named_modules() "
            "(`backsal layers MODEL` lists the ones that can be probed)."
        )
    return list(dict.fromkeys(found))
