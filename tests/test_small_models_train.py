"""Small models: naming, probe layers, a training smoke test, determinism and checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

import backsal.models.train as train_module
from backsal.data.synthetic import cluttered_digits
from backsal.models.checkpoint import CheckpointError
from backsal.models.small import (
    SMALL_MODELS,
    SMALL_RESNET_PROBE_LAYERS,
    SMALL_VGG_COMBINATION_LAYERS,
    SMALL_VGG_PROBE_LAYERS,
    TrainingMaxPool,
    small_transform,
)
from backsal.models.train import (
    TrainConfig,
    build_small_model,
    load_checkpoint,
    mean_average_precision,
    predict_logits,
    save_checkpoint,
    train_model,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Train on one thread: on a shared, busy machine torch's thread pool waits for descheduled
    threads (measured 0.3 s on one thread vs 4-12 s on two for the smoke test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_train():
    return cluttered_digits("train", num_images=96, seed=0)


@pytest.mark.parametrize(("name", "parameters"), [("small_vgg", 71786), ("small_resnet", 308826)])
def test_models_have_the_planned_size_and_output(name, parameters):
    model = build_small_model(name)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_probe_and_combination_layers_are_addressable(name):
    spec = SMALL_MODELS[name]
    modules = dict(build_small_model(name).named_modules())
    assert set(spec.probe_layers) <= set(modules)
    assert set(spec.combination_layers) <= set(spec.probe_layers)
    assert spec.last_conv_layer == spec.probe_layers[-1]


def test_vgg_probes_every_relu_and_combines_each_block_output():
    features = build_small_model("small_vgg").features
    relus = [f"features.{i}" for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
    assert list(SMALL_VGG_PROBE_LAYERS) == relus
    # the last ReLU before each pooling, and the network's last ReLU
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    expected = [f"features.{i - 1}" for i in pools] + [relus[-1]]
    assert list(SMALL_VGG_COMBINATION_LAYERS) == expected


def _pool_inputs():
    """Pooling inputs with what decides a window's winner: ties of zeros (ReLU) and of positive
    values (flat regions), NaN, odd sizes (the last row and column dropped)."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 3, 9, 11))
    x[0, 0, :4, :4] = 0.5  # positive ties in whole windows
    x[1, 1, 2, 2] = float("nan")
    x[2] = 0.0  # every window a tie of zeros
    return x


def test_training_max_pool_equals_max_pool_values_indices_and_gradients():
    stock, fast = nn.MaxPool2d(2, 2), TrainingMaxPool()
    assert isinstance(fast, nn.MaxPool2d)
    x = _pool_inputs()
    grad = torch.randn(4, 3, 4, 5)
    outputs, grads = [], []
    for module in (stock, fast):
        leaf = x.clone().requires_grad_()
        out = module.train()(leaf)
        out.backward(grad)
        outputs.append(out)
        grads.append(leaf.grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0, equal_nan=True)
    assert outputs[1].grad_fn is not None and "FastMaxPool" in type(outputs[1].grad_fn).__name__
    # in eval mode (every saliency method) and without gradients it is nn.MaxPool2d's own pass
    evaluated = fast.eval()(x.clone().requires_grad_())
    assert "MaxPool2DWithIndices" in type(evaluated.grad_fn).__name__
    torch.testing.assert_close(evaluated, outputs[0], rtol=0, atol=0, equal_nan=True)


