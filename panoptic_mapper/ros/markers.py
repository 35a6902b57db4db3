"""RViz markers for the panoptic map: the mesh as a coloured TRIANGLE_LIST, instances as boxes.

Owns: building ``visualization_msgs/Marker`` / ``MarkerArray`` from core map products.
Does not own: when or how often to publish them (the nodes decide; markers of big meshes are
expensive, see ``BENCHMARKS.md``).

``Marker.points`` and ``Marker.colors`` are Python lists of message objects, so their cost grows
with the number of objects created: one ``Point`` and one ``ColorRGBA`` per *vertex* (per label or
instance for those colour modes) are built and referenced by every triangle corner that uses them.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io import wire
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import instance_color
from panoptic_mapper.core.types import MapInstance, PanopticMesh, validate_rigid_transform
from panoptic_mapper.ros.conversions import header_msg

ColorMode = Literal["rgb", "semantic", "instance"]
COLOR_MODES: tuple[str, ...] = ("rgb", "semantic", "instance")

BOX_NAMESPACE = "instance_boxes"
LABEL_NAMESPACE = "instance_labels"


def mesh_marker(mesh: PanopticMesh, stamp_ns: int, frame_id: str, color_mode: ColorMode = "rgb",
                registry: LabelRegistry | None = None, namespace: str = "panoptic_mesh",
                marker_id: int = 0) -> Marker:
    """A ``TRIANGLE_LIST`` marker of ``mesh`` with per-vertex colours.

    Args:
        mesh: the mesh, in ``frame_id``.
        stamp_ns: header stamp, nanoseconds.
        frame_id: the map frame.
        color_mode: ``"rgb"`` (fused sensor colour), ``"semantic"`` (label colours of
            ``registry``; void is grey) or ``"instance"`` (a colour per instance id; 0 is grey).
        registry: required for ``"semantic"``.
        namespace: marker namespace.
        marker_id: marker id within ``namespace``.

    Raises:
        InvalidInputError: unknown colour mode, ``"semantic"`` without a registry, or label ids
            unknown to the registry.
    """
    palette_rgb, color_index = _palette(mesh, color_mode, registry)
    marker = Marker(header=header_msg(stamp_ns, frame_id), ns=namespace, id=int(marker_id),
                    type=Marker.TRIANGLE_LIST, action=Marker.ADD,
                    pose=Pose(orientation=Quaternion(w=1.0)),
                    scale=Vector3(x=1.0, y=1.0, z=1.0),
                    color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
    if mesh.num_triangles == 0:
        return marker
    corners = mesh.triangles.reshape(-1)
    points = np.empty(mesh.num_vertices, dtype=object)
    points[:] = [Point(x=x, y=y, z=z) for x, y, z in mesh.vertices_m.tolist()]
    colors = np.empty(len(palette_rgb), dtype=object)
    colors[:] = [ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in (palette_rgb / 255.0).tolist()]
    marker.points = points[corners].tolist()
    marker.colors = colors[color_index[corners]].tolist()
    return marker


def vertex_colors(mesh: PanopticMesh, color_mode: ColorMode,
                  registry: LabelRegistry | None = None) -> np.ndarray:
    """[V, 3] uint8 display colour of each vertex for ``color_mode`` (see :func:`mesh_marker`)."""
    palette_rgb, color_index = _palette(mesh, color_mode, registry)
    return palette_rgb[color_index]


def _palette(mesh: PanopticMesh, color_mode: ColorMode, registry: LabelRegistry | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``([P, 3] uint8 colours, [V] index into them)``: few colours for label/instance modes."""
    if color_mode == "rgb":
        return mesh.colors, np.arange(mesh.num_vertices)
    if color_mode == "semantic":
        if registry is None:
            raise InvalidInputError("color_mode", color_mode, "needs a label registry",
                                    kind="config")
        table = registry.color_table(void_color=(128, 128, 128))
        if mesh.num_vertices and int(mesh.label_ids.max()) >= len(table):
            raise InvalidInputError("mesh.label_ids", int(mesh.label_ids.max()),
                                    "unknown to the label registry", kind="unknown_label")
        return table, mesh.label_ids
    if color_mode == "instance":
        ids, inverse = np.unique(mesh.instance_ids, return_inverse=True)
        palette = np.array([instance_color(int(i)) for i in ids], np.uint8).reshape(-1, 3)
        return palette, inverse.reshape(-1)
    raise InvalidInputError("color_mode", color_mode, f"must be one of {list(COLOR_MODES)}",
                            kind="config")


def instance_markers(instances: Sequence[MapInstance], stamp_ns: int, frame_id: str,
                     registry: LabelRegistry | None = None, box_alpha: float = 0.35,
                     text_height_m: float = 0.12) -> MarkerArray:
    """Oriented boxes and text labels of map instances, replacing all previously sent ones.

    The array starts with a ``DELETEALL`` marker so instances that disappeared (merged, pruned)
    vanish from RViz. Each instance gets a translucent ``CUBE`` in namespace
    :data:`BOX_NAMESPACE` and a ``TEXT_VIEW_FACING`` ``"<label> #<id> <confidence>"`` above the
    box in :data:`LABEL_NAMESPACE`, both with the instance id as marker id. Boxes take the label
    colour from ``registry`` when given, else a colour per instance id.
    """
    header = header_msg(stamp_ns, frame_id)
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for instance in instances:
        box = instance.bbox
        position, quaternion = wire.matrix_to_pose(_box_matrix(instance))
        if registry is not None and instance.label_id in registry:
            rgb = registry.by_id(instance.label_id).color
        else:
            rgb = instance_color(int(instance.id))
        r, g, b = (c / 255.0 for c in rgb)
        pose = Pose(position=Point(x=float(position[0]), y=float(position[1]),
                                   z=float(position[2])),
                    orientation=Quaternion(x=float(quaternion[0]), y=float(quaternion[1]),
                                           z=float(quaternion[2]), w=float(quaternion[3])))
        size = np.maximum(box.size_m, 1e-3)  # RViz draws nothing for a zero scale
        markers.append(Marker(
            header=header, ns=BOX_NAMESPACE, id=int(instance.id), type=Marker.CUBE,
            action=Marker.ADD, pose=pose,
            scale=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
            color=ColorRGBA(r=r, g=g, b=b, a=float(box_alpha))))
        top = box.corners_m()[:, 2].max()
        markers.append(Marker(
            header=header, ns=LABEL_NAMESPACE, id=int(instance.id), type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD,
            pose=Pose(position=Point(x=float(box.center_m[0]), y=float(box.center_m[1]),
                                     z=float(top + text_height_m)),
                      orientation=Quaternion(w=1.0)),
            scale=Vector3(z=float(text_height_m)), color=ColorRGBA(r=r, g=g, b=b, a=1.0),
            text=f"{instance.label} #{instance.id} {instance.confidence:.2f}"))
    return MarkerArray(markers=markers)


def _box_matrix(instance: MapInstance) -> np.ndarray:
    T = np.eye(4)  # noqa: N806
    T[:3, :3] = instance.bbox.R_world_box
    T[:3, 3] = instance.bbox.center_m
    return validate_rigid_transform(T, f"instance[{instance.id}].bbox")
