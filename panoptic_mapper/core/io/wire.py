"""ROS wire-format codecs in plain numpy: images, depth, poses, stamps, point clouds.

These functions work on message *fields* (encoding, height, width, step, data, ...), so the same
code serves rclpy messages (``panoptic_mapper.ros.conversions``) and rosbags messages
(``panoptic_mapper.core.io.bag``) without importing either. cv_bridge and sensor_msgs_py are not
available from PyPI; this module is their replacement.

Owns: byte layouts, encodings, unit conversions (16UC1 millimetres, 32FC1 metres, REP 118 invalid
markers), quaternion <-> rotation, stamp <-> nanoseconds, the PointCloud2 field layout.
Does not own: message classes (they are built by the callers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError

# encoding -> (dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32SC1": (np.dtype(np.int32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
SEGMENT_ID_ENCODINGS = ("16UC1", "32SC1")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                 data, field: str = "image") -> np.ndarray:
    """Message fields -> numpy array ``[H, W]`` or ``[H, W, C]`` (a copy, native byte order).

    Raises :class:`InvalidInputError` naming ``field`` for an unknown encoding or a data buffer
    whose size does not match ``height * step``.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise InvalidInputError(f"{field}.encoding", encoding,
                                f"unsupported encoding; supported: {sorted(IMAGE_ENCODINGS)}",
                                kind="encoding")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"{field}.height/width", (height, width), "empty image",
                                kind="encoding")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise InvalidInputError(f"{field}.step", step,
                                f"smaller than width*channels*bytes = {row_bytes}",
                                kind="encoding")
    buffer = np.frombuffer(memoryview(data).cast("B") if not isinstance(data, np.ndarray)
                           else data.reshape(-1).view(np.uint8), dtype=np.uint8)
    if buffer.size != height * step:
        raise InvalidInputError(f"{field}.data", f"{buffer.size} bytes",
                                f"expected height*step = {height * step} bytes",
                                kind="encoding")
    rows = buffer.reshape(height, step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype
    array = np.ascontiguousarray(rows).view(wire_dtype).reshape(height, width, channels)
    array = array.astype(dtype, copy=True)  # native order, owned copy
    return array[:, :, 0] if channels == 1 else array


def encode_image(array: np.ndarray, encoding: str, field: str = "image"
                 ) -> tuple[int, int, int, bytes]:
    """numpy array -> ``(height, width, step, data)`` for ``encoding`` (little endian)."""
    if encoding not in IMAGE_ENCODINGS:
        raise InvalidInputError(f"{field}.encoding", encoding, "unsupported encoding",
                                kind="encoding")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.asarray(array)
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise InvalidInputError(field, list(array.shape),
                                f"{encoding} needs {'[H, W]' if channels == 1 else f'[H, W, {channels}]'}",
                                kind="encoding")
    if array.dtype != dtype:
        if array.dtype.kind == "f" and dtype.kind in "iu":
            raise InvalidInputError(field, str(array.dtype),
                                    f"{encoding} needs {dtype}; convert units explicitly",
                                    kind="encoding")
        array = array.astype(dtype)
    array = np.ascontiguousarray(array.astype(dtype.newbyteorder("<"), copy=False))
    height, width = array.shape[:2]
    return height, width, width * channels * dtype.itemsize, array.tobytes()


def decode_rgb(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data,
               field: str = "rgb") -> np.ndarray:
    """A colour image message -> ``[H, W, 3]`` uint8 RGB (from rgb8, bgr8, rgba8, bgra8, mono8)."""
    if encoding not in COLOR_ENCODINGS:
        raise InvalidInputError(f"{field}.encoding", encoding,
                                f"not a colour encoding; supported: {list(COLOR_ENCODINGS)}",
                                kind="encoding")
    image = decode_image(encoding, height, width, step, is_bigendian, data, field)
    if encoding == "mono8":
        return np.repeat(image[:, :, None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        image = image[:, :, 2::-1]
    return np.ascontiguousarray(image[:, :, :3])


@dataclass
class DepthDecodeStats:
    """Counts of pixels a depth decoder turned into "no measurement" (0)."""

    num_nan: int = 0
    num_inf: int = 0
    num_zero: int = 0


def decode_depth_m(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data,
                   field: str = "depth", depth_scale: float = 1000.0
                   ) -> tuple[np.ndarray, DepthDecodeStats]:
    """A depth image message -> ``[H, W]`` float32 metres with 0 = no measurement.

    * ``16UC1``/``mono16``: integer units of ``1/depth_scale`` m (millimetres by default);
      0 = no measurement.
    * ``32FC1``: metres. REP 118 invalid markers (NaN, +inf too far, -inf too close) become 0 and
      are counted; finite negative values are an error.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise InvalidInputError(f"{field}.encoding", encoding,
                                f"not a depth encoding; supported: {list(DEPTH_ENCODINGS)}",
                                kind="encoding")
    raw = decode_image(encoding, height, width, step, is_bigendian, data, field)
    stats = DepthDecodeStats()
    if encoding == "32FC1":
        nan = np.isnan(raw)
        inf = np.isinf(raw)
        stats.num_nan, stats.num_inf = int(nan.sum()), int(inf.sum())
        depth = np.where(nan | inf, np.float32(0.0), raw).astype(np.float32)
        if depth.size and float(depth.min()) < 0.0:
            raise InvalidInputError(f"{field}.data", f"min {float(depth.min()):.3f} m",
                                    "negative depth values", kind="depth_values")
    else:
        if depth_scale <= 0:
            raise InvalidInputError("depth_scale", depth_scale, "must be > 0", kind="config")
        depth = raw.astype(np.float32) / np.float32(depth_scale)
    stats.num_zero = int((depth == 0).sum())
    return depth, stats


def encode_depth(depth_m: np.ndarray, encoding: str = "16UC1", field: str = "depth",
                 depth_scale: float = 1000.0) -> tuple[int, int, int, bytes]:
    """``[H, W]`` metres -> depth message fields (16UC1 millimetres, rounded, or 32FC1 metres)."""
    depth_m = np.asarray(depth_m, np.float32)
    if encoding == "32FC1":
        return encode_image(depth_m, "32FC1", field)
    if encoding in ("16UC1", "mono16"):
        units = np.round(np.clip(depth_m, 0.0, 65535.0 / depth_scale) * depth_scale)
        return encode_image(units.astype(np.uint16), encoding, field)
    raise InvalidInputError(f"{field}.encoding", encoding, "depth must be 16UC1 or 32FC1",
                            kind="encoding")


# --------------------------------------------------------------------------------------------
# Poses and stamps
# --------------------------------------------------------------------------------------------
QUATERNION_NORM_TOLERANCE = 1e-2
"""Largest allowed | |q| - 1 | before a quaternion is rejected (small errors are renormalised)."""


def quaternion_to_rotation(xyzw, field: str = "orientation") -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` -> [3, 3] rotation matrix. Rejects non-unit input."""
    q = np.asarray(xyzw, np.float64).reshape(4)
    if not np.all(np.isfinite(q)):
        raise InvalidInputError(field, q.tolist(), "quaternion has NaN or inf", kind="pose")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise InvalidInputError(field, q.tolist(),
                                f"quaternion norm is {norm:.4f}, not 1 (not a rotation)",
                                kind="pose")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:  # noqa: N803
    """[3, 3] rotation -> unit quaternion ``(x, y, z, w)`` with w >= 0."""
    R = np.asarray(R, np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_to_matrix(position_xyz, orientation_xyzw, field: str = "pose") -> np.ndarray:
    """Translation + quaternion -> [4, 4] ``T_a_b`` (validated)."""
    t = np.asarray(position_xyz, np.float64).reshape(3)
    if not np.all(np.isfinite(t)):
        raise InvalidInputError(f"{field}.position", t.tolist(), "position has NaN or inf",
                                kind="pose")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(orientation_xyzw, f"{field}.orientation")
    T[:3, 3] = t
    return T


def matrix_to_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """[4, 4] rigid transform -> ``(position [3], quaternion xyzw [4])``."""
    T = np.asarray(T, np.float64)
    return T[:3, 3].copy(), rotation_to_quaternion(T[:3, :3])


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """ROS ``builtin_interfaces/Time`` fields -> integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def ns_to_stamp(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)``."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise InvalidInputError("stamp_ns", stamp_ns, "must be >= 0", kind="stamp")
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


# --------------------------------------------------------------------------------------------
# PointCloud2 (x, y, z, rgb, label, instance)
# --------------------------------------------------------------------------------------------
# sensor_msgs/PointField datatypes
POINT_FIELD_DATATYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8), 2: np.dtype(np.uint8), 3: np.dtype(np.int16), 4: np.dtype(np.uint16),
    5: np.dtype(np.int32), 6: np.dtype(np.uint32), 7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
FLOAT32, UINT32 = 7, 6


@dataclass(frozen=True)
class PointFieldSpec:
    """One ``sensor_msgs/PointField``: name, byte offset, datatype code, count."""

    name: str
    offset: int
    datatype: int
    count: int = 1


PANOPTIC_CLOUD_FIELDS: tuple[PointFieldSpec, ...] = (
    PointFieldSpec("x", 0, FLOAT32), PointFieldSpec("y", 4, FLOAT32),
    PointFieldSpec("z", 8, FLOAT32),
    # PCL/RViz convention: 0x00RRGGBB packed in 4 bytes, declared FLOAT32.
    PointFieldSpec("rgb", 12, FLOAT32),
    PointFieldSpec("label", 16, UINT32), PointFieldSpec("instance", 20, UINT32),
)
PANOPTIC_CLOUD_POINT_STEP = 24


def pack_panoptic_cloud(points_m: np.ndarray, colors_rgb: np.ndarray, label_ids: np.ndarray,
                        instance_ids: np.ndarray) -> bytes:
    """Arrays -> PointCloud2 ``data`` for :data:`PANOPTIC_CLOUD_FIELDS` (little endian)."""
    points_m = np.asarray(points_m, np.float32).reshape(-1, 3)
    n = len(points_m)
    colors_rgb = np.asarray(colors_rgb, np.uint8).reshape(-1, 3)
    label_ids = np.asarray(label_ids).reshape(-1)
    instance_ids = np.asarray(instance_ids).reshape(-1)
    for name, arr in (("colors_rgb", colors_rgb), ("label_ids", label_ids),
                      ("instance_ids", instance_ids)):
        if len(arr) != n:
            raise InvalidInputError(name, len(arr), f"must have {n} entries (one per point)",
                                    kind="size_mismatch")
    packed = np.zeros(n, dtype=_cloud_dtype(PANOPTIC_CLOUD_FIELDS, PANOPTIC_CLOUD_POINT_STEP))
    packed["x"], packed["y"], packed["z"] = points_m[:, 0], points_m[:, 1], points_m[:, 2]
    rgb_u32 = ((colors_rgb[:, 0].astype(np.uint32) << 16)
               | (colors_rgb[:, 1].astype(np.uint32) << 8) | colors_rgb[:, 2].astype(np.uint32))
    packed["rgb"] = rgb_u32.view(np.float32)
    packed["label"] = label_ids.astype(np.uint32)
    packed["instance"] = instance_ids.astype(np.uint32)
    return packed.tobytes()


def unpack_cloud(fields: list[PointFieldSpec], point_step: int, num_points: int,
                 is_bigendian: bool, data) -> dict[str, np.ndarray]:
    """PointCloud2 fields + data -> ``{field_name: [N] or [N, count] array}``.

    ``rgb`` (packed) is returned as ``[N, 3]`` uint8 under ``"rgb"``.
    """
    buffer = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(),
                           np.uint8)
    if buffer.size != point_step * num_points:
        raise InvalidInputError("cloud.data", f"{buffer.size} bytes",
                                f"expected point_step*num_points = {point_step * num_points}",
                                kind="encoding")
    dtype = _cloud_dtype(fields, point_step, is_bigendian)
    records = buffer.view(dtype)
    out: dict[str, np.ndarray] = {}
    for spec in fields:
        values = np.asarray(records[spec.name]).astype(records.dtype[spec.name].base.newbyteorder("="))
        if spec.name == "rgb":
            u32 = values.astype(np.float32).view(np.uint32)
            values = np.stack([(u32 >> 16) & 255, (u32 >> 8) & 255, u32 & 255], axis=1)
            values = values.astype(np.uint8)
        out[spec.name] = values
    return out


def _cloud_dtype(fields, point_step: int, is_bigendian: bool = False) -> np.dtype:
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for spec in fields:
        if spec.datatype not in POINT_FIELD_DATATYPES:
            raise InvalidInputError(f"cloud.fields[{spec.name}].datatype", spec.datatype,
                                    "unknown PointField datatype", kind="encoding")
        base = POINT_FIELD_DATATYPES[spec.datatype].newbyteorder(order)
        names.append(spec.name)
        formats.append((base, (spec.count,)) if spec.count > 1 else base)
        offsets.append(spec.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})
