"""Caffe and ImageNet preprocessing against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from backsal.models.preprocess import (
    CaffePreprocess,
    ImageNetPreprocess,
    Preprocess,
    PreprocessFunction,
)


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


@pytest.mark.parametrize(
    ("size", "expected"),
    [((375, 500), (224, 298)), ((500, 375), (298, 224)), ((224, 224), (224, 224)),
     ((333, 500), (224, 336)), ((100, 50), (448, 224))],
)  # fmt: skip
def test_caffe_output_size_keeps_aspect_with_truncation(size, expected):
    assert CaffePreprocess().output_size(*size) == expected


def test_caffe_matches_torchray_formula():
    image = _image(375, 500)
    out = CaffePreprocess()(image.unsqueeze(0))
    assert out.shape == (1, 3, 224, 298) and out.dtype == torch.float32
    torch.testing.assert_close(CaffePreprocess()(image), out[0])  # one image: no batch dim
    # TorchRay: ToTensor (/255), bilinear resize, Normalize(mean=bgr_mean[::-1]/255, std=1/255)
    x = image.float().div(255).unsqueeze(0)
    x = F.interpolate(x, (224, 298), mode="bilinear", align_corners=False)
    mean = torch.tensor([123.68, 116.779, 103.939]).div(255).view(1, 3, 1, 1)
    reference = (x - mean) / (1 / 255)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-3)


def test_caffe_constant_image_is_mean_subtracted_in_rgb_order():
    image = torch.stack([torch.full((300, 400), v, dtype=torch.uint8) for v in (200, 100, 50)])
    out = CaffePreprocess()(image)
    expected = torch.tensor([200 - 123.68, 100 - 116.779, 50 - 103.939])
    torch.testing.assert_close(out[:, 10, 10], expected)


def test_imagenet_close_to_pil_pipeline():
    image = _image(300, 200, seed=3)
    out = ImageNetPreprocess()(image)
    assert out.shape == (3, 224, 224)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    reference = transforms.Compose(
        [
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )(pil)
    # PIL rounds the resized pixels to uint8 and so does a uint8 tensor resize: ~1 grey level
    assert (out - reference).abs().max() < 0.02


def test_imagenet_constant_and_batch():
    batch = torch.full((2, 3, 50, 60), 128, dtype=torch.uint8)
    out = ImageNetPreprocess()(batch)
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[1, :, 7, 9], (128 / 255 - mean) / std)
    assert ImageNetPreprocess().output_size(50, 60) == (224, 224)


def test_shape_errors_and_protocol():
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        CaffePreprocess()(torch.zeros(1, 224, 224))
    for preprocess in (CaffePreprocess(), ImageNetPreprocess()):
        assert isinstance(preprocess, Preprocess)
        assert preprocess.describe()["kind"] in ("caffe", "imagenet")


def test_preprocess_function_adapter():
    def scale(image: torch.Tensor) -> torch.Tensor:
        return image.float() / 255

    preprocess = PreprocessFunction(scale, "uint8 / 255")
    assert isinstance(preprocess, Preprocess)
    image = _image(5, 7)
    torch.testing.assert_close(preprocess(image), image.float() / 255)
    assert preprocess(torch.stack([image, image])).shape == (2, 3, 5, 7)
    assert preprocess.output_size(5, 7) == (5, 7)
    assert preprocess.describe()["function"].endswith("scale")
