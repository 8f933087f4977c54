"""Class sensitivity: Spearman's ρ against scipy, undefined cases counted, c_max / c_min."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from backsal.metrics import (
    average_ranks,
    extreme_classes,
    rank_maps,
    spearman,
    summarize_sensitivity,
    true_class_probability,
)


def _scipy_rho(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return np.array(
            [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_spearman_equals_scipy_on_continuous_maps(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(16, 1, 9, 11))
    b = a + rng.normal(scale=rng.uniform(0.1, 3.0, size=(16, 1, 1, 1)), size=a.shape)
    rho = spearman(torch.from_numpy(a), torch.from_numpy(b))
    assert rho.dtype == torch.float64 and rho.shape == (16,)
    np.testing.assert_allclose(rho.numpy(), _scipy_rho(a, b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [2, 3, 7])
def test_spearman_equals_scipy_with_ties(levels):
    rng = np.random.default_rng(levels)
    a = rng.integers(0, levels, size=(20, 3, 13)).astype(np.float32)
    b = rng.integers(0, levels, size=(20, 3, 13)).astype(np.float32)
    b[:5] = a[:5]  # identical rankings: rho 1
    rho = spearman(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(rho.numpy(), _scipy_rho(a, b), rtol=0, atol=1e-12)
    assert rho[:5].tolist() == pytest.approx([1.0] * 5)


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 5, size=(4, 30)).astype(np.float64)
    expected = np.stack([stats.rankdata(row, method="average") for row in values])
    np.testing.assert_array_equal(average_ranks(torch.from_numpy(values)).numpy(), expected)


def test_float32_ranks_from_integer_keys_equal_scipy_rankdata():
    # float32 CPU rows are ranked by sorting integer keys made from the floats' bits: every sign,
    # both zeros (equal, with different bits), subnormals, the extremes and ties must rank as
    # the floats compare
    rng = np.random.default_rng(11)
    tiny, huge = np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max
    specials = np.array([0.0, -0.0, tiny, -tiny, huge, -huge, 1.0, -1.0, 1.5], dtype=np.float32)
    values = rng.choice(specials, size=(6, 2, 40)).astype(np.float32)
    values[0] = rng.normal(size=(2, 40))
    values[1, 0, :20] = -0.0  # a run of negative zeros tied with the zeros among them
    values[1, 0, 20:] = 0.0
    expected = np.stack(
        [stats.rankdata(row, method="average") for row in values.reshape(-1, 40)]
    ).reshape(values.shape)
    np.testing.assert_array_equal(average_ranks(torch.from_numpy(values)).numpy(), expected)
    # a non-contiguous view ranks as its copy
    view = torch.from_numpy(values.reshape(12, 40)).t()
    np.testing.assert_array_equal(
        average_ranks(view).numpy(), average_ranks(view.contiguous()).numpy()
    )


def test_non_finite_float32_rows_are_ranked_by_the_argsort_path():
    values = np.array([[1.0, np.inf, -np.inf, 2.0, 2.0], [0.0, -0.0, 3.0, 1.0, 1.0]], np.float32)
    ranks = average_ranks(torch.from_numpy(values)).numpy()
    expected = np.stack([stats.rankdata(row, method="average") for row in values])
    np.testing.assert_array_equal(ranks, expected)


def test_constant_or_non_finite_maps_give_nan_and_are_counted():
    a = torch.randn(4, 10)
    b = torch.randn(4, 10)
    a[1] = 3.0  # constant map
    b[2] = 0.0  # constant map on the other side
    a[3, 4] = float("nan")
    rho = spearman(a, b)
    assert math.isfinite(rho[0].item())
    assert all(math.isnan(v) for v in rho[1:].tolist())

    summary = summarize_sensitivity(rho)
    assert (summary.count, summary.undefined, summary.total) == (1, 3, 4)
    assert summary.mean == pytest.approx(rho[0].item())
    assert summary.std == 0.0


def test_summary_reports_mean_and_std_of_defined_values():
    rho = torch.tensor([0.2, 0.4, float("nan"), 0.9, float("inf")], dtype=torch.float64)
    summary = summarize_sensitivity(rho)
    assert summary.mean == pytest.approx(0.5)
    assert summary.std == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert summarize_sensitivity(rho, ddof=1).std == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert summary.as_dict() == {
        "mean": summary.mean,
        "std": summary.std,
        "count": 3,
        "undefined": 2,
        "total": 5,
    }
    empty = summarize_sensitivity(torch.tensor([float("nan")]))
    assert math.isnan(empty.mean) and empty.undefined == 1 and empty.count == 0


def test_extreme_classes_from_softmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, -4.0, 1.0, -4.0]])
    c_max, c_min = extreme_classes(logits)
    assert c_max.tolist() == [1, 0]
    assert c_min.tolist() == [2, 1]  # a tie picks the first class


def test_true_class_probability_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [2.0, -1.0, 0.5], [1.0, 1.0, 1.0]])
    truth = torch.tensor([[False, True, False], [True, False, True], [False, False, False]])
    # softmax: e^l / sum; the first image's class 1 has 3 / (1 + 3 + 1)
    softmax = true_class_probability(logits, truth, "softmax")
    assert softmax[0].item() == pytest.approx(0.6)
    assert softmax[1].item() == pytest.approx(
        math.exp(2) / (math.exp(2) + math.exp(-1) + math.exp(0.5))
    )
    # sigmoid: each class on its own; of two ground-truth classes the more probable one
    sigmoid = true_class_probability(logits, truth, "sigmoid")
    assert sigmoid[0].item() == pytest.approx(0.75)
    assert sigmoid[1].item() == pytest.approx(1 / (1 + math.exp(-2)))
    # no ground-truth class: undefined
    assert math.isnan(softmax[2].item()) and math.isnan(sigmoid[2].item())
    with pytest.raises(ValueError, match="bool truth"):
        true_class_probability(logits, truth.float(), "sigmoid")
    with pytest.raises(ValueError, match="Unknown probability"):
        true_class_probability(logits, truth, "logit")  # type: ignore[arg-type]


def test_spearman_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        spearman(torch.zeros(2, 5), torch.zeros(2, 6))


def test_ranked_maps_give_the_same_rho_bit_for_bit():
    """The sanity check ranks the trained maps once and correlates them with every step's."""
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(6, 1, 9, 7, generator=generator)
    a[1] = (a[1] * 4).round()  # ties
    a[2] = 1.0  # constant: ρ undefined
    a[3, 0, 2, 2] = float("inf")
    ranked = rank_maps(a)
    assert ranked.shape == (6, 63)
    for other in (torch.rand(6, 1, 9, 7, generator=generator), (a * 3).round()):
        expected = spearman(a, other)
        for left, right in ((ranked, other), (other, ranked), (ranked, rank_maps(other))):
            got = spearman(left, right)
            torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="equal shapes"):
        spearman(ranked, torch.zeros(6, 62))
