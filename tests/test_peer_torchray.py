"""Equality with TorchRay 1.0, the benchmark the paper used: maps, smoothing, the pointing game,
the published checkpoint layout and the difficult-flag files.

TorchRay is a test dependency only. Its models are built by its own ``get_model`` (the download
replaced by reading a file the test writes in the published layout, random weights), its maps by
``torchray.attribution.*``, its points scored by ``PointingGameBenchmark`` on torchvision's
``VOCDetection`` / ``CocoDetection`` over stand-ins (:mod:`backsal.data.standins`) whose image
names are real VOC07 / COCO14 names, so that TorchRay's packaged difficult flags apply to them.
"""

from __future__ import annotations

import copy
import importlib.resources
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

import backsal
from backsal.data.coco import COCOPointing
from backsal.data.difficult import read_difficult_flags
from backsal.data.download import Checksum, Resource
from backsal.data.standins import (
    caffe_resnet50_state,
    caffe_vgg16_state,
    write_checkpoint,
    write_coco14,
    write_difficult_flags,
    write_voc07,
)
from backsal.data.voc import VOC07_DIFFICULT_FLAGS, VOCPointing
from backsal.experiments.pointing import run_pointing
from backsal.experiments.resources import OpenedModel
from backsal.experiments.settings import PointingSettings
from backsal.metrics.pointing import INPUT_SMOOTHING, gaussian_smooth, pointing_accuracies
from backsal.models import get_spec
from backsal.models.torchray import CHECKPOINTS, NUM_CLASSES, torchray_model
from backsal.provenance import file_digest

torchray = pytest.importorskip("torchray")
from torchray.attribution.common import get_pointing_gradient  # noqa: E402
from torchray.attribution.deconvnet import deconvnet  # noqa: E402
from torchray.attribution.excitation_backprop import (  # noqa: E402
    contrastive_excitation_backprop,
    excitation_backprop,
    update_resnet,
)
from torchray.attribution.grad_cam import grad_cam  # noqa: E402
from torchray.attribution.gradient import gradient  # noqa: E402
from torchray.attribution.guided_backprop import guided_backprop  # noqa: E402
from torchray.attribution.linear_approx import linear_approx  # noqa: E402
from torchray.benchmark import models as torchray_models  # noqa: E402
from torchray.benchmark.pointing_game import PointingGameBenchmark  # noqa: E402
from torchray.utils import imsmooth  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

# Layers of each family: TorchRay probes a module's output, as our layer names do.
TORCHVISION_CASES = {
    # (input size, layers, contrast layer, classifier layer)
    "vgg16": (32, ["features.15", "features.29"], "classifier.4", "classifier.6"),
    "resnet50": (64, ["layer2", "layer4"], "avgpool", "fc"),
}
PLAIN = {
    "gradient": gradient,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "linear_approx": linear_approx,
    "grad_cam": grad_cam,
}


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------------------ smoothing


@pytest.mark.parametrize("size", [(100, 60), (37, 53), (8, 11), (224, 298)])
def test_input_smoothing_matches_imsmooth_with_replicated_border(size):
    """σ = 0.02·max(H, W) after the resize, ``padding_mode='replicate'``, as TorchRay's
    ``saliency()`` smooths; (8, 11) has a kernel of radius 1 (σ < 1)."""
    torch.manual_seed(0)
    maps = torch.rand(3, 1, *size)
    maps[:, :, :, -1] += 2.0  # high at the border: where zero padding would move the maximum
    sigma = INPUT_SMOOTHING * max(size)
    theirs = imsmooth(maps, sigma=sigma, padding_mode="replicate")
    ours = gaussian_smooth(maps, INPUT_SMOOTHING)
    assert _relative(ours, theirs) < 1e-5
    if sigma >= 1:  # a kernel wide enough that the test can tell the two paddings apart
        assert _relative(imsmooth(maps, sigma=sigma), theirs) > 1e-3


# ------------------------------------------------------------------------------ maps


@pytest.fixture(scope="module", params=sorted(TORCHVISION_CASES))
def torchvision_case(request):
    name = request.param
    size, layers, contrast, classifier = TORCHVISION_CASES[name]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    images = torch.rand(2, 3, size, size)
    targets = torch.tensor([3, 500])
    return name, model, images, targets, layers, contrast, classifier


