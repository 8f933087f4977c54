"""torchvision ImageNet models fetched through our checksummed download."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from _http_server import Route, serve
from backsal.data.download import Checksum, ChecksumError, DownloadError, Resource
from backsal.models.vision import IMAGENET_WEIGHTS, vision_model


def test_pinned_weights():
    assert {k: r.filename for k, r in IMAGENET_WEIGHTS.items()} == {
        "vgg16": "vgg16-397923af.pth",
        "resnet50": "resnet50-0676ba61.pth",
    }
    official = {
        "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
        "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url,
    }
    for arch, resource in IMAGENET_WEIGHTS.items():
        assert resource.checksum == Checksum("sha256", resource.filename.split("-")[1][:8])
        assert resource.urls == (official[arch],)  # the file torchvision's weights point to


@pytest.fixture
def resnet50_weights(tmp_path):
    source = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        source.fc.bias.copy_(torch.arange(1000, dtype=torch.float32))
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    return source, path.read_bytes()


def test_download_and_load(tmp_path, resnet50_weights):
    source, data = resnet50_weights
    with serve() as server:
        server.routes["/resnet50.pth"] = Route(data)
        weights = Resource(
            "resnet50-test.pth",
            (server.url("/resnet50.pth"),),
            Checksum("sha256", hashlib.sha256(data).hexdigest()[:8]),
        )
        model = vision_model("resnet50", root=tmp_path / "res", weights=weights, progress=False)
        assert not model.training
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        with torch.no_grad():
            assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        # a second build reuses the verified file
        vision_model("resnet50", root=tmp_path / "res", weights=weights, progress=False)
        assert server.hits["/resnet50.pth"] == 1
    assert (tmp_path / "res" / "models" / "resnet50-test.pth").is_file()


def test_wrong_hash_and_offline(tmp_path):
    with serve() as server:
        server.routes["/w.pth"] = Route(b"something else")
        weights = Resource(
            "vgg16-397923af.pth", (server.url("/w.pth"),), Checksum("sha256", "397923af")
        )
        with pytest.raises(ChecksumError, match="397923af"):
            vision_model("vgg16", root=tmp_path, weights=weights, progress=False)
    with pytest.raises(DownloadError, match="download it by hand"):
        vision_model("vgg16", root=tmp_path, weights=weights, progress=False)  # server gone
    with pytest.raises(ValueError, match="no torchvision model"):
        vision_model("alexnet", pretrained=False)  # type: ignore[arg-type]
