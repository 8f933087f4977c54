"""Per-row parameters: every way of running a per-row convolution equals a loop over rows."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import backsal
from backsal import _per_sample


@pytest.fixture(autouse=True)
def _restore_options():
    """Tests set per_row_conv; each leaves the settings as it found them."""
    previous = backsal.get_options()
    yield
    backsal.set_options(**dataclasses.asdict(previous))


# (in, out, kernel, stride, padding, dilation, height, width)
CASES = [
    (8, 16, 1, 1, 0, 1, 15, 17),
    (8, 16, 1, 2, 0, 1, 15, 17),  # strided 1x1, as ResNet's downsample
    (8, 16, 3, 1, 1, 1, 15, 17),
    (8, 16, 3, 2, 1, 1, 15, 17),
    (3, 8, 7, 2, 3, 1, 31, 29),  # ResNet's stem
    (8, 8, 3, 1, 2, 2, 15, 17),  # dilated
    (4, 6, 3, 1, 1, 1, 64, 64),  # large enough that auto keeps groups (with the limit below)
]


@pytest.mark.parametrize("mode", ["grouped", "auto", "matmul", "loop"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "k{2}s{3}p{4}d{5}".format(*c))
def test_per_row_conv2d_equals_a_loop_over_rows(monkeypatch, mode, case):
    backsal.set_options(per_row_conv=mode)
    monkeypatch.setattr(_per_sample, "_UNFOLD_LIMIT", 4 * 9 * 32 * 32)
    cin, cout, k, s, p, d, h, w = case
    n = 3
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, h, w, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(n, cout, cin, k, k, dtype=torch.float64, generator=generator)
    weight.requires_grad_(True)
    bias = torch.randn(cout, dtype=torch.float64, generator=generator)
    with _per_sample.per_sample_parameters({"weight": weight}):
        out = F.conv2d(x, weight, bias, s, p, d)
    expected = torch.cat([F.conv2d(x[r : r + 1], weight[r], bias, s, p, d) for r in range(n)])
    torch.testing.assert_close(out, expected)
    seed = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    grads = torch.autograd.grad((out * seed).sum(), [x, weight])
    expected_grads = torch.autograd.grad((expected * seed).sum(), [x, weight])
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", ["grouped", "auto", "matmul", "loop"])
@pytest.mark.parametrize(
    "case",
    [*CASES, (8, 16, 3, 1, 1, 1, 15, 17, 2), (8, 8, 3, 2, 1, 1, 15, 17, 8)],  # + groups, depthwise
    ids=lambda c: "k{2}s{3}p{4}d{5}".format(*c) + (f"g{c[8]}" if len(c) > 8 else ""),
)
def test_rows_sharing_one_weight_get_each_rows_gradient(monkeypatch, mode, case):
    """Before the first step all rows hold θ (an expanded view): the convolution runs as one
    ordinary convolution, and each row still gets the gradient of its own copy."""
    backsal.set_options(per_row_conv=mode)
    monkeypatch.setattr(_per_sample, "_UNFOLD_LIMIT", 4 * 9 * 32 * 32)
    cin, cout, k, s, p, d, h, w, *rest = case
    groups = rest[0] if rest else 1
    n = 3
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(n, cin, h, w, dtype=torch.float64, generator=generator, requires_grad=True)
    base = torch.randn(cout, cin // groups, k, k, dtype=torch.float64, generator=generator)
    bias = torch.randn(cout, dtype=torch.float64, generator=generator)
    weight = base.expand(n, *base.shape).requires_grad_(True)
    rows_bias = bias.expand(n, cout).requires_grad_(True)
    with _per_sample.per_sample_parameters({"weight": weight, "bias": rows_bias}):
        out = F.conv2d(x, weight, rows_bias, s, p, d, groups)
    copies = [base.clone().requires_grad_(True) for _ in range(n)]
    bias_copies = [bias.clone().requires_grad_(True) for _ in range(n)]
    expected = torch.cat(
        [F.conv2d(x[r : r + 1], copies[r], bias_copies[r], s, p, d, groups) for r in range(n)]
    )
    torch.testing.assert_close(out, expected)
    seed = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    got = torch.autograd.grad((out * seed).sum(), [x, weight, rows_bias])
    want = torch.autograd.grad((expected * seed).sum(), [x, *copies, *bias_copies])
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], torch.stack(want[1 : 1 + n]))
    torch.testing.assert_close(got[2], torch.stack(want[1 + n :]))


@pytest.mark.parametrize("func", [F.conv1d, F.conv3d])
def test_rows_sharing_one_weight_in_1d_and_3d(func):
    spatial = 1 if func is F.conv1d else 3
    n, generator = 2, torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, *[9] * spatial, dtype=torch.float64, generator=generator)
    x.requires_grad_(True)
    base = torch.randn(5, 4, *[3] * spatial, dtype=torch.float64, generator=generator)
    weight = base.expand(n, *base.shape).requires_grad_(True)
    with _per_sample.per_sample_parameters({"weight": weight}):
        out = func(x, weight, None, 2, 1)
    copies = [base.clone().requires_grad_(True) for _ in range(n)]
    expected = torch.cat([func(x[r : r + 1], copies[r], None, 2, 1) for r in range(n)])
    torch.testing.assert_close(out, expected)
    got = torch.autograd.grad(out.square().sum(), [x, weight])
    want = torch.autograd.grad(expected.square().sum(), [x, *copies])
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], torch.stack(want[1:]))


def test_auto_picks_matrix_products_for_1x1_and_small_unfolds(monkeypatch):
    backsal.set_options(per_row_conv="auto")
    x = torch.zeros(2, 64, 224, 224)
    pick = _per_sample._matmul_conv
    assert pick(F.conv2d, x, torch.zeros(2, 64, 64, 1, 1), (1, 0, 1, 1)) is _per_sample._conv1x1_bmm
    assert pick(F.conv2d, x, torch.zeros(2, 64, 64, 3, 3), (1, 1, 1, 1)) is None  # VGG conv1_2
    small = torch.zeros(2, 64, 56, 56)
    chosen = pick(F.conv2d, small, torch.zeros(2, 64, 64, 3, 3), (1, 1, 1, 1))
    assert chosen is _per_sample._conv_unfold_bmm  # ResNet layer1
    assert pick(F.conv2d, small, torch.zeros(2, 32, 32, 3, 3), (1, 1, 1, 2)) is None  # grouped
    assert pick(F.conv1d, small[..., 0], torch.zeros(2, 64, 64, 1), (1, 0, 1, 1)) is None


def test_conv_matmul_under_the_convolution_precision_policy_is_a_plain_bmm():
    """The autograd function that runs per-row conv matmuls under cuDNN's TF32 setting on CUDA
    computes the same products and gradients as ``torch.bmm`` (checked here in float64)."""
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(3, 5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    torch.testing.assert_close(_per_sample._ConvBmm.apply(a, b), torch.bmm(a, b))
    assert torch.autograd.gradcheck(_per_sample._ConvBmm.apply, (a, b))
    only_a = torch.autograd.grad(_per_sample._ConvBmm.apply(a, b.detach()).sum(), a)[0]
    torch.testing.assert_close(only_a, torch.autograd.grad(torch.bmm(a, b.detach()).sum(), a)[0])


def test_the_precision_policy_is_restored(monkeypatch):
    before = torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", not before)
    with _per_sample._conv_precision():
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before
