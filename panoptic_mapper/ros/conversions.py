"""rclpy sensor and geometry messages <-> core types.

Covers ``builtin_interfaces/Time``, ``sensor_msgs/Image`` (colour and depth), ``CameraInfo``,
``PointCloud2`` (panoptic layout), ``geometry_msgs/PoseStamped``, ``TransformStamped``,
``nav_msgs/Odometry`` and ``nav_msgs/Path`` (a loop correction's keyframe poses), and the assembly of an :class:`RgbdFrame` from its messages.

Owns: building and reading message objects. Byte layouts, units and encodings are owned by
``panoptic_mapper.core.io.wire`` (shared with the rosbags code); our own interfaces
(segmentation, instances, mesh) are converted in ``panoptic_mapper.ros.panoptic_conversions``.

Primitive arrays are always handed to rclpy as ``array.array`` built with ``frombytes``: the
generated setters store those as they are, while a list or numpy array is copied element by
element (and checked element by element when ``ROS_PYTHON_CHECK_FIELDS`` is set).
"""
from __future__ import annotations

import array
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import wire
from panoptic_mapper.core.mapping.pose_corrections import KeyframeCorrection
from panoptic_mapper.core.types import (CameraIntrinsics, RgbdFrame, check_depth_values,
                                        validate_rigid_transform)

INT32_MAX = 2**31 - 1
UINT16_MAX = 2**16 - 1


def primitive_array(values: np.ndarray, typecode: str) -> array.array:
    """A contiguous numpy array -> ``array.array`` of ``typecode`` (one memcpy, no per-item work).

    The caller guarantees that ``values`` already has the item size and signedness of
    ``typecode`` (e.g. ``np.float32`` for ``"f"``, ``np.uint32`` for ``"I"``).
    """
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


# --------------------------------------------------------------------------------------------
# Time and headers
# --------------------------------------------------------------------------------------------
def stamp_ns_from_time_msg(stamp: Time, field_name: str = "header.stamp") -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (rejects negative or malformed times)."""
    if stamp.sec < 0:
        raise InvalidInputError(f"{field_name}.sec", stamp.sec, "must be >= 0", kind="stamp")
    if not 0 <= stamp.nanosec < 1_000_000_000:
        raise InvalidInputError(f"{field_name}.nanosec", stamp.nanosec,
                                "must be in [0, 1e9)", kind="stamp")
    return wire.stamp_to_ns(stamp.sec, stamp.nanosec)


def time_msg_from_stamp_ns(stamp_ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (``sec`` must fit int32)."""
    sec, nanosec = wire.ns_to_stamp(stamp_ns)
    if sec > INT32_MAX:
        raise InvalidInputError("stamp_ns", stamp_ns, "beyond the int32 seconds of ROS time",
                                kind="stamp")
    return Time(sec=sec, nanosec=nanosec)


def header_msg(stamp_ns: int, frame_id: str) -> Header:
    """A ``std_msgs/Header`` for ``stamp_ns`` in ``frame_id``."""
    return Header(stamp=time_msg_from_stamp_ns(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
@dataclass
class DecodedDepth:
    """A depth image in metres plus what the decoder turned into "no measurement"."""

    depth_m: np.ndarray
    """[H, W] float32 metres; 0 = no measurement."""
    stats: wire.DepthDecodeStats
    """Counts of NaN / inf pixels mapped to 0 (REP 118) and of zero pixels in the result."""


def image_msg_to_array(msg: Image, field_name: str = "image") -> np.ndarray:
    """Any supported ``Image`` -> ``[H, W]`` or ``[H, W, C]`` array in its wire dtype (a copy)."""
    return wire.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                             msg.data, field_name)


def rgb_from_image_msg(msg: Image, field_name: str = "rgb") -> np.ndarray:
    """Colour ``Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> ``[H, W, 3]`` uint8 RGB."""
    return wire.decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                           msg.data, field_name)


