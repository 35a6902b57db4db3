"""Sensor and geometry message conversions: round trips through CDR bytes, and bad input."""
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.types import CameraIntrinsics
from panoptic_mapper.ros import conversions as conv

pytestmark = pytest.mark.ros


def over_the_wire(msg):
    """Serialise and deserialise, as a subscriber in another process would receive it."""
    return deserialize_message(serialize_message(msg), type(msg))


# ---- time -----------------------------------------------------------------------------------
def test_time_round_trip_and_limits():
    stamp = conv.time_msg_from_stamp_ns(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert conv.stamp_ns_from_time_msg(over_the_wire(stamp)) == 1_700_000_000_123_456_789
    with pytest.raises(InvalidInputError, match="stamp_ns"):
        conv.time_msg_from_stamp_ns(-1)
    with pytest.raises(InvalidInputError, match="int32"):
        conv.time_msg_from_stamp_ns(2**31 * 1_000_000_000)
    with pytest.raises(InvalidInputError, match=r"header.stamp.sec=-5"):
        conv.stamp_ns_from_time_msg(Time(sec=-5, nanosec=0))
    with pytest.raises(InvalidInputError, match="nanosec"):
        conv.stamp_ns_from_time_msg(Time(sec=1, nanosec=1_000_000_000))


# ---- images ---------------------------------------------------------------------------------
def test_rgb_round_trip_rgb8_and_bgr8():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for encoding in ("rgb8", "bgr8"):
        msg = over_the_wire(conv.image_msg_from_rgb(rgb, 5, "cam", encoding))
        assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, 2, 3, 9)
        assert msg.header.frame_id == "cam"
        np.testing.assert_array_equal(conv.rgb_from_image_msg(msg), rgb)
    bgr = conv.image_msg_from_rgb(rgb, 5, "cam", "bgr8")
    assert list(bgr.data[:3]) == [2, 1, 0]  # first pixel (0, 1, 2) stored blue first


def test_mono8_becomes_grey_rgb():
    mono = np.array([[0, 7], [200, 255]], np.uint8)
    msg = conv.image_msg_from_array(mono, "mono8", 0, "cam")
    rgb = conv.rgb_from_image_msg(over_the_wire(msg))
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[1, 0], [200, 200, 200])


def test_depth_16uc1_is_millimetres():
    depth_m = np.array([[0.0, 1.0], [1.2345, 65.535]], np.float32)
    msg = over_the_wire(conv.image_msg_from_depth(depth_m, 1, "cam", "16UC1"))
    assert msg.encoding == "16UC1" and msg.step == 4
    raw = conv.image_msg_to_array(msg)
    np.testing.assert_array_equal(raw, [[0, 1000], [1234, 65535]])  # rounded to whole mm
    decoded = conv.depth_from_image_msg(msg)
    np.testing.assert_allclose(decoded.depth_m, [[0.0, 1.0], [1.234, 65.535]], atol=1e-6)
    assert decoded.stats.num_zero == 1


def test_depth_32fc1_maps_rep118_markers_to_zero_and_counts_them():
    raw = np.array([[np.nan, np.inf], [-np.inf, 2.5]], np.float32)
    msg = conv.image_msg_from_array(raw, "32FC1", 0, "cam")
    decoded = conv.depth_from_image_msg(over_the_wire(msg))
    np.testing.assert_array_equal(decoded.depth_m, [[0, 0], [0, 2.5]])
    assert (decoded.stats.num_nan, decoded.stats.num_inf, decoded.stats.num_zero) == (1, 2, 3)


def test_depth_encoding_rejects_values_it_cannot_hold():
    with pytest.raises(InvalidInputError, match="use 32FC1"):
        conv.image_msg_from_depth(np.full((2, 2), 70.0), 0, "cam", "16UC1")
    with pytest.raises(InvalidInputError, match="NaN") as info:
        conv.image_msg_from_depth(np.array([[np.nan]]), 0, "cam", "32FC1")
    assert info.value.kind == "depth_values"
    with pytest.raises(InvalidInputError, match=">= 0"):
        conv.image_msg_from_depth(np.array([[-0.5]]), 0, "cam", "16UC1")
    with pytest.raises(InvalidInputError, match="negative depth"):
        conv.depth_from_image_msg(conv.image_msg_from_array(np.array([[-1.0]], np.float32),
                                                            "32FC1", 0, "cam"))


