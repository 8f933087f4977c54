"""Equality with a peer implementation: Captum on torchvision resnet18 and vgg11, random weights.

Captum is a test dependency only. Captum attributes per input channel; our input-level maps
reduce channels (``max_abs`` or ``sum``), so the comparison applies the same reduction.
"""

import pytest
import torch
import torchvision

import backsal

captum_attr = pytest.importorskip("captum.attr")

GRAD_CAM_LAYERS = {
    "resnet18": ["layer1", "layer2.1", "layer3", "layer4"],
    "vgg11": ["features.2", "features.10", "features.19"],
}


@pytest.fixture(scope="module", params=["resnet18", "vgg11"])
def model_and_batch(request):
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(weights=None).eval()
    images = torch.randn(4, 3, 64, 64)
    targets = torch.tensor([3, 141, 500, 999])
    return request.param, model, images, targets


def _close(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))


def test_plain_gradient_methods_match_captum(model_and_batch):
    name, model, images, targets = model_and_batch
    maps = backsal.saliency(model, images, targets, ["gradient", "linear_approx"], ["input"])
    saliency = captum_attr.Saliency(model).attribute(images, target=targets, abs=True)
    _close(maps["gradient"]["input"], saliency.amax(1, keepdim=True))
    input_x_gradient = captum_attr.InputXGradient(model).attribute(images, target=targets)
    _close(maps["linear_approx"]["input"], input_x_gradient.sum(1, keepdim=True))


def test_grad_cam_matches_captum_layer_grad_cam(model_and_batch):
    name, model, images, targets = model_and_batch
    layers = GRAD_CAM_LAYERS[name]
    maps = backsal.saliency(model, images, targets, ["grad_cam"], layers)
    modules = dict(model.named_modules())
    for layer in layers:
        theirs = captum_attr.LayerGradCam(model, modules[layer]).attribute(
            images, target=targets, relu_attributions=True
        )
        _close(maps["grad_cam"][layer], theirs)


def test_guided_backprop_and_deconvnet_match_captum(model_and_batch):
    name, model, images, targets = model_and_batch
    maps = backsal.saliency(
        model, images, targets, ["guided_backprop", "guided_backprop_sum", "deconvnet"], ["input"]
    )
    guided = captum_attr.GuidedBackprop(model).attribute(images, target=targets)
    _close(maps["guided_backprop"]["input"], guided.abs().amax(1, keepdim=True))
    _close(maps["guided_backprop_sum"]["input"], guided.sum(1, keepdim=True))
    deconv = captum_attr.Deconvolution(model).attribute(images, target=targets)
    _close(maps["deconvnet"]["input"], deconv.abs().amax(1, keepdim=True))
