"""A scene's SLAM estimate: pose_estimated/ + loop_corrections.json round trip, and the bag that
carries it (live estimate on the pose topic, corrections as nav_msgs/Path)."""
import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.bag import (BagTopics, bag_info, iter_raw_messages, read_bag,
                                         read_keyframe_paths, write_bag)
from panoptic_mapper.core.io.datasets import open_dataset, write_scannet_layout
from panoptic_mapper.core.io.slam_estimate import CORRECTIONS_FILE, write_slam_estimate
from panoptic_mapper.core.scene import pose_drift_preset, simulate_slam_poses
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, LoopCorrection,
                                        RgbdFrame)

INTRINSICS = CameraIntrinsics(width=16, height=12, fx=15.0, fy=15.0, cx=7.5, cy=5.5)
N = 8
STAMPS = 2_000_000_000 + np.arange(N, dtype=np.int64) * 100_000_000


def _true_poses():
    T = np.tile(np.eye(4), (N, 1, 1))
    T[:, 0, 3] = np.linspace(0.0, 0.7, N)
    return T


def _samples(T):
    rng = np.random.default_rng(0)
    for i in range(N):
        yield DatasetSample(RgbdFrame(
            stamp_ns=int(STAMPS[i]), rgb=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
            depth_m=np.full((12, 16), 1.5, np.float32), T_world_cam=T[i], intrinsics=INTRINSICS))


def _corrections(T):
    """Two hand-made loop corrections (the walk is too short for real revisits)."""
    out = []
    for loop, publish in ((4, 5), (6, 7)):
        keyframes = np.arange(0, loop + 1, 2)
        poses = T[keyframes].copy()
        poses[:, 1, 3] += 0.001 * (keyframes + 1)
        out.append(LoopCorrection(loop_index=loop, matched_index=0, publish_index=publish,
                                  stamp_ns=int(STAMPS[publish]), keyframe_indices=keyframes,
                                  keyframe_stamps_ns=STAMPS[keyframes], T_world_keyframe=poses))
    return out


@pytest.fixture
def scene_dir(tmp_path, label_registry):
    T = _true_poses()
    slam = simulate_slam_poses(T, STAMPS, pose_drift_preset("vo", seed=3))
    root = tmp_path / "scene"
    write_scannet_layout(root, _samples(T), label_registry, INTRINSICS, progress=False)
    write_slam_estimate(root, slam.T_world_cam, _corrections(T))
    return root, T, slam.T_world_cam


def _assert_same_corrections(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.loop_index, x.matched_index, x.publish_index, x.stamp_ns) == \
            (y.loop_index, y.matched_index, y.publish_index, y.stamp_ns)
        np.testing.assert_array_equal(x.keyframe_indices, y.keyframe_indices)
        np.testing.assert_array_equal(x.keyframe_stamps_ns, y.keyframe_stamps_ns)
        np.testing.assert_array_equal(x.T_world_keyframe, y.T_world_keyframe)


def test_dataset_round_trip_keeps_true_poses_beside_the_estimate(scene_dir):
    root, T, T_est = scene_dir
    assert not np.allclose(T_est, T, atol=1e-3)  # the vo preset does drift
    dataset = open_dataset(root)
    estimate = dataset.slam_estimate
    assert sorted(estimate.T_world_cam_by_stamp) == STAMPS.tolist()
    for i, stamp in enumerate(STAMPS):
        np.testing.assert_allclose(estimate.pose_at(stamp), T_est[i], atol=1e-12)
    _assert_same_corrections(estimate.corrections, _corrections(T))
    for i, sample in enumerate(dataset):  # frames keep the truth: scoring is unchanged
        np.testing.assert_allclose(sample.frame.T_world_cam, T[i], atol=1e-12)
    strided = open_dataset(root, stride=3).slam_estimate
    assert sorted(strided.T_world_cam_by_stamp) == STAMPS[::3].tolist()
    with pytest.raises(InvalidInputError, match="stamp_ns"):
        strided.pose_at(STAMPS[1])
    with pytest.raises(InvalidInputError, match="exists"):
        write_slam_estimate(root, T_est, [])


def test_dataset_without_estimate_and_bad_corrections(tmp_path, scene_dir, label_registry):
    write_scannet_layout(tmp_path / "plain", _samples(_true_poses()), label_registry,
                         INTRINSICS, progress=False)
    assert open_dataset(tmp_path / "plain").slam_estimate is None
    root, _, _ = scene_dir
    (root / CORRECTIONS_FILE).write_text('{"corrections": [{"loop_frame": 1}]}')
    with pytest.raises(DataFormatError, match=CORRECTIONS_FILE):
        open_dataset(root).slam_estimate


def test_bag_carries_the_estimate_and_the_keyframe_paths(scene_dir, tmp_path):
    root, T, T_est = scene_dir
    dataset = open_dataset(root)
    report = write_bag(tmp_path / "bag", dataset, dataset.intrinsics, progress=False,
                       slam_estimate=dataset.slam_estimate)
    topic = BagTopics().keyframe_path
    assert report.message_counts[topic] == 2 and report.message_counts["/camera/pose"] == N
    assert bag_info(tmp_path / "bag").topics[topic].msgtype == "nav_msgs/msg/Path"
    # the pose topic is what the SLAM system streamed, not the truth
    for i, sample in enumerate(read_bag(tmp_path / "bag")):
        np.testing.assert_allclose(sample.frame.T_world_cam, T_est[i], atol=1e-9)
    paths = read_keyframe_paths(tmp_path / "bag")
    expected = _corrections(T)
    assert [p.stamp_ns for p in paths] == [c.stamp_ns for c in expected]
    for path, c in zip(paths, expected):
        assert path.frame_id == "map"
        np.testing.assert_array_equal(path.keyframe_stamps_ns, c.keyframe_stamps_ns)
        np.testing.assert_allclose(path.T_map_keyframe, c.T_world_keyframe, atol=1e-9)
    # published with the frame of its stamp: bag time = header stamp
    raw = list(iter_raw_messages(tmp_path / "bag", [topic]))
    assert [m.timestamp_ns for m in raw] == [c.stamp_ns for c in expected]
    # a bag without corrections has no such topic; reading it gives none
    write_bag(tmp_path / "plain", dataset, dataset.intrinsics, progress=False)
    assert topic not in bag_info(tmp_path / "plain").topics
    assert read_keyframe_paths(tmp_path / "plain") == []
    for i, sample in enumerate(read_bag(tmp_path / "plain")):
        np.testing.assert_allclose(sample.frame.T_world_cam, T[i], atol=1e-9)