@pytest.mark.slow
def test_gradient_family_maps_match_torchray(torchvision_case):
    """gradient, guided backprop, deconvnet, linear approximation at the input and at layers;
    Grad-CAM at layers (logit seed)."""
    name, model, images, targets, layers, _, _ = torchvision_case
    ours = backsal.saliency(model, images, targets, list(PLAIN), ["input", *layers])
    for method, function in PLAIN.items():
        for layer in ["input", *layers]:
            if method == "grad_cam" and layer == "input":
                continue
            theirs = function(
                model, images.clone(), targets, saliency_layer="" if layer == "input" else layer
            )
            assert _relative(ours[method][layer], theirs) < 1e-5, (name, method, layer)


@pytest.mark.slow
def test_excitation_backprop_maps_match_torchray(torchvision_case):
    """MWP and c-MWP; on ResNet50 TorchRay's ``update_resnet`` installs its EltwiseSum rule for
    the skip connections (on a copy: our engine leaves the model as it is)."""
    name, model, images, targets, layers, contrast, classifier = torchvision_case
    methods = ["excitation_backprop", "contrastive_excitation_backprop"]
    ours = backsal.saliency(model, images, targets, methods, layers)
    reference = update_resnet(copy.deepcopy(model)) if name == "resnet50" else model
    for layer in layers:
        theirs = excitation_backprop(reference, images.clone(), targets, saliency_layer=layer)
        assert _relative(ours["excitation_backprop"][layer], theirs) < 1e-5, (name, layer)
        theirs = contrastive_excitation_backprop(
            reference, images.clone(), targets, saliency_layer=layer,
            contrast_layer=contrast, classifier_layer=classifier,
        )  # fmt: skip
        ours_map = ours["contrastive_excitation_backprop"][layer]
        assert _relative(ours_map, theirs) < 1e-5, (name, layer)
        assert float(ours_map.min()) >= 0  # clamped at 0 before any resize, as TorchRay


# ------------------------------------------------------------------------------ checkpoints


def _torchray_get_model(monkeypatch, arch: str, dataset: str, path: Path) -> torch.nn.Module:
    """TorchRay's ``get_model(..., convert_to_fully_convolutional=True)``, its download replaced by
    reading ``path``; also checks it asks for the file our registry names."""
    requested = []

    def load_from_url(url, *args, **kwargs):
        requested.append(url)
        return torch.load(path, map_location="cpu")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", load_from_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchray_models.get_model(arch, dataset, convert_to_fully_convolutional=True)
    ours_name = CHECKPOINTS[(arch, dataset + ("07" if dataset == "voc" else "14"))].filename
    assert [Path(u).name for u in requested] == [ours_name]
    return model.eval()


def _ours(arch: str, dataset: str, root: Path, **options) -> torch.nn.Module:
    resource = CHECKPOINTS[(arch, dataset)]
    path = root / "models" / resource.filename
    local = Resource(
        filename=resource.filename,
        urls=(),
        checksum=Checksum("sha256", file_digest(path, "sha256")),
    )
    return torchray_model(arch, dataset, root=root, download=False, checkpoint=local, **options)


def _resnet50_pair(root: Path, dataset: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A ResNet50 checkpoint in TorchRay's layout, random weights, loaded by TorchRay and by us."""
    path = root / "models" / CHECKPOINTS[("resnet50", dataset)].filename
    write_checkpoint(path, caffe_resnet50_state(NUM_CLASSES[dataset], seed=1))
    monkeypatch = pytest.MonkeyPatch()
    try:
        theirs = _torchray_get_model(monkeypatch, "resnet50", dataset[:-2], path)
    finally:
        monkeypatch.undo()
    return _ours("resnet50", dataset, root, global_pool=True), theirs


@pytest.fixture(scope="module")
def resnet50_pair(tmp_path_factory):
    return _resnet50_pair(tmp_path_factory.mktemp("resnet50"), "voc07")


@pytest.mark.slow
def test_resnet50_checkpoint_layout_matches_torchray_loader(resnet50_pair):
    ours, theirs = resnet50_pair
    theirs = copy.deepcopy(theirs)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 260) * 50
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), rtol=1e-6, atol=1e-6)
    # maps in float64, where 1e-6 is above the rounding of two summation orders
    ours, theirs, images, target = (
        copy.deepcopy(ours).double(),
        theirs.double(),
        images.double(),
        14,
    )
    maps = backsal.saliency(ours, images[:1], [target], ["gradient", "grad_cam"],
                            ["input", "layer3"], seed="pointing")  # fmt: skip
    reference = gradient(theirs, images[:1].clone(), target,
                         get_backward_gradient=get_pointing_gradient)  # fmt: skip
    assert _relative(maps["gradient"]["input"], reference) < 1e-6
    reference = grad_cam(theirs, images[:1].clone(), target, saliency_layer="layer3",
                         get_backward_gradient=get_pointing_gradient)  # fmt: skip
    assert _relative(maps["grad_cam"]["layer3"], reference) < 1e-6


