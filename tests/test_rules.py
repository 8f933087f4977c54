"""Backward rules against explicit implementations of their definitions on TinyNet."""

import copy

import pytest
import torch
import torch.nn.functional as F

import backsal
from backsal.rules import backward_rule
from conftest import TinyNet, randomize_batchnorm

LAYERS = ["input", "conv1", "bn2", "conv3", "conv4"]


class _RefGuided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.clamp_min(0)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (grad > 0), grad, torch.zeros_like(grad))


class _RefDeconv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0)


def _forward_with(net: TinyNet, x: torch.Tensor, relu, taps: dict) -> torch.Tensor:
    """TinyNet's forward written out, with ``relu`` at each of its four ReLU sites."""
    c1 = net.conv1(x)
    taps["conv1"] = c1
    r1 = relu(c1)
    b2 = net.bn2(net.conv2(r1))
    taps["bn2"] = b2
    y = relu(b2)
    c3 = net.conv3(y)
    taps["conv3"] = c3
    c4 = net.conv4(relu(c3))
    taps["conv4"] = c4
    z = relu(c4 + y)
    return net.fc(net.pool(z).flatten(1))


def _reference_maps(net, images, targets, relu, reduce):
    x = images.clone().requires_grad_(True)
    taps = {}
    out = _forward_with(net, x, relu, taps)
    score = out[torch.arange(len(targets)), targets].sum()
    names = [n for n in LAYERS if n != "input"]
    grads = torch.autograd.grad(score, [x] + [taps[n] for n in names])
    return {name: reduce(g) for name, g in zip(["input", *names], grads, strict=True)}


@pytest.mark.parametrize(
    ("method", "relu", "reduce"),
    [
        ("guided_backprop", _RefGuided.apply, lambda g: g.abs().amax(1, keepdim=True)),
        ("guided_backprop_sum", _RefGuided.apply, lambda g: g.sum(1, keepdim=True)),
        ("deconvnet", _RefDeconv.apply, lambda g: g.abs().amax(1, keepdim=True)),
    ],
)
def test_relu_rules_match_their_definition(tiny_net, tiny_batch, method, relu, reduce):
    """Every ReLU is patched: a module reused at two sites, F.relu and torch.relu alike."""
    images, targets = tiny_batch
    maps = backsal.saliency(tiny_net, images, targets, [method], LAYERS)
    expected = _reference_maps(tiny_net, images, targets, relu, reduce)
    for layer in LAYERS:
        torch.testing.assert_close(maps[method][layer], expected[layer], rtol=1e-5, atol=1e-12)


def _mwp_affine(x, weight, p, op):
    """x ⊙ f*(W⁺, p ⊘ f(x; W⁺)) computed with a fresh autograd graph."""
    x = x.detach().requires_grad_(True)
    z = op(x, weight.clamp_min(0))
    (back,) = torch.autograd.grad(z, x, p / (z + 1e-20))
    return x.detach() * back


def _mwp_reference(net: TinyNet, images, targets, negate_classifier=False):
    """Excitation backprop through TinyNet, layer by layer, as Zhang et al. define it."""
    with torch.no_grad():
        x = images
        c1 = net.conv1(x)
        r1 = c1.relu()
        c2 = net.conv2(r1)
        b2 = net.bn2(c2)
        y = b2.relu()
        y_pad = F.pad(y, net.conv3._reversed_padding_repeated_twice, mode="reflect")
        c3 = F.conv2d(y_pad, net.conv3.weight, net.conv3.bias, dilation=2, groups=6)
        z1 = c3.relu()
        c4 = net.conv4(z1)
        s = c4 + y
        r = s.relu()
        pooled = net.pool(r).flatten(1)
    w_fc = -net.fc.weight if negate_classifier else net.fc.weight
    p = F.one_hot(targets, net.fc.out_features).to(images.dtype)
    p = _mwp_affine(pooled, w_fc, p, F.linear)
    p = p.view_as(net.pool(r))
    p = _mwp_pool(r, p, net.pool)
    p_s = p * (s > 0)
    share = c4 / s
    p_c4, p_y_skip = p_s * share, p_s * (1 - share)
    out = {"conv4": p_c4}
    p = _mwp_affine(z1, net.conv4.weight, p_c4, lambda t, w: F.conv2d(t, w))
    p = p * (c3 > 0)
    out["conv3"] = p
    p = _mwp_affine(y_pad, net.conv3.weight, p, lambda t, w: F.conv2d(t, w, dilation=2, groups=6))
    y_leaf = y.detach().requires_grad_(True)
    (p_y_main,) = torch.autograd.grad(
        F.pad(y_leaf, net.conv3._reversed_padding_repeated_twice, mode="reflect"), y_leaf, p
    )
    p = (p_y_main + p_y_skip) * (b2 > 0)
    out["bn2"] = p  # batch norm passes the signal unchanged
    p = _mwp_affine(
        r1, net.conv2.weight, p, lambda t, w: F.conv2d(t, w, stride=2, padding=1, groups=2)
    )
    p = p * (c1 > 0)
    out["conv1"] = p
    out["input"] = _mwp_affine(x, net.conv1.weight, p, lambda t, w: F.conv2d(t, w, padding=1))
    return {k: v.sum(1, keepdim=True) for k, v in out.items()}


