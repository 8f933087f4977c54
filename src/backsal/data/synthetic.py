"""``cluttered_digits``: an offline pointing-game benchmark built from scikit-learn's digits.

The paper evaluates saliency with the pointing game (Zhang et al., ECCV 2016) on PASCAL VOC 2007
and COCO 2014 (docs/methods.md §6). Those need downloads and large models; this module builds a small
stand-in that runs anywhere: canvases composed from the UCI hand-written digits bundled with
scikit-learn (``sklearn.datasets.load_digits``, 1,797 grey 8×8 images, no download).

Each canvas (default 64×64 RGB) holds 1–3 digits of *distinct* classes, each bilinearly upscaled
to 20–30 px, coloured and placed without overlap, plus 1–4 clutter *fragments*: crops of digits of
classes absent from the canvas, kept off the digit boxes. A digit's box is the tight bounding box
of its ink, so the ground truth is exact. The task is multi-label classification (10 classes) and
every (canvas, digit) pair is one pointing-game query. ``Query.in_difficult`` is set when the canvas
holds two digits or more: the workflow's analogue of the EBP "difficult" subset (docs/methods.md §6.4),
where a map must separate one object from another.

Pointing tolerance: the protocol's 15 px belong to images that the paper's models see at a 224-px
scale; a 64-px canvas would be covered almost entirely by a 15-px disc around its centre (the
``center`` baseline then scores ≈95%). :attr:`ClutteredDigits.pointing_tolerance` therefore scales
the tolerance with the canvas, ``15 · S / 224`` (≈4.29 px at 64 px), where the ``center`` baseline
scores ≈40% (``all``) and ≈38% (``difficult``) on the test split (seeds 0–2: 0.40–0.42 and
0.37–0.40), between its VOC07 and COCO14 scores in TorchRay's published table.

The source digits of the ``train`` and ``test`` splits are disjoint (a fixed, class-stratified
split of the 1,797 digits that does not depend on the canvas seed), so test accuracy measures
generalisation to unseen hand-writing. Generation is deterministic: the same split, size, seed and
config give byte-identical images. The geometry is drawn from one random stream and the background
noise from another, so changing the noise level leaves the layout (and the boxes) unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from backsal.data.base import ImageRecord, PointingDataset, Query

__all__ = [
    "DEFAULT_NUM_IMAGES",
    "GENERATOR_VERSION",
    "REFERENCE_INPUT_SIZE",
    "ClutteredDigits",
    "ClutteredDigitsConfig",
    "cluttered_digits",
    "digit_source_split",
]

#: Bumped whenever a change to this module changes the generated canvases; part of the cache key.
GENERATOR_VERSION = 1

#: Canvases per split when ``num_images`` is not given.
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 6000, "test": 1000}

#: Input side of the paper's models; the pointing tolerance of a canvas is scaled from it.
REFERENCE_INPUT_SIZE = 224

Split = Literal["train", "test"]
_SPLIT_CODES: dict[str, int] = {"train": 0, "test": 1}
_NUM_CLASSES = 10
# Ink below one grey level of the 0..16 source scale is dropped, so that every inked pixel is
# visibly non-zero after quantisation to uint8 and the tight box equals the non-zero pixels.
_INK_THRESHOLD = 1.0 / 16.0
_MAX_CROP_TRIES = 30


@dataclass(frozen=True)
class ClutteredDigitsConfig:
    """Generation parameters of :func:`cluttered_digits` (all ranges inclusive).

    Attributes:
        canvas_size: Side of the square canvas in pixels.
        digit_size: Range of the side (px) a digit is upscaled to.
        digits_per_canvas: Range of the number of digits (distinct classes) on a canvas.
        fragments_per_canvas: Range of the number of clutter fragments on a canvas.
        fragment_fraction: Range of a fragment's side as a fraction of its upscaled source digit.
        fragment_min_ink: Least mean ink of a fragment crop (rejects blank crops).
        digit_gap: Least number of background pixels between two digit boxes.
        color_min: Least value of a colour channel before the brightest channel is set to 1.
        noise: Background noise: uniform integer grey levels in ``0..noise`` per channel.
        test_source_fraction: Fraction of each class's source digits reserved for ``test``.
        source_seed: Seed of the train/test split of the source digits (shared by both splits).
    """

    canvas_size: int = 64
    digit_size: tuple[int, int] = (20, 30)
    digits_per_canvas: tuple[int, int] = (1, 3)
    fragments_per_canvas: tuple[int, int] = (1, 4)
    fragment_fraction: tuple[float, float] = (0.35, 0.6)
    fragment_min_ink: float = 0.15
    digit_gap: int = 1
    color_min: float = 0.3
    noise: int = 24
    test_source_fraction: float = 0.5
    source_seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.digit_size
        if not 8 <= lo <= hi <= self.canvas_size:
            raise ValueError(
                f"digit_size {self.digit_size} must satisfy 8 <= lo <= hi <= canvas_size "
                f"({self.canvas_size})"
            )
        lo, hi = self.digits_per_canvas
        if not 1 <= lo <= hi <= _NUM_CLASSES - 1:
            raise ValueError(
                f"digits_per_canvas {self.digits_per_canvas} must lie in 1..9 (at least one class "
                "must stay free for the fragments)"
            )
        lo, hi = self.fragments_per_canvas
        if not 0 <= lo <= hi:
            raise ValueError(f"fragments_per_canvas {self.fragments_per_canvas} must be >= 0")
        lo_f, hi_f = self.fragment_fraction
        if not 0.0 < lo_f <= hi_f <= 1.0:
            raise ValueError(f"fragment_fraction {self.fragment_fraction} must lie in (0, 1]")
        if not 0.0 < self.test_source_fraction < 1.0:
            raise ValueError("test_source_fraction must lie strictly between 0 and 1")
        if not 0 <= self.noise <= 255:
            raise ValueError("noise must lie in 0..255")
        if not 0.0 < self.color_min <= 1.0:
            raise ValueError("color_min must lie in (0, 1]")


@dataclass
class _Canvases:
    """The generated arrays of one split (``-1`` pads the unused slots)."""

    images: np.ndarray  # uint8 [N, 3, S, S]
    digit_classes: np.ndarray  # int8 [N, D]
    digit_boxes: np.ndarray  # int16 [N, D, 4] (x0, y0, x1, y1) inclusive
    fragment_boxes: np.ndarray  # int16 [N, F, 4]
    digit_sources: np.ndarray  # int32 [N, D] index into load_digits()
    fragment_sources: np.ndarray  # int32 [N, F]

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for field in dataclasses.fields(self):
            array = np.ascontiguousarray(getattr(self, field.name))
            digest.update(f"{field.name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


class ClutteredDigits(PointingDataset):
    """A split of the cluttered-digits benchmark (build it with :func:`cluttered_digits`).

    Attributes:
        split: ``"train"`` or ``"test"``.
        seed: Seed of the canvases.
        config: The generation parameters.
        images: ``uint8 [N, 3, S, S]`` RGB canvases.
        labels: ``float32 [N, 10]`` multi-hot labels (for BCE training and mAP).
        digit_boxes: ``int16 [N, D, 4]`` digit boxes ``(x0, y0, x1, y1)``, inclusive, ``-1`` padded.
        digit_classes: ``int8 [N, D]`` class of each digit box, ``-1`` padded.
        fragment_boxes: ``int16 [N, F, 4]`` tight boxes of the clutter fragments, ``-1`` padded.
        digit_sources, fragment_sources: Indices into ``load_digits()`` of the source digit of each
            digit and fragment, ``-1`` padded (provenance; shows the splits are disjoint).
        content_hash: sha256 of all generated arrays: the data hash recorded by checkpoints.
        pointing_tolerance: Pointing-game tolerance in pixels for this canvas size,
            ``15 · S / 224`` (see the module docstring).
    """

    name = "cluttered_digits"
    class_names = tuple(str(digit) for digit in range(_NUM_CLASSES))

    def __init__(
        self, canvases: _Canvases, split: Split, seed: int, config: ClutteredDigitsConfig
    ) -> None:
        self.split = split
        self.seed = seed
        self.config = config
        self.images = torch.from_numpy(canvases.images)
        self.digit_boxes = canvases.digit_boxes
        self.digit_classes = canvases.digit_classes
        self.fragment_boxes = canvases.fragment_boxes
        self.digit_sources = canvases.digit_sources
        self.fragment_sources = canvases.fragment_sources
        self.content_hash = canvases.content_hash()
        self.pointing_tolerance = 15.0 * config.canvas_size / REFERENCE_INPUT_SIZE

        present = canvases.digit_classes >= 0
        labels = np.zeros((len(canvases.images), _NUM_CLASSES), dtype=np.float32)
        rows, slots = np.nonzero(present)
        labels[rows, canvases.digit_classes[rows, slots]] = 1.0
        self.labels = torch.from_numpy(labels)

        size = config.canvas_size
        records = []
        for index in range(len(canvases.images)):
            count = int(present[index].sum())
            order = np.argsort(canvases.digit_classes[index, :count], kind="stable")
            queries = tuple(
                Query(
                    class_id=int(canvases.digit_classes[index, slot]),
                    boxes=(tuple(int(v) for v in canvases.digit_boxes[index, slot]),),  # type: ignore[arg-type]
                    in_difficult=count >= 2,
                )
                for slot in order
            )
            records.append(ImageRecord(f"{split}_{index:05d}", size, size, queries))
        super().__init__(records)
        self._index = {record.image_id: i for i, record in enumerate(self.records)}

    def index_of(self, record: ImageRecord) -> int:
        """Position of ``record`` in this split (the row of :attr:`images` and :attr:`labels`)."""
        try:
            return self._index[record.image_id]
        except KeyError:
            raise KeyError(
                f"image {record.image_id!r} is not in the {self.split} split of {self.name} "
                f"(ids run from {self.split}_00000 to {self.split}_{len(self) - 1:05d})"
            ) from None

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """The canvas of ``record`` as ``uint8 [3, S, S]`` RGB."""
        return self.images[self.index_of(record)]


def digit_source_split(config: ClutteredDigitsConfig | None = None) -> dict[str, np.ndarray]:
    """The disjoint, class-stratified split of the 1,797 source digits into train and test.

    It depends only on ``config.source_seed`` and ``config.test_source_fraction``, never on the
    canvas seed, so the two splits stay disjoint whatever seeds they are generated with.

    Returns:
        ``{"train": indices, "test": indices}``, sorted indices into ``load_digits()``.
    """
    config = config or ClutteredDigitsConfig()
    _, targets = _load_source_digits()
    rng = np.random.default_rng(config.source_seed)
    train, test = [], []
    for digit in range(_NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(targets == digit))
        num_test = int(round(len(members) * config.test_source_fraction))
        test.append(members[:num_test])
        train.append(members[num_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def cluttered_digits(
    split: Split = "test",
    num_images: int | None = None,
    seed: int = 0,
    config: ClutteredDigitsConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ClutteredDigits:
    """Generate (or load from the cache) one split of the cluttered-digits benchmark.

    Args:
        split: ``"train"`` or ``"test"``; their source digits are disjoint.
        num_images: Number of canvases (default :data:`DEFAULT_NUM_IMAGES` of the split).
        seed: Seed of the canvases; the two splits draw from different streams of it.
        config: Generation parameters (default :class:`ClutteredDigitsConfig`).
        cache_dir: If given, the arrays are cached there as an ``.npz`` whose name carries a hash
            of everything that determines them; a cache file that fails its content hash is
            regenerated with a warning.

    Returns:
        The split as a :class:`ClutteredDigits` dataset.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    config = config or ClutteredDigitsConfig()
    if num_images is None:
        num_images = DEFAULT_NUM_IMAGES[split]
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")

    cache_path = None
    if cache_dir is not None:
        key = _cache_key(split, num_images, seed, config)
        cache_path = Path(cache_dir) / f"cluttered_digits_{split}_{num_images}_{key[:16]}.npz"
        canvases = _read_cache(cache_path)
        if canvases is not None:
            return ClutteredDigits(canvases, split, seed, config)

    canvases = _generate(split, num_images, seed, config)
    if cache_path is not None:
        _write_cache(cache_path, canvases)
    return ClutteredDigits(canvases, split, seed, config)


