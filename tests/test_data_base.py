import torch

from backsal.data.base import Query


def test_box_mask_is_inclusive_and_clipped():
    query = Query(class_id=0, boxes=((1, 2, 3, 2), (4, 0, 9, 0)))
    mask = query.mask(height=4, width=6)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[2, 1:4] = True  # x 1..3 inclusive on row 2
    expected[0, 4:6] = True  # x 4..9 clipped to the image
    assert torch.equal(mask, expected)


def test_polygon_segmentation_mask():
    # a 4x4 square polygon at x 2..6, y 1..5 (COCO polygon coordinates)
    query = Query(class_id=3, segmentations=([[2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]],))
    mask = query.mask(height=8, width=8)
    assert mask.dtype == torch.bool and mask.shape == (8, 8)
    assert mask[3, 4] and not mask[7, 7] and not mask[0, 0]
