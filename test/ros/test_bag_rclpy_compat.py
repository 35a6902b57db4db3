"""Bags written by rosbags (core.io.bag) deserialize with rclpy, including our own message type."""
import numpy as np
import pytest

from panoptic_mapper.core.io.bag import iter_raw_messages, write_bag
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, PanopticSegmentation2D,
                                        RgbdFrame, Segment)

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rclpy_reads_rosbags_written_messages(tmp_path, storage):
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from panoptic_mapper.msg import PanopticSegmentation

    intrinsics = CameraIntrinsics(6, 4, 5.0, 5.5, 2.5, 1.5)
    rgb = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = (1.0, -2.0, 0.25)
    frame = RgbdFrame(1_700_000_000_123_456_789, rgb, np.full((4, 6), 1.5), T, intrinsics,
                      frame_id="cam_optical")
    ids = np.zeros((4, 6), np.int32)
    ids[:, 3:] = 70_000  # needs 32SC1
    segmentation = PanopticSegmentation2D(
        ids, (Segment(70_000, "chair", 10, True, 0.25, "office chair"),), frame.stamp_ns)
    write_bag(tmp_path / "b", [DatasetSample(frame, segmentation)], intrinsics, storage=storage,
              progress=False)

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "geometry_msgs/msg/PoseStamped": PoseStamped,
               "panoptic_mapper/msg/PanopticSegmentation": PanopticSegmentation}
    decoded = {m.topic: deserialize_message(m.rawdata, classes[m.msgtype])
               for m in iter_raw_messages(tmp_path / "b")}
    assert len(decoded) == 5

    seg = decoded["/panoptic/segmentation"]
    assert (seg.header.stamp.sec, seg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert seg.header.frame_id == "cam_optical" and seg.segment_ids.encoding == "32SC1"
    pixels = np.frombuffer(bytes(seg.segment_ids.data), "<i4").reshape(4, 6)
    np.testing.assert_array_equal(pixels, ids)
    (segment,) = seg.segments
    assert (segment.id, segment.label, segment.label_id, segment.is_thing, segment.phrase) == (
        70_000, "chair", 10, True, "office chair")
    assert segment.score == pytest.approx(0.25)

    image = decoded["/camera/color/image_raw"]
    assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 4, 6, 18)
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(4, 6, 3),
                                  rgb)
    depth = decoded["/camera/depth/image_raw"]
    assert depth.encoding == "16UC1"
    assert np.frombuffer(bytes(depth.data), "<u2").tolist() == [1500] * 24
    info = decoded["/camera/color/camera_info"]
    assert list(info.k) == [5.0, 0.0, 2.5, 0.0, 5.5, 1.5, 0.0, 0.0, 1.0]
    pose = decoded["/camera/pose"]
    assert pose.header.frame_id == "map"
    assert (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) == (1.0, -2.0, 0.25)
    q = pose.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)])


def test_rclpy_reads_the_keyframe_path_of_a_drifting_scene(tmp_path):
    from nav_msgs.msg import Path
    from rclpy.serialization import deserialize_message

    from panoptic_mapper.core.io.bag import BagTopics
    from panoptic_mapper.core.io.slam_estimate import SlamEstimate
    from panoptic_mapper.core.types import LoopCorrection

    intrinsics = CameraIntrinsics(6, 4, 5.0, 5.5, 2.5, 1.5)
    stamps = [1_000_000_000 + i * 100_000_000 for i in range(3)]
    frames = [DatasetSample(RgbdFrame(s, np.zeros((4, 6, 3), np.uint8), np.full((4, 6), 1.5),
                                      np.eye(4), intrinsics)) for s in stamps]
    keyframe = np.eye(4)
    keyframe[:3, 3] = (0.5, -0.25, 1.0)
    correction = LoopCorrection(loop_index=1, matched_index=0, publish_index=2,
                                stamp_ns=stamps[2], keyframe_indices=[0, 1],
                                keyframe_stamps_ns=stamps[:2],
                                T_world_keyframe=[np.eye(4), keyframe])
    estimate = SlamEstimate({s: np.eye(4) for s in stamps}, [correction])
    write_bag(tmp_path / "b", frames, intrinsics, progress=False, slam_estimate=estimate)
    (raw,) = list(iter_raw_messages(tmp_path / "b", [BagTopics().keyframe_path]))
    path = deserialize_message(raw.rawdata, Path)
    assert path.header.frame_id == "map"
    assert (path.header.stamp.sec, path.header.stamp.nanosec) == (1, 200_000_000)
    assert [(p.header.stamp.sec, p.header.stamp.nanosec) for p in path.poses] == [
        (1, 0), (1, 100_000_000)]
    position = path.poses[1].pose.position
    assert (position.x, position.y, position.z) == (0.5, -0.25, 1.0)
