"""Tables: the right numbers in the right cells, in CSV, Markdown and LaTeX, with provenance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backsal.provenance import read_provenance
from backsal.report import (
    combination_table,
    compare_with_reference,
    load_reference,
    meta_tables,
    pointing_table,
    reference_comparison,
    sensitivity_table,
)
from report_synthetic import (
    ARCH,
    DATASET,
    GRID,
    LAYERS,
    MODEL,
    NAMED,
    combination_frame,
    meta_frame,
    pointing_frame,
    provenance,
    sensitivity_frame,
)


def _md_table(path) -> list[list[str]]:
    """Markdown table lines as lists of cells (header first, bold markers removed)."""
    return [
        [c.strip().replace("**", "") for c in line.strip("|").split(" | ")]
        for line in path.read_text().splitlines()
        if line.startswith("| ")
    ]


def _md_rows(path) -> dict[str, list[str]]:
    """Markdown table rows by their (unique) first cell."""
    table = _md_table(path)
    rows = {cells[0]: cells[1:] for cells in table}
    assert len(rows) == len(table), "first cells are not unique"
    return rows


def test_pointing_table_cells_order_and_provenance(tmp_path):
    pointing = pointing_frame()
    record = provenance()
    paths = pointing_table(pointing, tmp_path, layer_order=LAYERS, provenance=record)
    stem = tmp_path / DATASET / MODEL
    expected = {
        stem / f"pointing_{s}{x}" for s in ("all", "difficult") for x in (".csv", ".md", ".tex")
    }
    assert set(paths) == expected and all(p.exists() for p in expected)
    for path in expected:
        assert read_provenance(path) == record

    table = pd.read_csv(stem / "pointing_all.csv", comment="#", index_col="method")
    assert list(table.columns) == LAYERS
    # named methods first (registry order), then the grid (phase order), then the baseline
    assert list(table.index) == ["gradient", "linear_approx", "norm_grad", "grad_cam",
                                 "bias/sum", "scaling/sum", "real_conv/norm", "center"]  # fmt: skip
    rows = pointing[pointing["subset"] == "all"]
    for method in NAMED + GRID:
        for layer in LAYERS:
            source = rows[(rows["method"] == method) & (rows["layer"] == layer)]["accuracy"]
            if len(source):
                assert table.loc[method, layer] == pytest.approx(round(source.iloc[0] * 100, 1))
    assert math.isnan(table.loc["real_conv/norm", "input"])  # missing → blank in CSV
    assert (table.loc["center"] == 65.0).all()  # 130 / 200, repeated under every layer

    md = _md_rows(stem / "pointing_all.md")
    assert md["real_conv/norm"][0] == "–"
    assert md["gradient"][1] == f"{table.loc['gradient', 'features.3']:.1f}"
    tex = (stem / "pointing_all.tex").read_text()
    assert "real\\_conv/norm & --" in tex and "\\textbf{" in tex
    # the best value of a column (center excluded) is bold in Markdown
    best = table.drop(index="center")["features.8"].max()
    assert f"**{best:.1f}**" in (stem / "pointing_all.md").read_text()


def test_pointing_table_method_order_and_layer_mapping(tmp_path):
    pointing = pointing_frame()
    paths = pointing_table(
        pointing,
        tmp_path,
        layer_order={ARCH: LAYERS},
        method_order=["grad_cam", "gradient", "scaling/sum"],
        provenance=provenance(),
        dataset=DATASET,
        model=MODEL,
    )
    table = pd.read_csv(paths[0], comment="#", index_col="method")
    assert list(table.index)[:4] == ["grad_cam", "gradient", "linear_approx", "norm_grad"]
    assert list(table.index)[4] == "scaling/sum"


def test_pointing_table_clear_errors(tmp_path):
    pointing = pointing_frame()
    with pytest.raises(ValueError, match="no rows for dataset 'coco14', model 'tiny_vgg'"):
        pointing_table(pointing, tmp_path, layer_order=LAYERS, provenance=provenance(),
                       dataset="coco14", model=MODEL)  # fmt: skip
    with pytest.raises(ValueError, match=r"features\.15.*not in layer_order"):
        pointing_table(pointing, tmp_path, layer_order=LAYERS[:3], provenance=provenance())
    percent = pointing.assign(accuracy=pointing["accuracy"] * 100)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        pointing_table(percent, tmp_path, layer_order=LAYERS, provenance=provenance())
    with pytest.raises(ValueError, match="empty"):
        pointing_table(pointing.iloc[:0], tmp_path, layer_order=LAYERS, provenance=provenance())
    with pytest.raises(ValueError, match="several rows"):
        pointing_table(pd.concat([pointing, pointing.iloc[:1]]), tmp_path, layer_order=LAYERS,
                       provenance=provenance())  # fmt: skip


def test_combination_table_shows_weight_source_and_best_layer(tmp_path):
    combination, pointing = combination_frame(), pointing_frame()
    paths = combination_table(combination, tmp_path, provenance=provenance(), pointing=pointing)
    csv_path = tmp_path / DATASET / MODEL / "combination_all.csv"
    assert csv_path in paths
    table = pd.read_csv(csv_path, comment="#", index_col="method")
    assert list(table.columns) == [
        "uniform/sum", "uniform/product", "pointing_accuracy[test]/sum",
        "pointing_accuracy[test]/product", "pointing_accuracy[voc07_val]/sum",
        "pointing_accuracy[voc07_val]/product", "best_single_layer", "best_single_layer_name",
    ]  # fmt: skip
    source = combination.set_index(["method", "strategy", "weights_from", "mode"])["accuracy"]
    assert table.loc["linear_approx", "pointing_accuracy[test]/product"] == pytest.approx(
        round(100 * source.loc[("linear_approx", "pointing_accuracy", "test", "product")], 1)
    )
    rows = pointing[(pointing["subset"] == "all") & (pointing["method"] == "norm_grad")]
    rows = rows[rows["layer"] != "input"]
    best = rows.loc[rows["accuracy"].idxmax()]
    assert table.loc["norm_grad", "best_single_layer"] == pytest.approx(
        round(100 * best["accuracy"], 1)
    )
    assert table.loc["norm_grad", "best_single_layer_name"] == best["layer"]
    md = csv_path.with_suffix(".md").read_text()
    assert "pointing_accuracy [weights: test] (sum)" in md
    assert "tuned on the evaluation (test) set" in md


def test_sensitivity_table_shows_undefined_counts(tmp_path):
    sensitivity = sensitivity_frame()
    paths = sensitivity_table(sensitivity, tmp_path, layer_order=LAYERS, provenance=provenance())
    stem = tmp_path / DATASET / MODEL / "sensitivity"
    assert set(paths) == {stem.with_suffix(x) for x in (".csv", ".md", ".tex")}
    md = _md_rows(stem.with_suffix(".md"))
    assert md["method"] == ["features.3", "features.8", "features.15"]  # input not evaluated
    assert md["gradient"][2] == "0.500 ± 0.100 (3 undefined)"
    assert md["norm_grad"][0] == "0.800 ± 0.100 (0 undefined)"
    assert "3 such cases" in stem.with_suffix(".md").read_text()
    tex = stem.with_suffix(".tex").read_text()
    assert "0.500 $\\pm$ 0.100 (3 undefined)" in tex
    tidy = pd.read_csv(stem.with_suffix(".csv"), comment="#")
    assert list(tidy.columns) == ["method", "layer", "lr", "mean", "std", "n", "undefined"]
    assert (tidy["lr"] == 0).all() and len(tidy) == 6
    row = tidy[(tidy["method"] == "gradient") & (tidy["layer"] == "features.15")].iloc[0]
    assert (row["mean"], row["undefined"], row["n"]) == (pytest.approx(0.5), 3, 100)


def test_meta_tables_pointing_and_sensitivity_vs_lr(tmp_path):
    paths = meta_tables(
        meta_frame(), sensitivity_frame(), tmp_path, layer_order=LAYERS, provenance=provenance()
    )
    stem = tmp_path / DATASET / MODEL
    names = {p.name for p in paths}
    assert {"meta_pointing_all.csv", "meta_pointing_difficult.md", "meta_sensitivity.tex"} <= names
    table = pd.read_csv(stem / "meta_pointing_all.csv", comment="#", index_col=["method", "layer"])
    assert list(table.columns) == ["lr=0", "lr=0.001", "lr=0.01"]
    assert table.loc[("norm_grad", "features.15"), "lr=0.001"] == pytest.approx(74.0)
    assert list(table.index.get_level_values("method")) == ["linear_approx"] * 2 + ["norm_grad"] * 2
    md = _md_rows(stem / "meta_pointing_all.md")
    assert md["method@layer"] == ["0 (plain)", "0.001", "0.01"]
    assert md["norm_grad@features.8"] == ["70.0", "74.0", "72.0"]
    sens = _md_rows(stem / "meta_sensitivity.md")
    assert sens["gradient@features.15"][2] == "0.300 ± 0.100 (3 undefined)"
    tidy = pd.read_csv(stem / "meta_sensitivity.csv", comment="#")
    assert sorted(tidy["lr"].unique()) == [0.0, 0.001, 0.01]


def test_a_run_without_difficult_queries_still_gets_its_difficult_meta_table(tmp_path):
    """A capped run whose queries are all easy: the difficult table exists, its cells missing
    (no queries, no score), instead of a rule missing its declared output."""
    from backsal.experiments import evaluate_meta

    records = pd.DataFrame(
        {
            "record": [0, 0, 1, 1],
            "query": [0, 0, 0, 0],
            "class_id": [0, 0, 1, 1],
            "in_difficult": [False] * 4,
            "method": ["norm_grad"] * 4,
            "layer": ["features.8"] * 4,
            "lr": [0.0, 0.001, 0.0, 0.001],
            "x": [1, 2, 3, 4],
            "y": [1, 2, 3, 4],
            "hit": [True, False, True, True],
        }
    )
    meta = evaluate_meta(records, dataset=DATASET, model=MODEL, arch=ARCH, num_classes=2)
    meta_tables(meta, None, tmp_path, layer_order=LAYERS, provenance=provenance())
    stem = tmp_path / DATASET / MODEL
    assert _md_rows(stem / "meta_pointing_all.md")["norm_grad@features.8"] == ["100.0", "50.0"]
    assert _md_rows(stem / "meta_pointing_difficult.md")["norm_grad@features.8"] == ["–", "–"]


def test_reference_comparison_hand_case(tmp_path):
    reference = pd.DataFrame(
        {
            "dataset": ["voc07", "voc07", "voc07", "coco14"],
            "arch": ["small_vgg"] * 4,
            "method": ["gradient", "center", "rise", "gradient"],
            "meta": ["false", "false", "false", "false"],
            "layer": ["features.3", "n/a", "n/a", "features.3"],
            "subset": ["all"] * 4,
            "pointing_accuracy": [0.75, 0.60, 0.86, 0.40],
            "source": ["authors_code_per_layer", "torchray_published", "torchray_published",
                       "torchray_published"],
        }
    )  # fmt: skip
    ours = pointing_frame()
    ours.loc[(ours["method"] == "gradient") & (ours["layer"] == "features.3")
             & (ours["subset"] == "all"), "accuracy"] = 0.80  # fmt: skip
    compared = compare_with_reference(ours, None, reference)
    assert len(compared) == 3  # coco14 dropped: we did not evaluate it
    gradient = compared[compared["method"] == "gradient"].iloc[0]
    assert gradient["difference"] == pytest.approx(5.0)
    center = compared[compared["method"] == "center"].iloc[0]
    assert center["difference"] == pytest.approx(100 * (0.65 - 0.60))
    assert np.isnan(compared[compared["method"] == "rise"].iloc[0]["ours"])

    paths = reference_comparison(
        ours, meta_frame(), tmp_path, provenance=provenance(), reference=reference
    )
    table = pd.read_csv(tmp_path / "reference_comparison.csv", comment="#")
    row = table[table["method"] == "gradient"].iloc[0]
    assert (row["reference"], row["ours"], row["difference"], row["source"]) == (
        75.0, 80.0, 5.0, "authors_code_per_layer"
    )  # fmt: skip
    assert np.isnan(table[table["method"] == "rise"].iloc[0]["ours"])
    header, *lines = _md_table(tmp_path / "reference_comparison.md")
    shown = {cells[header.index("method")]: cells for cells in lines}
    assert shown["gradient"][header.index("difference (pp)")] == "+5.0"
    assert shown["rise"][header.index("ours")] == "–"
    assert all(p.exists() for p in paths)
    with pytest.raises(ValueError, match="no reference rows"):
        compare_with_reference(ours.assign(dataset="digits"), None, reference)


def test_packaged_reference_loads_and_matches_meta_rows():
    reference = load_reference()
    assert reference["meta"].dtype == bool and reference["meta"].sum() == 18
    assert set(reference["source"]) == {"authors_code_per_layer", "torchray_published"}
    assert reference.notna().all().all()
    assert set(reference.loc[reference["method"] == "center", "layer"]) == {"n/a"}
    center = pd.DataFrame(
        {"dataset": ["voc07"], "model": ["vgg16_voc07"], "arch": ["vgg16"], "method": ["center"],
         "layer": ["n/a"], "subset": ["difficult"], "accuracy": [0.5]}
    )  # fmt: skip
    matched = compare_with_reference(center, None, reference).dropna(subset=["ours"])
    assert matched["difference"].tolist() == [pytest.approx(100 * (0.5 - 0.424))]
    meta = pd.DataFrame(
        {"dataset": ["voc07"] * 2, "model": ["vgg16_voc07"] * 2, "arch": ["vgg16"] * 2,
         "method": ["norm_grad"] * 2, "layer": ["features.29"] * 2, "lr": [0.0, 0.001],
         "subset": ["all"] * 2, "accuracy": [0.70, 0.80], "hits": [1, 1], "queries": [1, 1]}
    )  # fmt: skip
    compared = compare_with_reference(None, meta, reference)
    matched = compared.dropna(subset=["ours"])
    assert len(matched) == 1 and bool(matched["meta"].iloc[0]) and matched["lr"].iloc[0] == 0.001
    assert matched["difference"].iloc[0] == pytest.approx(100 * (0.80 - 0.78212))
