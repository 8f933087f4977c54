"""A catalogue of bad inputs, one case per line: each gives a clear error or the correct result.

A hostile but fair user's mistakes across the library, the data loaders, the downloads, the
checkpoints and the workflow config (issue 13). Every case states what must happen:

* ``fails(id, Error, pattern, call)``: ``call(env)`` raises ``Error`` (or warns, for a warning
  category) with a message matching ``pattern`` — the message names the problem;
* ``works(id, call, check)``: ``call(env)`` returns a result and ``check(env, result)`` holds.

:func:`outcome` sorts a case into *clear* (what the case states), *unclear* (another or a raw
exception) or *silent* (a wrong result, or no error at all); the test asserts *clear*. The same
function gives the catalogue's counts (``python -c "import test_bad_input as t; t.tally()"`` from
``tests/``). Grow the catalogue with every bug found: one line per case.

CLI mistakes live in the CLI's own tests.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import backsal
from _http_server import LocalServer, Route, serve
from backsal.combination import combine, normalize_maps
from backsal.data import ImageLoadError, read_rgb
from backsal.data.base import Query
from backsal.data.coco import COCOAnnotationError, COCOPointing
from backsal.data.download import Checksum, ChecksumError, DownloadError, download_file
from backsal.data.voc import VOCAnnotationError, VOCPointing
from backsal.experiments.sensitivity import sensitivity_indices
from backsal.experiments.settings import ConfigError
from backsal.meta import Meta
from backsal.models.train import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "config" / "tiny.yaml"


# --------------------------------------------------------------------------------------------
# The catalogue's machinery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input and what must happen to it."""

    id: str
    call: Callable[[Env], Any]
    error: type[BaseException] | tuple[type[BaseException], ...] | None = None
    pattern: str = ""
    check: Callable[[Env, Any], None] | None = None


def fails(id: str, error, pattern: str, call: Callable[[Env], Any], **marks) -> Any:  # noqa: A002
    """A case whose ``call`` must raise (or warn) ``error`` with a message matching ``pattern``."""
    return pytest.param(Case(id, call, error, pattern), id=id, **marks)


def works(id: str, call: Callable[[Env], Any], check: Callable[[Env, Any], None], **marks) -> Any:  # noqa: A002
    """A case whose ``call`` must return a result for which ``check`` holds."""
    return pytest.param(Case(id, call, check=check), id=id, **marks)


def outcome(case: Case, env: Env) -> tuple[str, str]:
    """``("clear" | "unclear" | "silent", detail)`` of running ``case``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.call(env)
        except Exception as error:  # the point: any exception is sorted, none escapes
            if (
                case.error is not None
                and isinstance(error, case.error)
                and re.search(case.pattern, str(error), re.DOTALL)
            ):
                return "clear", ""
            return "unclear", f"{type(error).__name__}: {error}"[:2000]
    if case.error is not None:
        for warning in caught:
            if isinstance(warning.message, case.error) and re.search(
                case.pattern, str(warning.message), re.DOTALL
            ):
                return "clear", ""
        return "silent", f"returned {_short(result)} instead of raising {case.error}"
    assert case.check is not None
    try:
        case.check(env, result)
    except AssertionError as error:
        return "silent", f"wrong result: {error}"[:2000]
    except Exception as error:  # a check that cannot even read the result
        return "unclear", f"{type(error).__name__}: {error}"[:2000]
    return "clear", ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "…"


class Env:
    """What cases build on, made on first use: a tiny net and batch, files under ``tmp``."""

    def __init__(self, tmp: Path, server: LocalServer | None) -> None:
        self.tmp = tmp
        self._server = server

    @property
    def server(self) -> LocalServer:
        assert self._server is not None, "this case needs the local HTTP server"
        return self._server

    @cached_property
    def net(self) -> nn.Module:
        return _Net().eval()

    @cached_property
    def images(self) -> torch.Tensor:
        return torch.randn(3, 3, 10, 12, generator=torch.Generator().manual_seed(0))

    @cached_property
    def targets(self) -> torch.Tensor:
        return torch.tensor([0, 2, 1])

    def explain(self, methods=("gradient",), layers=("conv1", "conv2"), **kwargs) -> Any:
        images = kwargs.pop("images", self.images)
        targets = kwargs.pop("targets", self.targets)
        return backsal.saliency(
            kwargs.pop("net", self.net), images, targets, methods, layers, **kwargs
        )


class _Net(nn.Module):
    """A tiny CNN with named layers; ``relu`` runs twice (a reused module)."""

    def __init__(self, inplace: bool = False, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class _Wrapped(_Net):
    """``_Net`` (the same weights) whose output is ``{"logits": ...}`` or ``(logits, extra)``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> Any:
        logits = super().forward(x)
        return {"logits": logits} if self.kind == "dict" else (logits, x.mean())


