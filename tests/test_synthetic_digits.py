"""The cluttered-digits benchmark: determinism, disjoint sources, exact boxes, clutter, baseline."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from backsal.data.synthetic import (
    ClutteredDigitsConfig,
    cluttered_digits,
    digit_source_split,
)
from backsal.metrics import center_hits, pointing_accuracies

NOISE_FREE = ClutteredDigitsConfig(noise=0)


@pytest.fixture(scope="module")
def noise_free():
    return cluttered_digits("test", num_images=300, seed=3, config=NOISE_FREE)


def _boxes(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in box) for box in boxes if box[0] >= 0]


def _intersects(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def test_same_seed_gives_identical_canvases_and_another_seed_does_not():
    first = cluttered_digits("train", num_images=60, seed=11)
    second = cluttered_digits("train", num_images=60, seed=11)
    other = cluttered_digits("train", num_images=60, seed=12)
    assert torch.equal(first.images, second.images)
    assert first.content_hash == second.content_hash
    assert [r.queries for r in first] == [r.queries for r in second]
    assert first.content_hash != other.content_hash


def test_train_and_test_source_digits_are_disjoint():
    split = digit_source_split()
    assert not set(split["train"]) & set(split["test"])
    assert len(split["train"]) + len(split["test"]) == 1797
    train = cluttered_digits("train", num_images=400, seed=0)
    test = cluttered_digits("test", num_images=400, seed=0)
    used_train = set(train.digit_sources[train.digit_sources >= 0]) | set(
        train.fragment_sources[train.fragment_sources >= 0]
    )
    used_test = set(test.digit_sources[test.digit_sources >= 0]) | set(
        test.fragment_sources[test.fragment_sources >= 0]
    )
    assert used_train <= set(split["train"]) and used_test <= set(split["test"])
    assert not used_train & used_test
    # the same seed must not give the two splits the same layout
    assert not np.array_equal(train.digit_boxes, test.digit_boxes)


def test_boxes_are_the_tight_boxes_of_the_digit_ink(noise_free):
    images = noise_free.images.numpy()
    for index in range(len(noise_free)):
        inked = images[index].any(axis=0)
        digits = _boxes(noise_free.digit_boxes[index])
        fragments = _boxes(noise_free.fragment_boxes[index])
        covered = np.zeros_like(inked)
        for x0, y0, x1, y1 in digits + fragments:
            covered[y0 : y1 + 1, x0 : x1 + 1] = True
        assert not (inked & ~covered).any(), "ink outside every box"
        for x0, y0, x1, y1 in digits:
            # only this digit paints inside its box, and its ink touches all four sides
            inside = inked[y0 : y1 + 1, x0 : x1 + 1]
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
        for a in range(len(digits)):
            for b in range(a + 1, len(digits)):
                assert not _intersects(digits[a], digits[b])


def test_fragments_stay_off_the_digit_boxes_and_have_other_classes(noise_free):
    counts = (noise_free.fragment_boxes[:, :, 0] >= 0).sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= 4
    for index in range(len(noise_free)):
        for fragment in _boxes(noise_free.fragment_boxes[index]):
            for digit in _boxes(noise_free.digit_boxes[index]):
                assert not _intersects(fragment, digit)
    digit_targets = _source_targets(noise_free.digit_sources)
    fragment_targets = _source_targets(noise_free.fragment_sources)
    for index in range(len(noise_free)):
        labels = set(digit_targets[index][digit_targets[index] >= 0])
        assert not labels & set(fragment_targets[index][fragment_targets[index] >= 0])


def _source_targets(sources: np.ndarray) -> np.ndarray:
    from sklearn.datasets import load_digits

    targets = load_digits().target
    return np.where(sources >= 0, targets[np.maximum(sources, 0)], -1)


def test_queries_labels_and_difficult_flag(noise_free):
    digits = (noise_free.digit_classes >= 0).sum(axis=1)
    assert set(digits.tolist()) == {1, 2, 3}
    for index, record in enumerate(noise_free):
        classes = [q.class_id for q in record.queries]
        assert classes == sorted(set(classes)), "distinct classes, sorted"
        assert noise_free.labels[index].nonzero().flatten().tolist() == classes
        assert all(q.in_difficult == (len(classes) >= 2) for q in record.queries)
        image = noise_free.load_image(record)
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)


def test_noise_does_not_move_the_layout(noise_free):
    noisy = cluttered_digits("test", num_images=300, seed=3)
    np.testing.assert_array_equal(noisy.digit_boxes, noise_free.digit_boxes)
    np.testing.assert_array_equal(noisy.fragment_boxes, noise_free.fragment_boxes)
    assert not torch.equal(noisy.images, noise_free.images)


def test_center_baseline_on_the_test_split_is_in_the_expected_range():
    test = cluttered_digits("test")
    rows = []
    for start in range(0, len(test), 250):
        records = test.records[start : start + 250]
        queries = [q for r in records for q in r.queries]
        masks = torch.stack([q.mask(r.height, r.width) for r in records for q in r.queries])
        hits = center_hits(masks, tolerance=test.pointing_tolerance)
        rows += [
            {"class_id": q.class_id, "in_difficult": q.in_difficult, "hit": bool(hit)}
            for q, hit in zip(queries, hits.tolist(), strict=True)
        ]
    assert test.pointing_tolerance == pytest.approx(15 * 64 / 224)
    table = pointing_accuracies(pd.DataFrame(rows), [], test.num_classes).set_index("subset")
    # measured at seed 0: 0.398 (all), 0.374 (difficult: canvases with >= 2 digits)
    assert 0.35 <= table.loc["all", "accuracy"] <= 0.45
    assert 0.32 <= table.loc["difficult", "accuracy"] <= 0.42
    assert 0 < table.loc["difficult", "queries"] < table.loc["all", "queries"]


def test_cache_round_trip_and_corrupt_cache_is_regenerated(tmp_path):
    first = cluttered_digits("test", num_images=40, seed=5, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("cluttered_digits_test_40_*.npz")
    second = cluttered_digits("test", num_images=40, seed=5, cache_dir=tmp_path)
    assert second.content_hash == first.content_hash
    assert torch.equal(second.images, first.images)

    cached.write_bytes(cached.read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match="regenerating"):
        third = cluttered_digits("test", num_images=40, seed=5, cache_dir=tmp_path)
    assert third.content_hash == first.content_hash
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is valid again
        cluttered_digits("test", num_images=40, seed=5, cache_dir=tmp_path)


def test_a_different_config_gets_a_different_cache_file(tmp_path):
    cluttered_digits("test", num_images=20, seed=0, cache_dir=tmp_path)
    smaller = dataclasses.replace(ClutteredDigitsConfig(), canvas_size=48, digit_size=(16, 22))
    data = cluttered_digits("test", num_images=20, seed=0, config=smaller, cache_dir=tmp_path)
    assert data.images.shape == (20, 3, 48, 48)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown split"):
        cluttered_digits("val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="digits_per_canvas"):
        ClutteredDigitsConfig(digits_per_canvas=(1, 10))
    test = cluttered_digits("test", num_images=5)
    other = cluttered_digits("train", num_images=5)
    with pytest.raises(KeyError, match="not in the test split"):
        test.load_image(other[0])


def test_source_digits_are_read_as_scikit_learn_loads_them(monkeypatch):
    """The bundled file read directly (no scikit-learn import) against ``load_digits`` itself,
    which the loader also falls back to where the file cannot be found."""
    from sklearn.datasets import load_digits

    import backsal.data.synthetic as synthetic

    digits = load_digits()
    assert synthetic._bundled_digits_file() is not None
    direct = synthetic._load_source_digits()
    monkeypatch.setattr(synthetic, "_bundled_digits_file", lambda: None)
    fallback = synthetic._load_source_digits()
    for images, targets in (direct, fallback):
        assert images.dtype == np.float32 and targets.dtype == np.int64
        np.testing.assert_array_equal(images, digits.images.astype(np.float32) / 16.0)
        np.testing.assert_array_equal(targets, digits.target)
