"""Token and channels-last layers, user reshapes, and rules on non-ReLU networks (docs/methods.md §11).

Small transformers built from torchvision's own classes (random weights), so that the layouts
are exactly those of ``vit_*`` and ``swin_*``. References hook the layer by hand, convert
``x`` and ``g`` themselves and apply the method's formula.
"""

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer
from torchvision.ops.misc import Permute

import backsal
from backsal.capture import probe_marks

METHODS = ["gradient", "linear_approx", "norm_grad", "grad_cam", "layer_cam", "conv3x3/sum"]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4]
    )
    return model.eval()


def _x_and_g(model, layer, images, targets):
    """The layer's output and the gradient of each row's target logit with respect to it."""
    store = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: store.setdefault("x", o))
    try:
        scores = model(images)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), store["x"])
    return store["x"].detach(), g


def test_vit_tokens_drop_the_class_token_and_take_the_patch_grid(vit):
    images, targets = torch.randn(3, 3, 32, 32), torch.tensor([1, 5, 9])
    layer = "encoder.layers.encoder_layer_1"
    maps = backsal.saliency(vit, images, targets, ["linear_approx", "gradient"], [layer])
    x, g = _x_and_g(vit, layer, images, targets)
    assert x.shape == (3, 1 + 16, 16)  # [B, 1 + N, C], N = (32 / 8)²
    patch_x, patch_g = x[:, 1:], g[:, 1:]
    expected = (patch_x * patch_g).sum(-1).view(3, 1, 4, 4)  # row-major patch order
    torch.testing.assert_close(maps["linear_approx"][layer], expected)
    torch.testing.assert_close(maps["gradient"][layer], patch_g.abs().amax(-1).view(3, 1, 4, 4))


def test_vit_tokens_equal_the_patch_embedding_layout(vit):
    """The patch embedding conv is [B, C, 4, 4]; the encoder's input tokens are its transpose."""
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    maps = backsal.saliency(vit, images, targets, ["scaling/max"], ["conv_proj", "encoder"])
    assert maps["scaling/max"]["encoder"].shape == maps["scaling/max"]["conv_proj"].shape


def test_swin_stages_are_read_channels_last(swin):
    """Swin's ``norm`` output is [B, H, W, C] and ``permute`` is the same tensor as
    [B, C, H, W]: every method must give the same maps at both (it did not before)."""
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([2, 7])
    layers = ["features.1", "features.3", "norm", "permute"]
    maps = backsal.saliency(swin, images, targets, METHODS, layers)
    for method in METHODS:
        torch.testing.assert_close(maps[method]["norm"], maps[method]["permute"])
        assert maps[method]["features.1"].shape == (2, 1, 8, 8)  # 32 / patch 4
        assert maps[method]["features.3"].shape == (2, 1, 4, 4)  # after the patch merging
    x, g = _x_and_g(swin, "features.1", images, targets)
    assert x.shape == (2, 8, 8, 16)
    torch.testing.assert_close(
        maps["linear_approx"]["features.1"], (x * g).sum(-1, keepdim=True).permute(0, 3, 1, 2)
    )


def test_a_user_reshape_replaces_the_detection(swin):
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([2, 7])

    def channels_first(t):
        return t.permute(0, 3, 1, 2)

    detected = backsal.saliency(swin, images, targets, METHODS, ["features.3"])
    given = backsal.saliency(
        swin, images, targets, METHODS, ["features.3"], reshape={"features.3": channels_first}
    )
    for method in METHODS:
        torch.testing.assert_close(given[method]["features.3"], detected[method]["features.3"])
    with pytest.raises(ValueError, match="must return"):
        backsal.saliency(swin, images, targets, ["gradient"], ["norm"], reshape=lambda t: t[0])
    with pytest.raises(ValueError, match="not probed"):
        backsal.saliency(
            swin, images, targets, ["gradient"], ["norm"], reshape={"head": channels_first}
        )


