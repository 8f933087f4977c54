"""Layer combination (docs/methods.md §3) against hand computations."""

import pytest
import torch

import backsal
from backsal.combination import combination_weights, normalize_maps


def test_sum_and_product_on_a_hand_computed_case():
    a = torch.tensor([[[[0.0, 2.0], [4.0, 4.0]]]])  # normalises to [0, .5, 1, 1]
    b = torch.tensor([[[[3.0, 1.0], [1.0, 2.0]]]])  # normalises to [1, 0, 0, .5]
    summed = backsal.combine({"a": a, "b": b}, weights=[1.0, 3.0], mode="sum", layers=["a", "b"])
    torch.testing.assert_close(summed, torch.tensor([[[[0.75, 0.125], [0.25, 0.625]]]]))
    product = backsal.combine(
        {"a": a, "b": b}, weights=[1.0, 1.0], mode="product", layers=["a", "b"]
    )
    expected = torch.tensor([[[[0.0, 0.0], [0.0, 0.5**0.5]]]])
    torch.testing.assert_close(product, expected)


def test_maps_are_upsampled_to_the_evaluation_size_before_normalising():
    coarse = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    fine = torch.rand(1, 1, 8, 8)
    combined = backsal.combine({"deep": coarse, "shallow": fine}, weights="uniform", size=(8, 8))
    up = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    expected = 0.5 * normalize_maps(up) + 0.5 * normalize_maps(fine)
    torch.testing.assert_close(combined, expected)
    assert combined.shape == (1, 1, 8, 8)


def test_constant_map_is_neutral():
    informative = torch.rand(2, 1, 5, 5)
    zeros = torch.zeros(2, 1, 5, 5)
    assert torch.equal(normalize_maps(zeros), torch.ones_like(zeros))
    product = backsal.combine(
        {"x": informative, "dead": zeros}, weights={"x": 1, "dead": 1}, mode="product"
    )
    torch.testing.assert_close(product, normalize_maps(informative).pow(0.5))
    summed = backsal.combine({"x": informative, "dead": zeros}, mode="sum")
    assert torch.equal(summed.flatten(1).argmax(1), informative.flatten(1).argmax(1))


def test_named_weights():
    layers = ["features.3", "features.8", "features.15", "features.22", "features.29"]
    assert combination_weights("uniform", layers) == dict.fromkeys(layers, 1.0)
    linear = combination_weights("linear", layers)
    assert list(linear.values()) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    activation = combination_weights("activation", layers, arch="vgg16")
    assert activation["features.3"] == pytest.approx(0.2119383764047884)
    activation_in = combination_weights("activation_in", layers, arch="vgg16")
    assert activation_in["features.3"] == pytest.approx(
        0.1533106022599574
    )  # not the activation vector
    accuracy = combination_weights("accuracy", ["layer1", "layer4"], arch="resnet50")
    assert accuracy == pytest.approx({"layer1": 0.0777636622102207, "layer4": 0.6141798300068978})


def test_combination_errors():
    maps = {"a": torch.rand(1, 1, 4, 4), "b": torch.rand(1, 1, 2, 2)}
    with pytest.raises(ValueError, match="arch in"):
        backsal.combine(maps, weights="activation")
    with pytest.raises(ValueError, match="2 layers"):
        backsal.combine(maps, weights=[1.0], layers=["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        backsal.combine(maps, weights=[1.0, -1.0], layers=["a", "b"])
    with pytest.raises(ValueError, match="Unknown combination mode"):
        backsal.combine(maps, mode="max")
    with pytest.raises(ValueError, match="have none"):
        combination_weights("accuracy", ["layer9"], arch="resnet50")
    with pytest.raises(ValueError, match="Unknown weighting strategy"):
        combination_weights("softmax", ["a"])


def test_order_dependent_weights_need_the_layers_named():
    """Positional weights never follow a dictionary's order silently."""
    maps = {"deep": torch.rand(1, 1, 2, 2), "shallow": torch.rand(1, 1, 4, 4)}
    for weights in ("linear", [1.0, 2.0]):
        with pytest.raises(ValueError, match="pass layers="):
            backsal.combine(maps, weights=weights)
    ordered = backsal.combine(maps, weights="linear", layers=["shallow", "deep"])
    named = backsal.combine(maps, weights={"shallow": 0.5, "deep": 1.0})
    torch.testing.assert_close(ordered, named)
    with pytest.raises(ValueError, match="No maps for layers"):
        backsal.combine(maps, layers=["shallow", "middle"])
    with pytest.raises(TypeError, match="list of names"):
        backsal.combine(maps, layers="deep")


def test_combine_all_equals_one_combine_per_weighting_to_the_bit():
    """The shared upsampling and normalisation change no bit: combine_all against a loop of
    combine calls (the slow reference), every strategy kind in both modes, one constant map."""
    torch.manual_seed(0)
    maps = {
        "a": torch.rand(5, 1, 4, 4),
        "b": torch.rand(5, 1, 8, 8) * 3 - 1,
        "c": torch.rand(5, 1, 16, 16),
    }
    maps["b"][2] = 0.5  # constant: normalises to ones
    layers = ["a", "b", "c"]
    weightings = [
        (weights, mode)
        for weights in ("uniform", "linear", {"a": 0.2, "b": 0.9, "c": 0.4}, [1.0, 0.0, 2.0])
        for mode in ("sum", "product")
    ]
    together = backsal.combine_all(maps, weightings, size=(21, 17), layers=layers)
    assert len(together) == len(weightings)
    for (weights, mode), combined in zip(weightings, together, strict=True):
        alone = backsal.combine(maps, weights, mode, size=(21, 17), layers=layers)
        assert torch.equal(combined, alone), (weights, mode)


def test_combine_all_checks_every_weighting_before_computing():
    maps = {"a": torch.rand(2, 1, 4, 4), "b": torch.rand(2, 1, 8, 8)}
    with pytest.raises(ValueError, match="Unknown combination mode 'mean'"):
        backsal.combine_all(maps, [("uniform", "sum"), ("uniform", "mean")])
    with pytest.raises(ValueError, match="depend on the layers' order"):
        backsal.combine_all(maps, [("uniform", "sum"), ("linear", "sum")])
    with pytest.raises(ValueError, match="non-negative"):
        backsal.combine_all(maps, [({"a": 1.0, "b": -1.0}, "sum")], layers=["a", "b"])
