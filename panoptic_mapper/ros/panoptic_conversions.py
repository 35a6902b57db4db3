"""panoptic_mapper's own messages <-> core types: segmentation, map instances, mesh.

Owns: ``panoptic_mapper/msg/{PanopticSegmentation, Segment, MapInstance, PanopticMesh}`` <->
:class:`PanopticSegmentation2D`, :class:`MapInstance`, :class:`PanopticMesh`, including the
checks a message from another process needs (encodings, sizes, ids, labels).
Does not own: standard sensor/geometry messages (``panoptic_mapper.ros.conversions``) or
visualisation markers (``panoptic_mapper.ros.markers``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import wire
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (MapInstance, OrientedBox, PanopticMesh,
                                        PanopticSegmentation2D, Segment,
                                        validate_rigid_transform)
from panoptic_mapper.msg import MapInstance as MapInstanceMsg
from panoptic_mapper.msg import PanopticMesh as PanopticMeshMsg
from panoptic_mapper.msg import PanopticSegmentation as PanopticSegmentationMsg
from panoptic_mapper.msg import Segment as SegmentMsg
from panoptic_mapper.ros.conversions import (checked_ids, header_msg, image_msg_from_array,
                                             image_msg_to_array, primitive_array,
                                             stamp_ns_from_time_msg)

UINT16_MAX = 2**16 - 1


# --------------------------------------------------------------------------------------------
# 2D panoptic segmentation
# --------------------------------------------------------------------------------------------
def segmentation_from_msg(msg: PanopticSegmentationMsg, registry: LabelRegistry | None = None,
                          image_shape: tuple[int, int] | None = None) -> PanopticSegmentation2D:
    """``PanopticSegmentation`` -> core segmentation, checked.

    Args:
        msg: the message; ``segment_ids`` must be ``16UC1`` or ``32SC1``.
        registry: when given, every segment's label must be known to it and agree with its
            ``label_id`` and ``is_thing``. A segment with ``label_id`` 0 gets the registry's id,
            and a label given as a prompt phrase (``"office chair"``) gets the label's name.
        image_shape: ``(height, width)`` of the RGB image it segments, when known.

    Raises:
        InvalidInputError: wrong encoding, size mismatch (kind ``size_mismatch``), ids in the
            image that are missing from the segment list, duplicate or zero segment ids, scores
            outside [0, 1], or (with ``registry``) unknown labels (kind ``unknown_label``).
    """
    image = msg.segment_ids
    if image.encoding not in wire.SEGMENT_ID_ENCODINGS:
        raise InvalidInputError("segmentation.segment_ids.encoding", image.encoding,
                                f"must be one of {list(wire.SEGMENT_ID_ENCODINGS)}",
                                kind="encoding")
    if image_shape is not None and (image.height, image.width) != tuple(image_shape):
        raise InvalidInputError("segmentation.segment_ids", (image.height, image.width),
                                f"size must equal the RGB image's {tuple(image_shape)}",
                                kind="size_mismatch")
    ids = image_msg_to_array(image, "segmentation.segment_ids")
    segments = [_segment_from_msg(index, seg, registry) for index, seg in enumerate(msg.segments)]
    return PanopticSegmentation2D(segment_ids=ids, segments=tuple(segments),
                                  stamp_ns=stamp_ns_from_time_msg(msg.header.stamp))


def _segment_from_msg(index: int, msg: SegmentMsg, registry: LabelRegistry | None) -> Segment:
    where = f"segmentation.segments[{index}]"
    if not np.isfinite(msg.score) or not 0.0 <= msg.score <= 1.0:
        raise InvalidInputError(f"{where}.score", msg.score, "score must be in [0, 1]",
                                kind="segment")
    if msg.id == 0:
        raise InvalidInputError(f"{where}.id", 0, "segment id 0 is reserved for 'no segment'",
                                kind="segment")
    segment = Segment(id=msg.id, label=msg.label, label_id=msg.label_id, is_thing=msg.is_thing,
                      score=msg.score, phrase=msg.phrase)
    if registry is None:
        return segment
    try:
        label = registry.resolve(label=msg.label, label_id=msg.label_id or None,
                                 phrase=msg.phrase)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}.{exc.field}", exc.value, exc.reason,
                                kind=exc.kind) from exc
    if label.is_thing != msg.is_thing:
        kind_name = "thing" if label.is_thing else "stuff"
        raise InvalidInputError(f"{where}.is_thing", msg.is_thing,
                                f"label '{label.name}' is a {kind_name} class in the label "
                                "registry", kind="unknown_label")
    return dataclasses.replace(segment, label=label.name, label_id=label.id)


def segmentation_msg_from_core(segmentation: PanopticSegmentation2D, frame_id: str,
                               encoding: str | None = None) -> PanopticSegmentationMsg:
    """Core segmentation -> ``PanopticSegmentation`` (stamp from ``segmentation.stamp_ns``).

    Args:
        segmentation: the segmentation to send.
        frame_id: the RGB image's frame id.
        encoding: ``"16UC1"`` or ``"32SC1"``; by default 16UC1 when every id fits 16 bits.
    """
    ids = segmentation.segment_ids
    max_id = int(ids.max()) if ids.size else 0
    if encoding is None:
        encoding = "16UC1" if max_id <= UINT16_MAX else "32SC1"
    if encoding not in wire.SEGMENT_ID_ENCODINGS:
        raise InvalidInputError("segment_ids.encoding", encoding,
                                f"must be one of {list(wire.SEGMENT_ID_ENCODINGS)}",
                                kind="encoding")
    if encoding == "16UC1" and max_id > UINT16_MAX:
        raise InvalidInputError("segment_ids", max_id, "16UC1 holds ids up to 65535; use 32SC1",
                                kind="encoding")
    dtype = np.uint16 if encoding == "16UC1" else np.int32
    image = image_msg_from_array(ids.astype(dtype), encoding, segmentation.stamp_ns, frame_id,
                                 "segment_ids")
    segments = [SegmentMsg(id=s.id, label=s.label, label_id=s.label_id, is_thing=s.is_thing,
                           score=s.score, phrase=s.phrase) for s in segmentation.segments]
    return PanopticSegmentationMsg(header=image.header, segment_ids=image, segments=segments)


# --------------------------------------------------------------------------------------------
# Map instances
# --------------------------------------------------------------------------------------------
def map_instance_msg_from_core(instance: MapInstance) -> MapInstanceMsg:
    """Core ``MapInstance`` -> message.

    ``label_distribution``, ``num_voxels`` and ``mean_color_rgb`` have no message field and are
    not sent.

    Raises:
        InvalidInputError: ids out of the message's integer range, a box rotation that is not a
            rotation, negative box size, or confidence/score that is not finite.
    """
    where = f"instance[{instance.id}]"
    checked_ids(np.array([instance.id]), f"{where}.id", np.uint32)
    checked_ids(np.array([instance.label_id]), f"{where}.label_id", np.uint16)
    checked_ids(np.array([instance.num_observations]), f"{where}.num_observations", np.uint32)
    for name in ("confidence", "score"):
        if not np.isfinite(getattr(instance, name)):
            raise InvalidInputError(f"{where}.{name}", getattr(instance, name),
                                    "must be finite", kind="instance")
    box = instance.bbox
    if np.any(box.size_m < 0) or not np.all(np.isfinite(box.size_m)):
        raise InvalidInputError(f"{where}.bbox.size_m", box.size_m.tolist(),
                                "box size must be finite and >= 0", kind="instance")
    T = np.eye(4)  # noqa: N806
    T[:3, :3], T[:3, 3] = box.R_world_box, box.center_m
    position, quaternion = wire.matrix_to_pose(validate_rigid_transform(T, f"{where}.bbox"))
    return MapInstanceMsg(
        id=int(instance.id), label=instance.label, label_id=int(instance.label_id),
        is_thing=bool(instance.is_thing), confidence=float(instance.confidence),
        centroid=Point(x=float(instance.centroid_m[0]), y=float(instance.centroid_m[1]),
                       z=float(instance.centroid_m[2])),
        bbox_pose=Pose(position=Point(x=float(position[0]), y=float(position[1]),
                                      z=float(position[2])),
                       orientation=Quaternion(x=float(quaternion[0]), y=float(quaternion[1]),
                                              z=float(quaternion[2]), w=float(quaternion[3]))),
        bbox_size=Vector3(x=float(box.size_m[0]), y=float(box.size_m[1]),
                          z=float(box.size_m[2])),
        num_observations=int(instance.num_observations), score=float(instance.score))


def map_instance_from_msg(msg: MapInstanceMsg) -> MapInstance:
    """``MapInstance`` message -> core ``MapInstance`` (fields without a message field empty).

    Raises:
        InvalidInputError: a non-unit box orientation, or a negative/non-finite box size.
    """
    where = f"instance[{msg.id}]"
    p, q = msg.bbox_pose.position, msg.bbox_pose.orientation
    T = wire.pose_to_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w),  # noqa: N806
                            f"{where}.bbox_pose")
    size = np.array([msg.bbox_size.x, msg.bbox_size.y, msg.bbox_size.z])
    if np.any(size < 0) or not np.all(np.isfinite(size)):
        raise InvalidInputError(f"{where}.bbox_size", size.tolist(),
                                "box size must be finite and >= 0", kind="instance")
    return MapInstance(
        id=msg.id, label=msg.label, label_id=msg.label_id, is_thing=msg.is_thing,
        confidence=msg.confidence,
        centroid_m=np.array([msg.centroid.x, msg.centroid.y, msg.centroid.z]),
        bbox=OrientedBox(center_m=T[:3, 3], R_world_box=T[:3, :3], size_m=size),
        num_observations=msg.num_observations, score=msg.score)


# --------------------------------------------------------------------------------------------
# Mesh
# --------------------------------------------------------------------------------------------
def mesh_msg_from_core(mesh: PanopticMesh, stamp_ns: int, frame_id: str,
                       source: str = "instant", voxel_size_m: float = 0.0) -> PanopticMeshMsg:
    """Core mesh -> ``PanopticMesh`` message (flat arrays, one memcpy each).

    Args:
        mesh: the mesh, in ``frame_id``.
        stamp_ns: time of the last frame integrated into it.
        frame_id: the map frame.
        source: which map produced it (``"instant"`` or ``"refined"``).
        voxel_size_m: resolution the mesh was extracted at (0 = unknown).

    Raises:
        InvalidInputError: label ids beyond uint16 or negative ids.
    """
    msg = PanopticMeshMsg(header=header_msg(stamp_ns, frame_id), source=source,
                          voxel_size=float(voxel_size_m))
    msg.vertices = primitive_array(mesh.vertices_m.astype(np.float32, copy=False), "f")
    msg.triangles = primitive_array(checked_ids(mesh.triangles, "mesh.triangles", np.uint32),
                                    "I")
    msg.colors = primitive_array(mesh.colors.astype(np.uint8, copy=False), "B")
    msg.label_ids = primitive_array(checked_ids(mesh.label_ids, "mesh.label_ids", np.uint16),
                                    "H")
    msg.instance_ids = primitive_array(
        checked_ids(mesh.instance_ids, "mesh.instance_ids", np.uint32), "I")
    return msg


def mesh_from_msg(msg: PanopticMeshMsg) -> PanopticMesh:
    """``PanopticMesh`` message -> core mesh (header, source and voxel size stay in ``msg``).

    Raises:
        InvalidInputError: array lengths that are not 3 per vertex / triangle or one per vertex,
            triangle indices out of range, or ids beyond int32.
    """
    vertices = np.array(msg.vertices, np.float32)
    triangles = np.array(msg.triangles, np.uint32)
    colors = np.array(msg.colors, np.uint8)
    for name, values in (("vertices", vertices), ("triangles", triangles), ("colors", colors)):
        if values.size % 3:
            raise InvalidInputError(f"mesh.{name}", values.size, "length must be a multiple of 3",
                                    kind="mesh")
    label_ids = np.array(msg.label_ids, np.uint16)
    instance_ids = np.array(msg.instance_ids, np.uint32)
    return PanopticMesh(
        vertices_m=vertices.reshape(-1, 3),
        triangles=checked_ids(triangles, "mesh.triangles", np.int32).reshape(-1, 3),
        colors=colors.reshape(-1, 3), label_ids=label_ids.astype(np.int32),
        instance_ids=checked_ids(instance_ids, "mesh.instance_ids", np.int32))
