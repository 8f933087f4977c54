"""Block layers (docs/methods.md §11): the default layer set of the CLI and ``layers: blocks``."""

import pytest
import torch
import torchvision
from torch import nn

from backsal.cli import main
from backsal.models import block_layers, get_spec
from backsal.models.layers import RESNET50_PROBES, VGG16_FC_PROBES, VGG16_PROBES, select_layers


def test_the_paper_architectures_get_their_probe_layers():
    assert block_layers(torchvision.models.resnet50()) == list(RESNET50_PROBES[1:])  # no stem
    assert block_layers(torchvision.models.vgg16()) == list(VGG16_PROBES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("densenet121", [f"features.denseblock{i}" for i in range(1, 5)]),
        ("vit_b_32", [*(f"encoder.layers.encoder_layer_{i}" for i in range(11)), "encoder.layers"]),
        ("mobilenet_v2", [f"features.{i}" for i in range(1, 18)]),  # stem and head excluded
        ("shufflenet_v2_x0_5", ["stage2.0", "stage2.1", "stage2.2", "stage2", "stage3.0"]),
        ("googlenet", ["inception3a", "inception3b", "inception4a"]),  # no auxiliary heads
    ],
)
def test_family_blocks(name, expected):
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    blocks = block_layers(getattr(torchvision.models, name)(**kwargs))
    assert blocks[: len(expected)] == expected
    if name == "googlenet":
        assert not any("aux" in b for b in blocks) and blocks[-1] == "inception5b"


def test_a_stage_is_named_for_its_last_block_and_swin_blocks_are_listed():
    blocks = block_layers(torchvision.models.swin_t())
    assert blocks[:3] == ["features.1.0", "features.1", "features.2"]  # block, stage, merging
    assert blocks[-1] == "features.7"


def test_the_layer_setting_blocks():
    assert select_layers("blocks", get_spec("small_resnet"), "small_resnet") == [
        "layer1", "layer2", "layer3", "layer4",
    ]  # fmt: skip
    vgg = select_layers("blocks", get_spec("vgg16_voc07"), "vgg16_voc07", input=True)
    assert vgg == [*VGG16_FC_PROBES, "input"]  # TorchRay's fully convolutional VGG16


def test_a_model_without_blocks_says_what_to_pass():
    with pytest.raises(ValueError, match="Pass layer names"):
        block_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()))


def test_cli_layers_marks_blocks_and_reused_modules(capsys):
    assert main(["layers", "resnet18"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "block" in lines["layer2.0"] and "channels_first" in lines["layer2.0"]
    assert "not probeable" in lines["layer2.0.relu"] and "'layer2.0'" in lines["layer2.0.relu"]
    assert "block" not in lines["layer2.0.conv1"]


def test_cli_explain_defaults_to_the_blocks(tmp_path, monkeypatch):
    from PIL import Image

    import backsal

    seen = {}
    real = backsal.saliency

    def spy(model, images, targets, methods, layers, **kwargs):
        seen["layers"] = list(layers)
        return real(model, images, targets, methods, layers, **kwargs)

    monkeypatch.setattr(backsal, "saliency", spy)
    image = tmp_path / "image.png"
    # PIL, not torchvision.io, whose image codecs are deprecated since torchvision 0.29
    pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()
    Image.fromarray(pixels).save(image)
    out = tmp_path / "maps.png"
    args = ["explain", str(image), "--model", "resnet18", "--weights", "none", "--device", "cpu",
            "--target", "3", "--methods", "gradient", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert seen["layers"] == block_layers(torchvision.models.resnet18())
