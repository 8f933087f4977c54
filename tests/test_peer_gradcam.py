"""Equality with pytorch-grad-cam 1.5.7 for Grad-CAM and the gradient-CAM family (docs/methods.md §10).

pytorch-grad-cam is a test dependency only. Its per-layer map is taken where it hands it to
``scale_cam_image`` (after its ReLU, before its min-max scaling and resize), so the comparison is
at the layer's resolution. Random weights, several rows with distinct targets, two layers each of
torchvision's resnet18 and vgg11.
"""

import numpy as np
import pytest
import torch
import torchvision

import backsal
from backsal.methods import GRADIENT_CAM_METHODS

base_cam = pytest.importorskip("pytorch_grad_cam.base_cam")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

PEERS = {
    "grad_cam": pytorch_grad_cam.GradCAM,
    "grad_cam_plus_plus": pytorch_grad_cam.GradCAMPlusPlus,
    "xgrad_cam": pytorch_grad_cam.XGradCAM,
    "layer_cam": pytorch_grad_cam.LayerCAM,
    "hires_cam": pytorch_grad_cam.HiResCAM,
    "grad_cam_elementwise": pytorch_grad_cam.GradCAMElementWise,
}
# ResNet: a conv output (signed, so the ReLUs' places matter) and a stage. pytorch-grad-cam keeps
# a layer's output itself (``.cpu().detach()`` shares memory on the CPU), so a layer that an
# in-place op overwrites later (a conv before VGG's ReLU(inplace=True), ResNet's bn2 before
# ``out += identity``) would give it the overwritten values: those are avoided here.
LAYERS = {"resnet18": ["layer2.0.conv2", "layer3"], "vgg11": ["features.7", "features.10"]}


def test_every_cam_method_has_a_peer():
    assert set(PEERS) == set(GRADIENT_CAM_METHODS)


@pytest.fixture(scope="module", params=["resnet18", "vgg11"])
def model_and_batch(request):
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(weights=None).eval()
    images = torch.randn(3, 3, 64, 64)
    targets = torch.tensor([7, 321, 954])
    return request.param, model, images, targets


def _their_raw_cam(monkeypatch, peer, model, layer, images, targets) -> torch.Tensor:
    """pytorch-grad-cam's map at ``layer`` before ``scale_cam_image``."""
    captured = []
    scale = base_cam.scale_cam_image

    def record(cam, target_size=None):
        if target_size is not None:  # the per-layer call; the final one rescales the mean
            captured.append(np.array(cam, copy=True))
        return scale(cam, target_size)

    monkeypatch.setattr(base_cam, "scale_cam_image", record)
    module = dict(model.named_modules())[layer]
    with peer(model=model, target_layers=[module]) as cam:
        cam(images, [model_targets.ClassifierOutputTarget(int(t)) for t in targets])
    (raw,) = captured
    return torch.from_numpy(raw)


@pytest.mark.parametrize("method", sorted(PEERS))
def test_cam_family_matches_pytorch_grad_cam(monkeypatch, model_and_batch, method):
    name, model, images, targets = model_and_batch
    ours = backsal.saliency(model, images, targets, [method], LAYERS[name])[method]
    for layer in LAYERS[name]:
        theirs = _their_raw_cam(monkeypatch, PEERS[method], model, layer, images, targets)
        assert float(theirs.abs().max()) > 0, "a vanishing reference map tests nothing"
        torch.testing.assert_close(
            ours[layer][:, 0], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max())
        )


def test_cam_family_adds_no_pass(model_and_batch):
    """The CAM methods are aggregations of the plain pass: adding them adds no forward."""
    name, model, images, targets = model_and_batch
    forwards = []
    handle = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        backsal.saliency(model, images, targets, ["gradient", "norm_grad"], LAYERS[name])
        alone = len(forwards)
        forwards.clear()
        methods = ["gradient", "norm_grad", *GRADIENT_CAM_METHODS]
        backsal.saliency(model, images, targets, methods, LAYERS[name])
    finally:
        handle.remove()
    assert alone == 1 and len(forwards) == alone