def test_an_ambiguous_layout_asks_for_a_reshape():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), Permute([0, 2, 3, 1]), nn.LayerNorm(4), Permute([0, 3, 1, 2]),
        nn.Flatten(), nn.Linear(64, 3),
    )  # fmt: skip
    images = torch.randn(2, 3, 4, 4)  # [B, 4, 4, 4] after the norm: C = H = W
    with pytest.raises(ValueError, match="cannot be told apart"):
        backsal.saliency(model, images, [0, 1], ["gradient"], ["2"])
    maps = backsal.saliency(
        model,
        images,
        [0, 1],
        ["gradient"],
        ["2", "3"],
        reshape={"2": lambda t: t.permute(0, 3, 1, 2)},
    )
    torch.testing.assert_close(maps["gradient"]["2"], maps["gradient"]["3"])


def test_layers_that_do_not_run_or_return_tuples_are_refused(swin, vit):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="did not run"):  # called through F.linear
        backsal.saliency(swin, images, [0], ["gradient"], ["features.1.0.attn.qkv"])
    with pytest.raises(ValueError, match="enclosing block"):  # (output, weights)
        backsal.saliency(
            vit, images, [0], ["gradient"], ["encoder.layers.encoder_layer_0.self_attention"]
        )


def test_probe_marks_say_why_and_what_instead(swin):
    marks = {m.name: m for m in probe_marks(swin, torch.zeros(1, 3, 32, 32))}
    assert marks["norm"].layout == "channels_last" and marks["permute"].layout == "channels_first"
    assert marks["features.1.0.attn.qkv"].instead == "the enclosing module 'features.1.0.attn'"
    reused = marks["features.1.0.stochastic_depth"]  # after the attention and after the MLP
    assert not reused.probeable and reused.calls == 2
    assert "features.1.0.attn" in reused.instead and "features.1.0.mlp" in reused.instead


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "excitation_backprop"])
def test_rules_refuse_non_relu_networks_and_name_the_module(vit, swin, method):
    images = torch.randn(1, 3, 32, 32)
    for model in (vit, swin):
        with pytest.raises(ValueError, match=r"no rule for .* called by '[\w.]+'") as error:
            backsal.saliency(model, images, [0], [method], ["input"])
        assert "silently be the plain gradient" in str(error.value)


@pytest.mark.parametrize(
    ("activation", "what"),
    [
        (nn.GELU(), "GELU"),
        (nn.SiLU(), "SiLU"),
        (nn.Hardswish(), "Hardswish"),
        (nn.ReLU6(), "ReLU6"),
    ],
)
def test_guided_backprop_names_the_activation(activation, what):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match=rf"{what}.*called by '1'"):
        backsal.saliency(model, torch.randn(1, 3, 6, 6), [0], ["guided_backprop"], ["input"])


def test_excitation_refuses_layer_norm_but_guided_passes_it():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    images = torch.randn(2, 8)[:, :, None, None].expand(2, 8, 1, 1).reshape(2, 8, 1, 1)
    flat = nn.Sequential(nn.Flatten(), model)
    with pytest.raises(ValueError, match="LayerNorm, called by '1.1'"):
        backsal.saliency(flat, images, [0, 1], ["excitation_backprop"], ["input"])
    # guided backprop is defined by its ReLUs: a layer norm passes the gradient, as batch norm does
    maps = backsal.saliency(flat, images, [0, 1], ["guided_backprop_sum"], ["1.2"])
    assert torch.isfinite(maps["guided_backprop_sum"]["1.2"]).all()


def test_a_layout_neutral_module_takes_the_layout_of_what_feeds_it():
    """Inside ConvNeXt's block the GELU sits between two Linears on [B, H, W, C]."""
    from torchvision.models.convnext import CNBlock

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), CNBlock(8, layer_scale=1.0, stochastic_depth_prob=0.0),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    ).eval()  # fmt: skip
    images, targets = torch.randn(2, 3, 6, 6), torch.tensor([0, 2])
    layers = ["1.block.3", "1.block.4", "1.block.6", "1"]
    maps = backsal.saliency(model, images, targets, ["linear_approx"], layers)["linear_approx"]
    for layer in layers:
        x, g = _x_and_g(model, layer, images, targets)
        channels = 1 if layer in ("1.block.6", "1") else -1
        expected = (x * g).sum(channels)
        torch.testing.assert_close(maps[layer][:, 0], expected, msg=layer)
