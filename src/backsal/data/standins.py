"""Format-faithful stand-ins of the paper's data and weights, for rehearsing the paper run offline.

Nothing here is a substitute for the real files: the pixels are noise, the weights are random,
and the numbers a run on them produces mean nothing. What *is* faithful is the on-disk format,
so the paper's code path — download or ``path``, layout checks, parsing, checkpoint conversion,
every workflow rule — runs exactly as it will on the real files:

* **PASCAL VOC 2007 test** as the tar extracts it: ``VOCdevkit/VOC2007/{Annotations,JPEGImages,
  ImageSets/Main/test.txt}``, one XML per image with several objects, ``difficult`` and
  ``truncated`` flags and varied sizes (optionally the real test set's size distribution);
* **COCO 2014 val**: ``val2014/COCO_val2014_<id>.jpg`` and ``annotations/instances_val2014.json``
  with the 80 real categories, polygon, compressed-RLE and ``iscrowd`` (uncompressed RLE)
  instances, and some grayscale JPEGs, as the real set has;
* **ImageNet val** in the official flat layout (``ILSVRC2012_val_<n>.JPEG``) with the devkit's
  ``data/meta.mat`` and ``data/ILSVRC2012_validation_ground_truth.txt``;
* **TorchRay's difficult-flag files**: an image name and one tab-separated 0/1 flag per class;
* **checkpoints** of the six registry models in their published formats at the real
  architectures: TorchRay's converted Caffe state dicts (Caffe key names, BGR first conv, fully
  connected classifier weights, separate BatchNorm/Scale entries) and torchvision's ImageNet state
  dicts, all with random weights.

:func:`write_standins` writes all of them; ``python -m backsal.rehearsal`` uses it to run the
paper's workflow on them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree as ET

import numpy as np
import torch
from PIL import Image

from backsal.data.voc import VOC_CLASSES

__all__ = [
    "COCO_CATEGORIES",
    "IMAGENET_CLASSES",
    "SizeProfile",
    "StandIns",
    "VOC07_SIZE_DISTRIBUTION",
    "caffe_resnet50_state",
    "caffe_vgg16_state",
    "write_checkpoint",
    "write_coco14",
    "write_difficult_flags",
    "write_imagenet_val",
    "write_standins",
    "write_voc07",
]

#: The 80 COCO categories as ``(id, name)``, in id order (ids skip 12, 26, 29, 30, 45, 66, 68,
#: 69, 71, 83 as the real annotation files do).
_COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat "
    "baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork knife spoon "
    "bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch "
    "potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave "
    "oven toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
)
COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple(
    zip(
        [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)],
        [name.replace("_", " ") for name in _COCO_NAMES.split()],
        strict=True,
    )
)

#: Number of ImageNet classes; the stand-in devkit names them ``n00000000`` ... (sorted as the
#: real WordNet ids are, so label ``i`` is the ``i``-th class).
IMAGENET_CLASSES = 1000

#: (height, width) of PASCAL VOC 2007 test images with their share of the 4,952 images (the
#: common sizes; the rest are spread between 100 and 500 px), used by ``sizes="voc07"``.
VOC07_SIZE_DISTRIBUTION: tuple[tuple[tuple[int, int], float], ...] = (
    ((375, 500), 0.40),
    ((500, 375), 0.13),
    ((333, 500), 0.17),
    ((500, 333), 0.05),
    ((334, 500), 0.02),
    ((281, 500), 0.02),
    ((332, 500), 0.02),
)

SizeProfile = Literal["small", "voc07"]


@dataclass
class StandIns:
    """Where :func:`write_standins` put everything, and the sha256 of each file in a published
    format (checkpoints, flag files) by file name."""

    root: Path
    voc07: Path | None = None
    coco14: Path | None = None
    imagenet: Path | None = None
    flags: dict[str, Path] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ images


def _sizes(rng: np.random.Generator, count: int, profile: SizeProfile) -> list[tuple[int, int]]:
    if profile == "small":
        # Varied shapes (portrait, landscape, square), kept small so CPU rehearsals stay fast.
        choices = [(96, 128), (128, 96), (112, 112), (80, 120), (120, 90)]
        return [choices[i % len(choices)] for i in range(count)]
    shapes, shares = zip(*VOC07_SIZE_DISTRIBUTION, strict=True)
    rest = 1.0 - sum(shares)
    sizes = []
    for _ in range(count):
        if rng.random() < rest:
            short = int(rng.integers(100, 500))
            sizes.append((short, 500) if rng.random() < 0.7 else (500, short))
        else:
            sizes.append(shapes[int(rng.choice(len(shapes), p=np.array(shares) / sum(shares)))])
    return sizes


def _write_jpeg(path: Path, rng: np.random.Generator, height: int, width: int, gray: bool) -> None:
    # Smooth noise compresses to a realistic JPEG size and decodes like a photograph.
    coarse = rng.integers(0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3))
    image = Image.fromarray(coarse.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    if gray:
        image = image.convert("L")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=85)


def _box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """A 1-based inclusive box ``(xmin, ymin, xmax, ymax)`` inside the image, as VOC's XML."""
    w = int(rng.integers(max(width // 6, 2), max(width // 2, 3)))
    h = int(rng.integers(max(height // 6, 2), max(height // 2, 3)))
    x0 = int(rng.integers(1, width - w + 1))
    y0 = int(rng.integers(1, height - h + 1))
    return x0, y0, x0 + w - 1, y0 + h - 1


# ------------------------------------------------------------------------------ VOC07


def write_voc07(
    root: str | os.PathLike[str],
    *,
    images: int = 6,
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    sizes: SizeProfile = "small",
) -> Path:
    """Write a VOC 2007 test stand-in as ``root/VOCdevkit/VOC2007``; returns the VOCdevkit folder.

    Every image has 1-4 objects of 1-3 classes; about one object in five is ``difficult`` and one
    in three ``truncated``, and one image in six has a class whose boxes are all difficult (a
    class the protocol skips).
    """
    rng = np.random.default_rng(seed)
    devkit = Path(root) / "VOCdevkit"
    voc = devkit / "VOC2007"
    ids = list(image_ids) if image_ids is not None else [f"{i:06d}" for i in range(1, images + 1)]
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for index, (image_id, (height, width)) in enumerate(
        zip(ids, _sizes(rng, len(ids), sizes), strict=True)
    ):
        _write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", rng, height, width, gray=False)
        annotation = ET.Element("annotation")
        ET.SubElement(annotation, "folder").text = "VOC2007"
        ET.SubElement(annotation, "filename").text = f"{image_id}.jpg"
        source = ET.SubElement(annotation, "source")
        ET.SubElement(source, "database").text = "The VOC2007 Database"
        size = ET.SubElement(annotation, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(annotation, "segmented").text = "0"
        classes = rng.choice(len(VOC_CLASSES), size=int(rng.integers(1, 4)), replace=False)
        all_difficult = index % 6 == 5
        for rank, class_id in enumerate(classes):
            for _ in range(int(rng.integers(1, 3))):
                obj = ET.SubElement(annotation, "object")
                ET.SubElement(obj, "name").text = VOC_CLASSES[int(class_id)]
                ET.SubElement(obj, "pose").text = "Unspecified"
                ET.SubElement(obj, "truncated").text = str(int(rng.random() < 1 / 3))
                difficult = (all_difficult and rank == len(classes) - 1) or rng.random() < 0.2
                if len(classes) == 1 and not all_difficult:
                    difficult = False  # keep at least one query per image in most images
                ET.SubElement(obj, "difficult").text = str(int(difficult))
                box = ET.SubElement(obj, "bndbox")
                for tag, value in zip(
                    ("xmin", "ymin", "xmax", "ymax"), _box(rng, height, width), strict=True
                ):
                    ET.SubElement(box, tag).text = str(value)
        ET.indent(annotation)
        ET.ElementTree(annotation).write(voc / "Annotations" / f"{image_id}.xml")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ids))
    return devkit


# ------------------------------------------------------------------------------ COCO14


def _polygon(rng: np.random.Generator, height: int, width: int) -> list[float]:
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    radius = rng.uniform(0.1, 0.3) * min(height, width)
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=6))
    xs = np.clip(cx + radius * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + radius * np.sin(angles), 0, height - 1)
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def _uncompressed_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO's uncompressed RLE (column-major run lengths starting with zeros), as ``iscrowd``."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = int(value), 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_coco14(
    root: str | os.PathLike[str],
    *,
    images: int = 6,
    seed: int = 0,
    image_ids: Sequence[int] | None = None,
    sizes: SizeProfile = "small",
) -> Path:
    """Write a COCO 2014 val stand-in: ``root/val2014/`` and ``root/annotations/
    instances_val2014.json``; returns ``root``.

    Instances are polygons, compressed RLE and (``iscrowd``) uncompressed RLE; every third image
    is a grayscale JPEG; one image in six has no annotation at all.
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = list(image_ids) if image_ids is not None else [42 + 31 * i for i in range(images)]
    entries: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, (image_id, (height, width)) in enumerate(
        zip(ids, _sizes(rng, len(ids), sizes), strict=True)
    ):
        file_name = f"COCO_val2014_{image_id:012d}.jpg"
        _write_jpeg(root / "val2014" / file_name, rng, height, width, gray=index % 3 == 2)
        entries.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width,
             "license": 1, "coco_url": "", "flickr_url": "", "date_captured": ""}
        )  # fmt: skip
        if index % 6 == 5:
            continue  # an image without annotations (the real set has 40)
        classes = rng.choice(len(COCO_CATEGORIES), size=int(rng.integers(1, 4)), replace=False)
        for rank, class_index in enumerate(classes):
            kind = ("polygon", "rle", "crowd")[(index + rank) % 3]
            mask = np.zeros((height, width), dtype=np.uint8, order="F")
            x0, y0, x1, y1 = _box(rng, height, width)
            mask[y0 - 1 : y1, x0 - 1 : x1] = 1
            if kind == "polygon":
                segmentation: object = [_polygon(rng, height, width)]
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif kind == "rle":
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:
                segmentation = _uncompressed_rle(mask)
                rle = mask_utils.frPyObjects(segmentation, height, width)
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id,
                 "category_id": COCO_CATEGORIES[int(class_index)][0],
                 "segmentation": segmentation, "area": float(mask_utils.area(rle)),
                 "bbox": bbox, "iscrowd": int(kind == "crowd")}
            )  # fmt: skip
    instances = {
        "info": {"description": "backsal stand-in of COCO 2014 val (noise images)"},
        "licenses": [{"id": 1, "name": "none", "url": ""}],
        "images": entries,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": "none"} for cid, name in COCO_CATEGORIES
        ],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(instances))
    return root


# ------------------------------------------------------------------------------ ImageNet


def write_imagenet_val(root: str | os.PathLike[str], *, images: int = 4, seed: int = 0) -> Path:
    """Write ImageNet val in the official flat layout with the devkit; returns ``root``.

    ``root/val/ILSVRC2012_val_<n>.JPEG`` and ``root/ILSVRC2012_devkit_t12/data/{meta.mat,
    ILSVRC2012_validation_ground_truth.txt}`` (1000 leaf synsets plus one non-leaf, as the real
    ``meta.mat`` lists inner nodes too).
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    root = Path(root)
    for number in range(1, images + 1):
        height, width = (int(rng.integers(200, 400)), int(rng.integers(200, 500)))
        path = root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG"
        _write_jpeg(path, rng, height, width, gray=number % 4 == 0)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True, exist_ok=True)
    # ILSVRC2012_IDs 1..1000 are the leaves in a shuffled WordNet order (as in the real devkit,
    # where id order is not WordNet-id order); 1001 is an inner node.
    order = rng.permutation(IMAGENET_CLASSES)
    synsets = np.zeros(
        IMAGENET_CLASSES + 1,
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")],
    )
    for row in range(IMAGENET_CLASSES):
        synsets[row] = (row + 1, f"n{int(order[row]):08d}", f"class {order[row]}", 0)
    synsets[IMAGENET_CLASSES] = (IMAGENET_CLASSES + 1, "n99999999", "entity", 3)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    truth = rng.integers(1, IMAGENET_CLASSES + 1, size=images)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{int(t)}\n" for t in truth)
    )
    return root


