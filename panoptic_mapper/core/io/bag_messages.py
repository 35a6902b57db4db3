"""Conversions between core types and the *rosbags* message objects stored in bags.

Byte layouts and units come from ``wire`` (shared with the rclpy conversions in ``ros/``); this
module only builds and takes apart rosbags dataclasses. Every decoder raises
:class:`InvalidInputError` naming the message field.

Owns: Image, CameraInfo, PoseStamped / Odometry / TransformStamped, Path (loop corrections) and
PanopticSegmentation messages of our bags. Does not own: bag files (``bag``) or rclpy messages
(``ros/``).
"""
from __future__ import annotations

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import wire
from panoptic_mapper.core.io.msg_types import panoptic_typestore
from panoptic_mapper.core.types import CameraIntrinsics, PanopticSegmentation2D, Segment

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
PANOPTIC_SEGMENTATION = "panoptic_mapper/msg/PanopticSegmentation"
PATH = "nav_msgs/msg/Path"
POSE_TYPES = (POSE_STAMPED, ODOMETRY, TRANSFORM_STAMPED)
"""Message types accepted on the pose topic (the pose of the camera in the map frame)."""


def _types():
    return panoptic_typestore().types


def header(stamp_ns: int, frame_id: str):
    """A ``std_msgs/Header``."""
    sec, nanosec = wire.ns_to_stamp(stamp_ns)
    types = _types()
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns_of(msg) -> int:
    """Header stamp of a message, ns."""
    return wire.stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """A ``sensor_msgs/Image`` from an array already in ``encoding``'s dtype and layout."""
    height, width, step, data = wire.encode_image(array, encoding)
    return _image_from_fields(encoding, height, width, step, data, stamp_ns, frame_id)


def depth_msg(depth_m: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """A depth ``sensor_msgs/Image``: ``16UC1`` millimetres or ``32FC1`` metres."""
    if encoding in ("16UC1", "mono16") and depth_m.size and float(depth_m.max()) > 65.535:
        raise InvalidInputError("depth_m", f"max {float(depth_m.max()):.2f} m",
                                "exceeds 65.535 m, the 16UC1 millimetre range; use 32FC1",
                                kind="depth_values")
    height, width, step, data = wire.encode_depth(depth_m, encoding)
    return _image_from_fields(encoding, height, width, step, data, stamp_ns, frame_id)


def _image_from_fields(encoding, height, width, step, data, stamp_ns, frame_id):
    return _types()[IMAGE](header=header(stamp_ns, frame_id), height=height, width=width,
                           encoding=encoding, is_bigendian=0, step=step,
                           data=np.frombuffer(data, np.uint8))


def decode_rgb(msg, field: str = "rgb") -> np.ndarray:
    """``sensor_msgs/Image`` -> [H, W, 3] uint8 RGB."""
    return wire.decode_rgb(msg.encoding, msg.height, msg.width, msg.step,
                           bool(msg.is_bigendian), msg.data, field)


def decode_depth(msg, field: str = "depth") -> np.ndarray:
    """``sensor_msgs/Image`` (16UC1 mm or 32FC1 m) -> [H, W] float32 metres, 0 = invalid."""
    depth, _ = wire.decode_depth_m(msg.encoding, msg.height, msg.width, msg.step,
                                   bool(msg.is_bigendian), msg.data, field)
    return depth


def decode_ids(msg, field: str) -> np.ndarray:
    """An id image (16UC1, mono16 or 32SC1) -> [H, W] int32."""
    if msg.encoding not in ("16UC1", "mono16", "32SC1"):
        raise InvalidInputError(f"{field}.encoding", msg.encoding,
                                "id images must be 16UC1 or 32SC1", kind="encoding")
    ids = wire.decode_image(msg.encoding, msg.height, msg.width, msg.step,
                            bool(msg.is_bigendian), msg.data, field)
    return ids.astype(np.int32)


def ids_encoding(ids: np.ndarray, field: str) -> tuple[np.ndarray, str]:
    """Pick 16UC1 when the ids fit, else 32SC1; returns the cast array and the encoding."""
    if ids.size and int(ids.min()) < 0:
        raise InvalidInputError(field, int(ids.min()), "ids must be >= 0", kind="encoding")
    if not ids.size or int(ids.max()) <= 65535:
        return ids.astype(np.uint16), "16UC1"
    return ids.astype(np.int32), "32SC1"


# --------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------
def camera_info_msg(intrinsics: CameraIntrinsics, stamp_ns: int, frame_id: str):
    """A ``sensor_msgs/CameraInfo`` of an undistorted pinhole camera (plumb_bob, zero d)."""
    types = _types()
    K = intrinsics.K  # noqa: N806
    P = np.zeros((3, 4))  # noqa: N806
    P[:, :3] = K
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO](
        header=header(stamp_ns, frame_id), height=intrinsics.height, width=intrinsics.width,
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(9), r=np.eye(3).reshape(9),
        p=P.reshape(12), binning_x=0, binning_y=0, roi=roi)