# --------------------------------------------------------------------------- generation


def _bundled_digits_file() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, located without importing scikit-learn (whose
    import, through scipy.stats and pandas, takes over two seconds), or None where the package
    is laid out in a way we do not know."""
    found = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if found is not None and found.submodule_search_locations:
        data = Path(next(iter(found.submodule_search_locations))) / "datasets/data/digits.csv.gz"
        if data.is_file():
            return data
    return None


def _load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``float32 [n, 8, 8]`` in ``[0, 1]`` and their ``int64`` classes.

    Read from the bundled file as ``sklearn.datasets.load_digits`` reads it (``np.loadtxt``, 64
    pixels then the class per row; ``tests/test_synthetic_digits.py`` compares the two), through
    ``load_digits`` itself where the file cannot be found.
    """
    data_file = _bundled_digits_file()
    if data_file is not None:
        data = np.loadtxt(data_file, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, target = digits.images, digits.target
    return images.astype(np.float32) / 16.0, target.astype(np.int64)


@dataclass
class _Sprites:
    """Upscaled ink of the source digits of one split, for every allowed size."""

    ink: dict[int, np.ndarray]  # size -> float32 [n, size, size]
    boxes: dict[int, np.ndarray]  # size -> int64 [n, 4] tight ink box (x0, y0, x1, y1)


def _upscale(sources: np.ndarray, sizes: range) -> _Sprites:
    ink: dict[int, np.ndarray] = {}
    boxes: dict[int, np.ndarray] = {}
    batch = torch.from_numpy(sources).unsqueeze(1)
    for size in sizes:
        upscaled = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
        scaled = upscaled.squeeze(1).clamp_(0.0, 1.0).numpy()
        scaled[scaled < _INK_THRESHOLD] = 0.0
        ink[size] = scaled
        boxes[size] = _tight_boxes(scaled > 0)
    return _Sprites(ink, boxes)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Inclusive bounding boxes ``(x0, y0, x1, y1)`` of non-empty boolean masks ``[n, h, w]``."""
    rows: np.ndarray = np.any(masks, axis=2)
    cols: np.ndarray = np.any(masks, axis=1)
    if not rows.any(axis=1).all():
        raise RuntimeError("a source digit has no ink above the threshold")
    y0 = rows.argmax(axis=1)
    y1 = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = cols.shape[1] - 1 - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _overlaps(box: np.ndarray, others: list[np.ndarray], gap: int) -> bool:
    """Whether ``box`` comes closer than ``gap`` background pixels to any box in ``others``."""
    x0, y0, x1, y1 = box
    for ox0, oy0, ox1, oy1 in others:
        if x0 <= ox1 + gap and ox0 <= x1 + gap and y0 <= oy1 + gap and oy0 <= y1 + gap:
            return True
    return False


def _place(
    rng: np.random.Generator,
    ink_box: np.ndarray,
    canvas_size: int,
    blocked: list[np.ndarray],
    gap: int,
) -> np.ndarray | None:
    """Draw a position, uniformly among the free ones, for a sprite whose ink box is ``ink_box``.

    Only the ink box must fit on the canvas and keep ``gap`` pixels clear of ``blocked``; the
    sprite's blank margin may leave the canvas, so digits can touch the borders. The free positions
    are enumerated exactly (each blocked box rules out a rectangle of positions), so a placement
    fails only when there is really no room.

    Returns:
        The offset ``(dx, dy)`` to add to sprite coordinates, or ``None`` if there is no room.
    """
    x0, y0, x1, y1 = (int(v) for v in ink_box)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width > canvas_size or height > canvas_size:
        return None
    free = np.ones((canvas_size - height + 1, canvas_size - width + 1), dtype=bool)
    for bx0, by0, bx1, by1 in blocked:
        # a box at (left, top) comes within `gap` of the blocked one iff both ranges meet
        free[
            max(by0 - gap - height + 1, 0) : max(by1 + gap + 1, 0),
            max(bx0 - gap - width + 1, 0) : max(bx1 + gap + 1, 0),
        ] = False
    candidates = np.flatnonzero(free)
    if len(candidates) == 0:
        return None
    top, left = divmod(int(candidates[rng.integers(len(candidates))]), free.shape[1])
    return np.array([left - x0, top - y0])


def _crop_fragment(
    rng: np.random.Generator, ink: np.ndarray, config: ClutteredDigitsConfig
) -> np.ndarray | None:
    """A crop of a digit's ink, tightened to its own ink; ``None`` if every try was nearly blank."""
    size = ink.shape[0]
    lo, hi = config.fragment_fraction
    for _ in range(_MAX_CROP_TRIES):
        height = max(2, int(round(rng.uniform(lo, hi) * size)))
        width = max(2, int(round(rng.uniform(lo, hi) * size)))
        top = int(rng.integers(0, size - height + 1))
        left = int(rng.integers(0, size - width + 1))
        crop = ink[top : top + height, left : left + width]
        if crop.mean() >= config.fragment_min_ink:
            x0, y0, x1, y1 = _tight_boxes(crop[None] > 0)[0]
            return crop[y0 : y1 + 1, x0 : x1 + 1]
    return None


def _color(rng: np.random.Generator, config: ClutteredDigitsConfig) -> np.ndarray:
    color = rng.uniform(config.color_min, 1.0, size=3)
    return (color / color.max()).astype(np.float32)


def _paint(canvas: np.ndarray, ink: np.ndarray, color: np.ndarray, dx: int, dy: int) -> None:
    """Alpha-composite ``ink`` (alpha) in ``color`` onto ``canvas`` (float32 [3, S, S], 0..255)."""
    size = canvas.shape[1]
    height, width = ink.shape
    cx0, cy0 = max(dx, 0), max(dy, 0)
    cx1, cy1 = min(dx + width, size), min(dy + height, size)
    alpha = ink[cy0 - dy : cy1 - dy, cx0 - dx : cx1 - dx]
    region = canvas[:, cy0:cy1, cx0:cx1]
    region *= 1.0 - alpha
    region += (255.0 * color)[:, None, None] * alpha


def _generate(split: Split, num_images: int, seed: int, config: ClutteredDigitsConfig) -> _Canvases:
    all_sources, targets = _load_source_digits()
    pool = digit_source_split(config)[split]
    sizes = range(config.digit_size[0], config.digit_size[1] + 1)
    sprites = _upscale(all_sources[pool], sizes)
    by_class = [np.flatnonzero(targets[pool] == digit) for digit in range(_NUM_CLASSES)]

    size = config.canvas_size
    max_digits = config.digits_per_canvas[1]
    max_fragments = config.fragments_per_canvas[1]
    images = np.empty((num_images, 3, size, size), dtype=np.uint8)
    digit_classes = np.full((num_images, max_digits), -1, dtype=np.int8)
    digit_boxes = np.full((num_images, max_digits, 4), -1, dtype=np.int16)
    digit_sources = np.full((num_images, max_digits), -1, dtype=np.int32)
    fragment_boxes = np.full((num_images, max(max_fragments, 1), 4), -1, dtype=np.int16)
    fragment_sources = np.full((num_images, max(max_fragments, 1)), -1, dtype=np.int32)

    # Separate streams: layout and noise are independent, and train and test never share one.
    layout_rng = np.random.default_rng([seed, _SPLIT_CODES[split], 0])
    noise_rng = np.random.default_rng([seed, _SPLIT_CODES[split], 1])

    for index in range(num_images):
        canvas = noise_rng.integers(0, config.noise + 1, size=(3, size, size)).astype(np.float32)
        num_digits = int(layout_rng.integers(config.digits_per_canvas[0], max_digits + 1))
        classes = layout_rng.choice(_NUM_CLASSES, size=num_digits, replace=False)
        placed: list[np.ndarray] = []
        for digit in classes:
            source = int(layout_rng.choice(by_class[digit]))
            side = int(layout_rng.integers(sizes.start, sizes.stop))
            offset = _place(layout_rng, sprites.boxes[side][source], size, placed, config.digit_gap)
            while offset is None and side > sizes.start:  # no room: try the digit smaller
                side -= 1
                offset = _place(
                    layout_rng, sprites.boxes[side][source], size, placed, config.digit_gap
                )
            if offset is None:  # still no room: keep the canvas with fewer digits
                continue
            slot = len(placed)
            box = sprites.boxes[side][source] + np.tile(offset, 2)
            _paint(canvas, sprites.ink[side][source], _color(layout_rng, config), *offset)
            placed.append(box)
            digit_classes[index, slot] = digit
            digit_boxes[index, slot] = box
            digit_sources[index, slot] = pool[source]

        free_classes = np.setdiff1d(np.arange(_NUM_CLASSES), digit_classes[index, : len(placed)])
        lo, hi = config.fragments_per_canvas
        num_fragments = int(layout_rng.integers(lo, hi + 1))
        fragments: list[np.ndarray] = []
        for _ in range(num_fragments):
            digit = int(layout_rng.choice(free_classes))
            source = int(layout_rng.choice(by_class[digit]))
            side = int(layout_rng.integers(sizes.start, sizes.stop))
            crop = _crop_fragment(layout_rng, sprites.ink[side][source], config)
            if crop is None:
                continue
            crop_box = np.array([0, 0, crop.shape[1] - 1, crop.shape[0] - 1])
            # Fragments stay off the digit boxes (gap 0: they may touch but never share a pixel)
            # and may overlap one another, as clutter does.
            offset = _place(layout_rng, crop_box, size, placed, gap=0)
            if offset is None:
                continue
            slot = len(fragments)
            _paint(canvas, crop, _color(layout_rng, config), *offset)
            fragments.append(crop_box + np.tile(offset, 2))
            fragment_boxes[index, slot] = fragments[-1]
            fragment_sources[index, slot] = pool[source]

        images[index] = np.rint(canvas).clip(0, 255).astype(np.uint8)

    return _Canvases(
        images, digit_classes, digit_boxes, fragment_boxes, digit_sources, fragment_sources
    )


# --------------------------------------------------------------------------- cache


def _digits_fingerprint() -> str:
    """What the source digits are made of: scikit-learn's bundled ``digits.csv.gz`` and the
    version of the loader that reads it.

    Hashing the file instead of the loaded arrays spares every job that opens a cached split
    the import of scikit-learn (about a second). Where the file cannot be found (a packaging
    we do not know), the loaded arrays are hashed, as before.
    """
    data = _bundled_digits_file()
    if data is not None:
        digest = hashlib.sha256(data.read_bytes())
        digest.update(importlib.metadata.version("scikit-learn").encode())
        return "file:" + digest.hexdigest()
    sources, targets = _load_source_digits()
    digest = hashlib.sha256(sources.tobytes())
    digest.update(targets.tobytes())
    return digest.hexdigest()


def _cache_key(split: str, num_images: int, seed: int, config: ClutteredDigitsConfig) -> str:
    description = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "digits": _digits_fingerprint(),
        # bilinear upscaling is torch's; a change there would change the canvases
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> _Canvases | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {field.name: stored[field.name] for field in dataclasses.fields(_Canvases)}
            expected = str(stored["content_hash"])
        canvases = _Canvases(**arrays)
        if canvases.content_hash() == expected:
            return canvases
        reason = "its content hash does not match"
    except Exception as error:  # a cache is disposable: whatever breaks reading, rebuild it
        reason = f"it cannot be read ({error})"
    warnings.warn(f"regenerating the cached canvases {path}: {reason}", stacklevel=3)
    return None


def _write_cache(path: Path, canvases: _Canvases) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {field.name: getattr(canvases, field.name) for field in dataclasses.fields(_Canvases)}
    # write then rename, so that a killed run never leaves a half-written cache behind
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, content_hash=np.array(canvases.content_hash()), **arrays)
    os.replace(temporary, path)
