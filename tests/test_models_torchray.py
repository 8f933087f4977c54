"""TorchRay's converted Caffe models: checkpoint layout, conversion, loading and error paths.

No real checkpoint is available offline, so the tests write synthetic ones in the layout TorchRay's
files use (the keys and shapes its loader ``_load_caffe_vgg16`` / ``_load_caffe_resnet50``
consumes) and check that loading them gives the specified architecture.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from _http_server import Route, serve
from backsal.data.download import Checksum, ChecksumError, Resource
from backsal.models.checkpoint import CheckpointError, load_checkpoint_file, load_state_strict
from backsal.models.torchray import (
    CHECKPOINTS,
    build_resnet50_fc,
    build_vgg16_fc,
    convert_resnet50_checkpoint,
    convert_vgg16_checkpoint,
    torchray_model,
)

# ------------------------------------------------------------------------------ layouts


def vgg16_checkpoint_layout(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of TorchRay's VGG16 checkpoints (torchvision names, Caffe classifier).

    The 13 convs keep torchvision's ``features`` indices; the classifier is listed without dropout
    layers as ``classifier.0/2/4`` with fully connected weights (fc6 flattens 512×7×7).
    """
    layout: dict[str, tuple[int, ...]] = {}
    channels = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip
    indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    for index, (cin, cout) in zip(indices, channels, strict=True):
        layout[f"features.{index}.weight"] = (cout, cin, 3, 3)
        layout[f"features.{index}.bias"] = (cout,)
    heads = ((25088, 4096), (4096, 4096), (4096, num_classes))  # fc6, fc7, fc8
    for index, (cin, cout) in zip((0, 2, 4), heads, strict=True):
        layout[f"classifier.{index}.weight"] = (cout, cin)
        layout[f"classifier.{index}.bias"] = (cout,)
    return layout


def resnet50_checkpoint_layout(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of TorchRay's ResNet50 checkpoints.

    Caffe's BatchNorm (``.0``: running statistics) and Scale (``.1``: affine) layers are separate
    entries; ``conv1`` has a bias; ``fc`` is fully connected.
    """
    layout: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), "conv1.bias": (64,)}

    def bn(prefix: str, channels: int) -> None:
        layout[f"{prefix}.0.running_mean"] = (channels,)
        layout[f"{prefix}.0.running_var"] = (channels,)
        layout[f"{prefix}.1.weight"] = (channels,)
        layout[f"{prefix}.1.bias"] = (channels,)

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            layout[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            layout[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            layout[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if block == 0:
                layout[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    layout["fc.weight"] = (num_classes, 2048)
    layout["fc.bias"] = (num_classes,)
    return layout


def synthetic_checkpoint(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict:
    """He-scaled random weights (activations stay finite through 16 layers), positive variances."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=generator) * 0.01
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    return state


def _meta_checkpoint(layout: dict[str, tuple[int, ...]]) -> dict:
    return {key: torch.empty(shape, device="meta") for key, shape in layout.items()}


# ------------------------------------------------------------------------------ layout <-> model


@pytest.mark.parametrize("num_classes", [20, 80])
def test_vgg16_layout_converts_onto_model(num_classes):
    with torch.device("meta"):
        model = build_vgg16_fc(num_classes)
    converted = convert_vgg16_checkpoint(
        _meta_checkpoint(vgg16_checkpoint_layout(num_classes)), num_classes
    )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert expected["classifier.0.weight"] == (4096, 512, 7, 7)
    assert expected["classifier.6.weight"] == (num_classes, 4096, 1, 1)


@pytest.mark.parametrize("num_classes", [20, 80])
def test_resnet50_layout_converts_onto_model(num_classes):
    with torch.device("meta"):
        model = build_resnet50_fc(num_classes)
    converted = convert_resnet50_checkpoint(
        _meta_checkpoint(resnet50_checkpoint_layout(num_classes)), num_classes
    )
    expected = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")  # Caffe has no such counters
    }
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_architecture_details():
    with torch.device("meta"):
        vgg = build_vgg16_fc(20)
        resnet = build_resnet50_fc(20)
    pools = [m for m in vgg.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.ceil_mode for p in pools)
    assert [type(vgg.classifier[i]).__name__ for i in range(7)] == [
        "Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU", "Dropout", "Conv2d"
    ]  # fmt: skip
    assert vgg.classifier[0].kernel_size == (7, 7) and vgg.classifier[3].kernel_size == (1, 1)
    assert resnet.conv1.bias is not None and resnet.conv1.padding == (3, 3)
    assert resnet.maxpool.ceil_mode and resnet.maxpool.padding == 0
    assert resnet.maxpool.kernel_size == 3 and resnet.maxpool.stride == 2
    assert resnet.layer1[0].conv1.stride == (1, 1)
    for stage in (resnet.layer2, resnet.layer3, resnet.layer4):
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
        assert stage[0].downsample[0].stride == (2, 2)
    assert isinstance(resnet.avgpool, torch.nn.AvgPool2d)
    assert resnet.avgpool.kernel_size == 7 and resnet.avgpool.stride == 1
    x = torch.empty(2, 3, 224, 298, device="meta")
    assert resnet(x).shape == (2, 20, 1, 4)


