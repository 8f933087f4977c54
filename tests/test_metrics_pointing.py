"""The pointing game: hand-computed cases and the batched path against a per-query reference."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from backsal.data.difficult import in_difficult_subset, read_difficult_flags
from backsal.metrics import (
    MaskGroups,
    argmax_points,
    center_hits,
    center_points,
    evaluate_maps,
    gaussian_smooth,
    group_masks,
    locate_points,
    pointing_accuracies,
    pointing_accuracy,
    pointing_hits,
    points_hit,
    resize_maps,
    subset_mask,
)

# --------------------------------------------------------------------------- reference


def _reference_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> bool:
    """One query at a time: first maximum in row-major order, then every ground-truth pixel."""
    point_y, point_x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    for y, x in zip(*np.nonzero(mask), strict=True):
        if math.hypot(y - point_y, x - point_x) < tolerance:
            return True
    return False


def _reference_accuracy(hits, class_ids, num_classes) -> float:
    per_class = []
    for c in range(num_classes):
        outcomes = [h for h, k in zip(hits, class_ids, strict=True) if k == c]
        per_class.append(sum(outcomes) / max(len(outcomes), 1))
    return sum(per_class) / num_classes


def _random_masks(rng, count, height, width) -> np.ndarray:
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            mask[y0 : y0 + rng.integers(1, 6), x0 : x0 + rng.integers(1, 6)] = True
    return masks


def _pixel_mask(height: int, width: int, y: int, x: int) -> torch.Tensor:
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, y, x] = True
    return mask


# --------------------------------------------------------------------------- hand-computed


def test_exactly_the_tolerance_away_misses_and_just_inside_hits():
    masks = _pixel_mask(20, 50, y=10, x=40)
    maps = torch.zeros(1, 1, 20, 50)
    maps[0, 0, 10, 25] = 1.0  # the argmax is exactly 15 px from the only ground-truth pixel
    assert not pointing_hits(maps, masks, tolerance=15.0).item()
    assert pointing_hits(maps, masks, tolerance=15.1).item()
    maps[0, 0, 10, 26] = 2.0  # now 14 px away
    assert pointing_hits(maps, masks).item()
    # fractional geometry: 14.9 px hits, 15.0 px misses
    assert points_hit(torch.tensor([[25.1, 10.0]]), masks).item()
    assert not points_hit(torch.tensor([[25.0, 10.0]]), masks).item()


def test_diagonal_distance_is_euclidean():
    masks = _pixel_mask(40, 50, y=10, x=40)
    # offsets (9, 12): exactly 15 px away; (9, 11.9): just inside
    assert not points_hit(torch.tensor([[31.0, 22.0]]), masks).item()
    assert points_hit(torch.tensor([[31.0, 21.9]]), masks).item()
    # L1 or L-inf distances would decide differently: (11, 11) is 15.56 px away
    assert not points_hit(torch.tensor([[29.0, 21.0]]), masks).item()


def test_ties_point_at_the_first_maximum_in_row_major_order():
    maps = torch.zeros(3, 1, 4, 5)
    maps[1, 0, 2, 3] = maps[1, 0, 1, 4] = 7.0  # (y=1, x=4) comes first in row-major order
    maps[2, 0, 3, 0] = maps[2, 0, 3, 2] = 1.0
    points = argmax_points(maps)
    assert points.tolist() == [[0, 0], [4, 1], [0, 3]]  # (x, y); a constant map points at (0, 0)


def test_accuracy_averages_over_all_classes_including_one_without_queries():
    hits = torch.tensor([True, False, True])
    class_ids = torch.tensor([0, 0, 1])
    # class 0: 1/2, class 1: 1/1, class 2: no query -> 0; mean over 3 classes
    assert pointing_accuracy(hits, class_ids, num_classes=3) == pytest.approx(0.5)
    assert pointing_accuracy(hits, class_ids, num_classes=2) == pytest.approx(0.75)


def test_accuracy_rejects_class_ids_out_of_range():
    with pytest.raises(ValueError, match="class ids must lie in 0..1"):
        pointing_accuracy(torch.tensor([True]), torch.tensor([2]), num_classes=2)


def test_difficult_subset_keeps_images_missing_from_the_flag_file(tmp_path):
    path = tmp_path / "flags.txt"
    path.write_text("img1\t1\t0\t0\nimg2\t0\t0\t1\n")
    flags = read_difficult_flags(path, num_classes=3)
    assert flags == {"img1": (True, False, False), "img2": (False, False, True)}
    queries = [("img1", 0), ("img1", 1), ("img2", 2), ("img2", 0), ("img3", 1)]
    in_difficult = torch.tensor([in_difficult_subset(flags, i, c) for i, c in queries])
    assert in_difficult.tolist() == [True, False, True, False, True]  # img3 is not listed: kept

    hits = torch.tensor([True, True, False, True, True])
    class_ids = torch.tensor([c for _, c in queries])
    keep = subset_mask(in_difficult, "difficult")
    # difficult: class 0 -> 1/1 (img1), class 1 -> 1/1 (img3), class 2 -> 0/1 (img2)
    assert pointing_accuracy(hits, class_ids, 3, keep=keep) == pytest.approx(2 / 3)
    # all: class 0 -> 2/2, class 1 -> 2/2, class 2 -> 0/1
    assert pointing_accuracy(hits, class_ids, 3, keep=subset_mask(in_difficult, "all")) == (
        pytest.approx(2 / 3)
    )
    records = pd.DataFrame(
        {"class_id": class_ids.numpy(), "hit": hits.numpy(), "in_difficult": in_difficult.numpy()}
    )
    table = pointing_accuracies(records, [], num_classes=3).set_index("subset")
    assert table.loc["difficult", "accuracy"] == pytest.approx(2 / 3)
    assert (table.loc["difficult", "hits"], table.loc["difficult", "queries"]) == (2, 3)
    assert (table.loc["all", "hits"], table.loc["all", "queries"]) == (4, 5)


def test_accuracies_per_group_average_over_all_classes():
    # group a: class 0 -> 1/2, class 1 -> 0/1; group b: class 2 -> 1/1; 4 classes in the dataset
    records = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b"],
            "class_id": [0, 0, 1, 2],
            "hit": [True, False, False, True],
            "in_difficult": [True, False, True, True],
        }
    )
    table = pointing_accuracies(records, ["method"], num_classes=4)
    accuracy = table.set_index(["method", "subset"])["accuracy"]
    assert accuracy[("a", "all")] == pytest.approx((0.5 + 0.0) / 4)
    assert accuracy[("a", "difficult")] == pytest.approx((1.0 + 0.0) / 4)
    assert accuracy[("b", "all")] == pytest.approx(1 / 4)
    assert list(table.columns) == ["method", "subset", "accuracy", "hits", "queries"]
    with pytest.raises(ValueError, match="class ids must lie in 0..3"):
        pointing_accuracies(records.assign(class_id=[0, 0, 1, 4]), ["method"], num_classes=4)


def test_a_subset_without_queries_keeps_its_rows_with_no_accuracy():
    records = pd.DataFrame(
        {
            "method": pd.Categorical(["a", "a", "b"]),
            "class_id": [0, 1, 1],
            "hit": [True, False, True],
            "in_difficult": [False, False, False],  # no difficult query at all
        }
    )
    table = pointing_accuracies(records, ["method"], num_classes=2).set_index(["method", "subset"])
    assert table.loc[("a", "all"), "accuracy"] == pytest.approx(0.5)
    for method in ("a", "b"):
        row = table.loc[(method, "difficult")]
        assert np.isnan(row["accuracy"]) and (row["hits"], row["queries"]) == (0, 0)
    assert table["queries"].dtype == np.int64 and table["hits"].dtype == np.int64


def test_center_point_and_center_baseline():
    sizes = torch.tensor([[64, 64], [7, 5]])
    assert center_points(sizes).tolist() == [[32.0, 32.0], [2.5, 3.5]]
    masks = [_pixel_mask(64, 64, y=32, x=47)[0], _pixel_mask(64, 64, y=32, x=46)[0]]
    assert center_hits(masks).tolist() == [False, True]  # 15 px misses, 14 px hits


def test_nan_maps_are_an_error_by_default():
    maps = torch.zeros(2, 1, 4, 4)
    maps[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        pointing_hits(maps, torch.ones(2, 4, 4, dtype=torch.bool))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_row_holding_a_non_finite_value_is_named(bad):
    # the check screens rows by their sum first; each kind of bad value must still be caught,
    # and rows whose finite values only overflow the sum must not be
    maps = torch.zeros(5, 1, 4, 4)
    maps[1, 0, 2, 3] = bad
    maps[3, 0, 0, 0] = bad
    maps[4] = torch.finfo(torch.float32).max  # finite, but its sum is inf
    masks = torch.ones(5, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rows \[1, 3\] contain NaN or inf"):
        pointing_hits(maps, masks)
    with pytest.raises(ValueError, match=r"rows \[1, 3\]"):
        locate_points(maps, masks)
    assert pointing_hits(maps[[0, 2, 4]], masks[:3]).tolist() == [True, True, True]


def test_mismatched_sizes_say_to_resize():
    with pytest.raises(ValueError, match="resize the maps"):
        pointing_hits(torch.zeros(1, 1, 4, 4), torch.ones(1, 8, 8, dtype=torch.bool))


# --------------------------------------------------------------------------- against references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_hits_equal_the_per_query_reference(seed):
    rng = np.random.default_rng(seed)
    count, height, width = 48, 23, 31
    # few distinct values: many ties, so the first-maximum rule matters
    maps = rng.integers(0, 4, size=(count, 1, height, width)).astype(np.float32)
    masks = _random_masks(rng, count, height, width)
    for tolerance in (1.0, 4.5, 15.0):
        hits = pointing_hits(torch.from_numpy(maps), torch.from_numpy(masks), tolerance)
        expected = [_reference_hit(maps[i, 0], masks[i], tolerance) for i in range(count)]
        assert hits.tolist() == expected
    class_ids = rng.integers(0, 5, size=count)
    assert pointing_accuracy(hits, torch.from_numpy(class_ids), 6) == pytest.approx(
        _reference_accuracy(expected, class_ids.tolist(), 6)
    )


def test_evaluate_maps_groups_rows_of_different_sizes():
    rng = np.random.default_rng(3)
    sizes = [(30, 40), (40, 30), (30, 40), (17, 23), (40, 30), (30, 40)]
    maps = torch.from_numpy(rng.random((len(sizes), 1, 7, 9)).astype(np.float32))
    masks = [torch.from_numpy(_random_masks(rng, 1, h, w)[0]) for h, w in sizes]
    for smooth in (0.0, 0.02):
        hits = evaluate_maps(maps, masks, tolerance=6.0, smooth=smooth)
        for i, (height, width) in enumerate(sizes):
            resized = F.interpolate(
                maps[i : i + 1], size=(height, width), mode="bilinear", align_corners=False
            )
            if smooth:
                resized = gaussian_smooth(resized, smooth)
            expected = _reference_hit(resized[0, 0].numpy(), masks[i].numpy(), 6.0)
            assert hits[i].item() == expected, (i, smooth)


def test_gaussian_smoothing_matches_scipy_with_replicated_border():
    rng = np.random.default_rng(4)
    maps = rng.random((2, 1, 100, 60))  # sigma = 0.02 * 100 = 2, radius ceil(4 * 2) = 8
    smoothed = gaussian_smooth(torch.from_numpy(maps), 0.02).numpy()
    for i in range(2):
        expected = ndimage.gaussian_filter(maps[i, 0], sigma=2.0, mode="nearest", truncate=4.0)
        np.testing.assert_allclose(smoothed[i, 0], expected, rtol=1e-10, atol=1e-12)


def test_resize_is_bilinear_without_corner_alignment():
    maps = torch.tensor([[[[0.0, 1.0]]]])
    resized = resize_maps(maps, (1, 4))
    # align_corners=False: output centres at -0.25, 0.25, 0.75, 1.25 in input pixels
    assert resized.flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_window_and_full_grid_hit_tests_agree():
    from backsal.metrics.pointing import _hits_in_window, _hits_on_grid

    generator = torch.Generator().manual_seed(6)
    # integer, half-integer and arbitrary points, some near or beyond the borders
    points = torch.rand(200, 2, generator=generator) * torch.tensor([70.0, 50.0]) - 5
    points[:60] = points[:60].round()
    points[60:120] = (points[60:120] * 2).round() / 2
    # the sparser the masks, the larger the tolerance, so that both outcomes occur
    for tolerance, empty in ((0.5, 0.5), (1.0, 0.7), (4.2857, 0.97), (7.0, 0.99), (15.0, 0.999)):
        masks = torch.rand(200, 40, 60, generator=generator) > empty
        window = _hits_in_window(points, masks, tolerance)
        assert torch.equal(window, _hits_on_grid(points, masks, tolerance)), tolerance
        assert 0 < int(window.sum()) < 200, tolerance


def test_located_points_are_the_argmax_of_the_resized_smoothed_maps():
    generator = torch.Generator().manual_seed(9)
    maps = torch.rand(5, 1, 8, 6, generator=generator, dtype=torch.float64)
    masks = torch.zeros(5, 40, 30, dtype=torch.bool)
    points, _ = locate_points(maps, masks, smooth=0.02)
    reference = gaussian_smooth(
        F.interpolate(maps, size=(40, 30), mode="bilinear", align_corners=False), 0.02
    )
    flat = reference.flatten(1).argmax(1)
    assert points.tolist() == torch.stack([flat % 30, flat // 30], 1).tolist()


@pytest.mark.parametrize("mixed", [False, True])
def test_masks_grouped_once_score_as_the_masks_themselves(mixed):
    """A batch's masks are grouped once for all its maps (run_pointing): same points, same
    hits as from the list of masks, for one size (scored without regrouping) and for several."""
    rng = np.random.default_rng(11)
    sizes = [(30, 40), (40, 30), (30, 40), (17, 23)] if mixed else [(30, 40)] * 4
    masks = [torch.from_numpy(_random_masks(rng, 1, h, w)[0]) for h, w in sizes]
    grouped = group_masks(masks)
    assert isinstance(grouped, MaskGroups) and grouped.whole is (not mixed)
    assert group_masks(grouped, 4) is grouped
    for layer in range(3):
        maps = torch.from_numpy(rng.random((4, 1, 5 + layer, 7)).astype(np.float32))
        for smooth in (0.0, 0.02):
            points, hits = locate_points(maps, grouped, tolerance=5.0, smooth=smooth)
            expected_points, expected_hits = locate_points(maps, masks, 5.0, smooth)
            assert torch.equal(points, expected_points) and torch.equal(hits, expected_hits)
            for i in range(len(sizes)):  # and each row on its own
                alone, hit = locate_points(maps[i : i + 1], masks[i][None], 5.0, smooth)
                assert alone[0].tolist() == points[i].tolist() and bool(hit) == bool(hits[i])
    assert torch.equal(center_hits(grouped), center_hits(masks))
    with pytest.raises(ValueError, match="mask groups of 4 rows for 3 maps"):
        locate_points(torch.rand(3, 1, 4, 4), grouped)
