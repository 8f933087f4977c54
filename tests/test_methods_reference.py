"""Every phase-1 × phase-2 entry and named method equals its definition computed the slow way."""

import pytest
import torch

import backsal
from backsal.methods import NAMED_METHODS, PHASE1, PHASE2
from reference import brute_force_map, contributions, grad_cam_reference

# layers of TinyNet with their kinds: the input, a plain conv, a grouped strided conv, a batch norm
# followed by a reused in-place ReLU, a dilated depthwise reflect-padded conv, a 1x1 conv whose
# output is then modified in place by the skip sum
LAYERS = ["input", "conv1", "conv2", "bn2", "conv3", "conv4"]
CONV_LAYERS = ["conv1", "conv2", "conv3", "conv4"]


@pytest.mark.parametrize("phase1", [p for p in PHASE1 if p != "real_conv"])
def test_grid_matches_materialised_contributions(tiny_net, tiny_batch, phase1):
    images, targets = tiny_batch
    names = [f"{phase1}/{phase2}" for phase2 in PHASE2]
    maps = backsal.saliency(tiny_net, images, targets, names, LAYERS)
    for phase2, name in zip(PHASE2, names, strict=True):
        for layer in LAYERS:
            expected = brute_force_map(tiny_net, images, targets, layer, phase1, phase2)
            torch.testing.assert_close(
                maps[name][layer], expected, rtol=1e-5, atol=1e-12, msg=f"{name} at {layer}"
            )


def test_real_conv_matches_materialised_weight_gradients(tiny_net, tiny_batch):
    images, targets = tiny_batch
    names = [f"real_conv/{phase2}" for phase2 in PHASE2]
    maps = backsal.saliency(tiny_net, images, targets, names, CONV_LAYERS)
    for phase2, name in zip(PHASE2, names, strict=True):
        for layer in CONV_LAYERS:
            expected = brute_force_map(tiny_net, images, targets, layer, "real_conv", phase2)
            torch.testing.assert_close(
                maps[name][layer], expected, rtol=1e-5, atol=1e-12, msg=f"{name} at {layer}"
            )


@pytest.mark.parametrize("name", [n for n, spec in NAMED_METHODS.items() if spec[0] == "plain"])
def test_named_plain_methods_are_their_grid_entries(tiny_net, tiny_batch, name):
    images, targets = tiny_batch
    rule, phase1, phase2, _ = NAMED_METHODS[name]
    layers = CONV_LAYERS if phase1 == "real_conv" else LAYERS
    maps = backsal.saliency(tiny_net, images, targets, [name], layers)
    for layer in layers:
        expected = brute_force_map(tiny_net, images, targets, layer, phase1, phase2)
        torch.testing.assert_close(maps[name][layer], expected, rtol=1e-5, atol=1e-12)


def test_norm_grad_is_product_of_norms(tiny_net, tiny_batch):
    """The paper's closed form ‖x_u‖·‖g_u‖, from x captured by a hook and g by autograd."""
    images, targets = tiny_batch
    maps = backsal.saliency(tiny_net, images, targets, ["norm_grad"], ["bn2"])
    captured = {}

    def keep(module, inputs, output):  # returns None: the output itself is left alone
        captured["x"] = output.detach().clone()

    handle = tiny_net.bn2.register_forward_hook(keep)
    try:
        tiny_net(images)
    finally:
        handle.remove()
    g = contributions(tiny_net, images, targets, "bn2", "bias")  # [B,H,W,C]
    expected = captured["x"].norm(dim=1, keepdim=True) * g.norm(dim=-1).unsqueeze(1)
    torch.testing.assert_close(maps["norm_grad"]["bn2"], expected, rtol=1e-5, atol=0)


def test_grad_cam_matches_definition(tiny_net, tiny_batch):
    images, targets = tiny_batch
    layers = ["conv1", "bn2", "conv4"]
    maps = backsal.saliency(tiny_net, images, targets, ["grad_cam"], layers)
    for layer in layers:
        torch.testing.assert_close(
            maps["grad_cam"][layer],
            grad_cam_reference(tiny_net, images, targets, layer),
            rtol=1e-5,
            atol=1e-12,
        )


def test_registry_lists_every_grid_pair_and_named_method():
    names = backsal.available_methods()
    assert {f"{p1}/{p2}" for p1 in PHASE1 for p2 in PHASE2} <= set(names)
    assert set(NAMED_METHODS) | {"grad_cam"} <= set(names)
    assert backsal.get_method("guided:conv1x1/norm").rule == "guided"
