"""The engine's contract: one pass per rule, batched = per-row, the model untouched, clear errors."""

import copy
import gc
import warnings

import pytest
import torch
import torchvision
from torch import nn

import backsal
from backsal.methods import NAMED_METHODS, available_methods

ALL_NAMED = [*NAMED_METHODS, "grad_cam"]
TINY_LAYERS = ["input", "conv1", "bn2", "conv3", "conv4"]
TINY_CONVS = ["conv1", "conv2", "conv3", "conv4"]


def _tiny_kwargs():
    return {"contrast_layer": "pool", "classifier_layer": "fc"}


def _layers_for(method):
    return TINY_CONVS if method == "norm_grad_proper" else TINY_LAYERS


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls, handle


def test_one_forward_per_backward_rule(tiny_net, tiny_batch):
    images, targets = tiny_batch
    calls, handle = _count_forwards(tiny_net)
    try:
        methods = [
            "gradient",
            "linear_approx",
            "grad_cam",
            "norm_grad",
            "conv3x3/max",
            "guided_backprop",
            "guided_backprop_sum",
            "deconvnet",
            "excitation_backprop",
            "contrastive_excitation_backprop",
        ]
        maps = backsal.saliency(tiny_net, images, targets, methods, TINY_LAYERS, **_tiny_kwargs())
    finally:
        handle.remove()
    assert len(calls) == 5  # plain, guided, deconvnet, excitation, contrastive excitation
    assert all(len(maps[m]) == len(TINY_LAYERS) for m in methods)


def test_rows_sharing_an_image_share_its_forward(tiny_net):
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    rows = images[torch.tensor([0, 0, 1, 0, 1])]
    calls, handle = _count_forwards(tiny_net)
    try:
        backsal.saliency(
            tiny_net,
            rows,
            torch.tensor([0, 1, 2, 3, 4]),
            ["gradient", "guided_backprop"],
            ["conv3"],
        )
    finally:
        handle.remove()
    assert calls == [2, 2]  # two rules, each one forward over the two distinct images


@pytest.mark.parametrize("method", ALL_NAMED)
def test_batched_equals_per_row_loop(tiny_net, method):
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(4, 3, 9, 9, generator=generator, dtype=torch.float64).abs()
    targets = torch.tensor([4, 0, 2, 2])
    layers = _layers_for(method)
    batched = backsal.saliency(tiny_net, images, targets, [method], layers, **_tiny_kwargs())[
        method
    ]
    for row in range(4):
        single = backsal.saliency(
            tiny_net,
            images[row : row + 1],
            targets[row : row + 1],
            [method],
            layers,
            **_tiny_kwargs(),
        )[method]
        for layer in layers:
            torch.testing.assert_close(
                batched[layer][row : row + 1], single[layer], rtol=1e-10, atol=1e-14
            )


@pytest.mark.parametrize("method", ALL_NAMED)
def test_shared_forward_equals_one_forward_per_row(tiny_net, method):
    generator = torch.Generator().manual_seed(6)
    images = torch.randn(3, 3, 9, 9, generator=generator, dtype=torch.float64).abs()
    index = torch.tensor([0, 1, 0, 2, 0, 1])
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    layers = _layers_for(method)
    kwargs = _tiny_kwargs()
    shared = backsal.saliency(
        tiny_net, images, targets, [method], layers, image_index=index, **kwargs
    )
    detected = backsal.saliency(tiny_net, images[index], targets, [method], layers, **kwargs)
    per_row = backsal.saliency(
        tiny_net, images[index], targets, [method], layers, share_forward=False, **kwargs
    )
    for layer in layers:
        torch.testing.assert_close(
            shared[method][layer], per_row[method][layer], rtol=1e-10, atol=1e-14
        )
        torch.testing.assert_close(
            detected[method][layer], per_row[method][layer], rtol=1e-10, atol=1e-14
        )


def test_seeds_for_class_score_maps():
    """seed='pointing': the gradient of Σ_v softmax_v(o_c) · o_c(v), the softmax held constant."""
    torch.manual_seed(2)
    fcn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1)).double()
    images = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    targets = torch.tensor([1, 4])
    maps = backsal.saliency(fcn, images, targets, ["gradient_sum"], ["input"], seed="pointing")
    x = images.clone().requires_grad_(True)
    out = fcn(x)
    seed = torch.zeros_like(out)
    for b, c in enumerate(targets.tolist()):
        seed[b, c] = torch.softmax(out[b, c].detach().flatten(), 0).view(6, 7)
    (grad,) = torch.autograd.grad(out, x, seed)
    torch.testing.assert_close(maps["gradient_sum"]["input"], grad.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="seed='pointing'"):
        backsal.saliency(fcn, images, targets, ["gradient"], ["input"])