def decode_camera_info(msg, field: str = "camera_info") -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` -> intrinsics (``k``; distortion is not applied)."""
    k = np.asarray(msg.k, np.float64)
    if k.size != 9:
        raise InvalidInputError(f"{field}.k", k.size, "must have 9 entries", kind="intrinsics")
    return CameraIntrinsics.from_K(k.reshape(3, 3), width=msg.width, height=msg.height)


def has_distortion(msg) -> bool:
    """True when a CameraInfo declares non-zero distortion coefficients."""
    return bool(np.any(np.asarray(msg.d, np.float64) != 0.0))


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------
def pose_stamped_msg(T_map_cam: np.ndarray, stamp_ns: int, frame_id: str):  # noqa: N803
    """A ``geometry_msgs/PoseStamped`` of ``T_map_cam`` (the camera pose in ``frame_id``)."""
    types = _types()
    position, quaternion = wire.matrix_to_pose(T_map_cam)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](*map(float, position)),
        orientation=types["geometry_msgs/msg/Quaternion"](*map(float, quaternion)))
    return types[POSE_STAMPED](header=header(stamp_ns, frame_id), pose=pose)


def decode_pose(msg, msgtype: str, field: str = "pose") -> np.ndarray:
    """PoseStamped, Odometry (``pose.pose``) or TransformStamped -> [4, 4] ``T_frame_child``."""
    if msgtype == POSE_STAMPED:
        pose = msg.pose
    elif msgtype == ODOMETRY:
        pose = msg.pose.pose
    elif msgtype == TRANSFORM_STAMPED:
        t, q = msg.transform.translation, msg.transform.rotation
        return wire.pose_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w), field)
    else:
        raise InvalidInputError(f"{field}.type", msgtype, f"pose messages must be one of "
                                f"{list(POSE_TYPES)}", kind="encoding")
    p, q = pose.position, pose.orientation
    return wire.pose_to_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), field)


def path_msg(T_map_keyframe: np.ndarray, keyframe_stamps_ns: np.ndarray,  # noqa: N803
             stamp_ns: int, frame_id: str):
    """A ``nav_msgs/Path`` of optimised keyframe poses [K, 4, 4] in ``frame_id``: the path is
    stamped when it is published, each pose with its keyframe's own stamp."""
    poses = [pose_stamped_msg(T, int(s), frame_id)
             for T, s in zip(np.asarray(T_map_keyframe), np.asarray(keyframe_stamps_ns))]
    return _types()[PATH](header=header(stamp_ns, frame_id), poses=poses)


def decode_path(msg, field: str = "path") -> tuple[np.ndarray, np.ndarray]:
    """``nav_msgs/Path`` -> ([K] int64 pose stamps, [K, 4, 4] poses)."""
    stamps = np.array([stamp_ns_of(p) for p in msg.poses], np.int64)
    poses = [decode_pose(p, POSE_STAMPED, f"{field}.poses[{i}]") for i, p in enumerate(msg.poses)]
    return stamps, np.array(poses, np.float64).reshape(-1, 4, 4)


# --------------------------------------------------------------------------------------------
# Panoptic segmentation
# --------------------------------------------------------------------------------------------
def segmentation_msg(segmentation: PanopticSegmentation2D, stamp_ns: int, frame_id: str):
    """A ``panoptic_mapper/PanopticSegmentation`` (16UC1 ids when they fit, else 32SC1)."""
    types = _types()
    ids, encoding = ids_encoding(segmentation.segment_ids, "segmentation.segment_ids")
    segments = [types["panoptic_mapper/msg/Segment"](
        id=s.id, label=s.label, label_id=s.label_id, is_thing=s.is_thing, score=s.score,
        phrase=s.phrase) for s in segmentation.segments]
    return types[PANOPTIC_SEGMENTATION](header=header(stamp_ns, frame_id),
                                        segment_ids=image_msg(ids, encoding, stamp_ns, frame_id),
                                        segments=segments)


def decode_segmentation(msg, field: str = "segmentation") -> PanopticSegmentation2D:
    """``panoptic_mapper/PanopticSegmentation`` -> core segmentation (validated)."""
    ids = decode_ids(msg.segment_ids, f"{field}.segment_ids")
    segments = tuple(Segment(id=s.id, label=s.label, label_id=s.label_id, is_thing=s.is_thing,
                             score=float(s.score), phrase=s.phrase) for s in msg.segments)
    return PanopticSegmentation2D(ids, segments, stamp_ns_of(msg))
