"""backsal.viz: maps over images, as the CLI and the report draw them."""

import itertools
import re

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from backsal import viz


def _image(height=40, width=60):
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


def test_normalise_is_min_max_and_constant_maps_are_none():
    saliency = torch.tensor([[1.0, 3.0], [float("nan"), 5.0]])
    np.testing.assert_allclose(viz.normalise(saliency), [[0.0, 0.5], [0.0, 1.0]])
    assert viz.normalise(torch.full((4, 4), 2.0)) is None
    assert viz.normalise(np.full((2, 2), np.nan)) is None


def _blend_loop(image, saliency, alpha, cmap, factor):
    """The slow reference of viz.blend: every output pixel on its own, the bilinear weights
    written out (pixel centres aligned, the border clamped), then the two layers mixed."""
    rgb = np.asarray(image, dtype=np.float64)  # [H, W, 3]
    values = np.asarray(saliency, dtype=np.float64)
    values = (values - values.min()) / (values.max() - values.min())
    height, width = rgb.shape[0] * factor, rgb.shape[1] * factor
    h, w = values.shape
    colours = matplotlib.colormaps[cmap]
    out = np.zeros((height, width, 3))
    for i in range(height):
        for j in range(width):
            y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1)
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            value = (1 - fy) * ((1 - fx) * values[y0, x0] + fx * values[y0, x1]) + fy * (
                (1 - fx) * values[y1, x0] + fx * values[y1, x1]
            )
            grey = rgb[i // factor, j // factor].mean() / 255.0
            out[i, j] = (1 - alpha) * grey + alpha * np.asarray(colours(value)[:3])
    return out


@pytest.mark.parametrize("factor", [1, 3])
def test_blend_equals_a_per_pixel_loop(factor):
    image = _image(6, 9).permute(1, 2, 0).numpy()
    saliency = np.random.default_rng(3).random((4, 5))
    shown, drawn = viz.blend(image, saliency, alpha=0.4, cmap="viridis", factor=factor)
    assert drawn and shown.shape == (6 * factor, 9 * factor, 3)
    # the colour map's lookup table quantises the value to 1/256: compare at that precision
    np.testing.assert_allclose(shown, _blend_loop(image, saliency, 0.4, "viridis", factor),
                               atol=0.4 / 255 + 1e-9)  # fmt: skip
    grey, drawn = viz.blend(image, np.full((4, 5), 2.0))
    assert not drawn
    np.testing.assert_allclose(grey[..., 0], image.astype(np.float64).mean(axis=2) / 255)


def test_overlay_draws_the_blend_with_a_colour_bar():
    saliency = torch.zeros(1, 1, 10, 15)
    saliency[..., 2, 3] = 4.0  # any resolution, any leading singleton dimensions
    figure = viz.overlay(_image(), saliency, alpha=0.4, cmap="viridis", title="a title")
    assert isinstance(figure, Figure)
    ax, bar = figure.axes
    (drawn,) = ax.get_images()
    assert drawn.get_extent() == [0, 60, 40, 0]  # stretched over the whole image
    factor = drawn.get_array().shape[0] // 40  # small images are upscaled before the stretch
    assert factor > 1 and drawn.get_array().shape == (40 * factor, 60 * factor, 3)
    expected, _ = viz.blend(_image(), saliency, alpha=0.4, cmap="viridis", factor=factor)
    np.testing.assert_array_equal(drawn.get_array(), expected)
    assert ax.get_title() == "a title" and "saliency" in bar.get_ylabel()
    constant = viz.overlay(_image(), torch.ones(5, 5))
    assert [t.get_text() for t in constant.axes[0].texts] == ["constant map"]


def _texts(ax, gid):
    return [t.get_text() for t in ax.texts if t.get_gid() == gid]


def test_grid_has_the_image_then_one_column_per_layer_and_one_colour_bar():
    maps = {
        "gradient": {"input": torch.rand(40, 60), "layer3": torch.rand(1, 5, 8)},
        "grad_cam": {"layer3": torch.full((5, 8), 3.0)},  # constant, and no input map
    }
    image = _image().permute(1, 2, 0).numpy()
    figure = viz.grid(maps, image, layers=["input", "layer3"],
                      title="resnet18: tabby (41%)")  # fmt: skip
    ax, bar = figure.axes
    assert "saliency" in bar.get_ylabel()
    assert _texts(ax, "column") == ["image", "input", "layer3"]
    assert _texts(ax, "row") == ["gradient", "grad_cam"]
    assert _texts(ax, "constant") == ["constant map"]
    assert figure.get_suptitle() == "resnet18: tabby (41%)"
    # the axes shows the mosaic: the image in colour, each map's blend in its cell, white elsewhere
    drawn = viz.mosaic(maps, image, ["gradient", "grad_cam"], ["input", "layer3"])
    np.testing.assert_array_equal(ax.get_images()[0].get_array(),
                                  np.round(drawn.pixels * 255).astype(np.uint8))  # fmt: skip
    factor = drawn.cell_size[0] // 40
    assert drawn.cell_size == (40 * factor, 60 * factor)
    assert drawn.drawn == {(0, 0), (0, 1), (0, 2), (1, 2)} and drawn.constant == {(1, 2)}
    np.testing.assert_array_equal(drawn.pixels[drawn.box(0, 0)], _upscaled(image, factor) / 255)
    for (row, column), method, layer in [((0, 1), "gradient", "input"),
                                         ((0, 2), "gradient", "layer3"),
                                         ((1, 2), "grad_cam", "layer3")]:  # fmt: skip
        expected, _ = viz.blend(image, maps[method][layer], factor=factor)
        np.testing.assert_array_equal(drawn.pixels[drawn.box(row, column)], expected)
    for empty in [(1, 0), (1, 1)]:  # below the image, and grad_cam's missing input map
        assert (drawn.pixels[drawn.box(*empty)] == 1.0).all()
    # cells do not overlap, and the rows and columns are in order
    assert list(drawn.row_tops) == sorted(drawn.row_tops)
    assert all(b - a > drawn.cell_size[1] for a, b in itertools.pairwise(drawn.column_lefts))


def test_vector_files_embed_the_drawn_pixels_and_raster_ones_resample_them_as_imshow(tmp_path):
    from PIL import Image
    from pypdf import PdfReader

    pixels = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    figures = {}
    for name in ("reference", "shown"):
        figure = Figure(figsize=(3, 2.5))
        ax = figure.add_axes((0.1, 0.1, 0.8, 0.8))
        if name == "reference":
            ax.imshow(pixels, extent=(0, 120, 90, 0), interpolation="antialiased")
        else:
            viz._show_pixels(ax, pixels, 120, 90)
        figures[name] = figure
        for suffix in ("png", "pdf"):
            figure.savefig(tmp_path / f"{name}.{suffix}", dpi=150)
    # the PNG (Agg) is imshow's, pixel for pixel; so are the axes' limits and aspect
    reference, shown = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in figures)
    np.testing.assert_array_equal(shown, reference)
    axes = [figure.axes[0] for figure in figures.values()]
    assert [(a.get_xlim(), a.get_ylim(), a.get_aspect()) for a in axes][0] == (
        axes[1].get_xlim(), axes[1].get_ylim(), axes[1].get_aspect(),
    )  # fmt: skip
    # the PDF holds the pixels themselves, not a resampling at 150 dpi: stored bottom row first
    # and drawn through a matrix that flips them back upright (a negative vertical scale)
    page = PdfReader(tmp_path / "shown.pdf").pages[0]
    (embedded,) = page.images
    np.testing.assert_array_equal(np.asarray(embedded.image.convert("RGB")), pixels[::-1])
    content = page.get_contents().get_data().decode()
    (matrix,) = re.findall(r"([-\d. ]+) cm /I1 Do", content)
    assert float(matrix.split()[3]) < 0
    (resampled,) = PdfReader(tmp_path / "reference.pdf").pages[0].images
    assert resampled.image.size[0] > 120


def _upscaled(image, factor):
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def test_images_of_every_layout_and_bad_arguments():
    grey = np.zeros((20, 30), dtype=np.uint8)
    unit = np.random.default_rng(1).random((3, 20, 30))
    for image in (grey, unit, torch.zeros(1, 20, 30)):
        figure = viz.overlay(image, np.random.default_rng(2).random((5, 5)), colorbar=False)
        shown = figure.axes[0].get_images()[0].get_array()
        factor = shown.shape[0] // 20
        assert shown.shape == (20 * factor, 30 * factor, 3)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(grey, np.ones((2, 2)), alpha=2.0)
    with pytest.raises(ValueError, match="saliency map must be"):
        viz.overlay(grey, np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="no maps"):
        viz.grid({}, grey)
