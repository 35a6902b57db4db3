"""The ``detector`` backend with the real packaged model on real 7-Scenes frames.

The SSD-MobileNetV2 Open Images model comes from the model cache that ``make models`` fills
(``make test`` runs it first); a missing model fails with the message saying so. The frames are
read in place from ``../shared/data`` and the tests skip when it is absent. The hand boxes
(``detector_frames``) were read off the frames by a person.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.segmentation.base import SegmentationRequest, create_segmenter
from panoptic_mapper.core.segmentation.detector_backend import DetectorConfig, DetectorSegmenter

sys.path.insert(0, str(Path(__file__).parent))
from detector_frames import HAND_BOXES, best_iou_per_hand_box, load_frames  # noqa: E402


@pytest.fixture(scope="module")
def frames(seven_scenes_dir):
    return load_frames(seven_scenes_dir)


@pytest.fixture(scope="module")
def segmenter(frames, label_registry):
    _, gravity = frames
    return DetectorSegmenter.from_config({"stuff": {"gravity_in_map": list(gravity)}},
                                         label_registry)


def _request(frame):
    return SegmentationRequest(rgb=frame.rgb, stamp_ns=7, depth_m=frame.depth_m,
                               intrinsics=frame.intrinsics, T_world_cam=frame.T_world_cam)


def test_classes_are_mapped_to_the_registry(segmenter, label_registry):
    names = {c: (m.label_id and label_registry.by_id(m.label_id).name)
             for c, m in segmenter.class_mapping.items()}
    assert names["Chair"] == "chair" and names["Table"] == "table"
    assert names["Coffee cup"] == "mug" and segmenter.class_mapping["Coffee cup"].source == "text"
    assert names["Computer monitor"] == "monitor"
    assert names["Cattle"] is None and names["Person"] is None
    assert segmenter.min_score == 0.2  # min_score 0: the SSD's own default


@pytest.mark.parametrize("frame_index", sorted(HAND_BOXES))
def test_chairs_and_table_are_found(segmenter, frames, label_registry, frame_index):
    frame = frames[0][frame_index]
    segmenter.reset()
    result = segmenter.segment_with_stats(_request(frame))
    for label, boxes in HAND_BOXES[frame_index].items():
        best = best_iou_per_hand_box(result.detections, label_registry, frame_index, label)
        assert (best > 0.5).all(), f"{label}: best IoU with the hand boxes {best}"
        # each physical object keeps a segment of its own with pixels inside its box
        for box in boxes:
            x0, y0, x1, y1 = box
            ids = result.segmentation.segment_ids[y0:y1, x0:x1]
            segments = {s.id for s in result.segmentation.segments if s.label == label}
            assert np.isin(ids, list(segments)).mean() > 0.15
    seg = result.segmentation
    assert seg.stamp_ns == 7 and seg.segment_ids.shape == frame.depth_m.shape
    assert {s.label for s in seg.segments} >= set(HAND_BOXES[frame_index])
    for s in seg.segments:
        assert s.is_thing == label_registry.by_id(s.label_id).is_thing
        assert (seg.segment_ids == s.id).any()
    masks = result.masks
    assert masks.shape == (len(result.detections), *frame.depth_m.shape)
    stats = result.stats
    assert stats.total_ms >= stats.detect_ms > 0 and stats.mask_method == "depth"
    assert stats.num_boxes_segmented == len(result.detections) > 0
    assert segmenter.last_stats is stats


def test_floor_is_labelled_from_geometry(segmenter, frames, label_registry):
    frame = frames[0][0]
    segmenter.reset()
    result = segmenter.segment_with_stats(_request(frame))
    floor = result.stuff_label_ids == label_registry.by_name("floor").id
    # frame 0 sees carpet in the lower left (x < 170, y > 300); the table top is not floor
    assert floor[300:, :170].mean() > 0.3
    assert floor[200:260, 300:560].mean() < 0.02
    assert "floor" in {s.label for s in result.segmentation.segments}
    # things never take floor pixels
    assert not (result.masks.any(axis=0) & floor).any()


def test_a_frame_without_detections_gives_stuff_only(segmenter, frames, label_registry):
    frame = frames[0][0]
    blank = np.full_like(frame.rgb, 128)
    result = segmenter.segment_with_stats(SegmentationRequest(
        rgb=blank, depth_m=frame.depth_m, intrinsics=frame.intrinsics,
        T_world_cam=frame.T_world_cam))
    assert result.detections == [] and result.masks.shape == (0, *frame.depth_m.shape)
    assert all(not s.is_thing for s in result.segmentation.segments)
    assert result.stats.num_masks_empty == 0


def test_without_depth_only_boxes_or_an_error(segmenter, frames):
    frame = frames[0][0]
    with pytest.raises(InvalidInputError, match="depth"):
        segmenter.segment(SegmentationRequest(rgb=frame.rgb))
    with pytest.raises(InvalidInputError, match="match the colour image"):
        segmenter.segment(SegmentationRequest(rgb=frame.rgb, depth_m=frame.depth_m[:100]))
    with pytest.raises(InvalidInputError, match="uint8"):
        segmenter.segment(SegmentationRequest(rgb=frame.rgb.astype(np.float32)))


def test_registry_name_and_missing_model(label_registry, tmp_path, frames):
    seg = create_segmenter("detector", label_registry,
                           {"text_matching": False, "stuff": {"enabled": False},
                            "masks": {"method": "box"}})
    assert isinstance(seg, DetectorSegmenter)
    assert seg.class_mapping["Coffee cup"].label_id is None  # no text model: dropped
    result = seg.segment_with_stats(SegmentationRequest(rgb=frames[0][0].rgb))
    assert result.stats.mask_method == "box" and result.stats.stuff_pixels_fraction == 0.0
    with pytest.raises(DataFormatError, match="make models"):
        create_segmenter("detector", label_registry, {"model_dir": str(tmp_path)})


def test_config_validation():
    with pytest.raises(Exception, match="stuff_score"):
        DetectorConfig(stuff_score=0.0)
    with pytest.raises(Exception, match="class_overrides"):
        DetectorConfig(class_overrides=("Chair",))
    with pytest.raises(Exception, match="min_score"):
        DetectorConfig(min_score=1.0)
    with pytest.raises(Exception, match="model"):
        DetectorConfig.from_dict({"model": "yolo"}, "detector")
    assert json.dumps(DetectorConfig().to_dict())


def test_sam_cuts_the_detector_boxes(frames, label_registry, tmp_path):
    """Detector + SAM as one backend (a tiny random SAM: the plumbing, not the masks)."""
    torch = pytest.importorskip("torch")
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16, output_channels=16, window_size=2,
                           global_attn_indexes=[0], mlp_dim=32, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 mlp_dim=16, iou_head_hidden_dim=16))
    torch.manual_seed(0)
    SamModel(config).save_pretrained(tmp_path / "sam")
    seg = DetectorSegmenter.from_config(
        {"text_matching": False, "sam_weights_dir": str(tmp_path / "sam"), "sam_device": "cpu",
         "stuff": {"gravity_in_map": list(frames[1])}}, label_registry)
    frame = frames[0][0]
    result = seg.segment_with_stats(_request(frame))
    assert seg.mask_method == "sam" and result.stats.mask_method == "sam"
    assert result.masks.shape == (len(result.detections), *frame.depth_m.shape)
    assert result.masks.dtype == bool and len(result.detections) > 0