def test_small_vgg_trains_to_the_same_bits_with_the_stock_max_pool():
    """A few Adam steps of the small VGG with its TrainingMaxPool and with nn.MaxPool2d in its
    place: every parameter and buffer equal, bit for bit."""
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    labels = (torch.rand(96, 10) > 0.7).float()
    states = []
    for stock in (False, True):
        model = build_small_model("small_vgg", seed=3)
        if stock:
            for index, module in enumerate(model.features):
                if isinstance(module, TrainingMaxPool):
                    model.features[index] = nn.MaxPool2d(2, 2)
        config = TrainConfig(epochs=1, batch_size=32, seed=3)
        train_model(model, images, labels, config)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_resnet_blocks_reuse_their_relu_like_torchvision():
    model = build_small_model("small_resnet")
    calls: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
        for name, module in model.named_modules()
        if isinstance(module, nn.ReLU)
    ]
    model(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert calls == {"relu": 1, **{f"layer{i}.relu": 2 for i in range(1, 5)}}
    assert SMALL_RESNET_PROBE_LAYERS == ("relu", "layer1", "layer2", "layer3", "layer4")


def test_small_transform_scales_uint8_to_unit_range():
    image = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1)
    assert small_transform(image).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    with pytest.raises(TypeError, match="uint8"):
        small_transform(image.float())


def test_training_decreases_the_loss(tiny_train):
    model = build_small_model("small_vgg", seed=0)
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=0)
    result = train_model(model, tiny_train.images, tiny_train.labels, config)
    assert len(result.epoch_losses) == 3 and len(result.step_losses) == 9
    assert result.epoch_losses[-1] < 0.9 * result.epoch_losses[0]
    assert not model.training


def test_training_is_deterministic_for_a_seed_and_leaves_global_rng_alone(tiny_train):
    images, labels = tiny_train.images[:48], tiny_train.labels[:48]
    config = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.05, seed=7)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    weights = []
    for _ in range(2):
        model = build_small_model("small_resnet", seed=7)
        train_model(model, images, labels, config)
        weights.append(model.state_dict())
    assert torch.rand(1).item() == before.item()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    other = build_small_model("small_resnet", seed=8)
    assert not torch.equal(
        other.conv1.weight, build_small_model("small_resnet", seed=7).conv1.weight
    )


@pytest.mark.parametrize("name", ["small_vgg", "small_resnet"])
def test_training_reads_no_uninitialized_memory(tiny_train, monkeypatch, name):
    """Training leaves deterministic mode's NaN fill of new tensors off (it costs time): the
    weights are those of a run with the fill on, where a read of unwritten memory shows."""
    images, labels = tiny_train.images[:48], tiny_train.labels[:48]
    config = TrainConfig(epochs=1, batch_size=16, lr=3e-3, seed=3)
    caller = torch.utils.deterministic.fill_uninitialized_memory
    weights = []
    for fill in (True, False):
        monkeypatch.setattr(train_module, "_FILL_UNINITIALIZED", fill)
        model = build_small_model(name, seed=3)
        train_model(model, images, labels, config)
        weights.append(model.state_dict())
        assert torch.utils.deterministic.fill_uninitialized_memory == caller  # restored
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_mean_average_precision():
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.float32)
    perfect = labels * 2 - 1
    assert mean_average_precision(perfect, labels)[0] == pytest.approx(1.0)
    # class 0: positives ranked 1st and 3rd -> AP = (1 + 2/3) / 2
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.1, 0.3]])
    mean, per_class = mean_average_precision(scores, labels)
    assert per_class[0] == pytest.approx(5 / 6) and per_class[1] == pytest.approx(1.0)
    assert mean == pytest.approx((5 / 6 + 1.0) / 2)


def test_average_precision_equals_scikit_learn_with_and_without_ties():
    from sklearn.metrics import average_precision_score

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(500, 12, generator=generator, dtype=torch.float64)
    scores[:, 6:] = (scores[:, 6:] * 2).round()  # half the classes: a few scores, many ties
    labels = (torch.rand(500, 12, generator=generator) > 0.8).float()
    labels[:, 0] = 1.0  # every example positive
    labels[:, 1] = 0.0  # none: undefined, left out of the mean
    labels[:, 2] = (scores[:, 2] > 0).float()  # perfectly ranked
    labels[:, 3] = 0.0
    labels[:5, 3] = 1.0  # a few
    mean, per_class = mean_average_precision(scores, labels)
    assert np.isnan(per_class[1]) and per_class[2] == 1.0
    assert mean == pytest.approx(np.mean([ap for c, ap in enumerate(per_class) if c != 1]))
    for c in (0, *range(2, 12)):
        expected = average_precision_score(labels[:, c].numpy(), scores[:, c].numpy())
        assert per_class[c] == expected, c  # to the bit: checkpoints record the mAP
    with pytest.raises(ValueError, match="diverged"):
        mean_average_precision(torch.full((3, 2), float("nan")), labels[:3, :2])