def _same_maps(expected: Callable[[Env], Any]) -> Callable[[Env, Any], None]:
    """A check: the result equals ``expected(env)`` map by map, in the same order."""

    def check(env: Env, result: Any) -> None:
        reference = expected(env)
        assert list(result) == list(reference), f"methods {list(result)} != {list(reference)}"
        for method, by_layer in reference.items():
            assert list(result[method]) == list(by_layer), (
                f"layers of {method}: {list(result[method])} != {list(by_layer)}"
            )
            for layer, value in by_layer.items():
                torch.testing.assert_close(result[method][layer], value, msg=f"{method} {layer}")

    return check


def _layer_order(layers: list[str]) -> Callable[[Env, Any], None]:
    def check(env: Env, result: Any) -> None:
        for method, by_layer in result.items():
            assert list(by_layer) == layers, f"{method}: layers {list(by_layer)}, asked {layers}"

    return check


def _finite(env: Env, result: torch.Tensor) -> None:
    assert bool(torch.isfinite(result).all()), "the result holds NaN or inf"


# ------------------------------------------------------------------------------ engine helpers


def _repeated_rows(env: Env) -> dict[str, Any]:
    """Rows 0 and 1 share an image, so the engine shares its forward."""
    images = env.images[[0, 0, 1]]
    return env.explain(["gradient", "grad_cam"], ["input", "conv1", "conv2"], images=images)


def _nan_image(env: Env, value: float, method: str) -> Any:
    images = env.images.clone()
    images[1, 0, 2, 3] = value
    return env.explain([method], ["input", "conv1"], images=images)


def _in_place_reference(env: Env) -> Any:
    return env.explain(["gradient", "guided_backprop"], ["conv1", "conv2"])


# -------------------------------------------------------------------------------- VOC helpers


def _voc_tree(env: Env, box: tuple[int, int, int, int] | None, drop: str = "") -> Path:
    """A VOC2007 folder with one 20x16 image, a dog box and a cat box ``box`` (1-based)."""
    root = env.tmp / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    objects = [("dog", (2, 2, 8, 8))] + ([("cat", box)] if box is not None else [])
    parts = ["<annotation><filename>000001.jpg</filename>"]
    if drop != "size":
        parts.append("<size><width>20</width><height>16</height><depth>3</depth></size>")
    for name, (x0, y0, x1, y1) in objects:
        coordinates = {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}
        box_xml = "".join(f"<{k}>{v}</{k}>" for k, v in coordinates.items() if k != drop)
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox>{box_xml}</bndbox></object>"
        )
    parts.append("</annotation>")
    (root / "Annotations" / "000001.xml").write_text("".join(parts))
    Image.new("RGB", (20, 16), (10, 20, 30)).save(root / "JPEGImages" / "000001.jpg")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    return root


def _voc(env: Env, box: tuple[int, int, int, int] | None, drop: str = "") -> VOCPointing:
    return VOCPointing(_voc_tree(env, box, drop), {})


def _truncated_jpeg(env: Env) -> torch.Tensor:
    path = env.tmp / "cut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(
        buffer, format="JPEG"
    )
    path.write_bytes(buffer.getvalue()[:200])
    return read_rgb(path)


# ------------------------------------------------------------------------------- COCO helpers

_COCO_H, _COCO_W = 12, 16


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _coco(env: Env, **changes: Any) -> COCOPointing:
    """A COCO instances file of one image and annotation 7; ``changes`` edit the annotation
    (``segmentation=...``, ``segmentation=None`` drops it) or the image (``image_height=None``)."""
    image = {"id": 42, "file_name": "a.jpg", "height": _COCO_H, "width": _COCO_W}
    annotation: dict[str, Any] = {
        "id": 7,
        "image_id": 42,
        "category_id": 3,
        "iscrowd": 0,
        "segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0]],
    }
    for key, value in changes.items():
        target, field = (image, key[6:]) if key.startswith("image_") else (annotation, key)
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    data = {
        "images": [image],
        "annotations": [annotation],
        "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "dog"}],
    }
    path = env.tmp / "instances.json"
    path.write_text(json.dumps(data))
    return COCOPointing(env.tmp, path, {})


