"""Model-randomisation sanity check: equal to a deepcopy + re-initialise loop, SSIM against a
per-window loop, the user's model untouched, hand-computed toy cases."""

import copy
import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import backsal
from backsal.metrics.sanity import (
    SSIM_CONSTANTS,
    SSIM_SIGMA,
    SSIM_WINDOW,
    model_randomisation,
    model_randomisations,
    randomisation_steps,
    randomised_parameters,
    ssim,
    ssim_statistics,
)

METHODS = ["gradient", "norm_grad", "linear_approx", "guided_backprop", "grad_cam"]
LAYERS = ["conv2", "conv4", "input"]
BLOCKS = ["conv1", "conv2", "conv3", "conv4", "fc"]


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(3, 3, 14, 13, generator=generator, dtype=torch.float64)


def _reference_draw(trained: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    """The documented re-initialisation, spelled out: N(mean, std²) from a per-name generator."""
    generator = torch.Generator().manual_seed(
        (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63
    )
    noise = torch.randn(trained.shape, generator=generator, dtype=torch.float64)
    values = trained.detach().double()
    mean, std = values.mean().item(), values.std(correction=0).item()
    return (mean + std * noise).to(trained.dtype)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps by a loop over every window wholly inside them."""

    def normalise(m: np.ndarray) -> np.ndarray:
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    a, b = normalise(a), normalise(b)
    radius = SSIM_WINDOW // 2
    g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SSIM_SIGMA) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = SSIM_CONSTANTS[0] ** 2, SSIM_CONSTANTS[1] ** 2
    values = []
    for i in range(a.shape[0] - SSIM_WINDOW + 1):
        for j in range(a.shape[1] - SSIM_WINDOW + 1):
            pa = a[i : i + SSIM_WINDOW, j : j + SSIM_WINDOW]
            pb = b[i : i + SSIM_WINDOW, j : j + SSIM_WINDOW]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def _scipy_rho(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a.ravel(), b.ravel()).statistic)


def _reference_run(model, images, targets, mode, seed):
    """Deepcopy the model per step, re-initialise its blocks in place, one saliency call per
    (method, layer); compare with scipy's Spearman and the loop SSIM."""
    size = tuple(images.shape[-2:])

    def maps_of(net):
        return {
            (m, layer): backsal.saliency(net, images, targets, [m], [layer], size=size)[m][layer]
            for m in METHODS
            for layer in LAYERS
        }

    trained = maps_of(model)
    top_down = list(reversed(BLOCKS))
    rho, sim = {}, {}
    for depth in range(1, len(BLOCKS) + 1):
        chosen = top_down[:depth] if mode == "cascading" else [top_down[depth - 1]]
        net = copy.deepcopy(model)
        with torch.no_grad():
            for name, parameter in net.named_parameters():
                if any(name.startswith(block + ".") for block in chosen):
                    parameter.copy_(_reference_draw(parameter, name, seed))
        randomised = maps_of(net)
        for key, trained_maps in trained.items():
            for row in range(images.shape[0]):
                a = trained_maps[row, 0].numpy()
                b = randomised[key][row, 0].numpy()
                rho[(*key, depth, row)] = _scipy_rho(a, b)
                sim[(*key, depth, row)] = _reference_ssim(a, b)
    return rho, sim


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomisation_equals_deepcopy_reinitialise_loop(tiny_net, images, mode):
    targets = torch.tensor([0, 3, 4])
    result = model_randomisation(
        tiny_net, images, targets, METHODS, LAYERS, BLOCKS, mode, randomisation_seed=7
    )
    rho, sim = _reference_run(tiny_net, images, targets, mode, seed=7)
    assert result.blocks == tuple(reversed(BLOCKS))
    for (method, layer, depth, row), expected in rho.items():
        got = float(result.spearman[method][layer][depth - 1, row])
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-6), (method, layer, depth, row)
        got_ssim = float(result.ssim[method][layer][depth - 1, row])
        assert got_ssim == pytest.approx(sim[(method, layer, depth, row)], abs=1e-6)
    records = result.records()
    assert len(records) == len(METHODS) * len(LAYERS) * len(BLOCKS) * 3


def test_one_pass_per_rule_and_step(tiny_net, images):
    """All methods × layers of a step come from one forward per backward rule."""
    forwards = []
    handle = tiny_net.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        result = model_randomisation(
            tiny_net, images, [0, 1, 2], METHODS, LAYERS, BLOCKS[-2:], "cascading"
        )
    finally:
        handle.remove()
    rules = 2  # plain and guided
    assert result.passes == rules * (1 + 2)
    assert len(forwards) == result.passes


def test_both_randomisations_share_the_trained_pass_and_the_top_step(tiny_net, images):
    """Both schemes from one call: the same numbers as one call each, in fewer passes (the
    trained model once, the top block alone once: it is the first step of both)."""
    targets = [0, 3, 4]
    forwards = []
    handle = tiny_net.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        both = model_randomisations(
            tiny_net, images, targets, METHODS, LAYERS, BLOCKS, ("independent", "cascading"),
            randomisation_seed=3,
        )  # fmt: skip
    finally:
        handle.remove()
    assert list(both) == ["independent", "cascading"]
    rules, n = 2, len(BLOCKS)
    assert both["independent"].passes == rules * (1 + n)
    assert both["cascading"].passes == rules * (n - 1)
    assert len(forwards) == rules * (1 + 2 * n - 1)
    for mode, result in both.items():
        alone = model_randomisation(
            tiny_net, images, targets, METHODS, LAYERS, BLOCKS, mode, randomisation_seed=3
        )
        assert result.blocks == alone.blocks and result.mode == mode
        for method in METHODS:
            for layer, rho in alone.spearman[method].items():
                exact = {"rtol": 0, "atol": 0, "equal_nan": True}
                torch.testing.assert_close(result.spearman[method][layer], rho, **exact)
                torch.testing.assert_close(
                    result.ssim[method][layer], alone.ssim[method][layer], **exact
                )
    with pytest.raises(ValueError, match="at least one"):
        model_randomisations(tiny_net, images, targets, METHODS, LAYERS, BLOCKS, ())


def test_user_model_untouched_and_no_hooks_left(tiny_net, images):
    tiny_net.train()  # the call runs in eval mode and restores the flags
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    ids = {k: v.data_ptr() for k, v in tiny_net.state_dict().items()}
    model_randomisation(tiny_net, images, [0, 1, 2], METHODS, LAYERS, BLOCKS, "cascading")
    after = tiny_net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]) and after[key].data_ptr() == ids[key], key
    assert all(module.training for module in tiny_net.modules())
    for module in tiny_net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not getattr(module, "_backward_pre_hooks", {})
    for parameter in tiny_net.parameters():
        assert parameter.grad is None and not parameter._backward_hooks


