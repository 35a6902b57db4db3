"""Merge rules of the Grounded SAM backend on hand-made masks, boxes and scores."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.segmentation.grounded_sam_merge import (Detection, box_iou,
                                                                  class_aware_nms,
                                                                  merge_detection_masks)

CHAIR, MUG, WALL, FLOOR = 10, 18, 1, 2


def _rect(h, w, y0, y1, x0, x1):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _det(label_id, score, phrase="p", box=(0.0, 0.0, 1.0, 1.0)):
    return Detection(box_xyxy=box, score=score, phrase=phrase, label_id=label_id)


def test_highest_score_wins_each_overlapping_pixel(label_registry):
    # Two chairs overlap on columns 4..5; the 0.9 chair takes the overlap.
    masks = np.stack([_rect(4, 10, 0, 4, 0, 6), _rect(4, 10, 0, 4, 4, 10)])
    dets = [_det(CHAIR, 0.6, "chair"), _det(CHAIR, 0.9, "office chair")]
    result = merge_detection_masks(dets, masks, label_registry)
    seg = result.segmentation
    # Ids by decreasing score: the 0.9 chair is segment 1.
    expected = np.zeros((4, 10), np.int32)
    expected[:, 0:4] = 2
    expected[:, 4:10] = 1
    np.testing.assert_array_equal(seg.segment_ids, expected)
    by_id = seg.segment_by_id()
    assert by_id[1].score == pytest.approx(0.9) and by_id[1].phrase == "office chair"
    assert by_id[2].score == pytest.approx(0.6) and by_id[2].phrase == "chair"
    assert by_id[1].is_thing and by_id[1].label == "chair"
    assert result.segment_sources == {1: (1,), 2: (0,)}


def test_stuff_detections_of_one_label_merge_into_one_segment(label_registry):
    h, w = 6, 6
    masks = np.stack([
        _rect(h, w, 0, 3, 0, 6),   # wall, upper half, 0.5
        _rect(h, w, 0, 2, 0, 3),   # wall again ("wall panel"), 0.7
        _rect(h, w, 3, 6, 0, 6),   # floor, 0.4
        _rect(h, w, 2, 4, 2, 4),   # mug, 0.8, straddles wall and floor
    ])
    dets = [_det(WALL, 0.5, "wall"), _det(WALL, 0.7, "wall panel"), _det(FLOOR, 0.4, "floor"),
            _det(MUG, 0.8, "mug")]
    result = merge_detection_masks(dets, masks, label_registry)
    seg = result.segmentation
    by_id = seg.segment_by_id()
    # Order by best score: mug 0.8 (1), wall 0.7 (2), floor 0.4 (3).
    assert [(s.label, s.is_thing) for s in seg.segments] == [
        ("mug", True), ("wall", False), ("floor", False)]
    assert by_id[2].score == pytest.approx(0.7) and by_id[2].phrase == "wall panel"
    assert result.segment_sources[2] == (0, 1)
    expected = np.array([
        [2, 2, 2, 2, 2, 2],
        [2, 2, 2, 2, 2, 2],
        [2, 2, 1, 1, 2, 2],
        [3, 3, 1, 1, 3, 3],
        [3, 3, 3, 3, 3, 3],
        [3, 3, 3, 3, 3, 3],
    ])
    np.testing.assert_array_equal(seg.segment_ids, expected)
    np.testing.assert_array_equal(seg.label_image()[2], [WALL, WALL, MUG, MUG, WALL, WALL])


def test_things_of_one_label_stay_separate_instances(label_registry):
    masks = np.stack([_rect(4, 8, 0, 4, 0, 3), _rect(4, 8, 0, 4, 5, 8)])
    result = merge_detection_masks([_det(MUG, 0.5), _det(MUG, 0.5)], masks, label_registry)
    assert len(result.segmentation.segments) == 2
    # Equal scores: the lower detection index gets the lower segment id.
    assert result.segment_sources == {1: (0,), 2: (1,)}


def test_small_and_fully_covered_segments_are_removed(label_registry):
    h, w = 10, 10
    masks = np.stack([
        _rect(h, w, 0, 10, 0, 10),  # floor 0.3, everything
        _rect(h, w, 0, 5, 0, 5),    # chair 0.9, 25 px
        _rect(h, w, 0, 2, 0, 2),    # mug 0.5, inside the chair: covered, 0 px
        _rect(h, w, 8, 10, 8, 10),  # mug 0.8, 4 px < 5: removed, its pixels go to the floor
    ])
    dets = [_det(FLOOR, 0.3), _det(CHAIR, 0.9), _det(MUG, 0.5), _det(MUG, 0.8)]
    result = merge_detection_masks(dets, masks, label_registry, min_segment_area_px=5)
    seg = result.segmentation
    assert [s.label for s in seg.segments] == ["chair", "floor"]
    assert result.num_removed == 2
    assert (seg.segment_ids == 1).sum() == 25
    assert (seg.segment_ids == 2).sum() == 75
    assert set(result.segment_sources) == {1, 2}


def test_no_detections_gives_an_empty_segmentation(label_registry):
    result = merge_detection_masks([], np.zeros((0, 5, 7), bool), label_registry, stamp_ns=9)
    assert result.segmentation.shape == (5, 7)
    assert result.segmentation.segments == ()
    assert not result.segmentation.segment_ids.any()
    assert result.segmentation.stamp_ns == 9


def test_pixels_outside_every_mask_stay_unsegmented(label_registry):
    result = merge_detection_masks([_det(CHAIR, 0.5)], _rect(3, 3, 0, 1, 0, 3)[None],
                                   label_registry)
    np.testing.assert_array_equal(result.segmentation.segment_ids,
                                  [[1, 1, 1], [0, 0, 0], [0, 0, 0]])


def test_bad_inputs_are_rejected(label_registry):
    with pytest.raises(InvalidInputError, match="masks"):
        merge_detection_masks([_det(CHAIR, 0.5)], np.zeros((2, 3, 3), bool), label_registry)
    with pytest.raises(InvalidInputError, match="masks"):
        merge_detection_masks([_det(CHAIR, 0.5)], np.zeros((3, 3), bool), label_registry)
    with pytest.raises(InvalidInputError, match="label_id"):
        merge_detection_masks([_det(999, 0.5)], np.ones((1, 3, 3), bool), label_registry)


def test_box_iou_hand_computed():
    iou = box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2]]))
    np.testing.assert_allclose(iou, [[1 / 7, 0.0, 1.0]])
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0.0


def test_nms_suppresses_only_same_label_duplicates():
    dets = [
        _det(CHAIR, 0.5, box=(0, 0, 10, 10)),
        _det(CHAIR, 0.9, box=(0, 0, 10, 11)),   # IoU 10/11 with the first: suppresses it
        _det(MUG, 0.7, box=(0, 0, 10, 10)),     # another label: kept
        _det(CHAIR, 0.8, box=(20, 20, 30, 30)),  # no overlap: kept
    ]
    assert class_aware_nms(dets, 0.8) == [1, 3, 2]
    assert class_aware_nms(dets, 1.0) == [1, 3, 2, 0]