# ------------------------------------------------------------------------------ real loading


def test_vgg16_synthetic_checkpoint_loads_and_runs(tmp_path):
    raw = synthetic_checkpoint(vgg16_checkpoint_layout(20))
    path = tmp_path / "vgg16_voc-synthetic.pth.tar"
    torch.save(raw, path)
    model = build_vgg16_fc(20)
    load_state_strict(model, convert_vgg16_checkpoint(load_checkpoint_file(path), 20))
    # BGR -> RGB on the first conv
    assert torch.equal(model.features[0].weight, raw["features.0.weight"][:, [2, 1, 0]])
    with torch.no_grad():
        scores = model(torch.randn(1, 3, 224, 298) * 50)
        assert scores.shape == (1, 20, 1, 4) and torch.isfinite(scores).all()
        # at 224x224 the fully convolutional head equals the original fully connected one
        x = torch.randn(1, 3, 224, 224) * 50
        hidden = model.features(x).flatten(1)
        hidden = F.relu(F.linear(hidden, raw["classifier.0.weight"], raw["classifier.0.bias"]))
        hidden = F.relu(F.linear(hidden, raw["classifier.2.weight"], raw["classifier.2.bias"]))
        logits = F.linear(hidden, raw["classifier.4.weight"], raw["classifier.4.bias"])
        torch.testing.assert_close(model(x)[:, :, 0, 0], logits, rtol=1e-4, atol=1e-4)


def test_resnet50_download_load_and_run(tmp_path):
    raw = synthetic_checkpoint(resnet50_checkpoint_layout(20), seed=1)
    path = tmp_path / "ckpt.pth.tar"
    torch.save(raw, path)
    data = path.read_bytes()
    with serve() as server:
        server.routes["/resnet50_voc.pth.tar"] = Route(data)
        resource = Resource(
            "resnet50_voc-test.pth.tar",
            (server.url("/resnet50_voc.pth.tar"),),
            Checksum("sha256", hashlib.sha256(data).hexdigest()[:8]),  # a prefix, like TorchRay's
        )
        model = torchray_model(
            "resnet50", "voc07", root=tmp_path / "res", checkpoint=resource, progress=False
        )
    assert (tmp_path / "res" / "models" / "resnet50_voc-test.pth.tar").is_file()
    assert not model.training
    assert torch.equal(model.conv1.weight, raw["conv1.weight"][:, [2, 1, 0]])
    assert torch.equal(model.conv1.bias, raw["conv1.bias"])
    assert torch.equal(model.layer2[0].bn1.running_mean, raw["layer2.0.bn1.0.running_mean"])
    assert torch.equal(model.layer2[0].bn1.weight, raw["layer2.0.bn1.1.weight"])
    assert torch.equal(
        model.layer3[0].downsample[1].running_var, raw["layer3.0.downsample.1.0.running_var"]
    )
    assert torch.equal(model.fc.weight[:, :, 0, 0], raw["fc.weight"])
    with torch.no_grad():
        scores = model(torch.randn(1, 3, 224, 298) * 50)
    assert scores.shape == (1, 20, 1, 4) and torch.isfinite(scores).all()