def test_randomisation_steps_top_down():
    assert randomisation_steps(["a", "b", "c"], "cascading") == [
        ("c", ("c",)),
        ("b", ("c", "b")),
        ("a", ("c", "b", "a")),
    ]
    assert randomisation_steps(["a", "b", "c"], "independent") == [
        ("c", ("c",)),
        ("b", ("b",)),
        ("a", ("a",)),
    ]
    with pytest.raises(ValueError, match="Unknown randomisation"):
        randomisation_steps(["a"], "shuffled")


def test_randomised_parameters_keep_moments_and_constants():
    model = nn.Sequential(nn.Linear(200, 300), nn.BatchNorm1d(300))
    drawn = randomised_parameters(model, ["0", "1"], seed=3)
    weight = model[0].weight.detach()
    assert set(drawn) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert float(drawn["0.weight"].mean()) == pytest.approx(float(weight.mean()), abs=2e-4)
    assert float(drawn["0.weight"].std()) == pytest.approx(float(weight.std()), rel=1e-2)
    assert float(
        torch.corrcoef(torch.stack([drawn["0.weight"].flatten(), weight.flatten()]))[0, 1]
    ) == pytest.approx(0, abs=0.01)
    # an untrained BatchNorm weight (all ones) and bias (all zeros) have no spread: kept
    assert torch.equal(drawn["1.weight"], torch.ones(300))
    assert torch.equal(drawn["1.bias"], torch.zeros(300))
    # the draw depends on the seed and the name only
    again = randomised_parameters(model, ["0"], seed=3)
    assert torch.equal(again["0.weight"], drawn["0.weight"])
    assert not torch.equal(
        randomised_parameters(model, ["0"], seed=4)["0.weight"], drawn["0.weight"]
    )