def test_bad_image_messages_name_field_and_value():
    msg = conv.image_msg_from_rgb(np.zeros((2, 2, 3), np.uint8), 0, "cam")
    msg.encoding = "yuv422"
    with pytest.raises(InvalidInputError, match="rgb.encoding='yuv422'"):
        conv.rgb_from_image_msg(msg)
    msg = conv.image_msg_from_rgb(np.zeros((2, 2, 3), np.uint8), 0, "cam")
    with pytest.raises(InvalidInputError, match="depth.encoding='rgb8'"):
        conv.depth_from_image_msg(msg)
    msg.height = 3  # data holds 2 rows
    with pytest.raises(InvalidInputError, match="expected height\\*step = 18"):
        conv.rgb_from_image_msg(msg)
    with pytest.raises(InvalidInputError, match="rgb8 or bgr8"):
        conv.image_msg_from_rgb(np.zeros((2, 2, 3), np.uint8), 0, "cam", "mono8")
    with pytest.raises(InvalidInputError, match=r"uint8 \[H, W, 3\]"):
        conv.image_msg_from_rgb(np.zeros((2, 2), np.uint8), 0, "cam")


# ---- camera info ----------------------------------------------------------------------------
def test_camera_info_round_trip():
    intrinsics = CameraIntrinsics(width=640, height=480, fx=525.0, fy=526.0, cx=319.5, cy=239.5)
    msg = over_the_wire(conv.camera_info_msg_from_intrinsics(intrinsics, 7, "cam"))
    assert msg.distortion_model == "plumb_bob" and list(msg.d) == [0.0] * 5
    np.testing.assert_array_equal(msg.p.reshape(3, 4)[:, :3], intrinsics.K)
    decoded = conv.intrinsics_from_camera_info_msg(msg)
    assert decoded.intrinsics == intrinsics
    assert decoded.warnings == []


def _camera_info(**changes) -> CameraInfo:
    intrinsics = CameraIntrinsics(width=4, height=3, fx=2.0, fy=2.0, cx=1.5, cy=1.0)
    msg = conv.camera_info_msg_from_intrinsics(intrinsics, 0, "cam")
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def test_camera_info_rejects_uncalibrated_and_malformed_k():
    with pytest.raises(InvalidInputError, match=r"camera_info.k\[0\]=0.0.*uncalibrated"):
        conv.intrinsics_from_camera_info_msg(_camera_info(k=np.zeros(9)))
    with pytest.raises(InvalidInputError, match=r"camera_info.k\[4\]=-2.0: focal length fy"):
        conv.intrinsics_from_camera_info_msg(
            _camera_info(k=np.array([2.0, 0, 1.5, 0, -2.0, 1.0, 0, 0, 1])))
    with pytest.raises(InvalidInputError, match="not a camera matrix"):
        conv.intrinsics_from_camera_info_msg(
            _camera_info(k=np.array([2.0, 0, 1.5, 0, 2.0, 1.0, 0, 0, 0])))
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        conv.intrinsics_from_camera_info_msg(
            _camera_info(k=np.array([2.0, 0, np.nan, 0, 2.0, 1.0, 0, 0, 1])))
    with pytest.raises(InvalidInputError, match="image size must be > 0"):
        conv.intrinsics_from_camera_info_msg(_camera_info(width=0))


def test_camera_info_rejects_wrong_k_size():
    class LooseCameraInfo:  # a message from a source without rclpy's fixed-size check
        width, height, k = 4, 3, [2.0, 0.0, 1.5, 0.0, 2.0, 1.0]

    with pytest.raises(InvalidInputError, match="camera_info.k='6 values'"):
        conv.intrinsics_from_camera_info_msg(LooseCameraInfo())


