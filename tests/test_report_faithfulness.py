"""Sanity-check and deletion tables and figures: the right numbers in the cells, provenance."""

import numpy as np
import pandas as pd
import pytest

from backsal.experiments import evaluate_deletion, evaluate_sanity
from backsal.provenance import read_provenance
from backsal.report.faithfulness import (
    deletion_figures,
    deletion_tables,
    sanity_figures,
    sanity_tables,
)
from report_synthetic import provenance

LAYERS = ["features.6", "features.20", "input"]
RUN = {"dataset": "digits", "model": "vgg", "arch": "small_vgg"}


def _sanity_records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for mode in ("cascading", "independent"):
        for depth, block in enumerate(["classifier", "features.18", "features.15"], 1):
            for method in ("gradient", "norm_grad"):
                for layer in LAYERS:
                    for record in range(4):
                        rows.append(
                            {"record": record, "query": 0, "class_id": 1, "randomisation": mode,
                             "depth": depth, "block": block, "method": method, "layer": layer,
                             "spearman": rng.uniform(-1, 1), "ssim": rng.uniform(0, 1)}
                        )  # fmt: skip
    records = pd.DataFrame(rows)
    records.loc[0, "spearman"] = np.nan  # a constant map
    return records


def test_sanity_table_and_outputs(tmp_path):
    records = _sanity_records()
    table = evaluate_sanity(records, **RUN)
    assert len(table) == 2 * 3 * 2 * 3 and (table["n"] == 4).all()
    first = table.query(
        "randomisation == 'cascading' and depth == 1 and method == 'gradient' and layer == 'features.6'"
    ).iloc[0]
    assert first["undefined"] == 1
    expected = records.query(
        "randomisation == 'cascading' and depth == 1 and method == 'gradient' and layer == 'features.6'"
    )["spearman"].dropna()
    assert first["spearman_mean"] == pytest.approx(expected.mean())
    record = provenance()
    paths = sanity_tables(table, tmp_path, layer_order=LAYERS, provenance=record)
    paths += sanity_figures(table, tmp_path, layer_order=LAYERS, provenance=record)
    assert sorted(p.name for p in paths) == sorted(
        ["sanity.csv", "sanity.md", "sanity.tex", "sanity_depth.pdf", "sanity_depth.png"]
    )
    for path in paths:
        assert read_provenance(path) == record
    markdown = (tmp_path / "digits" / "vgg" / "sanity.md").read_text()
    full = table.query(
        "randomisation == 'cascading' and depth == 3 and method == 'norm_grad' and layer == 'input'"
    ).iloc[0]
    assert f"ρ {full['spearman_mean']:.2f} ± {full['spearman_std']:.2f}" in markdown
    assert "classifier, features.18, features.15" in markdown


def test_deletion_table_and_outputs(tmp_path):
    rows = []
    for mode in ("deletion", "insertion"):
        for baseline in ("blur", "zero"):
            for method in ("gradient", "norm_grad"):
                for layer in LAYERS:
                    for record in range(3):
                        curve = np.linspace(1, 0, 5) if mode == "deletion" else np.linspace(0, 1, 5)
                        rows.append(
                            {"record": record, "query": 0, "class_id": 1, "mode": mode,
                             "baseline": baseline, "method": method, "layer": layer,
                             "auc": 0.5 + 0.1 * record, "curve": list(curve * (record + 1) / 3)}
                        )  # fmt: skip
    table = evaluate_deletion(pd.DataFrame(rows), **RUN)
    assert len(table) == 2 * 2 * 2 * 3
    assert table["auc_mean"].tolist() == pytest.approx([0.6] * len(table))
    np.testing.assert_allclose(table["curve"].iloc[0], np.linspace(1, 0, 5) * (1 + 2 + 3) / 9)
    record = provenance()
    paths = deletion_tables(table, tmp_path, layer_order=LAYERS, provenance=record)
    paths += deletion_figures(table, tmp_path, layer_order=LAYERS, provenance=record)
    assert len(paths) == 5
    markdown = (tmp_path / "digits" / "vgg" / "deletion.md").read_text()
    assert "del 0.600 / ins 0.600" in markdown and "4 steps" in markdown
