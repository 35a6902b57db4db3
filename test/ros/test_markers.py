"""RViz markers of the mesh and of instance boxes."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels.registry import instance_color
from panoptic_mapper.core.types import MapInstance, OrientedBox, PanopticMesh
from panoptic_mapper.ros import markers

pytestmark = pytest.mark.ros


def _mesh() -> PanopticMesh:
    return PanopticMesh(vertices_m=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                        triangles=[[0, 1, 2], [0, 2, 3]],
                        colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]],
                        label_ids=[10, 10, 1, 0], instance_ids=[3, 3, 0, 0])


def test_mesh_marker_lists_triangle_corners_with_vertex_colours():
    marker = markers.mesh_marker(_mesh(), 5, "map")
    assert marker.type == Marker.TRIANGLE_LIST and marker.header.frame_id == "map"
    assert len(marker.points) == 6 and len(marker.colors) == 6
    corners = [(p.x, p.y, p.z) for p in marker.points]
    assert corners == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 0), (0, 1, 0), (0, 0, 1)]
    colours = [(c.r, c.g, c.b, c.a) for c in marker.colors]
    assert colours[1] == (0.0, 1.0, 0.0, 1.0) and colours[5] == (1.0, 1.0, 1.0, 1.0)
    back = deserialize_message(serialize_message(marker), Marker)
    assert len(back.points) == 6 and back.points[5].z == 1.0


def test_mesh_marker_semantic_and_instance_colours(label_registry):
    semantic = markers.mesh_marker(_mesh(), 0, "map", "semantic", label_registry)
    chair = np.array(label_registry.by_name("chair").color) / 255.0
    first = semantic.colors[0]
    np.testing.assert_allclose([first.r, first.g, first.b], chair)
    void = semantic.colors[5]  # vertex 3 has label 0
    np.testing.assert_allclose([void.r, void.g, void.b], [128 / 255.0] * 3)
    instance = markers.vertex_colors(_mesh(), "instance")
    np.testing.assert_array_equal(instance[0], instance_color(3))
    np.testing.assert_array_equal(instance[2], [128, 128, 128])


def test_mesh_marker_rejects_bad_modes(label_registry):
    with pytest.raises(InvalidInputError, match="needs a label registry"):
        markers.mesh_marker(_mesh(), 0, "map", "semantic")
    with pytest.raises(InvalidInputError, match="color_mode='depth'"):
        markers.mesh_marker(_mesh(), 0, "map", "depth")
    mesh = _mesh()
    mesh.label_ids[0] = 999
    with pytest.raises(InvalidInputError, match="mesh.label_ids=999"):
        markers.mesh_marker(mesh, 0, "map", "semantic", label_registry)


def test_empty_mesh_gives_an_empty_marker():
    marker = markers.mesh_marker(PanopticMesh.empty(), 0, "map")
    assert marker.points == [] and marker.action == Marker.ADD


def _instance(instance_id: int, label: str, label_id: int) -> MapInstance:
    return MapInstance(id=instance_id, label=label, label_id=label_id, is_thing=True,
                       confidence=0.8, centroid_m=[1, 2, 0.5],
                       bbox=OrientedBox([1, 2, 0.5], np.eye(3), [0.4, 0.4, 1.0]),
                       num_observations=4)


def test_instance_markers(label_registry):
    array = markers.instance_markers([_instance(7, "chair", 10), _instance(8, "thing", 999)],
                                     3, "map", label_registry)
    array = deserialize_message(serialize_message(array), MarkerArray)
    assert array.markers[0].action == Marker.DELETEALL
    box, text = array.markers[1], array.markers[2]
    assert (box.type, box.ns, box.id) == (Marker.CUBE, markers.BOX_NAMESPACE, 7)
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.4, 0.4, 1.0))
    assert (box.pose.position.x, box.pose.position.z) == (1.0, 0.5)
    chair = np.array(label_registry.by_name("chair").color) / 255.0
    np.testing.assert_allclose([box.color.r, box.color.g, box.color.b], chair, atol=1e-6)
    assert (text.type, text.ns, text.id) == (Marker.TEXT_VIEW_FACING, markers.LABEL_NAMESPACE, 7)
    assert text.text == "chair #7 0.80"
    assert text.pose.position.z == pytest.approx(1.0 + 0.12)  # box top + text height
    unknown_box = array.markers[3]  # label 999 is not in the registry: colour by instance id
    expected = np.array(instance_color(8)) / 255.0
    np.testing.assert_allclose([unknown_box.color.r, unknown_box.color.g, unknown_box.color.b],
                               expected, atol=1e-6)
    assert len(array.markers) == 5
