"""backsal.viz: maps over images, as the CLI and the report draw them."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from backsal import viz


def _image(height=40, width=60):
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


def _overlays(ax):
    """The map artists of a cell (the first image is the grey background)."""
    return ax.get_images()[1:]


def test_normalise_is_min_max_and_constant_maps_are_none():
    saliency = torch.tensor([[1.0, 3.0], [float("nan"), 5.0]])
    np.testing.assert_allclose(viz.normalise(saliency), [[0.0, 0.5], [0.0, 1.0]])
    assert viz.normalise(torch.full((4, 4), 2.0)) is None
    assert viz.normalise(np.full((2, 2), np.nan)) is None


def test_overlay_draws_the_map_over_a_grey_image_with_a_colour_bar():
    saliency = torch.zeros(1, 1, 10, 15)
    saliency[..., 2, 3] = 4.0  # any resolution, any leading singleton dimensions
    figure = viz.overlay(_image(), saliency, alpha=0.4, cmap="viridis", title="a title")
    assert isinstance(figure, Figure)
    ax, bar = figure.axes
    background, drawn = ax.get_images()
    assert background.get_cmap().name == "gray" and background.get_array().shape == (40, 60)
    assert drawn.get_cmap().name == "viridis" and drawn.get_alpha() == 0.4
    assert drawn.get_extent() == [0, 60, 40, 0]  # stretched over the whole image
    assert drawn.get_array().max() == 1.0 and drawn.get_array()[2, 3] == 1.0
    assert ax.get_title() == "a title" and "saliency" in bar.get_ylabel()


def test_grid_has_the_image_then_one_column_per_layer_and_one_colour_bar():
    maps = {
        "gradient": {"input": torch.rand(40, 60), "layer3": torch.rand(1, 5, 8)},
        "grad_cam": {"layer3": torch.full((5, 8), 3.0)},  # constant, and no input map
    }
    figure = viz.grid(maps, _image().permute(1, 2, 0).numpy(), layers=["input", "layer3"],
                      title="resnet18: tabby (41%)")  # fmt: skip
    *cells, bar = figure.axes
    assert len(cells) == 2 * 3 and "saliency" in bar.get_ylabel()
    assert [cells[1].get_title(), cells[2].get_title()] == ["input", "layer3"]
    assert [cells[1].get_ylabel(), cells[4].get_ylabel()] == ["gradient", "grad_cam"]
    assert cells[0].get_images()[0].get_array().shape == (40, 60, 3)  # the image, in colour
    assert not cells[3].axison  # below the image: nothing
    assert len(_overlays(cells[1])) == 1 and len(_overlays(cells[2])) == 1
    assert cells[4].get_images() == [] and not any(
        s.get_visible() for s in cells[4].spines.values()
    )
    assert [t.get_text() for t in cells[5].texts] == ["constant map"]
    assert figure.get_suptitle() == "resnet18: tabby (41%)"


def test_images_of_every_layout_and_bad_arguments():
    grey = np.zeros((20, 30), dtype=np.uint8)
    unit = np.random.default_rng(1).random((3, 20, 30))
    for image in (grey, unit, torch.zeros(1, 20, 30)):
        figure = viz.overlay(image, np.random.default_rng(2).random((5, 5)), colorbar=False)
        assert figure.axes[0].get_images()[0].get_array().shape == (20, 30)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(grey, np.ones((2, 2)), alpha=2.0)
    with pytest.raises(ValueError, match="saliency map must be"):
        viz.overlay(grey, np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="no maps"):
        viz.grid({}, grey)
