"""Figures of maps (phase grid, combined layers) and the NormGrad identity table."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from backsal.combination import combine
from backsal.evaluation import Examples
from backsal.methods import PHASE1, PHASE2
from backsal.provenance import read_provenance
from backsal.report.maps import (
    _combined,
    combined_figures,
    normgrad_identity,
    normgrad_identity_table,
    phase_grid_figures,
    plot_phase_grid,
)
from report_synthetic import provenance

LAYERS = ["features.6", "features.20"]


@pytest.fixture
def examples() -> Examples:
    rng = np.random.default_rng(0)
    maps = {}
    for p1 in PHASE1:
        for p2 in PHASE2:
            maps[f"{p1}/{p2}"] = {layer: rng.random((2, 16, 16)) for layer in LAYERS}
    for name in ("norm_grad", "norm_grad_proper", "gradient"):
        maps[name] = {layer: rng.random((2, 16, 16)) for layer in LAYERS}
    maps["norm_grad_proper"]["features.6"][1] = 1.0  # a constant map: undefined ρ
    return Examples(
        images=rng.integers(0, 255, (2, 3, 16, 16), dtype=np.uint8),
        targets=np.array([0, 1]),
        class_names=["a", "b"],
        image_ids=["img0", "img1"],
        maps=maps,
    )


def test_phase_grid_has_one_cell_per_phase_pair(examples, tmp_path):
    figure = plot_phase_grid(examples, 0, "features.6")
    # phase-1 rows, the image column then the phase-2 columns, every cell drawn
    cells = figure.axes[0]
    assert [t.get_text() for t in cells.texts if t.get_gid() == "row"] == list(PHASE1)
    assert [t.get_text() for t in cells.texts if t.get_gid() == "column"] == ["image", *PHASE2]
    record = provenance()
    paths = phase_grid_figures(
        examples, tmp_path, layers=["features.20"], provenance=record, indices=[1]
    )
    assert [p.name for p in paths] == [
        "phase_grid_features.20_001.pdf",
        "phase_grid_features.20_001.png",
    ]
    assert read_provenance(paths[1]) == record
    with pytest.raises(ValueError, match="no grid map"):
        plot_phase_grid(examples, 0, "input")


def test_combined_maps_are_the_library_combination(examples, tmp_path):
    for mode in ("sum", "product"):
        expected = combine(
            {
                layer: torch.from_numpy(examples.maps["gradient"][layer]).float()[:, None]
                for layer in LAYERS
            },
            "uniform",
            mode,
        )[:, 0].numpy()
        np.testing.assert_allclose(_combined(examples, "gradient", LAYERS, mode), expected)
    paths = combined_figures(
        examples,
        tmp_path,
        methods=["gradient"],
        layers=LAYERS,
        provenance=provenance(),
        indices=[0],
    )
    assert [p.name for p in paths] == ["combined_000.pdf", "combined_000.png"]


def test_normgrad_identity_equals_scipy(examples, tmp_path):
    rho = normgrad_identity(examples, [*LAYERS, "input"])
    assert list(rho["layer"]) == ["features.6", "features.6", "features.20", "features.20"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        for row in rho.itertuples():
            k = examples.image_ids.index(row.image_id)
            expected = stats.spearmanr(
                examples.maps["norm_grad"][row.layer][k].ravel(),
                examples.maps["norm_grad_proper"][row.layer][k].ravel(),
            ).statistic
            if np.isnan(expected):
                assert np.isnan(row.rho)
            else:
                assert row.rho == pytest.approx(expected, abs=1e-12)
    paths = normgrad_identity_table(examples, tmp_path, layers=LAYERS, provenance=provenance())
    markdown = (tmp_path / "normgrad_identity.md").read_text()
    assert "(n=1)" in markdown and "(n=2)" in markdown
    assert len(pd.read_csv(paths[0], comment="#")) == 4


def test_meta_examples_and_their_figure(tmp_path):
    """The job stores plain and ±L maps under their labels; −L differs from +L; the figure has a
    row per method and sign and a column per lr."""
    from backsal.data.synthetic import cluttered_digits
    from backsal.experiments.meta_examples import meta_label, run_meta_examples
    from backsal.experiments.resources import OpenedModel
    from backsal.meta import meta_saliency
    from backsal.models import get_spec
    from backsal.report.maps import plot_meta_maps

    digits = cluttered_digits("test", 3, seed=3, cache_dir=tmp_path)
    spec = get_spec("small_vgg")
    opened = OpenedModel(
        name="vgg", model=spec.build(seed=1), spec=spec, checksum="t", arch="small_vgg"
    )
    from backsal.experiments import MetaSettings

    settings = MetaSettings.from_config(
        {"methods": ["gradient"], "layers": ["features.13", "features.20"], "lrs": [0.01, 0.1]}
    )
    kept = run_meta_examples(digits, opened, settings, 1)
    assert {layer for by in kept.maps.values() for layer in by} == {"features.20"}  # the deepest
    up = kept.maps[meta_label("gradient", "-L", 0.1)]["features.20"].astype(np.float32)
    down = kept.maps[meta_label("gradient", "+L", 0.1)]["features.20"].astype(np.float32)
    assert meta_label("gradient", "-L", 0.0) not in kept.maps
    assert not np.allclose(up, down)
    # the stored map is the library's meta map of that query, at display size
    from backsal.data.batching import QueryBatches

    batches = QueryBatches(digits, spec.preprocess, max_rows=1)
    batch = batches.load(batches.plans[0])
    direct = meta_saliency(
        opened.model, batch.row_images()[:1], batch.targets[:1], ["gradient"], ["features.20"],
        [0.1], negate=True, size=up.shape[-2:],
    )[0.1]["gradient"]["features.20"]  # fmt: skip
    np.testing.assert_allclose(up[0], direct[0, 0].numpy(), rtol=1e-2, atol=1e-3)  # float16
    figure = plot_meta_maps(kept, 0, "features.20")
    rows = [t.get_text() for t in figure.axes[0].texts if t.get_gid() == "row"]
    columns = [t.get_text() for t in figure.axes[0].texts if t.get_gid() == "column"]
    assert rows == ["gradient +L", "gradient −L"] and len(columns) == 3 + 1