def _mwp_pool(x, p, pool):
    x = x.detach().requires_grad_(True)
    z = pool(x)
    (back,) = torch.autograd.grad(z, x, p / (z + 1e-20))
    return x.detach() * back


def test_excitation_backprop_matches_layer_by_layer_definition(tiny_net, tiny_batch):
    images, targets = tiny_batch
    images = images.abs()  # EBP assumes non-negative activations, the image included
    maps = backsal.saliency(tiny_net, images, targets, ["excitation_backprop"], LAYERS)
    expected = _mwp_reference(tiny_net, images, targets)
    for layer in LAYERS:
        torch.testing.assert_close(
            maps["excitation_backprop"][layer], expected[layer], rtol=1e-5, atol=1e-12
        )


def test_excitation_backprop_conserves_probability():
    """Without biases every active unit has W⁺x ≥ Wx > 0, so each layer's MWP sums to one."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1, bias=False),
        torch.nn.ReLU(inplace=True),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 6, bias=False),
    ).double()
    images = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    layers = ["input", "1", "2", "4", "5"]
    maps = backsal.saliency(
        net, images, torch.tensor([0, 1, 2, 5]), ["excitation_backprop"], layers
    )
    for layer in layers:
        totals = maps["excitation_backprop"][layer].sum(dim=(1, 2, 3))
        torch.testing.assert_close(totals, torch.ones_like(totals), rtol=1e-9, atol=1e-12)


def test_contrastive_excitation_is_target_minus_dual(tiny_net, tiny_batch):
    """One backward equals TinyNet's MWP minus the MWP of the net with negated classifier."""
    images, targets = tiny_batch
    images = images.abs()
    maps = backsal.saliency(
        tiny_net, images, targets, ["contrastive_excitation_backprop"], LAYERS,
        contrast_layer="pool", classifier_layer="fc",
    )  # fmt: skip
    positive = _mwp_reference(tiny_net, images, targets)
    dual = _mwp_reference(tiny_net, images, targets, negate_classifier=True)
    for layer in LAYERS:
        torch.testing.assert_close(
            maps["contrastive_excitation_backprop"][layer],
            (positive[layer] - dual[layer]).clamp_min(0),  # TorchRay keeps the positive part
            rtol=1e-5,
            atol=1e-12,
        )


def test_contrastive_excitation_rejects_layers_above_contrast(tiny_net, tiny_batch):
    images, targets = tiny_batch
    with pytest.raises(ValueError, match="contrast layer"):
        backsal.saliency(
            tiny_net,
            images,
            targets,
            ["contrastive_excitation_backprop"],
            ["pool"],
            contrast_layer="conv4",
        )


def test_contrastive_excitation_needs_a_known_contrast_layer(tiny_net, tiny_batch):
    images, targets = tiny_batch
    with pytest.raises(ValueError, match="contrast_layer="):
        backsal.saliency(tiny_net, images, targets, ["contrastive_excitation_backprop"], ["conv1"])


@pytest.mark.parametrize("rule", ["guided", "deconvnet", "excitation", "contrastive_excitation"])
def test_rule_context_restores_everything_on_error(tiny_net, rule):
    before = copy.deepcopy(tiny_net.state_dict())
    with pytest.raises(RuntimeError, match="boom"), backward_rule(rule, classifier=tiny_net.fc):
        tiny_net(torch.randn(1, 3, 8, 8, dtype=torch.float64))
        raise RuntimeError("boom")
    assert torch._C._len_torch_function_stack() == 0
    assert not tiny_net.fc._forward_hooks and not tiny_net.fc._forward_pre_hooks
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    out = tiny_net(x)
    assert out.grad_fn is not None and "Excitation" not in type(out.grad_fn).__name__
    for key, value in tiny_net.state_dict().items():
        assert torch.equal(value, before[key])


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="known rules"), backward_rule("lrp"):
        pass


def test_module_relus_are_equivalent_to_functional_ones():
    """A fresh TinyNet whose reused module ReLU is replaced by distinct modules gives the same maps."""
    torch.manual_seed(3)
    net = randomize_batchnorm(TinyNet()).double().eval()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    targets = torch.tensor([1, 2])
    methods = ["guided_backprop", "deconvnet", "excitation_backprop", "gradient"]
    shared = backsal.saliency(net, images, targets, methods, ["input", "conv3"])
    net.relu = torch.nn.ReLU(inplace=False)
    separate = backsal.saliency(net, images, targets, methods, ["input", "conv3"])
    for method in methods:
        for layer in ("input", "conv3"):
            torch.testing.assert_close(
                shared[method][layer], separate[method][layer], rtol=0, atol=0
            )
