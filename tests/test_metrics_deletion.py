"""Deletion and insertion: equal to a per-pixel loop, hand-computed toy cases, bad input."""

import numpy as np
import pytest
import torch
from torch import nn

import backsal
from backsal.metrics.deletion import (
    BLUR_FRACTION,
    CPU_FORWARD_PIXELS,
    DEVICE_FORWARD_IMAGES,
    baseline_images,
    curve_auc,
    deletion_insertion,
    forward_batch_size,
    pixel_ranks,
    step_counts,
)
from backsal.metrics.pointing import gaussian_smooth


def _reference_curve(model, image, target, saliency, base, steps, mode, probability):
    """One image at a time, pixels perturbed one by one in the map's order."""
    height, width = saliency.shape
    values = saliency.flatten().tolist()
    order = sorted(range(height * width), key=lambda p: (-values[p], p))
    curve = []
    for i in range(steps + 1):
        count = round(i * height * width / steps)
        canvas = image.clone() if mode == "deletion" else base.clone()
        source = base if mode == "deletion" else image
        for p in order[:count]:
            row, col = divmod(p, width)
            canvas[:, row, col] = source[:, row, col]
        with torch.no_grad():
            logits = model(canvas[None])[0]
        if probability == "softmax":
            curve.append(float(logits.softmax(0)[target]))
        else:
            curve.append(float(logits[target].sigmoid()))
    # trapezoidal rule, written out
    area = sum((curve[i] + curve[i + 1]) / 2 for i in range(steps)) / steps
    return curve, area


@pytest.mark.parametrize("baseline", ["blur", "zero"])
@pytest.mark.parametrize("probability", ["softmax", "sigmoid"])
def test_deletion_insertion_equal_per_pixel_loop(tiny_net, baseline, probability):
    generator = torch.Generator().manual_seed(4)
    images = torch.randn(2, 3, 7, 9, generator=generator, dtype=torch.float64)
    targets = torch.tensor([1, 4])
    maps = backsal.saliency(
        tiny_net, images, targets, ["gradient", "norm_grad"], ["conv2", "input"]
    )
    # a map with ties: the row-major tie break must hold
    maps["gradient"]["conv2"] = maps["gradient"]["conv2"].round(decimals=1)
    steps = 5
    result = deletion_insertion(
        tiny_net,
        images,
        targets,
        maps,
        steps=steps,
        baseline=baseline,
        probability=probability,
        batch_size=7,  # not a divisor of the 2 · 6 images of a curve
    )
    base = (
        torch.zeros_like(images) if baseline == "zero" else gaussian_smooth(images, BLUR_FRACTION)
    )
    for method, by_layer in maps.items():
        for layer, m in by_layer.items():
            full = torch.nn.functional.interpolate(
                m, size=(7, 9), mode="bilinear", align_corners=False
            )
            for row in range(2):
                for mode in ("deletion", "insertion"):
                    curve, area = _reference_curve(
                        tiny_net, images[row], int(targets[row]), full[row, 0], base[row],
                        steps, mode, probability,
                    )  # fmt: skip
                    got = result.curves[mode][method][layer][row]
                    np.testing.assert_allclose(got.numpy(), curve, rtol=0, atol=1e-6)
                    assert float(result.auc[mode][method][layer][row]) == pytest.approx(
                        area, abs=1e-6
                    )
    assert result.fractions == tuple(n / 63 for n in step_counts(63, steps))
    assert len(result.records()) == 2 * 4 * 2