def test_logit_model_with_pointing_seed_is_an_error(tiny_net, tiny_batch):
    images, targets = tiny_batch
    with pytest.raises(ValueError, match="seed='logit'"):
        backsal.saliency(tiny_net, images, targets, ["gradient"], ["input"], seed="pointing")


def test_size_upsamples_and_none_keeps_resolution(tiny_net, tiny_batch):
    images, targets = tiny_batch
    native = backsal.saliency(tiny_net, images, targets, ["norm_grad"], ["conv1", "bn2", "fc"])[
        "norm_grad"
    ]
    assert native["conv1"].shape == (3, 1, 9, 11)
    assert native["bn2"].shape == (3, 1, 5, 6)
    assert native["fc"].shape == (3, 1, 1, 1)  # a [B, C] output is a 1×1 map
    resized = backsal.saliency(tiny_net, images, targets, ["norm_grad"], ["bn2"], size=(20, 30))[
        "norm_grad"
    ]
    expected = torch.nn.functional.interpolate(
        native["bn2"], size=(20, 30), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(resized["bn2"], expected)


def _snapshot(model):
    return {
        "state": copy.deepcopy(model.state_dict()),
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "grads": [p.grad for p in model.parameters()],
    }


def test_inplace_relu_model_matches_out_of_place_and_is_left_unchanged():
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None)  # its features use ReLU(inplace=True)
    # a narrow head of the same structure keeps the test fast (classifier.4 is still a ReLU)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
        nn.Linear(32, 10),
    )  # fmt: skip
    model.classifier[3].weight.requires_grad_(False)  # a partly frozen model
    model.train()  # saliency runs in eval mode and restores the flags
    reference = copy.deepcopy(model).eval()
    for module in reference.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    images = torch.randn(2, 3, 32, 32)
    targets = torch.tensor([7, 3])
    methods = [
        "gradient",
        "linear_approx",
        "grad_cam",
        "norm_grad",
        "norm_grad_proper",
        "guided_backprop",
        "deconvnet",
        "excitation_backprop",
        "contrastive_excitation_backprop",
    ]
    layers = ["features.0", "features.3", "features.8", "features.13"]
    before = _snapshot(model)
    ours = backsal.saliency(model, images, targets, methods, layers)
    theirs = backsal.saliency(reference, images, targets, methods, layers)
    after = _snapshot(model)
    for method in methods:
        for layer in layers:
            torch.testing.assert_close(
                ours[method][layer], theirs[method][layer], rtol=1e-6, atol=1e-9
            )
    assert before["training"] == after["training"] and all(after["training"])
    assert before["inplace"] == after["inplace"] and True in after["inplace"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert all(g is None for g in after["grads"])
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key


def test_works_under_no_grad_and_inference_mode(tiny_net, tiny_batch):
    images, targets = tiny_batch
    expected = backsal.saliency(
        tiny_net, images, targets, ["gradient", "guided_backprop"], ["input", "bn2"]
    )
    with torch.no_grad():
        under_no_grad = backsal.saliency(
            tiny_net, images, targets, ["gradient", "guided_backprop"], ["input", "bn2"]
        )
    with torch.inference_mode():
        frozen_images = images.clone()
        under_inference = backsal.saliency(
            tiny_net, frozen_images, targets, ["gradient", "guided_backprop"], ["input", "bn2"]
        )
    for result in (under_no_grad, under_inference):
        for method, by_layer in expected.items():
            for layer, value in by_layer.items():
                torch.testing.assert_close(result[method][layer], value)


def test_errors_say_what_to_do(tiny_net, tiny_batch):
    images, targets = tiny_batch
    with pytest.raises(
        ValueError,
        match=r"(?s)Unknown layer 'conv9'. Did you mean 'conv4'.*Valid layers.*input, conv1, relu, conv2, bn2",
    ):
        backsal.saliency(tiny_net, images, targets, ["gradient"], ["conv9"])
    with pytest.raises(
        ValueError, match=r"Unknown saliency method 'gradcam'.*'grad_cam'.*Known methods"
    ):
        backsal.saliency(tiny_net, images, targets, ["gradcam"], ["conv1"])
    with pytest.raises(ValueError, match="targets has 2 entries but images has 3 rows"):
        backsal.saliency(tiny_net, images, targets[:2], ["gradient"], ["conv1"])
    with pytest.raises(
        ValueError, match=r"Target classes \[5\] are out of range for a model with 5 classes"
    ):
        backsal.saliency(tiny_net, images, torch.tensor([0, 5, 1]), ["gradient"], ["conv1"])
    with pytest.raises(ValueError, match=r"needs an nn.Conv2d layer, but 'bn2' is BatchNorm2d"):
        backsal.saliency(tiny_net, images, targets, ["norm_grad_proper"], ["bn2"])
    with pytest.raises(
        ValueError, match=r"needs an nn.Conv2d layer, but 'input' is the input image"
    ):
        backsal.saliency(tiny_net, images, targets, ["norm_grad_proper"], ["input"])
    with pytest.raises(RuntimeError, match="'relu' runs more than once"):
        backsal.saliency(tiny_net, images, targets, ["gradient"], ["relu"])
    with pytest.raises(ValueError, match=r"images must be a tensor \[B, C, H, W\]"):
        backsal.saliency(tiny_net, images[0], targets, ["gradient"], ["conv1"])
    with pytest.raises(ValueError, match="integer class indices"):
        backsal.saliency(tiny_net, images, targets.double(), ["gradient"], ["conv1"])
    with pytest.raises(ValueError, match="No layer requested"):
        backsal.saliency(tiny_net, images, targets, ["gradient"], [])
    # a failed call leaves no hook behind
    assert all(not m._forward_hooks for m in tiny_net.modules())


def test_two_hundred_calls_leave_no_hooks_and_no_growth():
    psutil = pytest.importorskip("psutil")
    from conftest import TinyNet

    torch.manual_seed(0)
    model = TinyNet().eval()
    images = torch.randn(2, 3, 16, 16)
    targets = torch.tensor([1, 2])
    methods = ["gradient", "norm_grad", "guided_backprop", "deconvnet", "excitation_backprop",
               "contrastive_excitation_backprop"]  # fmt: skip

    def call():
        backsal.saliency(
            model, images, targets, methods, ["conv1", "bn2", "input"], contrast_layer="pool"
        )

    def live_tensors():
        with warnings.catch_warnings():  # gc sees deprecated torch proxies that warn on isinstance
            warnings.simplefilter("ignore")
            return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    for _ in range(20):
        call()
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    tensors_before = live_tensors()
    for _ in range(200):
        call()
    gc.collect()
    tensors_after = live_tensors()
    rss_growth = psutil.Process().memory_info().rss - rss_before
    assert tensors_after <= tensors_before
    assert rss_growth < 16 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB over 200 calls"
    assert all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules()
    )
    assert torch._C._len_torch_function_stack() == 0