# ------------------------------------------------------------------------------ flags


def write_difficult_flags(
    path: str | os.PathLike[str],
    image_names: Sequence[str],
    num_classes: int,
    *,
    seed: int = 0,
    unlisted: int = 1,
) -> Path:
    """Write a flag file in TorchRay's format: ``name<TAB>f_1<TAB>...<TAB>f_K`` per line.

    The last ``unlisted`` names are left out (an unlisted image keeps all its queries).
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    listed = list(image_names)[: max(len(image_names) - unlisted, 0)]
    with path.open("w", newline="\n") as handle:
        for name in listed:
            flags = rng.random(num_classes) < 0.5
            handle.write(name + "\t" + "\t".join(str(int(f)) for f in flags) + "\n")
    return path


# ------------------------------------------------------------------------------ checkpoints


_VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256),
                (12, 256, 256), (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512),
                (24, 512, 512), (26, 512, 512), (28, 512, 512))  # fmt: skip


# Scales the classifier so that class scores stay in a trained model's range (|s| of a few tens
# at most): TorchRay's pointing seed exponentiates raw scores, exp(s) overflows float32 above 88,
# and a random net's scores reach hundreds.
_SCORE_SCALE = 0.02


def _conv_weight(gen: torch.Generator, cout: int, cin: int, k: int) -> torch.Tensor:
    # He initialisation keeps activations in range through 13-50 layers of random weights.
    return torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (cin * k * k)) ** 0.5


def caffe_vgg16_state(num_classes: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in TorchRay's VGG16 checkpoint layout (``vgg16_voc-*.pth.tar``).

    torchvision's ``features`` names; the classifier listed without dropout as
    ``classifier.0/2/4`` with fully connected weights (fc6 ``[4096, 25088]``).
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for index, cin, cout in _VGG16_CONVS:
        state[f"features.{index}.weight"] = _conv_weight(gen, cout, cin, 3)
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    for index, (cin, cout) in zip(
        (0, 2, 4), ((25088, 4096), (4096, 4096), (4096, num_classes)), strict=True
    ):
        scale = (2.0 / cin) ** 0.5 * (_SCORE_SCALE if index == 4 else 1.0)
        state[f"classifier.{index}.weight"] = torch.randn(cout, cin, generator=gen) * scale
        state[f"classifier.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    return state


def caffe_resnet50_state(num_classes: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in TorchRay's ResNet50 checkpoint layout (``resnet50_voc-*.pth.tar``).

    ``conv1`` with a bias; Caffe's BatchNorm (``.0``: running statistics) and Scale (``.1``:
    weight, bias) as separate entries, also in ``downsample.1.0/1``; ``fc`` fully connected.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {
        "conv1.weight": _conv_weight(gen, 64, 3, 7),
        "conv1.bias": torch.randn(64, generator=gen) * 0.01,
    }

    def bn(prefix: str, channels: int) -> None:
        state[f"{prefix}.0.running_mean"] = torch.randn(channels, generator=gen) * 0.1
        state[f"{prefix}.0.running_var"] = torch.rand(channels, generator=gen) + 0.5
        state[f"{prefix}.1.weight"] = torch.rand(channels, generator=gen) + 0.5
        state[f"{prefix}.1.bias"] = torch.randn(channels, generator=gen) * 0.1

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            state[f"{p}.conv1.weight"] = _conv_weight(gen, planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            state[f"{p}.conv2.weight"] = _conv_weight(gen, planes, planes, 3)
            bn(f"{p}.bn2", planes)
            state[f"{p}.conv3.weight"] = _conv_weight(gen, planes * 4, planes, 1) * 0.2
            bn(f"{p}.bn3", planes * 4)
            if block == 0:
                state[f"{p}.downsample.0.weight"] = _conv_weight(gen, planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"] = torch.randn(num_classes, 2048, generator=gen) * _SCORE_SCALE / 2048**0.5
    state["fc.bias"] = torch.randn(num_classes, generator=gen) * 0.01
    return state


def _torchvision_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict layout (``vgg16-397923af.pth``), random weights."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor]) -> Path:
    """Save ``state`` the way the published files are saved (a plain ``torch.save`` dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), path)
    return path


