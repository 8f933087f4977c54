"""Data and weights users already have: ``path``, ``checkpoint``, ``mirror``, ``checksums``, and the
errors of the paper path on bad input (each names the file and says what to do)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from _http_server import Route, serve
from backsal.data import ImageLoadError
from backsal.data.coco import COCO14_DIFFICULT_FLAGS, coco14_val
from backsal.data.download import ChecksumError, DownloadError, localize
from backsal.data.standins import (
    caffe_resnet50_state,
    write_checkpoint,
    write_coco14,
    write_difficult_flags,
    write_voc07,
)
from backsal.data.voc import VOC07_DIFFICULT_FLAGS, VOC07_TEST_IMAGES, voc07_test
from backsal.experiments.resources import open_dataset, open_model
from backsal.models.checkpoint import CheckpointError
from backsal.models.torchray import CHECKPOINTS
from backsal.provenance import file_digest


def _sha(path) -> str:
    return f"sha256:{file_digest(path, 'sha256')}"


@pytest.fixture
def voc(tmp_path):
    """A VOCdevkit stand-in and its flag file in a mirror folder."""
    devkit = write_voc07(tmp_path / "shared", images=4, seed=1)
    ids = (devkit / "VOC2007/ImageSets/Main/test.txt").read_text().split()
    flags = write_difficult_flags(tmp_path / "mirror" / VOC07_DIFFICULT_FLAGS.filename, ids, 20)
    return devkit, flags


def test_voc_path_downloads_nothing_but_the_flags_from_the_mirror(tmp_path, voc, caplog):
    devkit, flags = voc
    checksums = {flags.name: _sha(flags)}
    with serve() as server:
        server.routes[f"/{flags.name}"] = Route(flags.read_bytes())
        entry = {"kind": "voc07", "path": str(devkit)}
        with caplog.at_level(logging.WARNING):
            dataset = open_dataset("voc07", entry, tmp_path / "res", download=True,
                                   mirror=server.url(""), checksums=checksums)  # fmt: skip
        assert server.hits == {f"/{flags.name}": 1}  # the archive was never asked for
    assert len(dataset) == 4 and dataset.expected_images == VOC07_TEST_IMAGES
    assert "not the official 4952" in caplog.text
    assert not (tmp_path / "res" / "voc07" / "VOCtest_06-Nov-2007.tar").exists()
    # later jobs open it offline, the flags verified against the same override
    again = open_dataset("voc07", entry, tmp_path / "res", checksums=checksums)
    assert [r.image_id for r in again] == [r.image_id for r in dataset]


def test_a_mirror_folder_is_tried_before_the_official_urls(tmp_path, voc):
    _, flags = voc
    resource = localize(VOC07_DIFFICULT_FLAGS, tmp_path / "mirror", {flags.name: _sha(flags)})
    assert resource.urls[0] == flags.resolve().as_uri()
    assert resource.urls[1:] == VOC07_DIFFICULT_FLAGS.urls
    dataset = voc07_test(tmp_path / "res", path=voc[0], flags=resource)
    assert (tmp_path / "res" / "voc07" / flags.name).read_bytes() == flags.read_bytes()
    assert len(dataset) == 4


def test_a_stand_in_without_its_checksum_is_rejected_with_what_to_do(tmp_path, voc):
    devkit, flags = voc
    (tmp_path / "res" / "voc07").mkdir(parents=True)
    (tmp_path / "res" / "voc07" / flags.name).write_bytes(flags.read_bytes())
    with pytest.raises(ChecksumError, match="mismatch for .*pointing_game_ebp_voc07"):
        voc07_test(tmp_path / "res", path=devkit, download=False)


def test_wrong_layout_under_path_names_every_missing_piece(tmp_path, voc):
    devkit, _ = voc
    (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*VOCdevkit folder"):
        voc07_test(tmp_path / "res", path=devkit, download=False)
    coco = tmp_path / "coco"
    (coco / "val2014").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json.*annotations"):
        coco14_val(tmp_path / "res", path=coco, download=False)


def test_coco_path_with_grayscale_images_and_crowds(tmp_path):
    root = write_coco14(tmp_path / "coco", images=6, seed=2)
    names = sorted(p.stem for p in (root / "val2014").iterdir())
    flags = write_difficult_flags(tmp_path / "res" / "coco14" / COCO14_DIFFICULT_FLAGS.filename,
                                  names, 80)  # fmt: skip
    entry = {"kind": "coco14", "path": str(root)}
    dataset = open_dataset("coco14", entry, tmp_path / "res", checksums={flags.name: _sha(flags)})
    assert len(dataset) == 6
    for record in dataset:  # grayscale files decode as RGB at the annotated size
        assert dataset.load_image(record).shape == (3, record.height, record.width)


def test_truncated_jpeg_and_missing_annotation_name_the_file(tmp_path, voc):
    devkit, flags = voc
    image = devkit / "VOC2007" / "JPEGImages" / "000002.jpg"
    image.write_bytes(image.read_bytes()[:200])
    dataset = voc07_test(tmp_path / "res", path=devkit,
                         flags=localize(VOC07_DIFFICULT_FLAGS, flags.parent,
                                        {flags.name: _sha(flags)}))  # fmt: skip
    with pytest.raises(ImageLoadError, match="000002.jpg is corrupt"):
        dataset.load_image(dataset.records[1])
    (devkit / "VOC2007" / "Annotations" / "000003.xml").unlink()
    with pytest.raises(Exception, match="000003.xml"):
        voc07_test(tmp_path / "res", path=devkit, download=False,
                   flags=localize(VOC07_DIFFICULT_FLAGS, None, {flags.name: _sha(flags)}))  # fmt: skip


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / CHECKPOINTS[("resnet50", "voc07")].filename
    return write_checkpoint(path, caffe_resnet50_state(20, seed=0))


def test_registry_checkpoint_from_a_local_file(tmp_path, resnet_checkpoint):
    entry = {"kind": "registry", "checkpoint": str(resnet_checkpoint)}
    checksums = {resnet_checkpoint.name: _sha(resnet_checkpoint)}
    opened = open_model("resnet50_voc07", entry, tmp_path / "res", checksums=checksums)
    assert opened.model(torch.zeros(1, 3, 224, 224)).shape[:2] == (1, 20)
    assert not (tmp_path / "res").exists()  # nothing downloaded, nothing copied
    with pytest.raises(ChecksumError, match=r"not resnet50_voc-9ca920d6\.pth\.tar as published"):
        open_model("resnet50_voc07", entry, tmp_path / "res")
    missing = {"kind": "registry", "checkpoint": str(tmp_path / "nope.pth")}
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*checkpoint"):
        open_model("resnet50_voc07", missing, tmp_path / "res")


def test_checkpoint_with_wrong_keys_or_shapes_names_the_file(tmp_path):
    state = caffe_resnet50_state(20, seed=0)
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, :32]
    del state["layer4.2.bn3.1.bias"]
    path = write_checkpoint(tmp_path / "bad.pth.tar", state)
    entry = {"kind": "registry", "checkpoint": str(path)}
    with pytest.raises(CheckpointError, match=r"bad\.pth\.tar(.|\n)*wrong shapes"):
        published = CHECKPOINTS[("resnet50", "voc07")].filename  # checksums go by published name
        open_model("resnet50_voc07", entry, tmp_path, checksums={published: _sha(path)})


def test_a_mirror_without_the_file_is_reported_with_the_official_urls(tmp_path):
    with serve() as server:
        resource = localize(VOC07_DIFFICULT_FLAGS, server.url(""))
        offline = replace(resource, urls=resource.urls[:1])  # this machine has no internet
        with pytest.raises(DownloadError, match=r"HTTP 404"):
            voc07_test(tmp_path, flags=offline, path=write_voc07(tmp_path / "v", images=1))
