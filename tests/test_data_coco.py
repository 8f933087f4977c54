"""COCO 2014 loader on a generated instances file (polygons, compressed and crowd RLE)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from _http_server import Route, serve
from backsal.data.coco import COCOAnnotationError, COCOPointing, coco14_val
from backsal.data.difficult import DifficultFlagsError
from backsal.data.download import Checksum, Resource
from backsal.provenance import file_digest

# COCO's 80 category ids: 1..90 without the ten that were never used
CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
PERSON, DOG, TOOTHBRUSH = 1, 18, 90
H, W = 16, 20


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


CROWD = np.zeros((H, W), dtype=bool)
CROWD[10:14, 12:18] = True
DOG_MASK = np.zeros((H, W), dtype=bool)
DOG_MASK[2:5, 14:19] = True
DOG_MASK[8, 1] = True
DOG_RLE = mask_utils.encode(np.asfortranarray(DOG_MASK.astype(np.uint8)))
DOG_RLE = {"size": DOG_RLE["size"], "counts": DOG_RLE["counts"].decode()}


def _file(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


def make_instances() -> dict:
    return {
        "info": {},
        "licenses": [],
        "categories": [
            {"id": i, "name": f"category{i}", "supercategory": "x"} for i in reversed(CATEGORY_IDS)
        ],
        "images": [
            {"id": 74, "file_name": _file(74), "height": H, "width": W},
            {"id": 42, "file_name": _file(42), "height": H, "width": W},
            {"id": 73, "file_name": _file(73), "height": H, "width": W},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": PERSON, "iscrowd": 0,
             "segmentation": [[2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]]},
            {"id": 2, "image_id": 42, "category_id": PERSON, "iscrowd": 1,
             "segmentation": _uncompressed_rle(CROWD)},
            {"id": 3, "image_id": 42, "category_id": DOG, "iscrowd": 0, "segmentation": DOG_RLE},
            {"id": 4, "image_id": 74, "category_id": TOOTHBRUSH, "iscrowd": 0,
             "segmentation": [[1.0, 1.0, 4.0, 1.0, 4.0, 4.0]]},
        ],
    }  # fmt: skip


def _flags_text() -> str:
    row = ["0"] * 80
    row[CATEGORY_IDS.index(DOG)] = "1"  # person 0: out of the difficult subset; dog 1: in it
    return "\t".join(["COCO_val2014_000000000042", *row]) + "\n"


def make_coco_tree(base: Path) -> tuple[Path, Path, Path]:
    images = base / "val2014"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for image_id in (42, 73, 74):
        pixels = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / _file(image_id))
    annotation = base / "annotations" / "instances_val2014.json"
    annotation.parent.mkdir()
    annotation.write_text(json.dumps(make_instances()))
    flags = base / "flags.txt"
    flags.write_text(_flags_text())
    return images, annotation, flags


@pytest.fixture
def coco(tmp_path):
    return make_coco_tree(tmp_path)


def test_records_queries_and_flags(coco):
    dataset = COCOPointing(*coco)
    assert dataset.num_classes == 80 and dataset.category_ids == tuple(CATEGORY_IDS)
    assert dataset.class_names[0] == "category1" and dataset.class_names[79] == "category90"
    assert [r.image_id for r in dataset] == [
        "COCO_val2014_000000000042",
        "COCO_val2014_000000000073",
        "COCO_val2014_000000000074",
    ]  # sorted by image id
    first, empty, last = dataset
    assert (first.height, first.width) == (H, W)
    person, dog = first.queries
    assert (person.class_id, dog.class_id) == (0, CATEGORY_IDS.index(DOG)) == (0, 16)
    assert not person.in_difficult and dog.in_difficult
    assert empty.queries == ()
    assert last.queries[0].class_id == 79 and last.queries[0].in_difficult  # unlisted image


def test_masks_union_of_polygons_and_rle(coco):
    first = COCOPointing(*coco)[0]
    person, dog = first.queries
    person_mask = person.mask(H, W)
    assert person_mask.dtype == torch.bool and person_mask.shape == (H, W)
    assert person_mask[3, 4] and not person_mask[8, 8]  # inside / outside the polygon
    assert torch.equal(person_mask[10:14, 12:18], torch.ones(4, 6, dtype=torch.bool))  # crowd
    assert torch.equal(dog.mask(H, W), torch.from_numpy(DOG_MASK))  # compressed RLE, exact


def test_without_crowd(coco):
    first = COCOPointing(*coco, include_crowd=False)[0]
    person_mask = first.queries[0].mask(H, W)
    assert person_mask[3, 4] and not person_mask[10:14, 12:18].any()


def test_load_image_and_errors(coco):
    images, annotation, flags = coco
    dataset = COCOPointing(images, annotation, flags)
    assert dataset.load_image(dataset[1]).shape == (3, H, W)
    (images / _file(73)).write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=_file(73)):
        dataset.load_image(dataset[1])


def test_bad_annotation_files(coco, tmp_path):
    images, annotation, flags = coco
    with pytest.raises(COCOAnnotationError, match="missing"):
        COCOPointing(images, tmp_path / "nope.json", flags)
    data = make_instances()
    data["annotations"][0]["image_id"] = 999
    annotation.write_text(json.dumps(data))
    with pytest.raises(COCOAnnotationError, match="unknown image 999"):
        COCOPointing(images, annotation, flags)
    annotation.write_text(json.dumps({"images": []}))
    with pytest.raises(COCOAnnotationError, match="not a COCO instances file"):
        COCOPointing(images, annotation, flags)


def test_flag_rows_must_match_categories(coco):
    images, annotation, flags = coco
    flags.write_text("COCO_val2014_000000000042\t" + "\t".join(["0"] * 20) + "\n")
    with pytest.raises(DifficultFlagsError, match="80 tab-separated"):
        COCOPointing(images, annotation, flags)


def test_download_extract_and_load(tmp_path):
    images, annotation, flags = make_coco_tree(tmp_path / "build")
    images_zip = tmp_path / "val2014.zip"
    with zipfile.ZipFile(images_zip, "w") as zf:
        for path in sorted(images.iterdir()):
            zf.write(path, f"val2014/{path.name}")
    annotations_zip = tmp_path / "annotations_trainval2014.zip"
    with zipfile.ZipFile(annotations_zip, "w") as zf:
        zf.write(annotation, "annotations/instances_val2014.json")
        zf.writestr("annotations/captions_val2014.json", "{}")

    def resource(name: str, path: Path, server) -> Resource:
        return Resource(
            name, (server.url("/" + name),), Checksum("sha1", file_digest(path, "sha1")),
            size=path.stat().st_size,
        )  # fmt: skip

    with serve() as server:
        for path in (images_zip, annotations_zip, flags):
            server.routes["/" + path.name] = Route(path.read_bytes())
        resources = tmp_path / "resources"
        dataset = coco14_val(
            resources,
            images=resource("val2014.zip", images_zip, server),
            annotations=resource("annotations_trainval2014.zip", annotations_zip, server),
            flags=Resource(
                "pointing_game_ebp_coco_difficult.txt",
                (server.url("/flags.txt"),),
                Checksum("git-blob", file_digest(flags, "git-blob")),
            ),
            progress=False,
        )
    assert len(dataset) == 3 and dataset.num_queries() == 3
    assert dataset.load_image(dataset[2]).shape == (3, H, W)
    folder = resources / "coco14"
    assert (folder / "annotations" / "instances_val2014.json").is_file()
    assert not (folder / "annotations" / "captions_val2014.json").exists()  # only what is used


def test_rle_validator_reads_compressed_counts_as_pycocotools_writes_them():
    from backsal.data.coco import _rle_runs  # the private validator, against its writer

    rng = np.random.default_rng(5)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 40, size=2))
        mask = rng.random((height, width)) < rng.random()
        compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
        assert _rle_runs(compressed) == _uncompressed_rle(mask)["counts"]
    with pytest.raises(ValueError, match="ends inside a number"):
        _rle_runs("c")  # 'c' = 51 has the continuation bit set
