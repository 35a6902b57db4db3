"""Our own interfaces <-> core types: segmentation, map instances, mesh."""
import math

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.types import (MapInstance, OrientedBox, PanopticMesh,
                                        PanopticSegmentation2D, Segment)
from panoptic_mapper.msg import Segment as SegmentMsg
from panoptic_mapper.ros import panoptic_conversions as pconv

pytestmark = pytest.mark.ros


def over_the_wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


# ---- segmentation ---------------------------------------------------------------------------
def _segmentation(max_id: int = 2) -> PanopticSegmentation2D:
    ids = np.array([[0, 1, 1], [max_id, max_id, 0]], np.int32)
    segments = (Segment(1, "chair", 10, True, 0.9, "office chair"),
                Segment(max_id, "wall", 1, False, 0.5, "wall"))
    return PanopticSegmentation2D(ids, segments, stamp_ns=5_000_000_001)


@pytest.mark.parametrize("max_id, encoding", [(2, "16UC1"), (70_000, "32SC1")])
def test_segmentation_round_trip_picks_encoding(max_id, encoding, label_registry):
    core = _segmentation(max_id)
    msg = over_the_wire(pconv.segmentation_msg_from_core(core, "cam"))
    assert msg.segment_ids.encoding == encoding
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 1
    back = pconv.segmentation_from_msg(msg, label_registry, image_shape=(2, 3))
    np.testing.assert_array_equal(back.segment_ids, core.segment_ids)
    first = back.segments[0]
    assert (first.id, first.label, first.label_id, first.is_thing, first.phrase) == \
        (1, "chair", 10, True, "office chair")
    assert first.score == pytest.approx(0.9)  # float32 on the wire
    assert back.segments[1].label == "wall" and back.stamp_ns == 5_000_000_001


def test_segmentation_fills_label_ids_from_the_registry(label_registry):
    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments[0].label_id = 0
    msg.segments[0].label = "office chair"  # a prompt phrase, not the label name
    back = pconv.segmentation_from_msg(msg, label_registry)
    assert (back.segments[0].label, back.segments[0].label_id) == ("chair", 10)


def test_segmentation_rejects_bad_messages(label_registry):
    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    with pytest.raises(InvalidInputError, match=r"segmentation.segment_ids=\(2, 3\).*\(4, 6\)"
                       ) as info:
        pconv.segmentation_from_msg(msg, image_shape=(4, 6))
    assert info.value.kind == "size_mismatch"

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    del msg.segments[1]  # id 2 is still in the image
    with pytest.raises(InvalidInputError, match=r"segment_ids=\[2\].*missing from the segment"):
        pconv.segmentation_from_msg(msg)

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments[0].label, msg.segments[0].label_id = "spaceship", 0
    with pytest.raises(InvalidInputError, match=r"segments\[0\].label='spaceship'") as info:
        pconv.segmentation_from_msg(msg, label_registry)
    assert info.value.kind == "unknown_label"
    pconv.segmentation_from_msg(msg)  # without a registry, labels are not checked

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments[0].label_id = 1  # chair's name with wall's id
    with pytest.raises(InvalidInputError, match="disagree"):
        pconv.segmentation_from_msg(msg, label_registry)

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments[1].is_thing = True
    with pytest.raises(InvalidInputError, match=r"segments\[1\].is_thing.*'wall' is a stuff"):
        pconv.segmentation_from_msg(msg, label_registry)

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments.append(SegmentMsg(id=0, label="chair", label_id=10, is_thing=True, score=1.0))
    with pytest.raises(InvalidInputError, match=r"segments\[2\].id=0"):
        pconv.segmentation_from_msg(msg)

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segments[0].score = 1.5
    with pytest.raises(InvalidInputError, match=r"segments\[0\].score=1.5"):
        pconv.segmentation_from_msg(msg)

    msg = pconv.segmentation_msg_from_core(_segmentation(), "cam")
    msg.segment_ids.encoding = "mono8"
    with pytest.raises(InvalidInputError, match="segment_ids.encoding='mono8'"):
        pconv.segmentation_from_msg(msg)


def test_segmentation_encoding_must_hold_the_ids():
    with pytest.raises(InvalidInputError, match="16UC1 holds ids up to 65535"):
        pconv.segmentation_msg_from_core(_segmentation(70_000), "cam", encoding="16UC1")


# ---- map instances --------------------------------------------------------------------------
def _instance() -> MapInstance:
    angle = math.radians(30)
    R = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0],
                  [0, 0, 1]])
    return MapInstance(id=12, label="chair", label_id=10, is_thing=True, confidence=0.75,
                       centroid_m=np.array([1.0, 2.0, 0.5]),
                       bbox=OrientedBox(np.array([1.0, 2.0, 0.45]), R, np.array([0.5, 0.6, 0.9])),
                       num_observations=33, score=0.25,
                       label_distribution={10: 0.75, 13: 0.25}, num_voxels=800)


