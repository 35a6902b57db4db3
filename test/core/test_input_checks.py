"""``core/mapping/input_checks.py``: rejections with a reason, and the pose-jump guard."""
import numpy as np
import pytest

from panoptic_mapper.core.mapping.input_checks import FrameChecker, InputChecksConfig
from panoptic_mapper.core.types import (CameraIntrinsics, PanopticSegmentation2D, RgbdFrame,
                                        Segment)

INTR = CameraIntrinsics(width=8, height=6, fx=5.0, fy=5.0, cx=3.5, cy=2.5)


def _frame(x=0.0, stamp_s=0.0, depth=1.0, yaw_deg=0.0):
    T = np.eye(4)
    a = np.radians(yaw_deg)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[0, 3] = x
    return RgbdFrame(stamp_ns=int(stamp_s * 1e9), rgb=np.zeros((6, 8, 3), np.uint8),
                     depth_m=np.full((6, 8), depth, np.float32), T_world_cam=T, intrinsics=INTR)


@pytest.fixture
def checker(label_registry):
    return FrameChecker(InputChecksConfig(), label_registry, depth_min_m=0.1, depth_max_m=4.0)


def test_depth_out_of_range_is_rejected_and_cleaned(checker):
    assert "no usable depth" in checker.check(_frame(depth=0.0), None).reject_reason
    assert "no usable depth" in checker.check(_frame(depth=9.0), None).reject_reason
    frame = _frame()
    frame.depth_m[0, :4] = 7.0
    result = checker.check(frame, None)
    assert result.accepted and result.depth_m[0, :4].tolist() == [0, 0, 0, 0]


def test_mutated_frame_with_nan_pose_or_depth_is_rejected(checker):
    frame = _frame()
    frame.T_world_cam[0, 3] = np.nan
    assert "T_world_cam" in checker.check(frame, None).reject_reason
    frame = _frame()
    frame.depth_m[1, 1] = np.nan
    assert "depth_m" in checker.check(frame, None).reject_reason
    frame = _frame()
    frame.rgb = np.zeros((6, 8, 3), np.float32)
    assert "rgb" in checker.check(frame, None).reject_reason


def test_segmentation_size_and_unknown_labels(checker, label_registry):
    seg = PanopticSegmentation2D.empty(5, 8)
    assert "differs from the depth image" in checker.check(_frame(), seg).reject_reason
    ids = np.zeros((6, 8), np.int32)
    ids[:2] = 1
    ids[2:4] = 2
    ids[4:] = 3
    segs = (Segment(1, "chair", label_registry.by_name("chair").id, True, 0.9),
            Segment(2, "unicorn", 999, True, 0.9),
            Segment(3, "office chair", 0, False, 0.5))  # phrase of chair, wrong thing flag
    result = checker.check(_frame(), PanopticSegmentation2D(ids, segs))
    assert result.accepted
    assert [s.id for s in result.segments] == [1, 3]
    assert result.segments[1].label == "chair" and result.segments[1].is_thing
    assert not (result.segment_ids == 2).any()
    assert any("segment 2 (label 'unicorn'" in w and "skipped" in w for w in result.warnings)
    assert any("is_thing" in w for w in result.warnings)


def test_pose_jump_is_rejected_then_a_stable_new_place_is_accepted(checker):
    checker.accept(_frame(0.0, 0.0))
    # 0.3 m in 0.1 s is 3 m/s minus the tolerance: plausible.
    assert checker.check(_frame(0.3, 0.1), None).accepted
    jump = checker.check(_frame(2.0, 0.2), None)
    assert "pose jumped 2.00 m / 0.0 deg in 0.200 s" in jump.reject_reason
    assert "max_speed_m_s" in jump.reject_reason
    assert "pose jumped" in checker.check(_frame(0.0, 0.2, yaw_deg=90.0), None).reject_reason
    # A long gap disables the check (the camera may have moved while nothing was integrated).
    assert checker.check(_frame(2.0, 5.0), None).accepted
    # Re-localisation: consecutive consistent frames at the new place are accepted eventually.
    results = [checker.check(_frame(3.0 + 0.01 * k, 0.3 + 0.1 * k), None).accepted
               for k in range(InputChecksConfig().jump_recovery_frames)]
    assert results == [False] * (len(results) - 1) + [True]


def test_motion_over_skipped_frames_is_judged_by_elapsed_time(checker):
    """Frames a busy node skipped do not turn normal motion into a jump: 74 deg and 0.3 m
    after 0.5 s (the gap of four skipped frames at 10 Hz) are within the rates, while the same
    motion within one 0.1 s frame interval is not."""
    checker.accept(_frame(0.0, 0.0))
    assert checker.check(_frame(0.3, 0.5, yaw_deg=74.4), None).accepted
    rejected = checker.check(_frame(0.3, 0.1, yaw_deg=74.4), None)
    assert "74.4 deg in 0.100 s" in rejected.reject_reason
    assert "max_turn_rate_deg_s" in rejected.reject_reason


def test_motion_limits_follow_the_configured_rates(label_registry):
    config = InputChecksConfig(max_speed_m_s=1.0, max_turn_rate_deg_s=90.0,
                               jump_tolerance_m=0.0, jump_tolerance_deg=0.0)
    checker = FrameChecker(config, label_registry, depth_min_m=0.1, depth_max_m=4.0)
    checker.accept(_frame(0.0, 0.0))
    assert checker.check(_frame(0.99, 1.0), None).accepted
    assert not checker.check(_frame(1.01, 1.0), None).accepted
    assert checker.check(_frame(0.0, 1.0, yaw_deg=89.0), None).accepted
    assert not checker.check(_frame(0.0, 1.0, yaw_deg=91.0), None).accepted