def depth_from_image_msg(msg: Image, depth_scale: float = 1000.0,
                         field_name: str = "depth") -> DecodedDepth:
    """Depth ``Image`` -> metres with 0 = no measurement.

    Args:
        msg: a ``16UC1``/``mono16`` image in units of ``1/depth_scale`` m, or ``32FC1`` metres.
        depth_scale: integer units per metre of 16-bit images (1000 = millimetres, REP 118).
        field_name: name used in error messages.
    """
    depth_m, stats = wire.decode_depth_m(msg.encoding, msg.height, msg.width, msg.step,
                                         msg.is_bigendian, msg.data, field_name, depth_scale)
    return DecodedDepth(depth_m=depth_m, stats=stats)


def image_msg_from_array(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                         field_name: str = "image") -> Image:
    """``[H, W]`` / ``[H, W, C]`` array -> ``Image`` with ``encoding`` (bytes as given)."""
    height, width, step, data = wire.encode_image(image, encoding, field_name)
    msg = Image(header=header_msg(stamp_ns, frame_id), height=height, width=width,
                encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.array("B", data)
    return msg


def image_msg_from_rgb(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                       encoding: str = "rgb8") -> Image:
    """``[H, W, 3]`` uint8 RGB -> ``Image`` in ``rgb8`` or ``bgr8``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidInputError("rgb", f"{rgb.dtype}{list(rgb.shape)}",
                                "colour image must be uint8 [H, W, 3]", kind="encoding")
    if encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    elif encoding != "rgb8":
        raise InvalidInputError("rgb.encoding", encoding, "colour output must be rgb8 or bgr8",
                                kind="encoding")
    return image_msg_from_array(rgb, encoding, stamp_ns, frame_id, "rgb")


def image_msg_from_depth(depth_m: np.ndarray, stamp_ns: int, frame_id: str,
                         encoding: str = "16UC1", depth_scale: float = 1000.0) -> Image:
    """``[H, W]`` metres (0 = no measurement) -> ``16UC1`` (rounded units) or ``32FC1`` image.

    Raises:
        InvalidInputError: NaN, inf or negative depth, or (16UC1) depth beyond
            ``65535 / depth_scale`` metres, which the encoding cannot hold.
    """
    depth_m = np.asarray(depth_m, np.float32)
    check_depth_values(depth_m, "depth_m")
    if encoding in ("16UC1", "mono16"):
        if depth_m.size and round(float(depth_m.max()) * depth_scale) > UINT16_MAX:
            raise InvalidInputError("depth_m", f"max {float(depth_m.max()):.3f} m",
                                    f"{encoding} at {depth_scale:g} units/m holds at most "
                                    f"{UINT16_MAX / depth_scale:.3f} m; use 32FC1",
                                    kind="depth_values")
    height, width, step, data = wire.encode_depth(depth_m, encoding, "depth_m", depth_scale)
    msg = Image(header=header_msg(stamp_ns, frame_id), height=height, width=width,
                encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.array("B", data)
    return msg


# --------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------
@dataclass
class DecodedCameraInfo:
    """Intrinsics read from a ``CameraInfo`` plus non-fatal problems found on the way."""

    intrinsics: CameraIntrinsics
    warnings: list[str] = field(default_factory=list)
    """Short sentences naming the field and value (e.g. ignored lens distortion)."""


def intrinsics_from_camera_info_msg(msg: CameraInfo,
                                    reject_distortion: bool = False) -> DecodedCameraInfo:
    """``CameraInfo`` -> pinhole intrinsics from ``k`` (the image is taken as undistorted).

    Args:
        msg: the camera info of the images that will be integrated.
        reject_distortion: raise instead of warning when ``d`` has non-zero coefficients.

    Raises:
        InvalidInputError: empty image size, ``k`` not 9 finite values of a camera matrix,
            zero or negative focal length (an all-zero ``k`` is an uncalibrated camera),
            binning or a region of interest (not supported), or lens distortion when
            ``reject_distortion`` is set.
    """
    warnings: list[str] = []
    if msg.width <= 0 or msg.height <= 0:
        raise InvalidInputError("camera_info.width/height", (msg.width, msg.height),
                                "image size must be > 0", kind="intrinsics")
    k = np.asarray(msg.k, np.float64).reshape(-1)
    if k.size != 9:
        raise InvalidInputError("camera_info.k", f"{k.size} values",
                                "must hold the 9 values of a 3x3 camera matrix",
                                kind="intrinsics")
    if not np.all(np.isfinite(k)):
        raise InvalidInputError("camera_info.k", k.tolist(), "has NaN or inf", kind="intrinsics")
    for index, name in ((0, "fx"), (4, "fy")):
        if k[index] <= 0:
            hint = " (an all-zero k means an uncalibrated camera)" if not k.any() else ""
            raise InvalidInputError(f"camera_info.k[{index}]", float(k[index]),
                                    f"focal length {name} must be > 0{hint}", kind="intrinsics")
    if k[3] != 0 or k[6] != 0 or k[7] != 0 or k[8] != 1:
        raise InvalidInputError("camera_info.k", k.tolist(),
                                "not a camera matrix: k[3], k[6], k[7] must be 0 and k[8] 1",
                                kind="intrinsics")
    if k[1] != 0:
        warnings.append(f"camera_info.k[1]={k[1]:g}: axis skew is ignored (pinhole model)")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise InvalidInputError("camera_info.binning", (msg.binning_x, msg.binning_y),
                                "binned images are not supported", kind="intrinsics")
    roi = msg.roi
    full_roi = roi.x_offset == 0 and roi.y_offset == 0 and (
        (roi.width, roi.height) in ((0, 0), (msg.width, msg.height)))
    if not full_roi:
        raise InvalidInputError("camera_info.roi",
                                (roi.x_offset, roi.y_offset, roi.width, roi.height),
                                "a region of interest is not supported", kind="intrinsics")
    distortion = np.asarray(msg.d, np.float64).reshape(-1)
    if np.any(distortion != 0):
        text = (f"camera_info.d={distortion.tolist()} ({msg.distortion_model or 'no model'}): "
                "lens distortion is not corrected; images are used as if undistorted")
        if reject_distortion:
            raise InvalidInputError("camera_info.d", distortion.tolist(),
                                    "lens distortion is not supported; publish rectified "
                                    "images and their camera info", kind="intrinsics")
        warnings.append(text)
    intrinsics = CameraIntrinsics(width=int(msg.width), height=int(msg.height), fx=k[0],
                                  fy=k[4], cx=k[2], cy=k[5])
    return DecodedCameraInfo(intrinsics=intrinsics, warnings=warnings)


def camera_info_msg_from_intrinsics(intrinsics: CameraIntrinsics, stamp_ns: int,
                                    frame_id: str) -> CameraInfo:
    """Pinhole intrinsics -> ``CameraInfo`` (plumb_bob with zero distortion, ``r`` = I)."""
    K = intrinsics.K  # noqa: N806 (standard notation)
    P = np.zeros((3, 4))  # noqa: N806
    P[:, :3] = K
    return CameraInfo(header=header_msg(stamp_ns, frame_id), width=intrinsics.width,
                      height=intrinsics.height, distortion_model="plumb_bob",
                      d=array.array("d", [0.0] * 5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                      p=P.reshape(-1))


# --------------------------------------------------------------------------------------------
# Poses and transforms
# --------------------------------------------------------------------------------------------
@dataclass
class StampedTransform:
    """A rigid transform between two named frames at a time (what tf would carry)."""

    T_parent_child: np.ndarray
    """[4, 4] float64 rigid transform mapping points from the child to the parent frame."""
    parent_frame_id: str
    """The frame the pose is expressed in (``header.frame_id``), e.g. ``"map"``."""
    child_frame_id: str = ""
    """The frame that is posed, e.g. ``"camera_color_optical_frame"``; empty when unknown."""
    stamp_ns: int = 0
    """Time of the transform, nanoseconds."""

    def __post_init__(self) -> None:
        self.T_parent_child = validate_rigid_transform(self.T_parent_child, "T_parent_child")
        self.stamp_ns = int(self.stamp_ns)
        if self.stamp_ns < 0:
            raise InvalidInputError("stamp_ns", self.stamp_ns, "must be >= 0", kind="stamp")


def _matrix_from_pose_msg(pose: Pose, field_name: str) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return wire.pose_to_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), field_name)


def _fill_pose_msg(pose: Pose, T: np.ndarray) -> None:  # noqa: N803
    position, quaternion = wire.matrix_to_pose(T)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in quaternion)


def transform_from_pose_stamped_msg(msg: PoseStamped,
                                    child_frame_id: str = "") -> StampedTransform:
    """``PoseStamped`` -> ``T_<header.frame_id>_<child_frame_id>``.

    A PoseStamped does not name the posed frame; pass it as ``child_frame_id`` when known.
    """
    return StampedTransform(
        T_parent_child=_matrix_from_pose_msg(msg.pose, "pose_stamped.pose"),
        parent_frame_id=msg.header.frame_id, child_frame_id=child_frame_id,
        stamp_ns=stamp_ns_from_time_msg(msg.header.stamp))


def transform_from_odometry_msg(msg: Odometry) -> StampedTransform:
    """``Odometry`` -> ``T_<header.frame_id>_<child_frame_id>`` (covariance and twist unused)."""
    return StampedTransform(
        T_parent_child=_matrix_from_pose_msg(msg.pose.pose, "odometry.pose.pose"),
        parent_frame_id=msg.header.frame_id, child_frame_id=msg.child_frame_id,
        stamp_ns=stamp_ns_from_time_msg(msg.header.stamp))


def transform_from_transform_stamped_msg(msg: TransformStamped) -> StampedTransform:
    """``TransformStamped`` -> ``T_<header.frame_id>_<child_frame_id>``."""
    t, q = msg.transform.translation, msg.transform.rotation
    T = wire.pose_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w),  # noqa: N806
                            "transform_stamped.transform")
    return StampedTransform(T_parent_child=T, parent_frame_id=msg.header.frame_id,
                            child_frame_id=msg.child_frame_id,
                            stamp_ns=stamp_ns_from_time_msg(msg.header.stamp))


def pose_stamped_msg_from_transform(transform: StampedTransform) -> PoseStamped:
    """``StampedTransform`` -> ``PoseStamped`` in ``parent_frame_id`` (the child name is lost)."""
    msg = PoseStamped(header=header_msg(transform.stamp_ns, transform.parent_frame_id))
    _fill_pose_msg(msg.pose, transform.T_parent_child)
    return msg


def odometry_msg_from_transform(transform: StampedTransform) -> Odometry:
    """``StampedTransform`` -> ``Odometry`` with zero twist and zero (unknown) covariances."""
    msg = Odometry(header=header_msg(transform.stamp_ns, transform.parent_frame_id),
                   child_frame_id=transform.child_frame_id)
    _fill_pose_msg(msg.pose.pose, transform.T_parent_child)
    return msg


def keyframe_correction_from_path_msg(msg: Path, map_frame: str) -> KeyframeCorrection:
    """``nav_msgs/Path`` of optimised keyframe poses (``T_<map_frame>_camera``, each stamped with
    its keyframe image's stamp) -> :class:`KeyframeCorrection` stamped with the path header.

    Raises:
        InvalidInputError: a frame other than ``map_frame``, an empty path, a bad stamp or pose
            (the pose and order checks are ``check_correction``'s).
    """
    frames = {msg.header.frame_id} | {p.header.frame_id for p in msg.poses if p.header.frame_id}
    if frames != {map_frame}:
        raise InvalidInputError("path.header.frame_id", sorted(frames),
                                f"keyframe poses must be given in the map frame '{map_frame}'",
                                kind="correction_frame")
    if not msg.poses:
        raise InvalidInputError("path.poses", 0, "a correction needs at least one keyframe pose",
                                kind="correction")
    stamps = np.array([stamp_ns_from_time_msg(p.header.stamp, f"path.poses[{i}].header.stamp")
                       for i, p in enumerate(msg.poses)], np.int64)
    poses = np.stack([_matrix_from_pose_msg(p.pose, f"path.poses[{i}].pose")
                      for i, p in enumerate(msg.poses)])
    return KeyframeCorrection(stamp_ns_from_time_msg(msg.header.stamp, "path.header.stamp"),
                              stamps, poses)


def path_msg_from_keyframe_correction(correction: KeyframeCorrection, map_frame: str) -> Path:
    """:class:`KeyframeCorrection` -> ``nav_msgs/Path`` (the inverse of the above)."""
    msg = Path(header=header_msg(correction.stamp_ns, map_frame))
    for stamp_ns, T in zip(correction.keyframe_stamps_ns, correction.T_world_keyframe):  # noqa: N806
        pose = PoseStamped(header=header_msg(int(stamp_ns), map_frame))
        _fill_pose_msg(pose.pose, T)
        msg.poses.append(pose)
    return msg


def transform_stamped_msg_from_transform(transform: StampedTransform) -> TransformStamped:
    """``StampedTransform`` -> ``TransformStamped`` (parent in the header, child named)."""
    msg = TransformStamped(header=header_msg(transform.stamp_ns, transform.parent_frame_id),
                           child_frame_id=transform.child_frame_id)
    position, quaternion = wire.matrix_to_pose(transform.T_parent_child)
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in position)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion)
    return msg


# --------------------------------------------------------------------------------------------
# RGB-D frame
# --------------------------------------------------------------------------------------------
@dataclass
class DecodedRgbd:
    """An :class:`RgbdFrame` assembled from messages, with what the decoders reported."""

    frame: RgbdFrame
    depth_stats: wire.DepthDecodeStats
    warnings: list[str] = field(default_factory=list)


def rgbd_frame_from_msgs(rgb: Image, depth: Image, camera_info: CameraInfo,
                         T_world_cam: np.ndarray, depth_scale: float = 1000.0,  # noqa: N803
                         reject_distortion: bool = False) -> DecodedRgbd:
    """Registered RGB + depth images, their camera info and the camera pose -> one frame.

    The frame takes the RGB image's stamp and frame id. Sizes of both images must equal the
    camera info's; stamps of the three messages must be equal.

    Raises:
        InvalidInputError: any decoding problem, mismatched sizes (kind ``size_mismatch``)
            or stamps (kind ``stamp``), invalid depth values or a non-rigid pose.
    """
    camera = intrinsics_from_camera_info_msg(camera_info, reject_distortion)
    stamps = {name: stamp_ns_from_time_msg(msg.header.stamp, f"{name}.header.stamp")
              for name, msg in (("rgb", rgb), ("depth", depth), ("camera_info", camera_info))}
    if len(set(stamps.values())) != 1:
        raise InvalidInputError("header.stamp", stamps,
                                "rgb, depth and camera_info must have the same stamp",
                                kind="stamp")
    for name, msg in (("rgb", rgb), ("depth", depth)):
        if (msg.height, msg.width) != camera.intrinsics.shape:
            raise InvalidInputError(
                f"{name}.height/width", (msg.height, msg.width),
                f"must equal camera_info's {camera.intrinsics.shape}", kind="size_mismatch")
    decoded = depth_from_image_msg(depth, depth_scale)
    frame = RgbdFrame(stamp_ns=stamps["rgb"], rgb=rgb_from_image_msg(rgb),
                      depth_m=decoded.depth_m, T_world_cam=T_world_cam,
                      intrinsics=camera.intrinsics, frame_id=rgb.header.frame_id)
    return DecodedRgbd(frame=frame, depth_stats=decoded.stats, warnings=camera.warnings)


# --------------------------------------------------------------------------------------------
# PointCloud2 (x, y, z, rgb, label, instance)
# --------------------------------------------------------------------------------------------
PANOPTIC_CLOUD_FIELD_NAMES = tuple(spec.name for spec in wire.PANOPTIC_CLOUD_FIELDS)


@dataclass
class PanopticCloud:
    """Points with colour, semantic label and instance id (one row per point)."""

    points_m: np.ndarray
    """[N, 3] float32 positions, metres, in the cloud's frame."""
    colors_rgb: np.ndarray
    """[N, 3] uint8 RGB."""
    label_ids: np.ndarray
    """[N] int32 registry label id (0 = void)."""
    instance_ids: np.ndarray
    """[N] int32 map instance id (0 = none)."""

    def __post_init__(self) -> None:
        self.points_m = np.asarray(self.points_m, np.float32).reshape(-1, 3)
        self.colors_rgb = np.asarray(self.colors_rgb, np.uint8).reshape(-1, 3)
        self.label_ids = checked_ids(self.label_ids, "cloud.label_ids", np.int32)
        self.instance_ids = checked_ids(self.instance_ids, "cloud.instance_ids", np.int32)
        n = len(self.points_m)
        for name in ("colors_rgb", "label_ids", "instance_ids"):
            if len(getattr(self, name)) != n:
                raise InvalidInputError(f"cloud.{name}", len(getattr(self, name)),
                                        f"must have one entry per point ({n})",
                                        kind="size_mismatch")


def cloud_msg_from_panoptic_cloud(cloud: PanopticCloud, stamp_ns: int,
                                  frame_id: str) -> PointCloud2:
    """``PanopticCloud`` -> unorganised ``PointCloud2`` (height 1) with the panoptic fields."""
    data = wire.pack_panoptic_cloud(cloud.points_m, cloud.colors_rgb, cloud.label_ids,
                                    cloud.instance_ids)
    n = len(cloud.points_m)
    msg = PointCloud2(
        header=header_msg(stamp_ns, frame_id), height=1, width=n,
        fields=[PointField(name=s.name, offset=s.offset, datatype=s.datatype, count=s.count)
                for s in wire.PANOPTIC_CLOUD_FIELDS],
        is_bigendian=False, point_step=wire.PANOPTIC_CLOUD_POINT_STEP,
        row_step=wire.PANOPTIC_CLOUD_POINT_STEP * n,
        is_dense=bool(np.isfinite(cloud.points_m).all()))
    msg.data = array.array("B", data)
    return msg


def panoptic_cloud_from_msg(msg: PointCloud2) -> PanopticCloud:
    """``PointCloud2`` with fields x, y, z, rgb, label, instance (any order/offsets) -> arrays.

    Organised clouds are flattened row by row; rows may be padded (``row_step``). ``rgb`` may be
    declared FLOAT32 (PCL convention) or UINT32; both hold 0x00RRGGBB. Non-finite points are
    kept as they are (``is_dense`` = False); the consumer decides what to do with them.

    Raises:
        InvalidInputError: a missing field, a data size that does not match the layout, or
            negative / too large label or instance values.
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [name for name in PANOPTIC_CLOUD_FIELD_NAMES if name not in by_name]
    if missing:
        raise InvalidInputError("cloud.fields", sorted(by_name),
                                f"missing panoptic field(s) {missing}", kind="encoding")
    specs = []
    for name in PANOPTIC_CLOUD_FIELD_NAMES:
        f = by_name[name]
        datatype = f.datatype
        if name == "rgb":
            if datatype not in (wire.FLOAT32, wire.UINT32):
                raise InvalidInputError("cloud.fields[rgb].datatype", datatype,
                                        "packed rgb must be FLOAT32 (7) or UINT32 (6)",
                                        kind="encoding")
            datatype = wire.FLOAT32  # same 4 bytes; unpack_cloud reads FLOAT32 as packed rgb
        specs.append(wire.PointFieldSpec(name, f.offset, datatype, f.count or 1))
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    buffer = np.frombuffer(memoryview(msg.data).cast("B"), np.uint8)
    row_bytes = width * point_step
    if row_step < row_bytes or buffer.size != height * row_step:
        raise InvalidInputError("cloud.data", f"{buffer.size} bytes",
                                f"expected height*row_step = {height}*{row_step} with "
                                f"row_step >= width*point_step = {row_bytes}",
                                kind="encoding")
    if row_step != row_bytes:
        buffer = buffer.reshape(height, row_step)[:, :row_bytes].reshape(-1)
    values = wire.unpack_cloud(specs, point_step, height * width, bool(msg.is_bigendian),
                               buffer)
    points = np.stack([values["x"], values["y"], values["z"]], axis=1)
    return PanopticCloud(points_m=points, colors_rgb=values["rgb"], label_ids=values["label"],
                         instance_ids=values["instance"])


def checked_ids(values: np.ndarray, field_name: str, dtype: type) -> np.ndarray:
    """[N] integer ids -> ``dtype`` array; raises if an id is negative or overflows ``dtype``."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in "iu":
        raise InvalidInputError(field_name, str(values.dtype), "ids must be integers",
                                kind="encoding")
    max_value = int(np.iinfo(dtype).max)
    if values.size and (int(values.min()) < 0 or int(values.max()) > max_value):
        raise InvalidInputError(field_name, (int(values.min()), int(values.max())),
                                f"ids must be in [0, {max_value}]", kind="encoding")
    return values.astype(dtype, copy=False)
