"""Meta-saliency against the straightforward reference loop: deepcopy, one SGD step, saliency."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import backsal
from backsal import Meta

METHODS = [
    "norm_grad",
    "norm_grad_selective",
    "grad_cam",
    "gradient",
    "linear_approx",
    "guided_backprop",
]


def _narrow_vgg11_bn() -> nn.Module:
    """torchvision's vgg11_bn with its 25088x4096 head narrowed (same structure), to keep per-row
    parameter copies of the reference loop small."""
    model = torchvision.models.vgg11_bn(weights=None)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(),
        nn.Linear(16, 10),
    )  # fmt: skip
    return model


def _randomize_bn(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model


MODELS = {
    "resnet18": (
        lambda: torchvision.models.resnet18(weights=None, num_classes=10),
        ["layer1", "layer3", "layer4", "input"],
    ),
    "vgg11_bn": (_narrow_vgg11_bn, ["features.2", "features.10", "features.27", "input"]),
}


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request):
    torch.manual_seed(0)
    build, layers = MODELS[request.param]
    model = _randomize_bn(build()).double().eval()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    targets = torch.tensor([1, 4, 7])
    return model, images, targets, layers


def reference(
    model, images, targets, methods, layers, lr, steps=1, negate=False, params=None, **kwargs
):
    """Per row: a deep copy of the model, `steps` plain SGD steps on that row's loss, saliency."""
    rows = []
    for r in range(len(targets)):
        copied = copy.deepcopy(model).eval()
        named = dict(copied.named_parameters())
        chosen = [
            p
            for n, p in named.items()
            if params is None or any(n == q or n.startswith(q + ".") for q in params)
        ]
        for p in copied.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(chosen, lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            out = copied(images[r : r + 1])
            if out.dim() == 4:
                target_map = targets[r : r + 1].view(1, 1, 1).expand(1, *out.shape[2:])
                loss = nn.functional.cross_entropy(out, target_map)
            else:
                loss = nn.functional.cross_entropy(out, targets[r : r + 1])
            (-loss if negate else loss).backward()
            optimizer.step()
        rows.append(
            backsal.saliency(
                copied, images[r : r + 1], targets[r : r + 1], methods, layers, **kwargs
            )
        )
    return {
        m: {layer: torch.cat([row[m][layer] for row in rows]) for layer in layers} for m in methods
    }


def assert_maps_close(ours, theirs):
    for method, by_layer in theirs.items():
        for layer, expected in by_layer.items():
            # floor at 1: a c-MWP map at a 1x1 layer is exactly zero up to rounding (target - dual)
            scale = max(float(expected.abs().max()), 1.0)
            torch.testing.assert_close(
                ours[method][layer],
                expected,
                rtol=1e-5,
                atol=1e-9 * scale,
                msg=f"{method} at {layer}",
            )


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_equals_reference_loop(setup, strategy):
    model, images, targets, layers = setup
    ours = backsal.saliency(
        model, images, targets, METHODS, layers, meta=Meta(lr=0.05, strategy=strategy)
    )
    assert_maps_close(ours, reference(model, images, targets, METHODS, layers, lr=0.05))


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_negate_and_two_steps_equal_the_loop(setup, strategy):
    model, images, targets, layers = setup
    meta = Meta(lr=0.02, steps=2, negate=True, strategy=strategy)
    ours = backsal.saliency(model, images, targets, METHODS, layers, meta=meta)
    assert_maps_close(
        ours, reference(model, images, targets, METHODS, layers, lr=0.02, steps=2, negate=True)
    )


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_zero_learning_rate_gives_the_plain_maps(setup, strategy):
    model, images, targets, layers = setup
    plain = backsal.saliency(model, images, targets, METHODS, layers)
    assert_maps_close(
        backsal.saliency(
            model, images, targets, METHODS, layers, meta=Meta(lr=0.0, strategy=strategy)
        ),
        plain,
    )


def test_every_rule_batched_equals_loop(setup):
    model, images, targets, layers = setup
    methods = [
        "deconvnet",
        "excitation_backprop",
        "contrastive_excitation_backprop",
        "conv3x3/norm",
        "guided_backprop_sum",
    ]
    layers = [layer for layer in layers if not layer.startswith("classifier")]
    loop = backsal.saliency(
        model, images.abs(), targets, methods, layers, meta=Meta(lr=0.05, strategy="loop")
    )
    batched = backsal.saliency(
        model,
        images.abs(),
        targets,
        methods,
        layers,
        meta=Meta(lr=0.05, strategy="batched", chunk_size=2),
    )
    assert_maps_close(batched, loop)


def test_parameter_subset(setup):
    model, images, targets, layers = setup
    last = "fc" if hasattr(model, "fc") else "classifier.6"
    for strategy in ("loop", "batched"):
        ours = backsal.saliency(
            model,
            images,
            targets,
            METHODS,
            layers,
            meta=Meta(lr=0.5, params=(last,), strategy=strategy),
        )
        assert_maps_close(
            ours, reference(model, images, targets, METHODS, layers, lr=0.5, params=[last])
        )


def test_rows_sharing_an_image_get_their_own_update(setup):
    model, images, targets, layers = setup
    same = images[:1].expand(2, -1, -1, -1)
    two = torch.tensor([2, 5])
    for strategy in ("loop", "batched"):
        maps = backsal.saliency(
            model, same, two, ["gradient"], layers, meta=Meta(lr=0.5, strategy=strategy)
        )
        for r in range(2):
            alone = backsal.saliency(
                model, same[r : r + 1], two[r : r + 1], ["gradient"], layers, meta=Meta(lr=0.5)
            )
            torch.testing.assert_close(
                maps["gradient"]["layer1" if "layer1" in layers else layers[0]][r : r + 1],
                alone["gradient"]["layer1" if "layer1" in layers else layers[0]],
            )
        first, second = (maps["gradient"][layers[0]][r] for r in range(2))
        assert not torch.allclose(first, second)


def test_learning_rate_grid_equals_single_calls(setup):
    model, images, targets, layers = setup
    grid = backsal.meta_saliency(
        model, images, targets, ["norm_grad", "gradient"], layers, lrs=[0.01, 0.1]
    )
    for lr in (0.01, 0.1):
        single = backsal.saliency(
            model, images, targets, ["norm_grad", "gradient"], layers, meta=Meta(lr=lr)
        )
        assert_maps_close(grid[lr], single)


def test_model_is_never_written(setup):
    model, images, targets, layers = setup
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    backsal.saliency(model, images, targets, METHODS, layers, meta=Meta(lr=0.5, strategy="batched"))
    backsal.saliency(model, images, targets, METHODS, layers, meta=Meta(lr=0.5, strategy="loop"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_class_score_map_model_uses_the_mean_cross_entropy_over_positions():
    torch.manual_seed(0)
    fcn = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 1),
    ).double()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    targets = torch.tensor([0, 3])
    layers = ["1", "3", "input"]
    for strategy in ("loop", "batched"):
        ours = backsal.saliency(
            fcn,
            images,
            targets,
            ["norm_grad", "gradient"],
            layers,
            seed="pointing",
            meta=Meta(lr=0.3, strategy=strategy),
        )
        expected = reference(
            fcn, images, targets, ["norm_grad", "gradient"], layers, lr=0.3, seed="pointing"
        )
        assert_maps_close(ours, expected)


class _ScaledNet(nn.Module):
    """Uses a parameter in an elementwise product, which per-row parameters do not support."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc((self.conv(x) * self.scale).mean((2, 3)))


def test_unsupported_op_with_per_row_parameters_says_what_to_do():
    torch.manual_seed(0)
    net = _ScaledNet()
    images, targets = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match=r"'scale' reaches mul.*strategy='loop'"):
        backsal.saliency(
            net, images, targets, ["gradient"], ["conv"], meta=Meta(lr=0.1, strategy="batched")
        )
    loop = backsal.saliency(
        net, images, targets, ["gradient"], ["conv"], meta=Meta(lr=0.1, strategy="loop")
    )
    subset = backsal.saliency(
        net,
        images,
        targets,
        ["gradient"],
        ["conv"],
        meta=Meta(lr=0.1, strategy="batched", params=("conv", "fc")),
    )
    assert loop["gradient"]["conv"].shape == subset["gradient"]["conv"].shape


def test_nonsense_is_rejected():
    with pytest.raises(ValueError, match="≥ 0"):
        Meta(lr=-1e-3)
    with pytest.raises(ValueError, match="finite"):
        Meta(lr=float("nan"))
    with pytest.raises(ValueError, match="steps"):
        Meta(steps=0)
    with pytest.raises(ValueError, match="strategy"):
        Meta(strategy="vmap")
    with pytest.raises(ValueError, match="no parameter"):
        Meta(params=())
    net = _ScaledNet()
    with pytest.raises(ValueError, match=r"'conv9' names no parameter.*conv.weight"):
        backsal.saliency(
            net,
            torch.randn(1, 3, 8, 8),
            torch.tensor([0]),
            ["gradient"],
            ["conv"],
            meta=Meta(params=("conv9",)),
        )


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_a_target_outside_the_classes_is_named(strategy):
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    with pytest.raises(ValueError, match=r"Target classes \[7\] are out of range"):
        backsal.saliency(
            net,
            torch.randn(2, 3, 8, 8),
            [0, 7],
            ["gradient"],
            ["0"],
            meta=Meta(lr=0.1, strategy=strategy),
        )


@pytest.mark.parametrize("arch", list(MODELS))
def test_the_batched_strategy_never_waits_for_the_device(arch):
    """A value read back in the middle of the batched pass (``.item()``, ``bool(t)``,
    ``.tolist()``) would make the host wait for a GPU and stop queueing work; on the ``meta``
    device any such read raises, so the whole call running there shows there is none."""
    build, layers = MODELS[arch]
    model = build().eval().to("meta")
    images = torch.empty(3, 3, 32, 32, device="meta")
    maps = backsal.saliency(
        model, images, [1, 4, 7], METHODS, layers, meta=Meta(lr=0.1, strategy="batched")
    )
    assert maps["gradient"]["input"].shape == (3, 1, 32, 32)
    assert maps["norm_grad"][layers[0]].device.type == "meta"


def test_low_rank_linear_updates_equal_materialised_ones(setup):
    """The batched strategy keeps linear weights' per-row updates as factors; every rule (the
    excitation ones take the weights whole), two steps, ascent and a grid agree with per-row
    weights materialised."""
    model, images, targets, layers = setup
    methods = ["norm_grad", "gradient", "excitation_backprop", "contrastive_excitation_backprop"]
    layers = [layer for layer in layers if not layer.startswith("classifier")]
    kwargs = dict(steps=2, negate=True, strategy="batched", chunk_size=2)
    lrs = [0.0, 0.05, 0.2]
    assert backsal.meta.low_rank_names(model, dict(model.named_parameters()))
    factored = backsal.meta_saliency(model, images.abs(), targets, methods, layers, lrs, **kwargs)
    with backsal.options(low_rank_linear=False):
        dense = backsal.meta_saliency(model, images.abs(), targets, methods, layers, lrs, **kwargs)
    for lr in lrs:
        assert_maps_close(factored[lr], dense[lr])


class _TokenNet(nn.Module):
    """A linear layer applied at every position (tokens), and called twice: its per-row update
    has rank up to twice the number of positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        tokens = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # [B, HW, 6]
        tokens = torch.relu(self.mix(torch.relu(self.mix(tokens))))
        return self.head(tokens.mean(1))