def test_camera_info_distortion_warns_or_rejects():
    msg = _camera_info(d=[0.1, -0.02, 0.0, 0.0, 0.0])
    decoded = conv.intrinsics_from_camera_info_msg(msg)
    assert len(decoded.warnings) == 1
    assert "camera_info.d=[0.1, -0.02, 0.0, 0.0, 0.0] (plumb_bob)" in decoded.warnings[0]
    with pytest.raises(InvalidInputError, match="camera_info.d.*publish rectified"):
        conv.intrinsics_from_camera_info_msg(msg, reject_distortion=True)


def test_camera_info_rejects_binning_and_roi():
    with pytest.raises(InvalidInputError, match="binning"):
        conv.intrinsics_from_camera_info_msg(_camera_info(binning_x=2))
    msg = _camera_info()
    msg.roi.width, msg.roi.height = 2, 2
    with pytest.raises(InvalidInputError, match="region of interest"):
        conv.intrinsics_from_camera_info_msg(msg)


# ---- poses ----------------------------------------------------------------------------------
def _transform() -> conv.StampedTransform:
    # 90 degrees about z, then translate: maps child x-axis onto parent y-axis.
    T = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0],
                  [0.0, 0.0, 0.0, 1.0]])
    return conv.StampedTransform(T, "map", "camera", 42)


def test_pose_stamped_round_trip():
    msg = over_the_wire(conv.pose_stamped_msg_from_transform(_transform()))
    q = msg.pose.orientation
    s = math.sqrt(0.5)
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0.0, 0.0, s, s], atol=1e-12)
    back = conv.transform_from_pose_stamped_msg(msg, child_frame_id="camera")
    np.testing.assert_allclose(back.T_parent_child, _transform().T_parent_child, atol=1e-12)
    assert (back.parent_frame_id, back.child_frame_id, back.stamp_ns) == ("map", "camera", 42)


def test_odometry_and_transform_stamped_round_trip():
    for build, read in ((conv.odometry_msg_from_transform, conv.transform_from_odometry_msg),
                        (conv.transform_stamped_msg_from_transform,
                         conv.transform_from_transform_stamped_msg)):
        back = read(over_the_wire(build(_transform())))
        np.testing.assert_allclose(back.T_parent_child, _transform().T_parent_child, atol=1e-12)
        assert (back.parent_frame_id, back.child_frame_id, back.stamp_ns) == ("map", "camera", 42)


def test_bad_poses_are_rejected():
    msg = PoseStamped()
    msg.pose.orientation.w = 0.0  # all-zero quaternion: a default-constructed message
    with pytest.raises(InvalidInputError, match="pose_stamped.pose.orientation.*norm is 0"):
        conv.transform_from_pose_stamped_msg(msg)
    odom = Odometry()
    odom.pose.pose.orientation.w, odom.pose.pose.orientation.x = 1.0, 1.0
    with pytest.raises(InvalidInputError, match="odometry.pose.pose.orientation.*1.4142"):
        conv.transform_from_odometry_msg(odom)
    tf = TransformStamped()
    tf.transform.rotation.w, tf.transform.translation.x = 1.0, math.nan
    with pytest.raises(InvalidInputError, match="transform_stamped.transform.position"):
        conv.transform_from_transform_stamped_msg(tf)
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    with pytest.raises(InvalidInputError, match="T_parent_child.*not a rigid"):
        conv.StampedTransform(sheared, "map")


# ---- RGB-D frame ----------------------------------------------------------------------------
def test_rgbd_frame_from_messages():
    intrinsics = CameraIntrinsics(width=3, height=2, fx=2.0, fy=2.0, cx=1.0, cy=0.5)
    rgb = np.full((2, 3, 3), 9, np.uint8)
    depth = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], np.float32)
    stamp = 1_000_000_123
    decoded = conv.rgbd_frame_from_msgs(
        conv.image_msg_from_rgb(rgb, stamp, "cam"),
        conv.image_msg_from_depth(depth, stamp, "cam"),
        conv.camera_info_msg_from_intrinsics(intrinsics, stamp, "cam"),
        np.eye(4))
    assert decoded.frame.stamp_ns == stamp and decoded.frame.frame_id == "cam"
    np.testing.assert_array_equal(decoded.frame.depth_m, depth)
    assert decoded.depth_stats.num_zero == 1
    with pytest.raises(InvalidInputError, match="same stamp") as info:
        conv.rgbd_frame_from_msgs(
            conv.image_msg_from_rgb(rgb, stamp, "cam"),
            conv.image_msg_from_depth(depth, stamp + 1, "cam"),
            conv.camera_info_msg_from_intrinsics(intrinsics, stamp, "cam"), np.eye(4))
    assert info.value.kind == "stamp"
    with pytest.raises(InvalidInputError, match=r"depth.height/width=\(1, 3\)") as info:
        conv.rgbd_frame_from_msgs(
            conv.image_msg_from_rgb(rgb, stamp, "cam"),
            conv.image_msg_from_depth(depth[:1], stamp, "cam"),
            conv.camera_info_msg_from_intrinsics(intrinsics, stamp, "cam"), np.eye(4))
    assert info.value.kind == "size_mismatch"


