"""Model registry: every built-in spec is consistent with the model it builds."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import backsal.models as models
from backsal.models import (
    CaffePreprocess,
    ImageNetPreprocess,
    ModelSpec,
    available_models,
    build_model,
    get_spec,
    register,
)

BUILTIN = {
    "vgg16_voc07": ("pointing", 20, "classifier.4"),
    "resnet50_voc07": ("pointing", 20, "avgpool"),
    "vgg16_coco14": ("pointing", 80, "classifier.4"),
    "resnet50_coco14": ("pointing", 80, "avgpool"),
    "vgg16_imagenet": ("logit", 1000, "classifier.4"),
    "resnet50_imagenet": ("logit", 1000, "avgpool"),
}


def test_builtin_names():
    assert set(BUILTIN) <= set(available_models())


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_spec_matches_model(name):
    spec = get_spec(name)
    seed, num_classes, contrast = BUILTIN[name]
    assert (spec.seed, spec.num_classes, spec.contrast_layer) == (seed, num_classes, contrast)
    with torch.device("meta"):  # shapes only: no memory, no weights
        model = spec.build(pretrained=False)
    assert not model.training
    modules = dict(model.named_modules())
    for layer in (*spec.probe_layers, spec.contrast_layer):
        assert layer in modules, f"{name}: {layer} is not a module"
    if name.startswith("vgg16"):
        assert spec.combination_layers == tuple(f"features.{i}" for i in (3, 8, 15, 22, 29))
        assert all(isinstance(modules[layer], nn.ReLU) for layer in spec.probe_layers)
    else:
        assert spec.combination_layers == ("layer1", "layer2", "layer3", "layer4")
    height, width = spec.preprocess.output_size(375, 500)
    output = model(torch.empty(1, 3, height, width, device="meta"))
    if seed == "pointing":
        assert isinstance(spec.preprocess, CaffePreprocess)
        assert output.shape == (1, num_classes, 1, 4)  # a class-score map
    else:
        assert isinstance(spec.preprocess, ImageNetPreprocess)
        assert output.shape == (1, num_classes)
    json.dumps(spec.describe())  # plain data for result metadata


def test_register_and_lookup(monkeypatch):
    available_models()  # load the built-ins before isolating the registry
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    spec = ModelSpec(
        name="tiny_test",
        builder=lambda **kwargs: nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()),
        preprocess=ImageNetPreprocess(size=(8, 8)),
        seed="pointing",
        num_classes=2,
        dataset="synthetic",
        probe_layers=("1",),
        combination_layers=("1",),
    )
    register(spec)
    assert "tiny_test" in available_models()
    assert isinstance(build_model("tiny_test", pretrained=False), nn.Sequential)
    with pytest.raises(ValueError, match="already registered"):
        register(ModelSpec(**{**spec.__dict__, "description": "another"}))
    register(ModelSpec(**{**spec.__dict__, "description": "another"}), replace=True)
    assert get_spec("tiny_test").description == "another"


def test_unknown_name_lists_known():
    with pytest.raises(KeyError, match="vgg16_voc07"):
        get_spec("vgg19_voc07")


def test_spec_validation():
    base = dict(
        name="x",
        builder=nn.Identity,
        preprocess=CaffePreprocess(),
        num_classes=3,
        dataset="d",
        probe_layers=("a",),
    )
    with pytest.raises(ValueError, match="not probe layers"):
        ModelSpec(**base, seed="pointing", combination_layers=("b",))
    with pytest.raises(ValueError, match="seed"):
        ModelSpec(**base, seed="softmax", combination_layers=())  # type: ignore[arg-type]
