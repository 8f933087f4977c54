"""The command line: methods, layers and a figure of maps for one image."""

import torch
from torchvision.io import write_png

from backsal.cli import main


def test_methods_and_layers(capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "norm_grad_selective" in listed and "conv3x3_depthwise/max_abs" in listed
    assert main(["layers", "resnet18"]) == 0
    layers = capsys.readouterr().out.split()
    assert "input" in layers and "layer4.1.conv2" in layers


def test_explain_writes_a_figure(tmp_path):
    image = tmp_path / "image.png"
    write_png(torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8), str(image))
    out = tmp_path / "maps.png"
    code = main(["explain", "--model", "resnet18", "--image", str(image), "--target", "3",
                 "--methods", "gradient", "norm_grad", "--layers", "input", "layer2", "--out", str(out)])  # fmt: skip
    assert code == 0 and out.stat().st_size > 5000
