"""Probe-layer names of the paper's architectures, and how a layer setting names layers.

Module names are as ``named_modules`` lists them. :func:`select_layers` turns a config's layer
setting (``probe``, ``combination``, a list, or a mapping model -> one of those) into names, and
:func:`order_layers` ranks every layer a run evaluates shallow to deep, for tables and figures.

The paper (Rebuffi et al., CVPR 2020, Section 4; docs/methods.md §3) probes VGG16 after the last ReLU of
each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features.3/8/15/22/29``) and ResNet50
after each stage (``layer1``..``layer4``); those are the layers it combines. The longer lists add
every other ReLU of VGG16 and every bottleneck block's output of ResNet50, for per-layer sweeps.
Both torchvision's models and TorchRay's converted ones use these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from backsal.names import INPUT

if TYPE_CHECKING:
    from backsal.models import ModelSpec

__all__ = [
    "LAYER_SETS",
    "LayerSetting",
    "RESNET50_COMBINATION",
    "RESNET50_PROBES",
    "VGG16_COMBINATION",
    "VGG16_FC_PROBES",
    "VGG16_PROBES",
    "order_layers",
    "select_layers",
]

#: Named layer sets of a model spec that a setting may name (``blocks``: every block output of
#: the spec's model, :func:`backsal.models.block_layers`).
LAYER_SETS: tuple[str, ...] = ("probe", "combination", "blocks")

#: ``"probe"``, ``"combination"``, ``"blocks"``, a list of layer names, or a mapping model
#: name -> one of those.
LayerSetting = str | Sequence[str] | Mapping[str, str | Sequence[str]]

VGG16_COMBINATION: tuple[str, ...] = (
    "features.3",
    "features.8",
    "features.15",
    "features.22",
    "features.29",
)
"""relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the paper's VGG16 layers."""

VGG16_PROBES: tuple[str, ...] = tuple(
    f"features.{i}" for i in (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
)
"""Every ReLU of VGG16's convolutional part, shallow to deep."""

VGG16_FC_PROBES: tuple[str, ...] = (*VGG16_PROBES, "classifier.1", "classifier.4")
"""The fully convolutional VGG16 adds the ReLUs of fc6 and fc7 (spatial maps there)."""

RESNET50_COMBINATION: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
"""The paper's ResNet50 layers: the output of each stage."""

_BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
RESNET50_PROBES: tuple[str, ...] = (
    "relu",
    *(
        name
        for stage, count in _BLOCKS.items()
        # a stage's output *is* its last block's output: listed once, under the stage's name
        for name in (*(f"{stage}.{i}" for i in range(count - 1)), stage)
    ),
)
"""The stem's ReLU, then every bottleneck block's output, shallow to deep."""


def select_layers(
    setting: LayerSetting,
    spec: ModelSpec,
    model: str,
    *,
    input: bool = False,
    also: Iterable[str] = (),
) -> list[str]:
    """The layer names a setting selects for one model.

    Args:
        setting: ``"probe"`` (every probe layer of the spec), ``"combination"`` (the layers the
            paper combines), ``"blocks"`` (every block output of the model,
            :func:`backsal.models.block_layers`), a list of names, or a mapping model name -> one of those (a model
            the mapping does not name gets ``"probe"``).
        spec: The model's spec (its probe and combination layers).
        model: The model's name (the key of a mapping).
        input: Append :data:`INPUT` (maps at the image itself) if not listed.
        also: Further layers appended if not listed (e.g. the combination layers).

    Raises:
        ValueError: A string that is not a layer set.
    """
    if isinstance(setting, Mapping):
        setting = setting.get(model, "probe")
    if isinstance(setting, str):
        if setting not in LAYER_SETS:
            raise ValueError(
                f"layer setting {setting!r}: use one of {', '.join(LAYER_SETS)}, a list of layer "
                "names, or a mapping model -> one of those"
            )
        if setting == "blocks":
            layers = list(_blocks_of(spec))
        else:
            layers = list(spec.probe_layers if setting == "probe" else spec.combination_layers)
    else:
        layers = [str(layer) for layer in setting]
    layers += [layer for layer in also if layer not in layers]
    return [*layers, INPUT] if input and INPUT not in layers else layers


# Block layers per spec name: finding them builds the model (random weights), once per process.
_BLOCKS_OF: dict[str, tuple[str, ...]] = {}


def _blocks_of(spec: ModelSpec) -> tuple[str, ...]:
    if spec.name not in _BLOCKS_OF:
        from backsal.models.blocks import block_layers

        model = spec.build(pretrained=False, download=False)
        _BLOCKS_OF[spec.name] = tuple(block_layers(model))
    return _BLOCKS_OF[spec.name]


def _numbered(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def order_layers(probe_layers: Sequence[str], used: Iterable[str]) -> list[str]:
    """Every layer of ``probe_layers`` and ``used``, shallow to deep, with :data:`INPUT` first.

    The spec's probe order ranks the layers. A used layer outside it (e.g. VGG16's pool4,
    ``features.23``) goes before the first probe layer of the same parent module with a larger
    index (``features.25``), or last when there is none.
    """
    ranked = list(probe_layers)
    extra = sorted(set(used) - set(ranked) - {INPUT}, key=_numbered)
    for name in extra:
        parent, _, index = name.rpartition(".")
        position = len(ranked)
        for i, probe in enumerate(ranked):
            probe_parent, _, probe_index = probe.rpartition(".")
            if (
                probe_parent == parent
                and probe_index.isdigit()
                and index.isdigit()
                and int(probe_index) > int(index)
            ):
                position = i
                break
        ranked.insert(position, name)
    return [INPUT, *ranked]
