"""The per-image class-sensitivity scatter: one panel per method, undefined ρ counted."""

import numpy as np
import pandas as pd
import pytest

from backsal.provenance import read_provenance
from backsal.report.scatter import (
    label_records,
    plot_sensitivity_scatter,
    sensitivity_scatter_figures,
)
from report_synthetic import provenance


def _records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method in ("gradient", "norm_grad", "grad_cam"):
        for lr in (0.0, 0.01):
            for record in range(10):
                rows.append({"dataset": "digits", "model": "vgg", "arch": "small_vgg",
                             "record": record, "method": method, "layer": "features.20", "lr": lr,
                             "rho": rng.uniform(-1, 1), "p_true": rng.uniform(0, 1)})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.loc[0, "rho"] = np.nan
    return frame


def test_scatter_panels_and_outputs(tmp_path):
    figure = plot_sensitivity_scatter(_records(), "features.20")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titles) == 3 and "1 undefined" in titles[0] and titles[0].startswith("gradient")
    # ten plain points per panel, the NaN one left out
    assert [len(ax.collections[0].get_offsets()) for ax in figure.axes[:3]] == [9, 10, 10]
    with pytest.raises(ValueError, match="no plain"):
        plot_sensitivity_scatter(_records(), "input")
    record = provenance()
    paths = sensitivity_scatter_figures(
        _records(), tmp_path, layers={"vgg": "features.20"}, provenance=record
    )
    assert [p.name for p in paths] == ["sensitivity_scatter.pdf", "sensitivity_scatter.png"]
    assert read_provenance(paths[1]) == record


def test_label_records_names_each_run_and_its_arch():
    run = _records().drop(columns=["dataset", "model", "arch"])
    table = pd.DataFrame(
        [{"dataset": "digits", "model": "vgg", "arch": "small_vgg", "method": "gradient"}] * 2
    )
    labelled = label_records({("digits", "vgg"): run}, table)
    pd.testing.assert_frame_equal(labelled[_records().columns], _records())
    with pytest.raises(ValueError, match="no such run"):
        label_records({("digits", "resnet"): run}, table)