def _coco_rle_mask() -> np.ndarray:
    mask = np.zeros((_COCO_H, _COCO_W), dtype=bool)
    mask[3:6, 4:9] = True
    return mask


# --------------------------------------------------------------------------- download helpers

_BODY = b"backsal bad-input catalogue\n" * 64
_SHA256 = Checksum("sha256", __import__("hashlib").sha256(_BODY).hexdigest())


def _download(env: Env, *routes: tuple[str, Route | str], timeout: float = 5.0) -> Path:
    """Serve ``routes`` and download them as mirrors; a ``str`` route is a URL used as is."""
    urls = []
    for path, route in routes:
        if isinstance(route, str):
            urls.append(route.format(port=env.server.port))
        else:
            env.server.routes[path] = route
            urls.append(env.server.url(path))
    return download_file(
        urls, env.tmp / "file.bin", _SHA256, progress=False, timeout=timeout, attempts=1
    )


def _downloaded(env: Env, path: Path) -> None:
    assert path.read_bytes() == _BODY


# ------------------------------------------------------------------------- checkpoint helpers


def _checkpoint_without(env: Env, key: str) -> Any:
    from backsal.models.small import SMALL_MODELS

    model = SMALL_MODELS["small_vgg"].builder(10)
    path = env.tmp / "small_vgg.pt"
    save_checkpoint(
        path, model, model_name="small_vgg", num_classes=10, config=TrainConfig(), data_hash="d"
    )
    payload = torch.load(path, weights_only=True)
    del payload[key]
    torch.save(payload, path)
    path.with_name(path.name + ".sha256").unlink()
    return load_checkpoint(path)


def _train_twice(env: Env) -> tuple[bytes, bytes]:
    """Two trainings with the same seed, saved under two names (the name, like the temporary
    file's PID-based name in another process, must not reach the bytes)."""
    from backsal.data.synthetic import cluttered_digits
    from backsal.models.train import build_small_model, train_model

    data = cluttered_digits("train", num_images=16, seed=0, cache_dir=env.tmp / "digits")
    files = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("a/model.pt", "b/other.pt"):
            config = TrainConfig(epochs=1, batch_size=8, seed=3)
            model = build_small_model("small_vgg", num_classes=data.num_classes, seed=config.seed)
            result = train_model(model, data.images, data.labels, config)
            save_checkpoint(
                env.tmp / name,
                model,
                model_name="small_vgg",
                num_classes=data.num_classes,
                config=config,
                data_hash=data.content_hash,
                metrics={"final_loss": result.epoch_losses[-1]},
            )
            files.append((env.tmp / name).read_bytes())
    finally:
        torch.set_num_threads(threads)
    return files[0], files[1]


def _identical(env: Env, files: tuple[bytes, bytes]) -> None:
    assert files[0] == files[1], "two trainings with the same seed wrote different bytes"


# ------------------------------------------------------------------------ workflow helpers


def _schema_error(env: Env, **changes: Any) -> None:
    from snakemake.utils import validate

    config = _tiny_config(**changes)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))


def _tiny_config(**changes: Any) -> dict[str, Any]:
    """The tiny workflow config with ``changes`` (dotted keys; ``__`` stands for ``.``)."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def _config_check(env: Env, **changes: Any) -> None:
    """The checks the workflow runs when it reads the config (workflow/rules/common.smk), in
    process: the schema, the names, the layers of each model's architecture, the device."""
    from snakemake.utils import validate

    from backsal.experiments import architecture_layers, check_device
    from backsal.experiments.settings import WorkflowSettings

    config = _tiny_config(**changes)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    settings = WorkflowSettings.from_config(config)
    settings.check(layer_names=lambda model: architecture_layers(model, config["models"][model]))
    check_device(config["device"])


def _dry_run(env: Env, **changes: Any) -> str:
    """``snakemake -n`` of the tiny config with ``changes``; raises ``RuntimeError`` with its
    output when the dry run fails (the config error must surface before any job runs)."""
    config = env.tmp / "config.yaml"
    config.write_text(yaml.safe_dump(_tiny_config(**changes)))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(env.tmp), "-n", "--cores", "1", "--configfile", str(config),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=env.tmp)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    return result.stdout[-500:]


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------