def test_steps_without_the_map_share_one_pass_per_row():
    """Steps that perturb no pixel or every pixel run once per row for all maps and modes."""
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(9, 4)).double()
    # N = 3 pixels and k = 8: n = [0, 0, 1, 1, 2, 2, 2, 3, 3], so steps 1 and 7 also show
    # the image or the baseline, and only steps 2 to 6 depend on the map
    images = torch.randn(2, 3, 1, 3, generator=generator, dtype=torch.float64)
    targets = torch.tensor([2, 0])
    maps = {
        "a": {"input": torch.rand(2, 1, 1, 3, generator=generator, dtype=torch.float64)},
        "b": {"input": torch.rand(2, 1, 1, 3, generator=generator, dtype=torch.float64)},
    }
    seen: list[int] = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return self.inner(x)

    steps = 8
    assert step_counts(3, steps) == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    result = deletion_insertion(
        Counting(), images, targets, maps, steps=steps, baseline="zero", batch_size=4
    )
    # 2 rows × (image + baseline) + 2 rows × 2 maps × 2 modes × 5 steps, the 40 curve images
    # in one stream of full batches across the curves (a curve has 10)
    assert seen == [4] + [4] * 10
    seen.clear()
    again = deletion_insertion(
        Counting(), images, targets, maps, steps=steps, baseline="zero", batch_size=16
    )
    assert seen == [4, 16, 16, 8]
    for mode, by_method in result.curves.items():
        for method, by_layer in by_method.items():
            assert torch.equal(by_layer["input"], again.curves[mode][method]["input"])
    base = torch.zeros_like(images)
    for method, by_layer in maps.items():
        for row in range(2):
            for mode in ("deletion", "insertion"):
                curve, area = _reference_curve(
                    net, images[row], int(targets[row]), by_layer["input"][row, 0],
                    base[row], steps, mode, "softmax",
                )  # fmt: skip
                got = result.curves[mode][method]["input"][row]
                np.testing.assert_allclose(got.numpy(), curve, rtol=0, atol=1e-6)
                assert float(result.auc[mode][method]["input"][row]) == pytest.approx(
                    area, abs=1e-6
                )


class _SumModel(nn.Module):
    """Logit 0 = sum of the pixels, logit 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], 1)


def test_toy_case_by_hand():
    image = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]], dtype=torch.float64)
    maps = {"m": {"input": image.clone()}}  # rank = value order
    result = deletion_insertion(
        _SumModel(), image, [0], maps, steps=4, baseline="zero", probability="sigmoid"
    )
    sig = torch.sigmoid(torch.tensor([10.0, 6.0, 3.0, 1.0, 0.0], dtype=torch.float64))
    np.testing.assert_allclose(result.curves["deletion"]["m"]["input"][0].numpy(), sig.numpy())
    expected = (sig.sum() - (sig[0] + sig[-1]) / 2) / 4
    assert float(result.auc["deletion"]["m"]["input"][0]) == pytest.approx(float(expected))
    inserted = torch.sigmoid(torch.tensor([0.0, 4.0, 7.0, 9.0, 10.0], dtype=torch.float64))
    np.testing.assert_allclose(result.curves["insertion"]["m"]["input"][0].numpy(), inserted)
    # softmax of [s, 0] is sigmoid(s): the same numbers
    soft = deletion_insertion(_SumModel(), image, [0], maps, steps=4, baseline="zero")
    np.testing.assert_allclose(soft.curves["deletion"]["m"]["input"][0].numpy(), sig.numpy())


def test_helpers_by_hand():
    assert step_counts(10, 4) == [0, 2, 5, 8, 10]  # 2.5 and 7.5 round half to even
    ranks = pixel_ranks(torch.tensor([[[0.5, 0.9], [0.5, 0.1]]]))
    assert ranks.tolist() == [[1, 0, 2, 3]]  # tie 0.5: the first in row-major order first
    assert curve_auc(torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [0.75]
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(baseline_images(x, "zero"), torch.zeros_like(x))
    assert torch.equal(baseline_images(x, "blur"), gaussian_smooth(x, BLUR_FRACTION))


class _Viewing(nn.Module):
    """A float32 CNN whose head calls ``view`` on an activation: channels-last batches fail."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).relu()
        return self.fc(y.view(y.shape[0], -1))


