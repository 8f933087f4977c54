"""Batching: equal preprocessed sizes share a batch, an image's queries share its forward."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from backsal.data.base import ImageRecord, PointingDataset, Query
from backsal.data.batching import QueryBatches, plan_batches
from backsal.data.synthetic import cluttered_digits
from backsal.models.small import small_transform


class _Toy(PointingDataset):
    """Images of several sizes whose pixels encode their index, so batches can be traced."""

    name = "toy"
    class_names = tuple("abcde")

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        value = int(record.image_id)
        return torch.full((3, record.height, record.width), value, dtype=torch.uint8)


def _shorter_side_to_8(image: torch.Tensor) -> torch.Tensor:
    """Like the paper's preprocessing (shorter side to 224), at a toy scale."""
    height, width = image.shape[-2:]
    scale = 8 / min(height, width)
    size = (round(height * scale), round(width * scale))
    return F.interpolate(image[None].float(), size=size, mode="nearest")[0]


def _queries(*classes: int) -> tuple[Query, ...]:
    return tuple(Query(class_id=c, boxes=((0, 0, 1, 1),), in_difficult=c % 2 == 0) for c in classes)


SIZES = [(10, 20), (20, 10), (10, 20), (15, 30), (20, 10), (12, 12), (10, 20)]
QUERIES = [
    _queries(0, 1),
    _queries(2),
    (),
    _queries(1, 3, 4),
    _queries(0),
    _queries(4),
    _queries(2, 3),
]


@pytest.fixture()
def toy() -> _Toy:
    records = [
        ImageRecord(str(i), h, w, queries)
        for i, ((h, w), queries) in enumerate(zip(SIZES, QUERIES, strict=True))
    ]
    return _Toy(records)


def test_plan_groups_by_preprocessed_size_and_bounds_rows(toy):
    plans = plan_batches(toy, _shorter_side_to_8, max_rows=4)
    # (10, 20) and (15, 30) both become (8, 16); record 2 has no query and is skipped
    assert [(p.size, p.rows) for p in plans] == [
        ((8, 16), ((0, 0), (0, 1))),  # record 3's three queries would exceed 4 rows
        ((8, 16), ((3, 0), (3, 1), (3, 2))),
        ((8, 16), ((6, 0), (6, 1))),
        ((16, 8), ((1, 0), (4, 0))),
        ((8, 8), ((5, 0),)),
    ]
    assert all(len(p.rows) <= 4 for p in plans)
    assert plans == plan_batches(toy, _shorter_side_to_8, max_rows=4)  # deterministic


def test_plan_with_larger_batches_shares_batches_across_original_sizes(toy):
    plans = plan_batches(toy, _shorter_side_to_8, max_rows=32)
    assert [p.record_indices for p in plans] == [(0, 3, 6), (1, 4), (5,)]


def test_an_image_with_more_queries_than_rows_is_split(toy):
    plans = plan_batches(toy, _shorter_side_to_8, max_rows=2)
    rows_of_3 = [p.rows for p in plans if 3 in p.record_indices]
    assert rows_of_3 == [((3, 0), (3, 1)), ((3, 2),)]
    all_rows = sorted(row for p in plans for row in p.rows)
    expected = sorted((r, q) for r, qs in enumerate(QUERIES) for q in range(len(qs)))
    assert all_rows == expected  # every query exactly once


def test_loaded_batch_shares_images_and_traces_rows_back(toy):
    batches = QueryBatches(toy, _shorter_side_to_8, max_rows=32)
    batch = batches[0]
    assert batch.images.shape == (3, 3, 8, 16)  # records 0, 3, 6 once each
    assert batch.record_indices.tolist() == [0, 3, 6]
    assert batch.image_index.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert batch.targets.tolist() == [0, 1, 1, 3, 4, 2, 3]
    assert batch.original_sizes.tolist() == [[10, 20]] * 2 + [[15, 30]] * 3 + [[10, 20]] * 2
    assert batch.in_difficult.tolist() == [True, False, False, False, True, True, False]
    rows = batch.row_images()
    assert torch.equal(rows, batch.images[batch.image_index])
    # each row's pixels carry its record's index
    assert rows[:, 0, 0, 0].tolist() == [float(r) for r, _ in batch.query_refs.tolist()]
    assert [q.class_id for q in batch.queries(toy)] == batch.targets.tolist()
    masks = batch.masks(toy)
    assert [tuple(m.shape) for m in masks] == [tuple(s) for s in batch.original_sizes.tolist()]


def test_closed_form_size_gives_the_same_plan(toy):
    def size(height: int, width: int) -> tuple[int, int]:
        scale = 8 / min(height, width)
        return round(height * scale), round(width * scale)

    assert plan_batches(toy, preprocessed_size=size, max_rows=3) == plan_batches(
        toy, _shorter_side_to_8, max_rows=3
    )


def test_batches_pickle_and_load_through_a_dataloader(toy):
    batches = QueryBatches(toy, _shorter_side_to_8, max_rows=3)
    # worker processes receive the batches object pickled
    batches = pickle.loads(pickle.dumps(batches))
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    for direct, loaded in zip(
        QueryBatches(toy, _shorter_side_to_8, max_rows=3), loader, strict=True
    ):
        assert torch.equal(direct.images, loaded.images)
        assert torch.equal(direct.image_index, loaded.image_index)
        assert torch.equal(direct.query_refs, loaded.query_refs)


def test_wrong_image_size_is_reported():
    class _Liar(_Toy):
        def load_image(self, record):
            return torch.zeros(3, record.height + 1, record.width, dtype=torch.uint8)

    data = _Liar([ImageRecord("0", 10, 10, _queries(1))])
    with pytest.raises(
        ValueError, match=r"load_image returned .* expected torch.uint8 \(3, 10, 10\)"
    ):
        QueryBatches(data, _shorter_side_to_8)[0]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches([], _shorter_side_to_8, max_rows=0)
    with pytest.raises(ValueError, match="transform or a preprocessed_size"):
        plan_batches([])


def test_synthetic_set_batches_with_the_small_transform():
    data = cluttered_digits("test", num_images=30, seed=1)
    batches = QueryBatches(data, small_transform, max_rows=16)
    total = sum(len(batch) for batch in batches)
    assert total == data.num_queries()
    batch = batches[0]
    assert batch.images.dtype == torch.float32 and batch.images.shape[1:] == (3, 64, 64)
    first = int(batch.record_indices[0])
    assert torch.equal(batch.images[0], data.images[first].float() / 255)
    assert len(batch) <= 16 and batch.images.shape[0] == len(set(batch.record_indices.tolist()))
