"""ImageNet validation loader: ImageFolder and official flat layouts, devkit and Kaggle truth."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from backsal.data import imagenet
from backsal.data.download import Checksum, ChecksumError
from backsal.data.imagenet import ImageNetNotFoundError, ImageNetVal, imagenet_val
from backsal.provenance import file_digest

# devkit: ILSVRC2012_ID -> WordNet id, deliberately not in sorted order; ID 4 is an inner node
SYNSETS = [(1, "n00000003", 0), (2, "n00000001", 0), (3, "n00000002", 0), (4, "n09999999", 2)]
TRUTH_IDS = [2, 3, 1, 2]  # images 1..4
# sorted WordNet ids -> labels: n00000001=0, n00000002=1, n00000003=2
EXPECTED_LABELS = [0, 1, 2, 0]


def _jpeg(path: Path, seed: int, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _flat_images(folder: Path) -> None:
    for number in range(1, 5):
        _jpeg(folder / f"ILSVRC2012_val_{number:08d}.JPEG", number)


def _devkit(folder: Path) -> Path:
    devkit = folder / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children"]
    synsets = np.zeros(len(SYNSETS), dtype=[(f, object) for f in fields])
    for row, (ilsvrc_id, wnid, children) in enumerate(SYNSETS):
        synsets[row] = (ilsvrc_id, wnid, f"words {wnid}", "gloss", children)
    scipy.io.savemat(devkit / "data" / "meta.mat", {"synsets": synsets})
    truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("\n".join(str(i) for i in TRUTH_IDS) + "\n")
    return devkit


def test_image_folder_layout(tmp_path):
    val = tmp_path / "val"
    for label, wnid in enumerate(["n00000001", "n00000002", "n00000003"]):
        _jpeg(val / wnid / f"ILSVRC2012_val_0000000{label + 1}.JPEG", label)
    (val / "n00000002" / "notes.txt").write_text("ignored")
    dataset = ImageNetVal(val, num_classes=3)
    assert dataset.layout == "imagefolder" and len(dataset) == 3
    assert [s.label for s in dataset] == [0, 1, 2]
    assert dataset.wnids == ("n00000001", "n00000002", "n00000003")
    image = dataset.load_image(dataset[1])
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 10)
    with pytest.raises(ImageNetNotFoundError, match="found 3 classes"):
        ImageNetVal(val)  # the default expects all 1000 classes


def test_flat_layout_with_devkit_folder(tmp_path):
    _flat_images(tmp_path / "val")
    _devkit(tmp_path)  # beside the images folder: found automatically
    dataset = ImageNetVal(tmp_path / "val", num_classes=3)
    assert dataset.layout == "flat"
    assert [s.image_id for s in dataset] == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 5)]
    assert [s.label for s in dataset] == EXPECTED_LABELS
    assert ImageNetVal(tmp_path / "val", num_classes=3, limit=2)[:] == dataset[:2]


def test_flat_layout_with_devkit_archive(tmp_path):
    _flat_images(tmp_path / "val")
    devkit = _devkit(tmp_path / "build")
    archive = tmp_path / "my-devkit.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    dataset = ImageNetVal(tmp_path / "val", ground_truth=archive, num_classes=3)
    assert [s.label for s in dataset] == EXPECTED_LABELS


def test_official_devkit_archive_is_verified(tmp_path):
    _flat_images(tmp_path / "val")
    devkit = _devkit(tmp_path / "build")
    archive = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"  # official name, not the official bytes
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    with pytest.raises(ChecksumError, match="fa75699e90414af021442c21a62c3abf"):
        ImageNetVal(tmp_path / "val", num_classes=3)


def test_flat_layout_with_kaggle_solution(tmp_path):
    _flat_images(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{n:08d},{wnid} 1 2 3 4 {wnid} 5 6 7 8"
        for n, wnid in enumerate(["n00000001", "n00000002", "n00000003", "n00000001"], start=1)
    ]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    mapping = ["n00000003 c, three", "n00000001 a, one", "n00000002 b", "n00000004 unused"]
    (tmp_path / "LOC_synset_mapping.txt").write_text("\n".join(mapping) + "\n")
    dataset = ImageNetVal(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val", num_classes=4)
    assert [s.label for s in dataset] == [0, 1, 2, 0]
    assert dataset.wnids[-1] == "n00000004"  # classes from the mapping, not only those seen


def test_missing_folder_explains_where_to_get_it(tmp_path):
    with pytest.raises(ImageNetNotFoundError) as info:
        imagenet_val(tmp_path / "imagenet")
    message = str(info.value)
    assert "image-net.org" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "imagenet") in message and "Kaggle" in message


def test_flat_images_without_ground_truth(tmp_path):
    _flat_images(tmp_path / "imagenet" / "val")
    with pytest.raises(ImageNetNotFoundError, match="no ground truth"):
        imagenet_val(tmp_path / "imagenet", num_classes=3)


def test_empty_folder(tmp_path):
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(ImageNetNotFoundError, match="neither"):
        imagenet_val(tmp_path / "imagenet")


def test_official_archive_is_verified_and_extracted(tmp_path, monkeypatch):
    build = tmp_path / "build"
    _flat_images(build)
    folder = tmp_path / "imagenet"
    folder.mkdir()
    archive = folder / "ILSVRC2012_img_val.tar"
    with tarfile.open(archive, "w") as tar:  # the official tar is flat: no folder inside
        for path in sorted(build.iterdir()):
            tar.add(path, arcname=path.name)
    _devkit(folder)
    with pytest.raises(ChecksumError, match="29b22e2961454d5413ddabcf34fc5622"):
        imagenet_val(folder, num_classes=3)
    monkeypatch.setattr(imagenet, "VAL_ARCHIVE_MD5", Checksum("md5", file_digest(archive, "md5")))
    dataset = imagenet_val(folder, num_classes=3)
    assert dataset.images_dir == folder / "val" and [s.label for s in dataset] == EXPECTED_LABELS