# ------------------------------------------------------------------------------ errors


def test_wrong_hash_is_refused(tmp_path):
    with serve() as server:
        server.routes["/m.pth.tar"] = Route(b"not the model")
        resource = Resource(
            "vgg16_voc-b050e8c3.pth.tar",
            (server.url("/m.pth.tar"),),
            CHECKPOINTS[("vgg16", "voc07")].checksum,
        )
        with pytest.raises(ChecksumError, match="b050e8c3"):
            torchray_model("vgg16", "voc07", root=tmp_path, checkpoint=resource, progress=False)
    assert not (tmp_path / "models" / "vgg16_voc-b050e8c3.pth.tar").exists()


def test_corrupt_file_is_explained(tmp_path):
    path = tmp_path / "broken.pth.tar"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint_file(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_checkpoint_file(path)


def test_mismatching_state_dict_lists_keys():
    with torch.device("meta"):
        model = build_resnet50_fc(20)
    state = convert_resnet50_checkpoint(_meta_checkpoint(resnet50_checkpoint_layout(20)), 20)
    del state["layer4.2.conv3.weight"]
    state["layer5.0.conv1.weight"] = torch.empty(1, device="meta")
    state["fc.bias"] = torch.empty(80, device="meta")  # a COCO head on a VOC model
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, state, source="checkpoint x.pth")
    message = str(info.value)
    assert "missing keys (1): layer4.2.conv3.weight" in message
    assert "unexpected keys (1): layer5.0.conv1.weight" in message
    assert "fc.bias: (80,) instead of (20,)" in message and "Delete the file" in message


def test_vgg16_classifier_stored_as_conv_kernels_also_converts():
    # TorchRay's loader reshapes classifier weights to [out, -1] whatever their stored rank
    layout = vgg16_checkpoint_layout(20)
    layout["classifier.0.weight"] = (4096, 512, 7, 7)
    layout["classifier.2.weight"] = (4096, 4096, 1, 1)
    converted = convert_vgg16_checkpoint(_meta_checkpoint(layout), 20)
    assert converted["classifier.0.weight"].shape == (4096, 512, 7, 7)
    assert converted["classifier.3.weight"].shape == (4096, 4096, 1, 1)


def test_vgg16_fc_weights_of_wrong_size():
    layout = vgg16_checkpoint_layout(20)
    layout["classifier.0.weight"] = (4096, 4096)
    with pytest.raises(CheckpointError, match="cannot become the conv kernel"):
        convert_vgg16_checkpoint(_meta_checkpoint(layout), 20)


def test_unknown_model():
    with pytest.raises(ValueError, match="no TorchRay model"):
        torchray_model("alexnet", "voc07", pretrained=False)  # type: ignore[arg-type]


def test_checkpoint_resources_pin_sha256_prefixes():
    names = {key: r.filename for key, r in CHECKPOINTS.items()}
    assert names == {
        ("vgg16", "voc07"): "vgg16_voc-b050e8c3.pth.tar",
        ("vgg16", "coco14"): "vgg16_coco-d82c8150.pth.tar",
        ("resnet50", "voc07"): "resnet50_voc-9ca920d6.pth.tar",
        ("resnet50", "coco14"): "resnet50_coco-e99468c5.pth.tar",
    }
    for resource in CHECKPOINTS.values():
        assert resource.checksum.algorithm == "sha256"
        assert resource.checksum.hexdigest in resource.filename
        assert resource.urls == ("https://dl.fbaipublicfiles.com/torchray/" + resource.filename,)
