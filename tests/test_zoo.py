"""Every torchvision family, explained at every block by every plain-rule method (docs/methods.md §11).

One model per family of ``torchvision.models`` (random weights, the smallest variant, small
inputs where the architecture allows): the maps are finite and have the block's resolution, the
model's parameters, buffers and training flags are unchanged and no hook is left behind.
``bench/zoo.py`` runs every model of the list.
"""

import pytest
import torch
import torchvision
from torch import nn

import backsal
from backsal.capture import probe_marks
from backsal.methods import available_methods, get_method
from backsal.models import block_layers

# family -> (smallest model, builder keywords, input side)
FAMILIES = {
    "alexnet": ("alexnet", {}, 64),
    "convnext": ("convnext_tiny", {}, 32),
    "densenet": ("densenet121", {}, 32),
    "efficientnet": ("efficientnet_b0", {}, 32),
    "efficientnet_v2": ("efficientnet_v2_s", {}, 32),
    "googlenet": ("googlenet", {"init_weights": False, "aux_logits": False}, 64),
    "inception": ("inception_v3", {"init_weights": False, "aux_logits": False}, 80),
    "maxvit": ("maxvit_t", {}, 224),  # its partitions need 224 / 32 = 7 at the last stage
    "mnasnet": ("mnasnet0_5", {}, 32),
    "mobilenet_v2": ("mobilenet_v2", {}, 32),
    "mobilenet_v3": ("mobilenet_v3_small", {}, 32),
    "regnet": ("regnet_y_400mf", {}, 32),
    "resnet": ("resnet18", {}, 32),
    "shufflenet": ("shufflenet_v2_x0_5", {}, 32),
    "squeezenet": ("squeezenet1_1", {}, 32),
    "swin": ("swin_t", {}, 32),
    "swin_v2": ("swin_v2_t", {}, 32),
    "vgg": ("vgg11", {}, 32),
    "vit": ("vit_b_32", {"image_size": 64}, 64),
}

# every plain-rule method that is defined at any layer (real_conv needs the model's own convs)
PLAIN = [
    name
    for name in available_methods()
    if get_method(name).rule == "plain" and not get_method(name).needs_layer_input
]


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_every_family_of_torchvision_is_listed():
    """A new torchvision family must be added above (and to the README's table)."""
    # names of the same family as a listed model (ResNeXt and Wide ResNet are ResNets)
    same = {"resnext": "resnet", "wide_resnet": "resnet"}
    for model in torchvision.models.list_models(module=torchvision.models):
        family = next((f for f in sorted(FAMILIES, key=len)[::-1] if model.startswith(f)), None)
        family = family or next((v for k, v in same.items() if model.startswith(k)), None)
        assert family is not None, f"{model}: a torchvision family without a zoo test"


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_plain_methods_at_every_block(family):
    name, kwargs, side = FAMILIES[family]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    images, targets = torch.randn(2, 3, side, side), torch.tensor([3, 917])
    blocks = block_layers(model)
    assert blocks, name
    shapes = {mark.name: mark for mark in probe_marks(model, images[:1])}
    maps = backsal.saliency(model, images, targets, PLAIN, blocks)
    for block in blocks:
        mark = shapes[block]
        assert mark.probeable, (block, mark.reason)
        grid = {"channels_first": mark.shape[2:], "channels_last": mark.shape[1:3]}.get(mark.layout)
        for method in PLAIN:
            result = maps[method][block]
            assert result.shape[:2] == (2, 1), (method, block)
            if grid is not None:
                assert result.shape[2:] == grid, (method, block, mark.layout)
            assert torch.isfinite(result).all(), (method, block)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert _hooks(model) == hooks


def test_maxvit_partitioned_layers_are_refused_with_the_layer_to_probe():
    """The partition check finds MaxViT's layers by the class of an imported model
    (backsal.capture._partitioned), without importing torchvision itself."""
    from backsal.capture import ProbeSet

    model = torchvision.models.maxvit_t(weights=None).eval()
    parent = "blocks.0.layers.0.layers.window_attention"
    inside = f"{parent}.partition_swap"
    with pytest.raises(ValueError, match=rf"window-partitioned .* probe '{parent}'"):
        ProbeSet(model, [inside])
    marks = {mark.name: mark for mark in probe_marks(model, torch.randn(1, 3, 224, 224))}
    assert marks[inside].instead == repr(parent)
    assert "window-partitioned" in marks[inside].reason
    assert marks[parent].reason == "" and marks[parent].layout is not None
