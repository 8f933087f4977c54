"""Probe-layer names of the paper's architectures (module names as ``named_modules`` lists them).

The paper (Rebuffi et al., CVPR 2020, Section 4; docs/methods.md §3) probes VGG16 after the last ReLU of
each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features.3/8/15/22/29``) and ResNet50
after each stage (``layer1``..``layer4``); those are the layers it combines. The longer lists add
every other ReLU of VGG16 and every bottleneck block's output of ResNet50, for per-layer sweeps.
Both torchvision's models and TorchRay's converted ones use these names.
"""

from __future__ import annotations

__all__ = [
    "RESNET50_COMBINATION",
    "RESNET50_PROBES",
    "VGG16_COMBINATION",
    "VGG16_FC_PROBES",
    "VGG16_PROBES",
]

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