@pytest.mark.slow
def test_vgg16_checkpoint_layout_matches_torchray_loader(tmp_path, monkeypatch):
    path = tmp_path / "models" / CHECKPOINTS[("vgg16", "coco14")].filename
    write_checkpoint(path, caffe_vgg16_state(80, seed=2))
    theirs = _torchray_get_model(monkeypatch, "vgg16", "coco", path)
    ours = _ours("vgg16", "coco14", tmp_path)
    torch.manual_seed(0)
    images = torch.randn(1, 3, 224, 256) * 50
    with torch.no_grad():
        scores = ours(images)
        torch.testing.assert_close(scores, theirs(images), rtol=1e-6, atol=1e-6)
    assert scores.shape == (1, 80, 1, 2)  # a class-score map: fully convolutional
    target = 7
    maps = backsal.saliency(ours, images, [target], ["linear_approx"], ["features.29"],
                            seed="pointing")  # fmt: skip
    reference = linear_approx(theirs, images.clone(), target, saliency_layer="features.29",
                              get_backward_gradient=get_pointing_gradient)  # fmt: skip
    assert _relative(maps["linear_approx"]["features.29"], reference) < 1e-6


def test_difficult_flag_files_read_as_torchray_reads_them():
    """TorchRay's packaged flag files, read by its loader's rule (name, then 0/1 per class) and by
    ours; the VOC one is also the file our resource pins (sha256)."""
    for name, classes in (("pointing_game_ebp_voc07_difficult.txt", 20),
                          ("pointing_game_ebp_coco_difficult.txt", 80)):  # fmt: skip
        path = importlib.resources.files("torchray.benchmark") / name
        with importlib.resources.as_file(path) as local:
            ours = read_difficult_flags(local, classes)
            rows = [row.split("\t") for row in local.read_text().splitlines()]
            theirs = {row[0]: tuple(bool(int(x)) for x in row[1:]) for row in rows}
            assert ours == theirs
            if name == VOC07_DIFFICULT_FLAGS.filename:
                assert VOC07_DIFFICULT_FLAGS.checksum.matches(file_digest(local, "sha256"))
    assert len(ours) == 40137 and len(theirs) == 40137


# ------------------------------------------------------------------------------ pointing game


def _torchray_point(saliency: torch.Tensor) -> tuple[int, int]:
    width = saliency.shape[-1]
    index = int(saliency.flatten().argmax())
    return index % width, index // width


# (method, layer, TorchRay function and its extra arguments); input maps are smoothed.
POINTING_CASES = {
    "voc07": [("gradient", "input"), ("contrastive_excitation_backprop", "layer3"),
              ("grad_cam", "layer4")],
    "coco14": [("gradient", "input"), ("linear_approx", "layer3")],
}  # fmt: skip