class _WritesIntoPooled(nn.Module):
    """A parameter-free probe target (the pool) whose output is then modified in place."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(4, 3, 1)
        self.inplace = inplace

    def forward(self, x):
        y = self.pool(self.conv(x))
        y = y.mul_(2) if self.inplace else y * 2
        return self.head(y).mean((2, 3))


def test_in_place_write_into_an_uncopied_probe_is_detected_and_redone_once():
    torch.manual_seed(0)
    writer = _WritesIntoPooled(inplace=True).double()
    clean = _WritesIntoPooled(inplace=False).double()
    clean.load_state_dict(writer.state_dict())
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    targets = torch.tensor([0, 2])
    calls, handle = _count_forwards(writer)
    try:
        first = backsal.saliency(writer, images, targets, ["linear_approx", "norm_grad"], ["pool"])
        second = backsal.saliency(writer, images, targets, ["linear_approx", "norm_grad"], ["pool"])
    finally:
        handle.remove()
    assert len(calls) == 3  # the first call redoes its pass once, the second copies from the start
    expected = backsal.saliency(clean, images, targets, ["linear_approx", "norm_grad"], ["pool"])
    for result in (first, second):
        for method in ("linear_approx", "norm_grad"):
            torch.testing.assert_close(result[method]["pool"], expected[method]["pool"])


def test_feeding_convs_of_torchvision_models():
    from backsal.capture import feeding_convs

    vgg = torchvision.models.vgg11(weights=None)
    assert feeding_convs(vgg, ["features.1", "features.4", "input"]) == {
        "features.1": "features.0",
        "features.4": "features.3",
    }
    resnet = torchvision.models.resnet18(weights=None)
    found = feeding_convs(resnet, ["relu", "maxpool", "layer1", "layer2", "layer2.0"])
    assert found == {
        "relu": "conv1",
        "maxpool": "conv1",
        "layer1": "layer1.1.conv2",
        "layer2": "layer2.1.conv2",
        "layer2.0": "layer2.0.conv2",
    }


def test_method_layers_share_the_pass(tiny_net, tiny_batch):
    """norm_grad_proper at the conv layers and other methods at theirs, in one pass per rule."""
    images, targets = tiny_batch
    calls, handle = _count_forwards(tiny_net)
    try:
        maps = backsal.saliency(
            tiny_net, images, targets, ["norm_grad", "norm_grad_proper"], ["bn2", "input"],
            method_layers={"norm_grad_proper": ["conv2", "conv3"]},
        )  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == 1
    assert set(maps["norm_grad"]) == {"bn2", "input"} and set(maps["norm_grad_proper"]) == {
        "conv2",
        "conv3",
    }
    alone = backsal.saliency(tiny_net, images, targets, ["norm_grad_proper"], ["conv2", "conv3"])
    for layer in ("conv2", "conv3"):
        torch.testing.assert_close(
            maps["norm_grad_proper"][layer], alone["norm_grad_proper"][layer]
        )
    with pytest.raises(ValueError, match="not requested"):
        backsal.saliency(
            tiny_net, images, targets, ["norm_grad"], ["bn2"], method_layers={"gradient": ["conv1"]}
        )


class _TwoBranches(nn.Module):
    """Two parallel branches (neither probe lies below the other) and a branch the output ignores."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 1)
        self.unused = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        self.unused(x)
        merged = torch.relu(self.left(x)) + torch.relu(self.right(x))
        return self.fc(merged.mean((2, 3)))


