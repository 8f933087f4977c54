"""Figures: written as PDF + PNG with provenance; the drawn data and labels are the table's."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from pypdf import PdfReader

from backsal.provenance import read_provenance
from backsal.report import (
    grid_figure,
    meta_figure,
    plot_grid,
    plot_meta,
    plot_pointing_layers,
    plot_qualitative,
    plot_sensitivity,
    pointing_layers_figure,
    qualitative_figure,
    read_examples,
    sensitivity_figure,
)
from report_synthetic import (
    DATASET,
    LAYERS,
    MODEL,
    meta_frame,
    pointing_frame,
    provenance,
    sensitivity_frame,
)


def _texts(figure) -> list[str]:
    """Every piece of text in a figure: suptitle, titles, legends, annotations, tick labels."""
    return [t.get_text() for t in figure.findobj(matplotlib.text.Text)]


def _check_written(paths, stem, record):
    assert paths == [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        assert path.stat().st_size > 0
        assert read_provenance(path) == record


def test_pointing_layers_figure(tmp_path):
    pointing, record = pointing_frame(), provenance()
    paths = pointing_layers_figure(pointing, tmp_path, layer_order=LAYERS, provenance=record)
    _check_written(paths, tmp_path / DATASET / MODEL / "pointing_layers", record)

    figure = plot_pointing_layers(pointing, layer_order=LAYERS)
    axes = [ax for ax in figure.axes if ax.get_title().startswith("subset")]
    assert [ax.get_title() for ax in axes] == ["subset: all", "subset: difficult"]
    lines = {line.get_label(): line for line in axes[0].lines}
    assert set(lines) == {"gradient", "linear_approx", "norm_grad", "grad_cam", "center"}  # no grid
    rows = pointing[(pointing["subset"] == "all") & (pointing["method"] == "norm_grad")]
    expected = [100 * rows.loc[rows["layer"] == layer, "accuracy"].iloc[0] for layer in LAYERS]
    np.testing.assert_allclose(lines["norm_grad"].get_ydata(), expected)
    assert lines["center"].get_linestyle() == "--"
    assert list(lines["center"].get_ydata()) == [65.0, 65.0]


def test_pointing_lines_break_at_a_missing_layer():
    pointing = pointing_frame()
    pointing = pointing[~((pointing["method"] == "gradient") & (pointing["layer"] == "features.8"))]
    figure = plot_pointing_layers(pointing, layer_order=LAYERS)
    line = next(line for line in figure.axes[0].lines if line.get_label() == "gradient")
    assert len(line.get_ydata()) == 4 and math.isnan(line.get_ydata()[2])


def test_grid_figure_annotates_values_and_leaves_missing_blank(tmp_path):
    pointing, record = pointing_frame(), provenance()
    paths = grid_figure(pointing, tmp_path, layer_order=LAYERS, provenance=record)
    _check_written(paths, tmp_path / DATASET / MODEL / "grid_all", record)
    figure = plot_grid(pointing, layer_order=LAYERS)
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_title() in LAYERS}
    assert list(panels) == LAYERS
    value = pointing[(pointing["method"] == "scaling/sum") & (pointing["layer"] == "features.3")
                     & (pointing["subset"] == "all")]["accuracy"].iloc[0]  # fmt: skip
    annotations = [t.get_text() for t in panels["features.3"].texts]
    assert f"{100 * value:.1f}" in annotations
    # real_conv is missing at the input: 3 grid entries there, 2 annotated cells
    assert len(panels["input"].texts) == 2 and len(panels["features.3"].texts) == 3


def test_sensitivity_figure_shows_undefined_counts(tmp_path):
    sensitivity, record = sensitivity_frame(), provenance()
    paths = sensitivity_figure(sensitivity, tmp_path, layer_order=LAYERS, provenance=record)
    stem = tmp_path / DATASET / MODEL / "sensitivity_layers"
    _check_written(paths, stem, record)
    assert "3 undefined" in PdfReader(stem.with_suffix(".pdf")).metadata.title

    figure = plot_sensitivity(sensitivity, layer_order=LAYERS)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["gradient (3 undefined)", "norm_grad (0 undefined)"]
    assert "3 undefined ρ" in figure.get_suptitle()
    assert "3×undef." in _texts(figure)
    # plotted means are the lr = 0 ones, with the std as error bars
    container = figure.axes[0].containers[1]  # norm_grad
    np.testing.assert_allclose(container.lines[0].get_ydata(), [0.8, 0.75, 0.7])


def test_meta_figure_log_lr_with_plain_baseline(tmp_path):
    meta, sensitivity, record = meta_frame(), sensitivity_frame(), provenance()
    paths = meta_figure(meta, sensitivity, tmp_path, layer_order=LAYERS, provenance=record)
    _check_written(paths, tmp_path / DATASET / MODEL / "meta", record)

    figure = plot_meta(
        meta, sensitivity, layer_order=LAYERS, dataset=DATASET, model=MODEL,
        layers=["features.8", "features.15"],
    )  # fmt: skip
    grid = np.array(figure.axes[:4]).reshape(2, 2)
    assert [ax.get_title() for ax in grid[0]] == ["features.8", "features.15"]
    top = grid[0, 0]
    assert top.get_xscale() == "log"
    dotted = [line for line in top.lines if line.get_linestyle() == ":"]
    assert sorted(float(line.get_ydata()[0]) for line in dotted) == [70.0, 70.0]  # lr = 0
    legend = _texts(figure)
    # 3 undefined at features.15 for each of the 3 lrs; the legend counts over the shown panels
    assert "gradient (9 undefined)" in legend and "dotted: lr = 0 (plain map)" in legend
    with pytest.raises(ValueError, match="no meta"):
        plot_meta(meta, None, layer_order=LAYERS, dataset=DATASET, model=MODEL, layers=["input"])


def _examples(path):
    rng = np.random.default_rng(0)
    k, h, w = 2, 24, 32
    arrays = {
        "images": rng.integers(0, 255, (k, 3, h, w), dtype=np.uint8),
        "targets": np.array([1, 0], dtype=np.int64),
        "class_names": np.array(["cat", "dog", "bird"]),
        "image_ids": np.array(["000001", "000002"]),
        "map__gradient__features.3": rng.random((k, 12, 16)).astype(np.float16),
        "map__gradient__input": rng.random((k, h, w)).astype(np.float16),
        "map__bias-sum__features.3": np.ones((k, 12, 16), dtype=np.float16),  # constant
    }
    np.savez(path, **arrays)
    return arrays


def test_qualitative_examples_read_and_drawn(tmp_path):
    arrays = _examples(tmp_path / "examples.npz")
    examples = read_examples(tmp_path / "examples.npz")
    assert set(examples.maps) == {"gradient", "bias/sum"}  # "-" turned back into "/"
    assert set(examples.maps["gradient"]) == {"features.3", "input"}
    np.testing.assert_array_equal(
        examples.maps["gradient"]["input"], arrays["map__gradient__input"]
    )

    record = provenance()
    paths = qualitative_figure(
        tmp_path / "examples.npz", tmp_path / "out", provenance=record, layer_order=LAYERS
    )
    assert [p.name for p in paths] == ["qualitative_000.pdf", "qualitative_000.png",
                                       "qualitative_001.pdf", "qualitative_001.png"]  # fmt: skip
    assert all(read_provenance(p) == record for p in paths)

    figure = plot_qualitative(
        examples, 0, methods=["gradient", "bias/sum"], layers=["input", "features.3"]
    )
    assert figure.get_suptitle() == "000001: class dog"
    texts = _texts(figure)
    assert {"image", "input", "features.3", "gradient", "bias/sum", "constant map"} <= set(texts)
    assert texts.count("image") == 1  # the image is shown once
    with pytest.raises(ValueError, match="no maps for methods"):
        plot_qualitative(examples, 0, methods=["grad_cam"], layers=["input"])


def test_save_figure_matches_a_tight_savefig_and_keeps_the_layout_engine(tmp_path):
    # save_figure lays the figure out once for both formats; the PNG must be the very one
    # that savefig(bbox_inches="tight") draws, pixel for pixel
    from matplotlib.figure import Figure
    from PIL import Image

    from backsal.report import save_figure

    def draw() -> Figure:
        figure = Figure(figsize=(5, 3), layout="constrained")
        axes = figure.subplots(2, 3)
        rng = np.random.default_rng(0)
        for ax in axes.flat:
            image = ax.imshow(rng.random((8, 8)))
            ax.set_title("a long-ish title")
        figure.colorbar(image, ax=axes, label="saliency")
        figure.suptitle("six maps")
        return figure

    figure = draw()
    engine = figure.get_layout_engine()
    written = save_figure(figure, tmp_path / "ours", provenance())
    assert [path.name for path in written] == ["ours.pdf", "ours.png"]
    assert figure.get_layout_engine() is engine
    draw().savefig(tmp_path / "tight.png", dpi=150, bbox_inches="tight")
    ours = np.asarray(Image.open(tmp_path / "ours.png").convert("L"), dtype=float)
    tight = np.asarray(Image.open(tmp_path / "tight.png").convert("L"), dtype=float)
    np.testing.assert_array_equal(ours, tight)
    assert len(PdfReader(written[0]).pages) == 1