@pytest.fixture()
def saved(tmp_path, tiny_train):
    model = build_small_model("small_vgg", seed=1).eval()  # training is not what is tested here
    config = TrainConfig(epochs=1, batch_size=64, seed=1)
    path = tmp_path / "small_vgg.pt"
    digest = save_checkpoint(
        path,
        model,
        model_name="small_vgg",
        num_classes=10,
        config=config,
        data_hash=tiny_train.content_hash,
        metrics={"test_map": 0.5},
    )
    return path, digest, model, tiny_train.content_hash


def test_checkpoint_round_trip_with_provenance(saved, tiny_train):
    path, digest, model, data_hash = saved
    loaded = load_checkpoint(path, model_name="small_vgg", expected_data_hash=data_hash)
    assert loaded.sha256 == digest
    assert path.with_name("small_vgg.pt.sha256").read_text().split() == [digest, "small_vgg.pt"]
    assert loaded.provenance["seed"] == 1 and loaded.provenance["data_hash"] == data_hash
    assert loaded.provenance["torch"] == torch.__version__
    assert loaded.provenance["config"]["epochs"] == 1
    images = tiny_train.images[:8]
    assert torch.equal(predict_logits(loaded.model, images), predict_logits(model, images))


def test_saving_twice_gives_identical_bytes(saved, tmp_path):
    path, digest, model, data_hash = saved
    # torch.save names the archive after the file, so compare files of the same name
    again = save_checkpoint(
        tmp_path / "again" / "small_vgg.pt",
        model,
        model_name="small_vgg",
        num_classes=10,
        config=TrainConfig(epochs=1, batch_size=64, seed=1),
        data_hash=data_hash,
        metrics={"test_map": 0.5},
    )
    assert again == digest


def test_modified_checkpoint_fails_its_sha256(saved):
    path, digest, _, _ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="expected sha256"):
        load_checkpoint(path, expected_sha256=digest)


def test_truncated_checkpoint_without_sidecar_is_unreadable(saved):
    path, _, _, _ = saved
    path.with_name("small_vgg.pt.sha256").unlink()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot be read .* train the model again"):
        load_checkpoint(path)


def test_mismatching_checkpoints_name_what_differs(saved, tmp_path):
    path, _, _, data_hash = saved
    with pytest.raises(CheckpointError, match="holds model 'small_vgg', not 'small_resnet'"):
        load_checkpoint(path, model_name="small_resnet")
    with pytest.raises(CheckpointError, match="trained on data .* now hash to deadbeef"):
        load_checkpoint(path, expected_data_hash="deadbeef")
    with pytest.raises(FileNotFoundError, match="train the model first"):
        load_checkpoint(tmp_path / "missing.pt")

    # a checkpoint whose weights no longer fit the architecture
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["classifier.weight"] = torch.zeros(5, 64)
    payload["state_dict"]["features.99.weight"] = torch.zeros(1)
    del payload["state_dict"]["features.0.bias"]
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "edited.pt")
    message = str(error.value)
    assert "missing keys: features.0.bias" in message
    assert "unexpected keys: features.99.weight" in message
    assert "classifier.weight: checkpoint (5, 64) vs model (10, 64)" in message
    assert "retrain" in message


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a backsal small-model checkpoint"):
        load_checkpoint(path)