def test_bad_blocks_are_explained(tiny_net, images):
    with pytest.raises(ValueError, match="not a module"):
        randomised_parameters(tiny_net, ["conv9"])
    with pytest.raises(ValueError, match="no parameter"):
        randomised_parameters(tiny_net, ["pool"])
    with pytest.raises(ValueError, match="overlap"):
        randomised_parameters(nn.Sequential(nn.Sequential(nn.Linear(2, 2))), ["0", "0.0"])
    with pytest.raises(ValueError, match="SSIM"):
        model_randomisation(
            tiny_net, images, [0, 1, 2], ["gradient"], ["input"], ["fc"], size=(8, 8)
        )


def test_ssim_toy_cases():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 12, 15, generator=generator, dtype=torch.float64)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 4, abs=1e-12)
    # normalisation: an affine change of scale leaves SSIM at 1
    assert ssim(a, 3 * a + 2).tolist() == pytest.approx([1.0] * 4, abs=1e-12)
    # constant maps, not normalised: (2·0.2·0.6 + C1) / (0.2² + 0.6² + C1), the C2 terms cancel
    c1 = SSIM_CONSTANTS[0] ** 2
    x, y = (
        torch.full((1, 11, 11), 0.2),
        torch.full((1, 11, 11), 0.6),
    )  # float32: computed in float64
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert float(ssim(x, y, normalise=False)) == pytest.approx(expected, rel=1e-6)
    b = torch.rand(4, 1, 12, 15, generator=generator, dtype=torch.float64)
    for row in range(4):
        assert float(ssim(a, b)[row]) == pytest.approx(
            _reference_ssim(a[row, 0].numpy(), b[row, 0].numpy()), abs=1e-12
        )
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(2, 10, 20), torch.rand(2, 10, 20))


def test_ssim_statistics_give_the_same_ssim_bit_for_bit():
    """The sanity check computes the trained side once and compares it with every step's maps."""
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(5, 1, 13, 16, generator=generator)
    a[2] = 0.5  # constant: normalised to 0
    b = torch.rand(5, 1, 13, 16, generator=generator)
    for normalise in (True, False):
        expected = ssim(a, b, normalise=normalise)
        side = ssim_statistics(a, normalise=normalise)
        assert side.shape == (5, 13, 16)
        assert torch.equal(ssim(side, b, normalise=normalise), expected)
        assert torch.equal(ssim(side, ssim_statistics(b, normalise), normalise=normalise), expected)
        assert torch.equal(ssim(b, side, normalise=normalise), ssim(b, a, normalise=normalise))
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(ssim_statistics(a), torch.rand(5, 13, 15))
    with pytest.raises(ValueError, match="at least 11"):
        ssim_statistics(torch.rand(2, 10, 20))


def test_sanity_toy_linear_model():
    """f(x) = W x: the gradient map of class c is row c of W, the randomised one row c of W'."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12 * 12, 2)).double()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    result = model_randomisation(
        model, x, [1], ["gradient_sum"], ["input"], ["1"], "cascading", randomisation_seed=5
    )
    trained = model[1].weight.detach()[1].view(12, 12)
    randomised = randomised_parameters(model, ["1"], seed=5)["1.weight"][1].view(12, 12)
    assert float(result.spearman["gradient_sum"]["input"][0, 0]) == pytest.approx(
        _scipy_rho(trained.numpy(), randomised.numpy()), abs=1e-12
    )
    assert float(result.ssim["gradient_sum"]["input"][0, 0]) == pytest.approx(
        _reference_ssim(trained.numpy(), randomised.numpy()), abs=1e-12
    )


def test_default_blocks():
    import torchvision

    from backsal.metrics.sanity import randomisation_blocks
    from backsal.models.small import small_resnet, small_vgg

    assert randomisation_blocks(small_resnet()) == [
        "conv1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "fc",
    ]
    assert randomisation_blocks(small_vgg()) == [
        "features.0", "features.4", "features.8", "features.11", "features.15", "features.18", "classifier",
    ]  # fmt: skip
    blocks = randomisation_blocks(torchvision.models.resnet18())
    assert (
        blocks[0] == "conv1" and blocks[-1] == "fc" and "layer4.1" in blocks and "bn1" not in blocks
    )
