"""The command line end to end, in a temporary folder: images, models, targets, outputs, errors."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import backsal
from backsal.cli import main
from backsal.data import files
from backsal.data.files import read_image
from backsal.mapfiles import load_maps
from backsal.models import ImageNetPreprocess
from backsal.provenance import read_png_provenance

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of mixed sizes and modes: RGB and grayscale PNG, RGBA PNG, JPEG."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (48, 64), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA").save(
        folder / "rgba.png"
    )
    Image.fromarray(rng.integers(0, 256, (72, 56, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    (folder / "notes.txt").write_text("not an image: a folder's other files are skipped")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A resnet18 state dict as DataParallel training scripts save it, and the model."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model


def _explain(*args):
    return main(["explain", "--model", "resnet18", "--weights", "none", "--device", "cpu", *args])


def test_methods_and_layers(capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "norm_grad_selective" in listed and "conv3x3_depthwise/max_abs" in listed
    assert main(["layers", "resnet18"]) == 0
    layers = capsys.readouterr().out.split()
    assert "input" in layers and "layer4.1.conv2" in layers
    assert main(["layers", "small_vgg"]) == 0  # the workflow's models need no checkpoint here
    assert "features.20" in capsys.readouterr().out.split()
    assert main(["layers", "resnet81"]) == 2
    assert "did you mean resnet18" in capsys.readouterr().err


def test_folder_of_mixed_images(images, tmp_path, capsys):
    out = tmp_path / "figures" / "maps.png"
    code = _explain(str(images), "--methods", "gradient", "grad_cam", "--layers", "input",
                    "layer3", "--batch-size", "3", "--out", str(out))  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    written = sorted(p.name for p in out.parent.iterdir())
    stems = ["grey", "photo", "rgb", "rgba"]
    assert [name.split("_")[1] for name in written] == stems  # maps_<image>_<class>.png
    for stem in stems:
        assert f"{stem}." in printed and "%" in printed  # the predictions, with probabilities
    figure = out.parent / written[0]
    with Image.open(figure) as drawn:
        assert drawn.size[0] > 400 and drawn.size[1] > 200
    record = read_png_provenance(figure)
    assert record["extra"]["settings"]["methods"] == ["gradient", "grad_cam"]
    assert any(key.startswith("image:") for key in record["checksums"])


def test_checkpoint_maps_equal_the_library(images, checkpoint, tmp_path):
    path, model = checkpoint
    saved = tmp_path / "maps.npz"
    code = main(["explain", str(images / "rgb.png"), str(images / "photo.jpg"), "--model",
                 "resnet18", "--checkpoint", str(path), "--device", "cpu", "--methods",
                 "gradient", "norm_grad", "--layers", "input", "layer2", "--save-maps", str(saved),
                 "--out", str(tmp_path / "f.png")])  # fmt: skip
    assert code == 0
    result = load_maps(saved)
    assert [Path(r.image).name for r in result.rows] == ["rgb.png", "photo.jpg"]
    assert f"model:{path.name}" in result.provenance["checksums"]
    preprocess = ImageNetPreprocess()
    for row in result.rows:
        image = read_image(row.image)
        x = preprocess(image)[None]
        with torch.no_grad():
            assert row.target == int(model(x).argmax())  # top-1 by default
        expected = backsal.saliency(model, x, [row.target], ["gradient", "norm_grad"],
                                    ["input", "layer2"], size=tuple(image.shape[-2:]))  # fmt: skip
        for method in ("gradient", "norm_grad"):
            for layer in ("input", "layer2"):
                got = row.maps[method][layer]
                assert got.shape == image.shape[-2:]
                torch.testing.assert_close(got, expected[method][layer][0, 0], rtol=1e-4,
                                           atol=1e-6 * expected[method][layer].abs().max())  # fmt: skip


def test_topk_explains_k_classes_from_one_forward(images, tmp_path, capsys):
    batches = []

    def count(module, inputs, output):
        if isinstance(module, torchvision.models.ResNet):
            batches.append(inputs[0].shape[0])

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        code = _explain(str(images / "rgb.png"), "--topk", "3", "--methods", "gradient",
                        "--save-maps", str(tmp_path / "maps.pt"), "--out", str(tmp_path / "f.png"))  # fmt: skip
    finally:
        hook.remove()
    assert code == 0
    # one forward to rank the classes, one forward (not three) for their saliency
    assert batches == [1, 1]
    rows = load_maps(tmp_path / "maps.pt").rows
    assert len(rows) == 3 and len({r.target for r in rows}) == 3
    assert [r.probability for r in rows] == sorted((r.probability for r in rows), reverse=True)
    assert len(list(tmp_path.glob("f_rgb_*.png"))) == 3
    listed = capsys.readouterr().out.splitlines()[0]
    assert listed.count("%") == 3 and rows[0].class_name in listed


def test_targets_by_index_and_name_and_meta(images, tmp_path):
    saved = tmp_path / "maps.npz"
    code = _explain(str(images / "grey.png"), "--target", "tench", "3", "--methods", "gradient",
                    "--meta-lr", "1e-3", "--save-maps", str(saved), "--out", str(tmp_path / "f.png"))  # fmt: skip
    assert code == 0
    rows = load_maps(saved).rows
    assert [r.target for r in rows] == [0, 3]
    assert [r.class_name for r in rows] == ["tench", "tiger shark"]
    assert load_maps(saved).provenance["extra"]["settings"]["meta_lr"] == 1e-3


def test_split_writes_one_figure_per_method_and_layer(images, tmp_path):
    out = tmp_path / "one.pdf"
    code = _explain(str(images / "rgba.png"), "--methods", "gradient", "grad_cam", "--layers",
                    "input", "layer4", "--split", "--out", str(out))  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["one_grad_cam_input.pdf", "one_grad_cam_layer4.pdf",
                     "one_gradient_input.pdf", "one_gradient_layer4.pdf"]  # fmt: skip


def test_model_factory(images, tmp_path):
    factory = tmp_path / "mine.py"
    factory.write_text(
        "import torchvision\n\ndef build():\n    return torchvision.models.resnet18(num_classes=4)\n"
    )
    code = main(["explain", str(images / "rgb.png"), "--model", f"{factory}:build", "--device",
                 "cpu", "--methods", "gradient", "--topk", "2", "--save-maps",
                 str(tmp_path / "m.npz"), "--out", str(tmp_path / "f.png")])  # fmt: skip
    assert code == 0
    rows = load_maps(tmp_path / "m.npz").rows
    assert {r.target for r in rows} <= {0, 1, 2, 3} and rows[0].class_name is None


def _garbage(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG not really")
    return str(path)


def _mismatched(tmp_path):
    path = tmp_path / "ten.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return str(path)


ERRORS = {
    "missing image": (lambda t, i: [str(t / "nope.png")], "does not exist"),
    "empty glob": (lambda t, i: [str(t / "*.jpeg")], "no image file matches"),
    "unreadable image": (lambda t, i: [_garbage(t)], "cannot read image"),
    "unknown model": (lambda t, i: [str(i / "rgb.png"), "--model", "resnet81"], "resnet18"),
    "unknown method": (lambda t, i: [str(i / "rgb.png"), "--methods", "gradeint"], "gradient"),
    "unknown layer": (lambda t, i: [str(i / "rgb.png"), "--layers", "layer9"], "layer9"),
    "unknown class": (lambda t, i: [str(i / "rgb.png"), "--target", "unicorn"], "unicorn"),
    "class index": (lambda t, i: [str(i / "rgb.png"), "--target", "1000"], "out of range"),
    "figure format": (lambda t, i: [str(i / "rgb.png"), "--out", str(t / "x.xyz")], ".xyz"),
    "maps format": (lambda t, i: [str(i / "rgb.png"), "--save-maps", str(t / "m.h5")], ".npz"),
    "weights name": (lambda t, i: [str(i / "rgb.png"), "--weights", "IMAGENET9K"], "IMAGENET1K_V1"),
    "checkpoint": (
        lambda t, i: [str(i / "rgb.png"), "--checkpoint", _mismatched(t)],
        "first mismatch: fc.weight: shape (10, 512) instead of (1000, 512)",
    ),
    "topk": (lambda t, i: [str(i / "rgb.png"), "--topk", "0"], "--topk"),
    "factory": (lambda t, i: [str(i / "rgb.png"), "--model", "nowhere:build"], "nowhere"),
    "workflow model": (
        lambda t, i: [str(i / "rgb.png"), "--model", "small_vgg", "--weights", "DEFAULT"],
        "trained by the workflow",
    ),
    "argument": (lambda t, i: [str(i / "rgb.png"), "--seed", "max"], "invalid choice"),
    "device": (lambda t, i: [str(i / "rgb.png"), "--device", "gpu"], "unknown device 'gpu'"),
    "colour map": (lambda t, i: [str(i / "rgb.png"), "--cmap", "virdis"], "viridis"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line_with_exit_code_2(case, images, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("saliency ran before the arguments were checked")

    monkeypatch.setattr(backsal, "saliency", never)
    make, expected = ERRORS[case]
    argv = ["explain", "--device", "cpu", *make(tmp_path, images)]
    if "--model" not in argv:
        argv += ["--model", "resnet18"]
    if "--weights" not in argv and "--checkpoint" not in argv:
        argv += ["--weights", "none"]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out" / "f.png")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backsal: error:"), captured.err
    assert expected in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("[mx].*"))


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(args, **env):
    environment = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "backsal.cli", *args], capture_output=True,
                          text=True, env=environment, timeout=300)  # fmt: skip


def test_offline_download_is_one_line_in_a_subprocess(images, tmp_path):
    # An empty torch cache and an unreachable network (a proxy on a closed local port): the
    # weights download through torchvision fails as it does offline.
    proxy = f"http://127.0.0.1:{_closed_port()}"
    result = _run(["explain", str(images / "rgb.png"), "--model", "resnet18", "--out",
                   str(tmp_path / "f.png")], TORCH_HOME=str(tmp_path / "torch"),
                  HTTPS_PROXY=proxy, https_proxy=proxy, NO_PROXY="", no_proxy="")  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # torch.hub announces the download first
    assert last.startswith("backsal: error: could not download ResNet18_Weights.IMAGENET1K_V1")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in last
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["explain", str(tmp_path / "missing.png"), "--model", "resnet18", "--weights", "none"]
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"backsal: error: image {tmp_path / 'missing.png'} does not exist"
    ]
    assert main([*args, "--debug"]) == 2
    shown = capsys.readouterr().err
    assert "Traceback" in shown and "ImageFileError" in shown


def test_the_workflows_small_model_through_its_checkpoint(images, tmp_path):
    from backsal.models.train import TrainConfig, build_small_model, save_checkpoint

    path = tmp_path / "small_vgg.pt"
    save_checkpoint(path, build_small_model("small_vgg"), model_name="small_vgg", num_classes=10,
                    config=TrainConfig(epochs=1), data_hash="0" * 64)  # fmt: skip
    saved = tmp_path / "maps.npz"
    code = main(["explain", str(images / "rgb.png"), "--model", "small_vgg", "--checkpoint",
                 str(path), "--target", "9", "--layers", "input", "features.20", "--save-maps",
                 str(saved), "--out", str(tmp_path / "f.png")])  # fmt: skip
    assert code == 0
    (row,) = load_maps(saved).rows
    assert row.class_name == "9" and row.maps["grad_cam"]["features.20"].shape == (64, 80)
    assert 0.0 < row.probability < 1.0  # multi-label: a sigmoid per class


def test_inputs_are_files_folders_and_globs_each_once(images):
    from backsal.data.files import find_images

    found = find_images([images / "rgb.png", images, f"{images}/**/*.png"])
    assert [p.name for p in found] == ["rgb.png", "grey.png", "photo.jpg", "rgba.png"]
    assert all(read_image(p).shape[0] == 3 for p in found)  # grey and RGBA decoded as RGB


def test_an_unknown_layer_is_named_with_its_neighbours_and_the_command_that_lists_them(
    images, tmp_path, capsys
):
    args = ["explain", str(images / "rgb.png"), "--model", "resnet18", "--weights", "none",
            "--layers", "layer9", "--out", str(tmp_path / "f.png")]  # fmt: skip
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "backsal: error: --layers: Unknown layer 'layer9'. Did you mean 'layer4'"
    )
    assert "`backsal layers resnet18` lists the model's layers" in line
    assert "layer1.0.conv1" not in line and len(line) < 400  # not every module of the model


@pytest.mark.parametrize(
    ("report", "shown"),
    [
        ("short", "short"),
        (
            "what failed\n" + "x " * 200 + "\nwhat to do",
            "what failed … what to do (--debug: all of it)",
        ),
        ("what failed\n" + "x " * 200, "what failed (--debug: all of it)"),
        ("y " * 200 + "end", "y " * 200 + "end"),  # one line: whole, its end is often the fix
    ],
)
def test_long_error_reports_keep_what_failed_and_what_to_do_once(
    report, shown, monkeypatch, capsys
):
    def fails(*args, **kwargs):
        raise files.ImageFileError(report)

    monkeypatch.setattr(files, "find_images", fails)
    assert main(["explain", "x.png", "--model", "resnet18", "--weights", "none"]) == 2
    assert capsys.readouterr().err == f"backsal: error: {shown}\n"
