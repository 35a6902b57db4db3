"""Keyframe selection, downsampled storage, rays and ray sampling."""
import numpy as np
import pytest

from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import KeyframeConfig
from panoptic_mapper.core.field.keyframes import (NO_MASK, Keyframe, KeyframeSelector,
                                                  KeyframeStore, sample_geometry_rays,
                                                  sample_segmentation_pixels)
from panoptic_mapper.core.types import (CameraIntrinsics, PanopticSegmentation2D, RgbdFrame,
                                        Segment)


def _pose(x=0.0, yaw_deg=0.0):
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[0, 3] = x
    return T


def _frame_and_segmentation(width=8, height=6):
    intrinsics = CameraIntrinsics(width, height, 4.0, 4.0, (width - 1) / 2, (height - 1) / 2)
    depth = np.full((height, width), 2.0, np.float32)
    depth[0, 0] = 0.0
    ids = np.zeros((height, width), np.int32)
    ids[:, :4] = 5      # wall (stuff)
    ids[:3, 4:] = 7     # chair (thing)
    ids[3:, 4:] = 9     # unknown label id 99
    segments = (Segment(5, "wall", 1, False), Segment(7, "chair", 10, True),
                Segment(9, "alien", 99, True))
    frame = RgbdFrame(0, np.zeros((height, width, 3), np.uint8), depth, _pose(), intrinsics)
    return frame, PanopticSegmentation2D(ids, segments)


def test_selector_thresholds():
    selector = KeyframeSelector(KeyframeConfig(min_translation_m=0.1, min_rotation_deg=10,
                                               max_interval_s=1.0))
    assert selector.is_keyframe(_pose(), 0)
    selector.accept(_pose(), 0)
    assert not selector.is_keyframe(_pose(0.05, 5.0), 500_000_000)
    assert selector.is_keyframe(_pose(0.11), 500_000_000)
    assert selector.is_keyframe(_pose(0.0, 11.0), 500_000_000)
    assert selector.is_keyframe(_pose(), 1_000_000_000)


def test_keyframe_downsampling_and_labels(label_registry):
    classes = ClassSpace.from_registry(label_registry)
    frame, segmentation = _frame_and_segmentation()
    keyframe, warnings = Keyframe.from_frame(frame, segmentation, classes, label_registry,
                                             KeyframeConfig(image_scale=0.5))
    assert keyframe.depth_m.shape == (3, 4)
    assert keyframe.intrinsics.fx == pytest.approx(2.0)
    assert len(warnings) == 1 and "99" in warnings[0]
    wall = int(classes.label_to_semantic_class(np.array([1]))[0])
    chair = int(classes.label_to_semantic_class(np.array([10]))[0])
    assert wall == 1 + classes.stuff_label_ids.index(1)
    assert keyframe.semantic_class[0, 0] == wall and keyframe.semantic_class[0, 3] == chair
    assert keyframe.semantic_class[2, 3] == 0  # unknown label: unlabelled
    assert keyframe.thing_classes.tolist() == [1 + classes.thing_label_ids.index(10)]
    assert keyframe.thing_mask[0, 3] == 0 and keyframe.thing_mask[2, 3] == NO_MASK


def test_rays_back_project_the_depth(label_registry):
    classes = ClassSpace.from_registry(label_registry)
    frame, segmentation = _frame_and_segmentation()
    keyframe, _ = Keyframe.from_frame(frame, segmentation, classes, label_registry,
                                      KeyframeConfig(image_scale=1.0))
    pixels = np.array([0, 9, 47])  # (0,0) has no depth; (1,1); (5,7)
    origins, directions, ranges = keyframe.camera_rays(pixels)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    v, u = 5, 7
    d = np.array([(u - 3.5) / 4.0, (v - 2.5) / 4.0, 1.0])
    assert ranges[2] == pytest.approx(2.0 * np.linalg.norm(d))
    np.testing.assert_allclose(keyframe.surface_points(pixels)[2], 2.0 * d, atol=1e-6)
    assert 0 not in keyframe.valid_pixels(0.3)


def test_sampling_draws_valid_pixels_and_balances_segments(label_registry):
    classes = ClassSpace.from_registry(label_registry)
    frame, segmentation = _frame_and_segmentation()
    keyframe, _ = Keyframe.from_frame(frame, segmentation, classes, label_registry,
                                      KeyframeConfig(image_scale=1.0))
    rng = np.random.default_rng(0)
    rays = sample_geometry_rays([keyframe], 100, 0.3, rng)
    assert rays.num_rays == 100 and (rays.observed_range_m >= 2.0).all()
    pixels = sample_segmentation_pixels(keyframe, 400, 1.0, 0.3, rng)
    in_chair = keyframe.thing_mask.reshape(-1)[pixels] == 0
    # two segments (wall, chair) share the balanced rays about equally
    assert 0.4 < in_chair.mean() < 0.6
    assert set(pixels) <= set(keyframe.valid_pixels(0.3))


def test_store_evicts_the_most_redundant_keyframe(label_registry):
    classes = ClassSpace.from_registry(label_registry)
    store = KeyframeStore(KeyframeConfig(max_keyframes=3, image_scale=1.0), 0.3)
    frame, segmentation = _frame_and_segmentation()
    for x in (0.0, 1.0, 1.05, 3.0):
        keyframe, _ = Keyframe.from_frame(frame.replace(T_world_cam=_pose(x)), segmentation,
                                          classes, label_registry, store.config)
        evicted = store.add(keyframe)
    assert evicted in (1, 2)
    assert sorted(k.T_world_cam[0, 3] for k in store.snapshot())[0] == 0.0
    assert len(store) == 3


def test_a_loop_correction_moves_the_keyframes_it_names(label_registry):
    classes = ClassSpace.from_registry(label_registry)
    store = KeyframeStore(KeyframeConfig(max_keyframes=3, image_scale=1.0), 0.3)
    frame, segmentation = _frame_and_segmentation()
    for stamp, x in ((10, 0.0), (20, 1.0)):
        keyframe, _ = Keyframe.from_frame(frame.replace(T_world_cam=_pose(x), stamp_ns=stamp),
                                          segmentation, classes, label_registry, store.config)
        store.add(keyframe)
    before = store.snapshot()
    version = store.version
    assert store.move_keyframes({20: _pose(1.2), 99: _pose(5.0)}) == 1
    after = store.snapshot()
    assert after[1].T_world_cam[0, 3] == 1.2 and after[0].T_world_cam[0, 3] == 0.0
    assert before[1].T_world_cam[0, 3] == 1.0  # snapshots held by training are not changed
    assert store.version == version + 1
