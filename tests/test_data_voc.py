"""PASCAL VOC 2007 loader on a generated VOC tree (real on-disk formats, tiny images)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _http_server import Route, serve
from backsal.data import ImageLoadError
from backsal.data.difficult import DifficultFlagsError, read_difficult_flags
from backsal.data.download import Checksum, Resource, ensure_file
from backsal.data.voc import (
    VOC07_DIFFICULT_FLAGS,
    VOC_CLASSES,
    VOCAnnotationError,
    VOCPointing,
    parse_voc_annotation,
    voc07_test,
)
from backsal.provenance import file_digest

C = {name: i for i, name in enumerate(VOC_CLASSES)}

# image id -> (width, height, [(class, xmin, ymin, xmax, ymax, difficult)])  (1-based inclusive)
IMAGES = {
    "000001": (40, 30, [("dog", 1, 1, 10, 12, 0), ("person", 20, 5, 30, 25, 0),
                        ("person", 31, 2, 40, 30, 1)]),
    # chair: all boxes difficult -> no query; cat kept
    "000002": (32, 24, [("chair", 2, 2, 8, 8, 1), ("chair", 10, 10, 12, 12, 1),
                        ("cat", 5, 6, 20, 20, 0)]),
    # not listed in the flag file -> its query stays in the difficult subset
    "000004": (24, 36, [("bird", 3, 4, 5, 6, 0)]),
}  # fmt: skip


def _flag_row(image_id: str, positive: set[str]) -> str:
    return "\t".join([image_id] + ["1" if n in positive else "0" for n in VOC_CLASSES]) + "\n"


FLAGS_TEXT = _flag_row("000001", {"dog"}) + _flag_row("000002", set())


def _annotation_xml(image_id: str, width: int, height: int, objects) -> str:
    parts = [
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, x0, y0, x1, y1, difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc_tree(base: Path) -> Path:
    """Write a VOCdevkit/VOC2007 tree under ``base``; return the VOC2007 folder."""
    root = base / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (width, height, objects) in IMAGES.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(
            _annotation_xml(image_id, width, height, objects)
        )
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(IMAGES) + "\n")
    return root


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return make_voc_tree(tmp_path)


@pytest.fixture
def flags_path(tmp_path) -> Path:
    path = tmp_path / "flags.txt"
    path.write_text(FLAGS_TEXT)
    return path


def test_queries_ground_truth_and_difficult_subset(voc_root, flags_path):
    dataset = VOCPointing(voc_root, flags_path)
    assert len(dataset) == 3 and dataset.num_classes == 20
    first, second, third = dataset
    assert (first.image_id, first.height, first.width) == ("000001", 30, 40)
    dog, person = first.queries
    assert dog.class_id == C["dog"] and dog.boxes == ((0, 0, 9, 11),)
    # both person boxes, the difficult one included, 1-based -> 0-based inclusive
    assert person.class_id == C["person"]
    assert person.boxes == ((19, 4, 29, 24), (30, 1, 39, 29))
    assert dog.in_difficult and not person.in_difficult
    # chair has only difficult boxes: no query
    assert [q.class_id for q in second.queries] == [C["cat"]]
    assert not second.queries[0].in_difficult
    # an image absent from the flag file is kept in the difficult subset
    assert third.queries[0].in_difficult and third.queries[0].boxes == ((2, 3, 4, 5),)
    assert dataset.num_queries() == 4


def test_box_mask_matches_voc_convention(voc_root, flags_path):
    dataset = VOCPointing(voc_root, flags_path)
    mask = dataset[2].queries[0].mask(dataset[2].height, dataset[2].width)
    # VOC box x 3..5, y 4..6 (1-based inclusive) covers rows 3..5, columns 2..4 (0-based)
    assert mask.sum() == 9 and mask[3:6, 2:5].all()


def test_load_image(voc_root, flags_path):
    dataset = VOCPointing(voc_root, flags_path)
    image = dataset.load_image(dataset[2])
    assert image.dtype == torch.uint8 and image.shape == (3, 36, 24)
    expected = np.array(Image.open(voc_root / "JPEGImages" / "000004.jpg").convert("RGB"))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_grayscale_image_becomes_rgb(voc_root, flags_path):
    Image.new("L", (24, 36), 77).save(voc_root / "JPEGImages" / "000004.jpg")
    dataset = VOCPointing(voc_root, flags_path)
    image = dataset.load_image(dataset[2])
    assert image.shape == (3, 36, 24) and int(image[:, 0, 0].sub(77).abs().max()) <= 1


def test_corrupt_and_missing_images_name_the_file(voc_root, flags_path):
    dataset = VOCPointing(voc_root, flags_path)
    path = voc_root / "JPEGImages" / "000001.jpg"
    path.write_bytes(path.read_bytes()[:100])  # truncated JPEG
    with pytest.raises(ImageLoadError, match="000001.jpg"):
        dataset.load_image(dataset[0])
    path.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="corrupt"):
        dataset.load_image(dataset[0])
    path.unlink()
    with pytest.raises(ImageLoadError, match="missing"):
        dataset.load_image(dataset[0])
    Image.new("RGB", (10, 10)).save(voc_root / "JPEGImages" / "000002.jpg")
    with pytest.raises(ImageLoadError, match="annotation says"):
        dataset.load_image(dataset[1])


def test_bad_annotations(voc_root, flags_path, tmp_path):
    (voc_root / "Annotations" / "000002.xml").write_text("<annotation><size>")
    with pytest.raises(VOCAnnotationError, match="000002.xml"):
        VOCPointing(voc_root, flags_path)
    (voc_root / "Annotations" / "000002.xml").unlink()
    with pytest.raises(VOCAnnotationError, match="missing"):
        VOCPointing(voc_root, flags_path)
    bad_class = _annotation_xml("000002", 10, 10, [("unicorn", 1, 1, 2, 2, 0)])
    (voc_root / "Annotations" / "000002.xml").write_text(bad_class)
    with pytest.raises(VOCAnnotationError, match="unicorn"):
        VOCPointing(voc_root, flags_path)
    with pytest.raises(VOCAnnotationError, match="split file"):
        VOCPointing(tmp_path / "nowhere", flags_path)


def test_annotation_without_difficult_tag_is_not_difficult(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(
        "<annotation><size><width>5</width><height>4</height></size><object><name>cow</name>"
        "<bndbox><xmin>1</xmin><ymin>1.0</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object>"
        "</annotation>"
    )
    annotation = parse_voc_annotation(path)
    assert annotation.filename == "x.jpg" and (annotation.width, annotation.height) == (5, 4)
    assert annotation.objects[0].difficult is False and annotation.objects[0].ymin == 1


def test_malformed_flag_file(tmp_path):
    path = tmp_path / "flags.txt"
    path.write_text("000001\t0\t1\n")
    with pytest.raises(DifficultFlagsError, match="line 1"):
        read_difficult_flags(path, 20)
    path.write_text(FLAGS_TEXT + FLAGS_TEXT)
    with pytest.raises(DifficultFlagsError, match="repeats"):
        read_difficult_flags(path, 20)


def test_download_extract_and_load(tmp_path):
    """The whole path: archive and flag file from a local server, verified, extracted, parsed."""
    tree = make_voc_tree(tmp_path / "build")
    archive = tmp_path / "VOCtest_06-Nov-2007.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree.parent, arcname="VOCdevkit")
    flags_file = tmp_path / "flags.txt"
    flags_file.write_text(FLAGS_TEXT)
    with serve() as server:
        server.routes["/voc.tar"] = Route(archive.read_bytes())
        server.routes["/flags.txt"] = Route(flags_file.read_bytes())
        archive_resource = Resource(
            "VOCtest_06-Nov-2007.tar",
            (server.url("/voc.tar"),),
            Checksum("md5", file_digest(archive, "md5")),
        )
        flags_resource = Resource(
            VOC07_DIFFICULT_FLAGS.filename,
            (server.url("/flags.txt"),),
            Checksum("git-blob", file_digest(flags_file, "git-blob")),
        )
        resources = tmp_path / "resources"
        dataset = voc07_test(
            resources, archive=archive_resource, flags=flags_resource, progress=False
        )
        assert len(dataset) == 3 and dataset.num_queries() == 4
        assert dataset.load_image(dataset[0]).shape == (3, 30, 40)
        again = voc07_test(
            resources, archive=archive_resource, flags=flags_resource, progress=False
        )
        assert [r.image_id for r in again] == list(IMAGES)
        assert server.hits == {"/voc.tar": 1, "/flags.txt": 1}  # verified copies reused
    assert (resources / "voc07" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000004.jpg").is_file()


REFERENCE_FLAGS = Path("/work/shared/reference/pointing_game_ebp_voc07_difficult.txt")


@pytest.mark.skipif(not REFERENCE_FLAGS.is_file(), reason="TorchRay's flag file not available")
def test_pinned_flag_file_served_locally(tmp_path):
    """The pinned sha256 and size accept TorchRay's real file; its layout parses."""
    with serve() as server:
        server.routes["/flags.txt"] = Route(REFERENCE_FLAGS.read_bytes())
        resource = Resource(
            VOC07_DIFFICULT_FLAGS.filename,
            (server.url("/flags.txt"),),
            VOC07_DIFFICULT_FLAGS.checksum,
            size=VOC07_DIFFICULT_FLAGS.size,
        )
        path = ensure_file(resource, tmp_path, progress=False)
    assert file_digest(path, "git-blob") == "8bd2351ea19fb505159506a397e32f857a7ecb75"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VOC07_DIFFICULT_FLAGS.checksum.hexdigest
    flags = read_difficult_flags(path, 20)
    assert len(flags) == 4952 and sum(sum(row) for row in flags.values()) == 2230
    # its first rows: 000001 flags dog only, 000003 chair and sofa
    assert [VOC_CLASSES[i] for i, f in enumerate(flags["000001"]) if f] == ["dog"]
    assert [VOC_CLASSES[i] for i, f in enumerate(flags["000003"]) if f] == ["chair", "sofa"]