def _registry_checkpoint(name: str, seed: int) -> tuple[str, dict[str, torch.Tensor]]:
    """File name and random state of registry model ``name`` in its published format."""
    from backsal.models.torchray import CHECKPOINTS, NUM_CLASSES
    from backsal.models.vision import IMAGENET_WEIGHTS

    arch, _, dataset = name.partition("_")
    if dataset == "imagenet":
        return IMAGENET_WEIGHTS[arch].filename, _torchvision_state(arch, seed)
    build = caffe_vgg16_state if arch == "vgg16" else caffe_resnet50_state
    return CHECKPOINTS[(arch, dataset)].filename, build(NUM_CLASSES[dataset], seed=seed)


# ------------------------------------------------------------------------------ all


def _sha256(path: Path) -> str:
    from backsal.provenance import file_digest

    return file_digest(path, "sha256")


def write_standins(
    root: str | os.PathLike[str],
    *,
    voc_images: int = 6,
    coco_images: int = 6,
    imagenet_images: int = 4,
    models: Sequence[str] = (
        "vgg16_voc07",
        "resnet50_voc07",
        "vgg16_coco14",
        "resnet50_coco14",
        "vgg16_imagenet",
        "resnet50_imagenet",
    ),  # fmt: skip
    sizes: SizeProfile = "small",
    seed: int = 0,
) -> StandIns:
    """Write every stand-in under ``root`` (skipping datasets with 0 images).

    Layout: ``root/voc07/VOCdevkit``, ``root/coco14/{val2014,annotations}``, ``root/imagenet``,
    ``root/files/`` (the flag files and checkpoints under their published names: what a mirror
    folder holds).
    """
    from backsal.data.coco import COCO14_DIFFICULT_FLAGS
    from backsal.data.voc import VOC07_DIFFICULT_FLAGS

    root = Path(root)
    out = StandIns(root=root)
    files = root / "files"
    if voc_images:
        out.voc07 = write_voc07(root / "voc07", images=voc_images, seed=seed, sizes=sizes)
        ids = (out.voc07 / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()
        out.flags["voc07"] = write_difficult_flags(
            files / VOC07_DIFFICULT_FLAGS.filename, ids, len(VOC_CLASSES), seed=seed
        )
    if coco_images:
        out.coco14 = write_coco14(root / "coco14", images=coco_images, seed=seed, sizes=sizes)
        names = sorted(p.stem for p in (out.coco14 / "val2014").glob("*.jpg"))
        out.flags["coco14"] = write_difficult_flags(
            files / COCO14_DIFFICULT_FLAGS.filename, names, len(COCO_CATEGORIES), seed=seed
        )
    if imagenet_images:
        out.imagenet = write_imagenet_val(root / "imagenet", images=imagenet_images, seed=seed)
    for offset, name in enumerate(models):
        filename, state = _registry_checkpoint(name, seed + offset)
        out.checkpoints[name] = write_checkpoint(files / filename, state)
    for path in [*out.flags.values(), *out.checkpoints.values()]:
        out.checksums[path.name] = _sha256(path)
    return out