# ---- point clouds ---------------------------------------------------------------------------
def _cloud() -> conv.PanopticCloud:
    return conv.PanopticCloud(
        points_m=np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]]),
        colors_rgb=np.array([[255, 0, 10], [1, 2, 3]]),
        label_ids=np.array([10, 0]), instance_ids=np.array([7, 0]))


def test_panoptic_cloud_round_trip():
    msg = over_the_wire(conv.cloud_msg_from_panoptic_cloud(_cloud(), 3, "map"))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label", "instance"]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 2, 24, 48)
    assert msg.is_dense
    back = conv.panoptic_cloud_from_msg(msg)
    np.testing.assert_array_equal(back.points_m, _cloud().points_m)
    np.testing.assert_array_equal(back.colors_rgb, [[255, 0, 10], [1, 2, 3]])
    np.testing.assert_array_equal(back.label_ids, [10, 0])
    np.testing.assert_array_equal(back.instance_ids, [7, 0])


def test_cloud_reader_accepts_other_layouts():
    """Organised, row-padded, with rgb declared UINT32 and fields in another order."""
    dtype = np.dtype({"names": ["label", "instance", "rgb", "x", "y", "z"],
                      "formats": ["<u4", "<u4", "<u4", "<f4", "<f4", "<f4"],
                      "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 28})
    records = np.zeros((2, 2), dtype)
    records["x"] = [[0, 1], [2, 3]]
    records["rgb"] = 0x00FF8001
    records["label"] = 4
    records["instance"] = [[1, 2], [3, 4]]
    padding = np.zeros((2, 5), np.uint8)
    data = np.concatenate([records.view(np.uint8).reshape(2, -1), padding], axis=1)
    msg = PointCloud2(height=2, width=2, point_step=28, row_step=61, is_bigendian=False)
    types = {"label": 6, "instance": 6, "rgb": 6, "x": 7, "y": 7, "z": 7}
    msg.fields = [PointField(name=n, offset=dtype.fields[n][1], datatype=types[n], count=1)
                  for n in dtype.names]
    msg.data = data.tobytes()
    cloud = conv.panoptic_cloud_from_msg(msg)
    np.testing.assert_array_equal(cloud.points_m[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(cloud.colors_rgb, [[255, 128, 1]] * 4)
    np.testing.assert_array_equal(cloud.instance_ids, [1, 2, 3, 4])


def test_bad_clouds_are_rejected():
    msg = conv.cloud_msg_from_panoptic_cloud(_cloud(), 3, "map")
    msg.fields = [f for f in msg.fields if f.name != "instance"]
    with pytest.raises(InvalidInputError, match=r"missing panoptic field\(s\) \['instance'\]"):
        conv.panoptic_cloud_from_msg(msg)
    msg = conv.cloud_msg_from_panoptic_cloud(_cloud(), 3, "map")
    msg.width = 3
    with pytest.raises(InvalidInputError, match="cloud.data='48 bytes'"):
        conv.panoptic_cloud_from_msg(msg)
    with pytest.raises(InvalidInputError, match="cloud.label_ids"):
        conv.PanopticCloud(np.zeros((1, 3)), np.zeros((1, 3)), np.array([-1]), np.array([0]))
    with pytest.raises(InvalidInputError, match="one entry per point"):
        conv.PanopticCloud(np.zeros((2, 3)), np.zeros((1, 3)), np.array([1, 2]),
                           np.array([0, 0]))