def test_parallel_branches_and_unused_probes_get_their_gradients():
    torch.manual_seed(0)
    net = _TwoBranches().double()
    images = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    targets = torch.tensor([0, 3, 4])
    maps = backsal.saliency(net, images, targets, ["gradient_sum"], ["left", "right", "unused"])
    captured = {}
    handles = [
        getattr(net, n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
        for n in ("left", "right", "unused")
    ]
    try:
        out = net(images)
    finally:
        for handle in handles:
            handle.remove()
    seed = torch.nn.functional.one_hot(targets, 5).double()
    grads = torch.autograd.grad(out, [captured["left"], captured["right"]], seed)
    torch.testing.assert_close(maps["gradient_sum"]["left"], grads[0].sum(1, keepdim=True))
    torch.testing.assert_close(maps["gradient_sum"]["right"], grads[1].sum(1, keepdim=True))
    assert torch.equal(maps["gradient_sum"]["unused"], torch.zeros(3, 1, 6, 6, dtype=torch.float64))


def test_backward_stops_at_the_lowest_requested_layer():
    """A deep-only request does not pay for the backward through the early layers."""
    from backsal._engine import _lowest

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    captured = {}
    handles = [
        dict(model.named_modules())[n].register_forward_hook(
            lambda m, i, o, n=n: captured.__setitem__(n, o)
        )
        for n in ("layer2", "layer3", "layer4")
    ]
    try:
        model(torch.randn(1, 3, 32, 32))
    finally:
        for handle in handles:
            handle.remove()
    assert _lowest(captured) == ["layer2"]


def test_no_method_waits_for_the_device():
    """A value read back during a pass (``.item()``, ``bool(t)``, ``.tolist()``) would make the
    host wait for a GPU and stop queueing work. On the ``meta`` device any such read raises, so
    every method running there shows there is none (rows given one forward each, as on a GPU)."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval().to("meta")
    images = torch.empty(3, 3, 32, 32, device="meta")
    for name in available_methods():
        real_conv = name.startswith("real_conv") or name == "norm_grad_proper"
        layers = ["layer1.0.conv1", "conv1"] if real_conv else ["layer1", "layer4", "input"]
        maps = backsal.saliency(model, images, [1, 2, 3], [name], layers, share_forward=False)
        assert maps[name][layers[0]].device.type == "meta", name


# --------------------------------------------------------------------------------------------
# Layer order, and bad input with a clear message (the engine's part of the bad-input catalogue)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.mark.parametrize("repeat_image", [False, True], ids=["distinct", "repeated"])
def test_layers_come_back_in_the_requested_order(resnet18, repeat_image):
    """Deepest first was the backward's order; rows repeating an image took another path."""
    images = torch.randn(2, 3, 32, 32)
    if repeat_image:
        images[1] = images[0]
    layers = ["layer2", "input", "layer4", "layer1", "layer3"]
    methods = ["norm_grad", "gradient", "grad_cam"]
    maps = backsal.saliency(resnet18, images, [1, 2], methods, layers)
    assert list(maps) == methods
    for method in methods:
        assert list(maps[method]) == layers, method


def test_linear_combination_weights_land_on_their_layers(resnet18):
    """``combine(maps[m], "linear", layers=...)`` weighs each layer by its depth rank."""
    images = torch.randn(2, 3, 32, 32)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    maps = backsal.saliency(resnet18, images, [1, 2], ["norm_grad"], layers)["norm_grad"]
    combined = backsal.combine(maps, weights="linear", layers=layers, size=(32, 32))
    by_name = {"layer1": 0.25, "layer2": 0.5, "layer3": 0.75, "layer4": 1.0}
    torch.testing.assert_close(combined, backsal.combine(maps, weights=by_name, size=(32, 32)))
    # in the dict's order, as a list: the order the maps come back in is the one requested
    listed = backsal.combine(maps, weights=list(by_name.values()), layers=list(maps), size=(32, 32))
    torch.testing.assert_close(listed, combined)


class _DictOutput(nn.Module):
    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x):
        logits = self.model(x)
        if self.kind == "dict":
            return {"logits": logits, "hidden": x}
        if self.kind == "tuple":
            return logits, x
        return {"scores": logits}


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_a_model_returning_a_dict_or_tuple_is_explained_on_its_logits(resnet18, kind):
    images = torch.randn(2, 3, 32, 32)
    args = (images, [1, 2], ["gradient", "excitation_backprop"], ["layer2", "input"])
    plain = backsal.saliency(resnet18, *args)
    wrapped = backsal.saliency(_DictOutput(resnet18, kind), *args[:3], ["model.layer2", "input"])
    torch.testing.assert_close(wrapped["gradient"]["input"], plain["gradient"]["input"])
    torch.testing.assert_close(
        wrapped["excitation_backprop"]["model.layer2"], plain["excitation_backprop"]["layer2"]
    )