def _torchray_saliency(model, ebp_model, x, class_id, method, layer, size):
    kwargs = {"resize": size, "get_backward_gradient": get_pointing_gradient}
    if method == "gradient":
        return gradient(model, x, class_id, smooth=INPUT_SMOOTHING, **kwargs)
    if method == "linear_approx":
        return linear_approx(model, x, class_id, saliency_layer=layer, **kwargs)
    if method == "grad_cam":
        return grad_cam(model, x, class_id, saliency_layer=layer, **kwargs)
    return contrastive_excitation_backprop(
        ebp_model, x, class_id, saliency_layer=layer, contrast_layer="avgpool",
        classifier_layer="fc", **kwargs,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("dataset_name", ["voc07", "coco14"])
def test_pointing_game_matches_torchray_benchmark(dataset_name, tmp_path, resnet50_pair):
    """Our workflow's pointing job and scoring against TorchRay's ``PointingGameBenchmark``, both
    subsets (the flags of the stand-ins, TorchRay's packaged files being read in the test
    above), on the same model inputs: every point, every hit and the accuracies."""
    pair = resnet50_pair if dataset_name == "voc07" else _resnet50_pair(tmp_path, dataset_name)
    ours_model, theirs_model = pair
    if dataset_name == "voc07":
        write_voc07(tmp_path, images=5, seed=3)
        names = (tmp_path / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").read_text().split()
        flags = write_difficult_flags(tmp_path / "flags.txt", names, 20, seed=3)
        dataset = VOCPointing(tmp_path / "VOCdevkit" / "VOC2007", flags)
        labels = torchvision.datasets.VOCDetection(tmp_path, year="2007", image_set="test")
        num_classes = 20
    else:
        write_coco14(tmp_path, images=5, seed=3)
        names = sorted(p.stem for p in (tmp_path / "val2014").iterdir())
        flags = write_difficult_flags(tmp_path / "flags.txt", names, 80, seed=3)
        annotations = tmp_path / "annotations" / "instances_val2014.json"
        dataset = COCOPointing(tmp_path / "val2014", annotations, flags)
        labels = torchvision.datasets.CocoDetection(str(tmp_path / "val2014"), str(annotations))
        num_classes = 80
    spec = get_spec(f"resnet50_{dataset_name}")
    opened = OpenedModel(f"resnet50_{dataset_name}", ours_model, spec, checksum="", arch="resnet50")
    cases = POINTING_CASES[dataset_name]
    settings = PointingSettings(
        methods=tuple(sorted({m for m, _ in cases})),
        layers=tuple(sorted({layer for _, layer in cases} - {"input"})),
        input=True, smooth_input=True, shards=1, batch_rows=32, examples=0,
    )  # fmt: skip
    records, _ = run_pointing(dataset, opened, settings)
    ebp_model = update_resnet(copy.deepcopy(theirs_model))
    for method, layer in cases:
        mine = records[(records["method"] == method) & (records["layer"] == layer)]
        games = {"all": PointingGameBenchmark(labels)}
        games["difficult"] = PointingGameBenchmark(labels, difficult=True)
        # TorchRay reads its packaged flags; give it the stand-ins' file, parsed by its rule
        rows = [row.split("\t") for row in flags.read_text().splitlines()]
        games["difficult"].difficult_flags = {r[0]: [bool(int(x)) for x in r[1:]] for r in rows}
        checked = 0
        for index, record in enumerate(dataset.records):
            _, label = labels[index]
            x = spec.preprocess(dataset.load_image(record))[None]
            for query_index, query in enumerate(record.queries):
                saliency = _torchray_saliency(theirs_model, ebp_model, x.clone(), query.class_id,
                                              method, layer, (record.width, record.height))  # fmt: skip
                point = _torchray_point(saliency)
                row = mine[(mine["record"] == index) & (mine["query"] == query_index)]
                assert len(row) == 1
                assert (int(row["x"].iloc[0]), int(row["y"].iloc[0])) == point, (method, layer)
                for subset, game in games.items():
                    outcome = game.evaluate(label, query.class_id, point)
                    if subset == "all":
                        assert outcome == (1 if bool(row["hit"].iloc[0]) else -1)
                    else:
                        assert (outcome != 0) == query.in_difficult
                    game.aggregate(outcome, query.class_id)
                checked += 1
        assert checked == dataset.num_queries() > 0
        table = pointing_accuracies(mine, ["method"], num_classes).set_index("subset")
        for subset, game in games.items():
            assert int(table.loc[subset, "hits"]) == int(game.hits.sum())
            assert int(table.loc[subset, "queries"]) == int((game.hits + game.misses).sum())
            # the same per-class ratios, summed in another order: equal to the last bits or one ulp
            assert abs(float(table.loc[subset, "accuracy"]) - float(game.accuracy)) < 1e-15


@pytest.mark.slow
def test_voc_queries_are_the_classes_torchray_scores(tmp_path):
    """A class whose boxes are all difficult has no query (TorchRay's ``evaluate`` returns 0 for
    it); every other class of the XML is a query, with TorchRay's mask."""
    from torchray.benchmark.datasets import voc_as_mask

    write_voc07(tmp_path, images=12, seed=5)
    dataset = VOCPointing(tmp_path / "VOCdevkit" / "VOC2007", {})
    labels = torchvision.datasets.VOCDetection(tmp_path, year="2007", image_set="test")
    game = PointingGameBenchmark(labels)
    skipped = 0
    for index, record in enumerate(dataset.records):
        _, label = labels[index]
        objects = label["annotation"]["object"]
        names = {obj["name"] for obj in (objects if isinstance(objects, list) else [objects])}
        classes = {dataset.class_names.index(n) for n in names}
        scored = {c for c in classes if game.evaluate(label, c, (0, 0)) != 0}
        assert {q.class_id for q in record.queries} == scored
        skipped += len(classes - scored)
        for query in record.queries:
            mask = query.mask(record.height, record.width)
            assert torch.equal(mask, voc_as_mask(label, query.class_id).bool())
    assert skipped > 0  # the stand-ins exercise the all-difficult rule
