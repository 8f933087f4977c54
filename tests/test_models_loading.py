"""backsal.models.loading: torchvision weights choices, checkpoints in their usual layouts, factories."""

import pytest
import torch
import torchvision

from backsal.models.checkpoint import CheckpointError
from backsal.models.loading import ModelLoadError, load_model, model_from_factory


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "dataparallel"])
def test_checkpoint_layouts(layout, resnet18, tmp_path):
    state = resnet18.state_dict()
    if layout == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    payload = state if layout in ("plain", "dataparallel") else {layout: state, "epoch": 3}
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    loaded = load_model("resnet18", weights="none", checkpoint=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), resnet18(x))
    assert loaded.checksums[f"model:{path.name}"].startswith("sha256:")
    assert loaded.class_names is not None and loaded.class_names[0] == "tench"


def test_checkpoint_mismatch_names_the_first_in_model_order(tmp_path):
    state = torchvision.models.resnet18(num_classes=7).state_dict()
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "seven.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_model("resnet18", weights="none", checkpoint=path)
    first = str(error.value).splitlines()[0]
    assert "first mismatch: missing key layer1.0.conv1.weight" in first
    # built with the classes it was trained for, it fits; ImageNet's names no longer apply
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
    loaded = load_model("resnet18", weights="none", checkpoint=path, num_classes=7)
    assert loaded.class_names is None


def test_weights_are_resolved_the_torchvision_way():
    with pytest.raises(ModelLoadError, match="IMAGENET1K_V1, DEFAULT"):
        load_model("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(ModelLoadError, match="pass weights='none'"):
        load_model("resnet18", weights="DEFAULT", checkpoint="x.pt")
    with pytest.raises(ModelLoadError, match="needs random weights"):
        load_model("resnet18", weights="DEFAULT", num_classes=3)
    with pytest.raises(ModelLoadError, match="did you mean resnet18"):
        load_model("resnet81")
    random = load_model("mobilenet_v3_small", weights="none")
    assert random.source["weights"] == "None" and random.preprocess.size == (224, 224)
    assert len(random.class_names) == 1000


def test_factories(tmp_path, monkeypatch):
    (tmp_path / "zoo.py").write_text(
        "import torch\n\ndef net():\n    return torch.nn.Linear(2, 2)\n\ndef junk():\n    return 3\n"
    )
    monkeypatch.chdir(tmp_path)
    assert isinstance(model_from_factory("zoo:net"), torch.nn.Linear)
    assert isinstance(model_from_factory(f"{tmp_path / 'zoo.py'}:net"), torch.nn.Linear)
    for bad, message in [("zoo:junk", "not a torch.nn.Module"), ("zoo:none", "no function"),
                         ("zoo:", "not 'module:function'"), ("nowhere.py:f", "does not exist")]:  # fmt: skip
        with pytest.raises(ModelLoadError, match=message):
            model_from_factory(bad)