def _nan_pixel():
    images = torch.randn(3, 3, 16, 16)
    images[1, 0, 4, 4] = float("nan")
    return images


def _inf_image_of_shared_rows():
    images = torch.randn(2, 3, 16, 16)
    images[1, 2, 0, 0] = float("inf")
    return images


# (case, call arguments, error type, message pattern) — one line per bad input
BAD_INPUT = [
    ("methods as a string", dict(methods="gradient"), TypeError, r"pass \['gradient'\]"),
    ("layers as a string", dict(layers="layer1"), TypeError, r"pass \['layer1'\]"),
    ("method_layers as a string", dict(method_layers={"gradient": "layer1"}), TypeError,
     r"method_layers\['gradient'\].*pass \['layer1'\]"),
    ("a NaN pixel", dict(images=_nan_pixel(), targets=[0, 1, 2]), ValueError,
     r"rows \[1\] hold NaN or infinite"),
    ("an infinite pixel of a shared image", dict(images=_inf_image_of_shared_rows(),
     targets=[0, 1, 2], image_index=torch.tensor([0, 1, 1])), ValueError,
     r"images \[1\] \(rows \[1, 2\]\)"),
    ("an empty batch", dict(images=torch.empty(0, 3, 16, 16), targets=[]), ValueError,
     "No rows to explain"),
    ("targets on the meta device", dict(targets=torch.tensor([1, 2, 3], device="meta")),
     ValueError, "'meta' device"),
    ("a model on another device", dict(model="meta"), ValueError,
     "images are on cpu but the model is on meta"),
    ("a model returning a dict without logits", dict(model="scores", layers=["model.layer1"]),
     TypeError,
     r"returned a dict with keys \['scores'\].*Wrap the model"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case, change, error, message", BAD_INPUT, ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_gets_a_clear_error(resnet18, case, change, error, message):
    call = dict(
        images=torch.randn(3, 3, 16, 16), targets=[1, 2, 3], methods=["gradient"],
        layers=["layer1"],
    )  # fmt: skip
    call.update(change)
    model = call.pop("model", resnet18)
    if model == "meta":
        model = copy.deepcopy(resnet18).to("meta")
    elif model == "scores":
        model = _DictOutput(resnet18, "scores")
    with pytest.raises(error, match=message):
        backsal.saliency(model, **call)