def test_map_instance_round_trip():
    msg = over_the_wire(pconv.map_instance_msg_from_core(_instance()))
    q = msg.bbox_pose.orientation
    assert [q.x, q.y, q.z, q.w] == pytest.approx([0, 0, math.sin(math.radians(15)),
                                                  math.cos(math.radians(15))])
    back = pconv.map_instance_from_msg(msg)
    expected = _instance()
    assert (back.id, back.label, back.label_id, back.is_thing, back.num_observations) == \
        (12, "chair", 10, True, 33)
    assert back.confidence == pytest.approx(0.75) and back.score == pytest.approx(0.25)
    np.testing.assert_allclose(back.centroid_m, expected.centroid_m)
    np.testing.assert_allclose(back.bbox.R_world_box, expected.bbox.R_world_box, atol=1e-12)
    np.testing.assert_allclose(back.bbox.center_m, expected.bbox.center_m)
    np.testing.assert_allclose(back.bbox.size_m, expected.bbox.size_m)
    assert back.label_distribution == {} and back.num_voxels == 0  # not in the message


def test_bad_instances_are_rejected():
    instance = _instance()
    instance.label_id = 70_000
    with pytest.raises(InvalidInputError, match=r"instance\[12\].label_id"):
        pconv.map_instance_msg_from_core(instance)
    instance = _instance()
    instance.bbox.R_world_box = np.diag([1.0, 1.0, -1.0])  # a reflection
    with pytest.raises(InvalidInputError, match=r"instance\[12\].bbox.*not a rigid"):
        pconv.map_instance_msg_from_core(instance)
    instance = _instance()
    instance.bbox.size_m = np.array([0.5, -0.1, 0.2])
    with pytest.raises(InvalidInputError, match="box size"):
        pconv.map_instance_msg_from_core(instance)
    msg = pconv.map_instance_msg_from_core(_instance())
    msg.bbox_pose.orientation.w = 3.0
    with pytest.raises(InvalidInputError, match=r"instance\[12\].bbox_pose.orientation"):
        pconv.map_instance_from_msg(msg)


# ---- mesh -----------------------------------------------------------------------------------
def _mesh() -> PanopticMesh:
    return PanopticMesh(vertices_m=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.5]],
                        triangles=[[0, 1, 2], [0, 2, 3]],
                        colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]],
                        label_ids=[10, 10, 1, 65535], instance_ids=[3, 3, 0, 2**31 - 1])


def test_mesh_round_trip():
    msg = over_the_wire(pconv.mesh_msg_from_core(_mesh(), 9, "map", "refined", 0.02))
    assert (msg.source, msg.header.frame_id) == ("refined", "map")
    assert msg.voxel_size == pytest.approx(0.02)
    assert list(msg.triangles) == [0, 1, 2, 0, 2, 3]
    assert list(msg.vertices[9:]) == [0.0, 0.0, 1.5]
    back = pconv.mesh_from_msg(msg)
    expected = _mesh()
    for name in ("vertices_m", "triangles", "colors", "label_ids", "instance_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(expected, name))
        assert getattr(back, name).dtype == getattr(expected, name).dtype


def test_bad_meshes_are_rejected():
    mesh = _mesh()
    mesh.label_ids[0] = 65536
    with pytest.raises(InvalidInputError, match="mesh.label_ids"):
        pconv.mesh_msg_from_core(mesh, 0, "map")
    msg = pconv.mesh_msg_from_core(_mesh(), 0, "map")
    msg.triangles.append(1)
    with pytest.raises(InvalidInputError, match="mesh.triangles=7: length must be a multiple"):
        pconv.mesh_from_msg(msg)
    msg = pconv.mesh_msg_from_core(_mesh(), 0, "map")
    msg.triangles[5] = 4
    with pytest.raises(InvalidInputError, match="out of range"):
        pconv.mesh_from_msg(msg)
    msg = pconv.mesh_msg_from_core(_mesh(), 0, "map")
    msg.label_ids.pop()
    with pytest.raises(InvalidInputError, match="mesh.label_ids=3: must have one entry per"):
        pconv.mesh_from_msg(msg)


def test_empty_mesh_round_trip():
    back = pconv.mesh_from_msg(over_the_wire(pconv.mesh_msg_from_core(PanopticMesh.empty(), 0,
                                                                      "map")))
    assert back.num_vertices == 0 and back.num_triangles == 0
