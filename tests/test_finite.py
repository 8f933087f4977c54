"""finite_rows (the sum screen) against the elementwise test it replaces."""

import pytest
import torch

from backsal._finite import finite_rows


def _reference(values: torch.Tensor) -> torch.Tensor:
    return torch.tensor([bool(torch.isfinite(row).all()) for row in values.flatten(1)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rows_are_finite_exactly_when_every_value_is(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(64, 3, 5, 7, generator=generator).to(dtype)
    big = torch.finfo(dtype).max
    values[1, 0, 0, 0] = float("nan")
    values[2, 1, 2, 3] = float("inf")
    values[3, 2, 4, 6] = float("-inf")
    values[4, 0, 0, 0], values[4, 0, 0, 1] = float("inf"), float("-inf")  # sum NaN
    values[5] = big  # finite values whose sum overflows: finite
    values[6] = -big
    values[7] = big
    values[7, 0, 0, 0] = float("nan")  # overflowing and bad
    assert finite_rows(values).tolist() == _reference(values).tolist()
    assert finite_rows(values)[:8].tolist() == [True, False, False, False, False, True, True, False]


def test_degenerate_shapes_and_meta_tensors():
    assert finite_rows(torch.empty(0, 4)).tolist() == []
    assert finite_rows(torch.empty(3, 0)).tolist() == [True, True, True]
    meta = finite_rows(torch.empty(5, 8, device="meta"))
    assert meta.is_meta and meta.shape == (5,) and meta.dtype == torch.bool