# fmt: off
CASES = [
    # --- saliency(): methods, layers, targets, images, modes
    fails("unknown-method", ValueError, r"Unknown saliency method 'gradcam'.*'grad_cam'", lambda e: e.explain(["gradcam"])),
    fails("unknown-layer", ValueError, r"Unknown layer 'conv9'.*Valid layers", lambda e: e.explain(layers=["conv9"])),
    fails("methods-bare-string", (TypeError, ValueError), r"methods.*(list|sequence)", lambda e: e.explain("gradient")),
    fails("layers-bare-string", (TypeError, ValueError), r"layers.*(list|sequence)", lambda e: e.explain(layers="conv1")),
    fails("reused-module", RuntimeError, r"'relu' runs more than once", lambda e: e.explain(layers=["relu"])),
    fails("target-out-of-range", ValueError, r"Target classes \[3\] are out of range", lambda e: e.explain(targets=[0, 3, 1])),
    fails("targets-too-few", ValueError, r"targets has 2 entries but images has 3 rows", lambda e: e.explain(targets=[0, 1])),
    fails("targets-float", ValueError, r"integer class indices", lambda e: e.explain(targets=torch.tensor([0.0, 1.0, 2.0]))),
    fails("targets-other-device", (ValueError, RuntimeError), r"device", lambda e: e.explain(targets=torch.tensor([0, 1, 2], device="meta"))),
    fails("empty-batch", ValueError, r"(empty|no rows|no images|zero rows)", lambda e: e.explain(images=e.images[:0], targets=[])),
    fails("images-wrong-rank", ValueError, r"images must be a tensor \[B, C, H, W\]", lambda e: e.explain(images=e.images[0])),
    fails("images-uint8", TypeError, r"floating point", lambda e: e.explain(images=(e.images * 50).clamp(0, 255).to(torch.uint8))),
    fails("images-nan-gradient", ValueError, r"(NaN|non-finite|not finite)", lambda e: _nan_image(e, math.nan, "gradient")),
    fails("images-nan-guided", ValueError, r"(NaN|non-finite|not finite)", lambda e: _nan_image(e, math.nan, "guided_backprop")),
    fails("images-inf-gradient", ValueError, r"(inf|non-finite|not finite)", lambda e: _nan_image(e, math.inf, "gradient")),
    works("under-no-grad", lambda e: _under(torch.no_grad, _in_place_reference, e), _same_maps(_in_place_reference)),
    works("under-inference-mode", lambda e: _under(torch.inference_mode, _in_place_reference, e), _same_maps(_in_place_reference)),
    works("in-place-relu", lambda e: e.explain(["gradient", "guided_backprop"], net=_Net(inplace=True).eval()), _same_maps(_in_place_reference)),
    works("layers-requested-order", lambda e: e.explain(["gradient", "grad_cam"], ["input", "conv1", "conv2"]), _layer_order(["input", "conv1", "conv2"])),
    works("layers-requested-order-deep-first", lambda e: e.explain(["gradient", "grad_cam"], ["conv2", "input", "conv1"]), _layer_order(["conv2", "input", "conv1"])),
    works("layers-requested-order-shared-image", _repeated_rows, _layer_order(["input", "conv1", "conv2"])),
    works("model-returns-dict", lambda e: e.explain(net=_Wrapped("dict").eval()), _same_maps(lambda e: e.explain())),
    works("model-returns-tuple", lambda e: e.explain(net=_Wrapped("tuple").eval()), _same_maps(lambda e: e.explain())),
    # --- meta-saliency
    fails("meta-lr-negative", ValueError, r"must be a finite number ≥ 0", lambda e: Meta(lr=-1e-3)),
    fails("meta-lr-nan", ValueError, r"finite", lambda e: Meta(lr=math.nan)),
    works("meta-lr-numpy", lambda e: e.explain(meta=Meta(lr=np.float32(0.5), strategy="loop")), _same_maps(lambda e: e.explain(meta=Meta(lr=float(np.float32(0.5)), strategy="loop")))),
    works("meta-lr-0d-tensor", lambda e: e.explain(meta=Meta(lr=torch.tensor(0.5), strategy="loop")), _same_maps(lambda e: e.explain(meta=Meta(lr=0.5, strategy="loop")))),
    fails("meta-diverges", (Warning, ValueError, RuntimeError), r"(diverg|NaN|non-finite).*row", lambda e: e.explain(layers=["input", "conv1"], meta=Meta(lr=1e30, strategy="loop"))),
    # --- layer combination
    fails("combine-nan-weight", ValueError, r"weight.*'b'.*(finite|NaN)", lambda e: combine(_two_maps(), weights=[1.0, math.nan], layers=["a", "b"])),
    fails("combine-inf-weight", ValueError, r"weight.*'a'.*(finite|inf)", lambda e: combine(_two_maps(), weights={"a": math.inf, "b": 1.0})),
    fails("combine-negative-weight", ValueError, r"non-negative", lambda e: combine(_two_maps(), weights=[1.0, -1.0], layers=["a", "b"])),
    fails("combine-positional-weights-without-order", ValueError, r"depend on the layers' order.*layers=", lambda e: combine(_two_maps(), weights=[1.0, 2.0])),
    fails("combine-weight-count", ValueError, r"1 weights for 2 layers", lambda e: combine(_two_maps(), weights=[1.0], layers=["a", "b"])),
    fails("combine-nan-pixel", ValueError, r"'b'.*row.*\[1\].*(NaN|inf)", lambda e: combine(_two_maps(nan_at=("b", 1)))),
    fails("normalize-nan-pixel", ValueError, r"rows? \[1\].*(NaN|inf)", lambda e: normalize_maps(_two_maps(nan_at=("a", 1))["a"])),
    # --- datasets: images and annotations
    fails("truncated-jpeg", ImageLoadError, r"cut\.jpg is corrupt", _truncated_jpeg),
    fails("voc-missing-xmin", VOCAnnotationError, r"000001\.xml: <xmin> is missing", lambda e: _voc(e, (3, 3, 9, 9), drop="xmin")),
    fails("voc-missing-size", VOCAnnotationError, r"000001\.xml: <size> is missing", lambda e: _voc(e, None, drop="size")),
    fails("voc-box-xmin-gt-xmax", VOCAnnotationError, r"000001\.xml.*object 2 \('cat'\).*xmin 12 > xmax 5", lambda e: _voc(e, (12, 3, 5, 9))),
    fails("voc-box-outside-image", VOCAnnotationError, r"000001\.xml.*object 2 \('cat'\).*outside the 20x16 image", lambda e: _voc(e, (25, 3, 30, 9))),
    fails("coco-empty-segmentation", COCOAnnotationError, r"annotation 7.*segmentation.*empty", lambda e: _coco(e, segmentation=[])),
    fails("coco-missing-segmentation", COCOAnnotationError, r"annotation 7.*no 'segmentation'", lambda e: _coco(e, segmentation=None)),
    fails("coco-empty-polygon", COCOAnnotationError, r"annotation 7.*polygon", lambda e: _coco(e, segmentation=[[1.0, 2.0]])),
    fails("coco-image-without-height", COCOAnnotationError, r"image 42.*'height'", lambda e: _coco(e, image_height=None)),
    fails("coco-bad-rle-counts", COCOAnnotationError, r"annotation 7.*RLE counts", lambda e: _coco(e, segmentation={"size": [_COCO_H, _COCO_W], "counts": [5, -2, 3]})),
    fails("coco-rle-wrong-size", COCOAnnotationError, r"annotation 7.*RLE size \[6, 8\].*12x16", lambda e: _coco(e, segmentation=_rle(_coco_rle_mask()[:6, :8]))),
    fails("coco-rle-nothing-set", COCOAnnotationError, r"annotation 7.*empty", lambda e: _coco(e, segmentation=_rle(np.zeros((_COCO_H, _COCO_W), bool)))),
    fails("query-empty-mask", ValueError, r"empty.*class 4", lambda e: Query(class_id=4, boxes=((50, 50, 60, 60),)).mask(10, 10)),
    # --- downloads
    fails("download-checksum-mismatch", ChecksumError, r"file\.bin.*sha256", lambda e: _download(e, ("/bad.bin", Route(_BODY[:-1] + b"?")))),
    fails("download-404", DownloadError, r"HTTP 404", lambda e: _download(e, ("/missing.bin", Route(status=404)))),
    fails("download-stalled", DownloadError, r"timed out", lambda e: _download(e, ("/stall.bin", Route(_BODY, send_bytes=10, stall_after=3)), timeout=0.5)),
    fails("download-url-without-scheme", DownloadError, r"'mirror\.example\.org/file\.bin'.*(scheme|https://)", lambda e: _download(e, ("", "mirror.example.org/file.bin"))),
    fails("download-host-port-without-scheme", DownloadError, r"'127\.0\.0\.1:\d+/file\.bin'.*(scheme|https://)", lambda e: _download(e, ("", "127.0.0.1:{port}/file.bin"))),
    works("download-url-without-scheme-next-mirror", lambda e: _download(e, ("", "mirror.example.org/file.bin"), ("/good.bin", Route(_BODY))), _downloaded),
    # --- checkpoints of the small models
    fails("checkpoint-without-provenance", CheckpointError, r"small_vgg\.pt.*'provenance'", lambda e: _checkpoint_without(e, "provenance")),
    fails("checkpoint-without-num-classes", CheckpointError, r"small_vgg\.pt.*'num_classes'", lambda e: _checkpoint_without(e, "num_classes")),
    works("checkpoint-same-seed-same-bytes", _train_twice, _identical),
    # --- workflow config
    fails("config-unknown-key", Exception, r"(Additional properties|additionalProperties).*'colour'", lambda e: _schema_error(e, colour="red")),
    fails("config-wrong-type", Exception, r"'many' is not of type 'integer'", lambda e: _schema_error(e, pointing__shards="many")),
    fails("shards-more-than-pointing-batches", UserWarning, r"shards=9.*only 1 batch", lambda e: _pointing_shard(e, shard=4, shards=9)),
    fails("shards-more-than-sensitivity-images", UserWarning, r"shards=9.*only 3 images", lambda e: sensitivity_indices(5, 3, shard=4, shards=9)),
    fails("config-unknown-pointing-layer", ConfigError, r"pointing\.layers.*features\.99", lambda e: _config_check(e, pointing__layers=["features.6", "features.99"])),
    fails("config-unknown-meta-layer", ConfigError, r"meta\.layers.*features\.99", lambda e: _config_check(e, meta__layers=["features.99"])),
    fails("config-unknown-sensitivity-layer", ConfigError, r"sensitivity\.layers.*features\.99", lambda e: _config_check(e, sensitivity__layers=["features.99"])),
    fails("config-qualitative-method-not-computed", ConfigError, r"qualitative_methods.*deconvnet.*not computed", lambda e: _config_check(e, figures__qualitative_methods=["gradient", "deconvnet"])),
    fails("config-device-cuda-without-gpu", RuntimeError, r"device 'cuda'.*no CUDA device", lambda e: _config_check(e, device="cuda"), marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    fails("config-unknown-layer-stops-the-dry-run", RuntimeError, r"config: pointing\.layers.*features\.99", lambda e: _dry_run(e, pointing__layers=["features.6", "features.99"]), marks=pytest.mark.slow),
]
# fmt: on


def _under(context: Callable[[], Any], call: Callable[[Env], Any], env: Env) -> Any:
    env.net, env.images  # noqa: B018 - the user's model and images exist before the block
    with context():
        return call(env)


def _two_maps(nan_at: tuple[str, int] | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    maps = {"a": torch.rand(2, 1, 4, 4, generator=generator), "b": torch.rand(2, 1, 2, 2)}
    if nan_at is not None:
        layer, row = nan_at
        maps[layer][row, 0, 1, 1] = math.nan
    return maps


def _pointing_shard(env: Env, shard: int, shards: int) -> list[Any]:
    """The batches of one shard of a 4-image dataset that fits in one batch."""
    from backsal.data.synthetic import cluttered_digits
    from backsal.experiments.pointing import iter_shard
    from backsal.experiments.resources import OpenedModel
    from backsal.models import get_spec

    digits = cluttered_digits("test", 4, seed=0, cache_dir=env.tmp)
    spec = get_spec("small_vgg")
    opened = OpenedModel(name="vgg", model=nn.Identity(), spec=spec, checksum="-", arch="small_vgg")
    return list(
        iter_shard(
            digits, opened, shard=shard, shards=shards, batch_rows=64, device=torch.device("cpu")
        )
    )


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with serve() as running:
        yield running


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_error_or_the_right_result(case: Case, tmp_path, server) -> None:
    state, detail = outcome(case, Env(tmp_path, server))
    assert state == "clear", f"{case.id} is {state}: {detail}"


def tally(ids: bool = True, only: str = "") -> dict[str, int]:
    """Run every case outside pytest and print its state; return the counts per state."""
    import tempfile

    counts = {"clear": 0, "unclear": 0, "silent": 0}
    with serve() as running:
        for param in CASES:
            case = param.values[0]
            if only not in case.id:
                continue
            with tempfile.TemporaryDirectory() as folder:
                state, detail = outcome(case, Env(Path(folder), running))
            counts[state] += 1
            if ids:
                print(f"{case.id:45s} {state:8s} {detail[:150]!r}")
    print(counts)
    return counts