def test_low_rank_linear_on_tokens_and_a_reused_layer_equals_the_loop():
    torch.manual_seed(0)
    net = _TokenNet().double()
    images = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    targets = torch.tensor([0, 3, 1])
    for steps in (1, 2):
        loop = backsal.saliency(
            net, images, targets, ["gradient", "norm_grad"], ["conv", "input"],
            meta=Meta(lr=0.3, steps=steps, strategy="loop"),
        )  # fmt: skip
        batched = backsal.saliency(
            net, images, targets, ["gradient", "norm_grad"], ["conv", "input"],
            meta=Meta(lr=0.3, steps=steps, strategy="batched"),
        )  # fmt: skip
        assert_maps_close(batched, loop)
        assert_maps_close(loop, reference(net, images, targets, ["gradient", "norm_grad"],
                                          ["conv", "input"], lr=0.3, steps=steps))  # fmt: skip


class _TiedNet(nn.Module):
    """Uses a linear layer's weight outside F.linear (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return h @ self.fc.weight.t()


def test_a_factored_weight_used_outside_linear_is_refused():
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match=r"'fc.weight' reaches"):
        backsal.saliency(
            _TiedNet(), torch.randn(2, 3, 8, 8), torch.tensor([0, 2]), ["gradient"], ["conv"],
            meta=Meta(lr=0.1, strategy="batched"),
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Divergence and learning-rate types (meta's part of the bad-input catalogue)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_a_diverging_step_warns_naming_the_rows(resnet18):
    images = torch.randn(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match=r"lr=1e\+06 .*diverged for rows \[0, 1\]"):
        maps = backsal.saliency(
            resnet18, images, [1, 2], ["gradient"], ["layer1"], meta=Meta(lr=1e6)
        )
    assert not torch.isfinite(maps["gradient"]["layer1"]).all()  # returned as computed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sane learning rate does not warn
        backsal.meta_saliency(resnet18, images, [1, 2], ["gradient"], ["layer1"], lrs=[0, 1e-3])


@pytest.mark.parametrize(
    "lr", [np.float32(1e-3), torch.tensor(1e-3), np.array(1e-3, dtype=np.float32)],
    ids=["numpy scalar", "0-d tensor", "0-d array"],
)  # fmt: skip
def test_a_learning_rate_may_be_a_numpy_scalar_or_a_0d_tensor(resnet18, lr):
    images = torch.randn(2, 3, 16, 16)
    meta = Meta(lr=lr)
    assert type(meta.lr) is float and meta.lr == float(np.float32(1e-3))
    got = backsal.saliency(resnet18, images, [1, 2], ["gradient"], ["layer1"], meta=meta)
    want = backsal.meta_saliency(resnet18, images, [1, 2], ["gradient"], ["layer1"], [meta.lr])
    torch.testing.assert_close(got["gradient"]["layer1"], want[meta.lr]["gradient"]["layer1"])


# (case, the bad call, error type, message pattern) — one line per bad input
BAD_META = [
    ("lr a boolean", lambda: Meta(lr=True), TypeError, "must be a number"),
    ("lr a tensor of two", lambda: Meta(lr=torch.tensor([1e-3, 1e-2])), TypeError,
     "must be a number.*meta_saliency"),
    ("lr a string", lambda: Meta(lr="1e-3"), TypeError, "must be a number"),
    ("lr NaN", lambda: Meta(lr=float("nan")), ValueError, "finite number"),
    ("lr negative numpy", lambda: Meta(lr=np.float32(-1)), ValueError, "finite number"),
    ("lrs a number", lambda: backsal.meta_saliency(
        nn.Linear(2, 2), torch.zeros(1, 3, 2, 2), [0], ["gradient"], ["input"], lrs=1e-3),
     TypeError, "non-empty list of learning rates"),
    ("lrs empty", lambda: backsal.meta_saliency(
        nn.Linear(2, 2), torch.zeros(1, 3, 2, 2), [0], ["gradient"], ["input"], lrs=[]),
     TypeError, "non-empty list"),
]  # fmt: skip


@pytest.mark.parametrize("case, call, error, message", BAD_META, ids=[c[0] for c in BAD_META])
def test_bad_meta_input_gets_a_clear_error(case, call, error, message):
    with pytest.raises(error, match=message):
        call()