def _float32_case():
    generator = torch.Generator().manual_seed(6)
    images = torch.randn(3, 3, 6, 8, generator=generator)
    maps = {"m": {"input": torch.rand(3, 1, 6, 8, generator=generator)}}
    return images, torch.tensor([0, 2, 4]), maps


def test_float32_on_the_cpu_runs_channels_last_batches_equal_to_the_loop():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()  # fmt: skip
    images, targets, maps = _float32_case()
    layouts: list[bool] = []
    net.register_forward_pre_hook(
        lambda _, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    result = deletion_insertion(net, images, targets, maps, steps=4, baseline="blur")
    assert layouts and all(layouts)
    base = gaussian_smooth(images, BLUR_FRACTION)
    for row in range(3):
        for mode in ("deletion", "insertion"):
            curve, _ = _reference_curve(
                net, images[row], int(targets[row]), maps["m"]["input"][row, 0], base[row],
                4, mode, "softmax",
            )  # fmt: skip
            got = result.curves[mode]["m"]["input"][row].numpy()
            np.testing.assert_allclose(got, curve, rtol=0, atol=1e-6)
    layouts.clear()
    nchw = deletion_insertion(
        net, images, targets, maps, steps=4, baseline="blur", memory_format="contiguous"
    )
    assert layouts and not any(layouts)
    np.testing.assert_allclose(
        nchw.curves["deletion"]["m"]["input"].numpy(),
        result.curves["deletion"]["m"]["input"].numpy(),
        rtol=0, atol=1e-6,
    )  # fmt: skip


def test_a_model_that_cannot_take_channels_last_falls_back_or_is_explained():
    net = _Viewing().eval()
    images, targets, maps = _float32_case()
    with pytest.raises(RuntimeError):  # the model itself, as written
        net(images.contiguous(memory_format=torch.channels_last))
    auto = deletion_insertion(net, images, targets, maps, steps=4, baseline="zero")
    nchw = deletion_insertion(
        net, images, targets, maps, steps=4, baseline="zero", memory_format="contiguous"
    )
    for mode in ("deletion", "insertion"):
        assert torch.equal(auto.curves[mode]["m"]["input"], nchw.curves[mode]["m"]["input"])
    with pytest.raises(RuntimeError, match="memory_format='contiguous'"):
        deletion_insertion(net, images, targets, maps, steps=4, memory_format="channels_last")
    with pytest.raises(ValueError, match="Unknown memory_format"):
        deletion_insertion(net, images, targets, maps, steps=4, memory_format="nhwc")


def test_forward_batch_size_by_device_and_image_size():
    assert forward_batch_size(torch.empty(1, 3, 224, 224)) == 4
    assert forward_batch_size(torch.empty(1, 3, 64, 64)) == CPU_FORWARD_PIXELS // 4096 == 49
    assert forward_batch_size(torch.empty(1, 3, 1000, 1000)) == 1
    assert forward_batch_size(torch.empty(1, 3, 64, 64, device="meta")) == DEVICE_FORWARD_IMAGES


def test_bad_input_is_explained(tiny_net):
    images = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    maps = {"m": {"input": torch.rand(2, 1, 7, 9, dtype=torch.float64)}}
    with pytest.raises(ValueError, match="positive number of perturbation steps"):
        deletion_insertion(tiny_net, images, [0, 1], maps, steps=0)
    with pytest.raises(ValueError, match="Unknown baseline"):
        deletion_insertion(tiny_net, images, [0, 1], maps, baseline="noise")
    with pytest.raises(ValueError, match="targets must be"):
        deletion_insertion(tiny_net, images, [0], maps)
    with pytest.raises(ValueError, match="B = 2"):
        deletion_insertion(tiny_net, images, [0, 1], {"m": {"input": torch.rand(3, 1, 7, 9)}})
    bad = {"m": {"input": torch.full((2, 1, 7, 9), float("nan"))}}
    with pytest.raises(ValueError, match="NaN"):
        deletion_insertion(tiny_net, images, [0, 1], bad)
