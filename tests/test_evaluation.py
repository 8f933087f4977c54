"""The evaluation schema: output stems and the example maps' file format."""

from __future__ import annotations

import numpy as np
import pytest

from backsal.evaluation import COLUMNS, KINDS, SUBSETS, Examples, read_examples, stem_of, stems


def test_stems_fill_their_fields():
    assert stem_of("pointing_table", subset="difficult") == "pointing_difficult"
    assert stem_of("qualitative_figure", index=7) == "qualitative_007"
    assert stems("meta_pointing_table") == [f"meta_pointing_{s}" for s in SUBSETS]
    assert stems("sensitivity_figure") == ["sensitivity_layers"]
    with pytest.raises(KeyError, match="needs \\['subset'\\]"):
        stem_of("grid_figure")
    with pytest.raises(KeyError, match="unknown output"):
        stem_of("pointing")


def test_every_kind_has_its_columns_after_the_run():
    assert set(COLUMNS) == set(KINDS)
    assert all(columns[:3] == ("dataset", "model", "arch") for columns in COLUMNS.values())


def test_examples_round_trip_through_their_file(tmp_path):
    rng = np.random.default_rng(0)
    examples = Examples(
        images=rng.integers(0, 255, (2, 3, 8, 8), dtype=np.uint8),
        targets=np.array([1, 0]),
        class_names=["a", "b"],
        image_ids=["x", "y"],
        maps={"conv3x3/max": {"features.3": rng.random((2, 4, 4)).astype(np.float16)}},
    )
    with open(tmp_path / "examples.npz", "wb") as handle:
        examples.save(handle)
    back = read_examples(tmp_path / "examples.npz")
    assert back.image_ids == ["x", "y"] and back.class_names == ["a", "b"]
    np.testing.assert_array_equal(
        back.maps["conv3x3/max"]["features.3"], examples.maps["conv3x3/max"]["features.3"]
    )
    with pytest.raises(ValueError, match="targets must index"):
        Examples(examples.images, np.array([2, 0]), ["a", "b"], ["x", "y"])
