"""The map's published products: PanopticMesh, an RViz mesh marker, instance boxes, a cloud.

All four topics are latched (TRANSIENT_LOCAL, depth 1), so RViz or a planner that subscribes
late still receives the current map. They live under the planner API namespace when the node
serves it (``/panoptic_mapper/mesh``, ...), else under the node's private namespace
(``~/mesh``, ...), where a mapper node can take them as its prior.

=================  ==============================  ===========================================
topic              type                            content
=================  ==============================  ===========================================
mesh               panoptic_mapper/PanopticMesh    full mesh with colours, labels, instance ids
mesh_marker        visualization_msgs/Marker       TRIANGLE_LIST coloured per ``mesh_color_mode``
instances          visualization_msgs/MarkerArray  oriented boxes + "label #id confidence" texts
cloud              sensor_msgs/PointCloud2         mesh vertices: x, y, z, rgb, label, instance
=================  ==============================  ===========================================

Owns: topic names, when to publish (a snapshot newer than the last one sent, or a colour
mode change), decimation of very large marker meshes.
Does not own: message building (``markers``, ``conversions``, ``panoptic_conversions``) or
refreshing the map (``map_session``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import PanopticMesh
from panoptic_mapper.msg import PanopticMesh as PanopticMeshMsg
from panoptic_mapper.ros.conversions import PanopticCloud, cloud_msg_from_panoptic_cloud
from panoptic_mapper.ros.map_session import MapSnapshot
from panoptic_mapper.ros.markers import instance_markers, mesh_marker
from panoptic_mapper.ros.node_config import MapOutputConfig
from panoptic_mapper.ros.panoptic_conversions import mesh_msg_from_core
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS

TOPIC_NAMES = {"mesh": "mesh", "mesh_marker": "mesh_marker", "instances": "instances",
               "cloud": "cloud"}
"""Output -> topic name relative to the output namespace."""


@dataclass
class PublishReport:
    """What one :meth:`MapOutputs.publish` call sent, and how long building it took."""

    version: int
    topics: list[str]
    build_ms: float
    marker_decimation: int = 1
    """Every k-th triangle went into the mesh marker (1 = all)."""


class MapOutputs:
    """Latched publishers of the map products (see the module docstring)."""

    def __init__(self, node: Node, registry: LabelRegistry, config: MapOutputConfig,
                 namespace: str, frame_id: str, source: str, voxel_size_m: float):
        """Args:
            node: the publishing node.
            registry: label colours of the semantic colour mode and the boxes.
            config: what to publish.
            namespace: ``"/panoptic_mapper"`` style absolute namespace, or ``"~"`` (private).
            frame_id: the map frame.
            source: ``PanopticMesh.source`` (``"instant"`` or ``"refined"``).
            voxel_size_m: resolution the meshes are extracted at.
        """
        self._node = node
        self._registry = registry
        self._config = config
        self._frame_id = frame_id
        self._source = source
        self._voxel_size_m = float(voxel_size_m)
        self._lock = threading.Lock()
        self._last_version = -1
        self._marker_stale = False
        self.namespace = namespace
        prefix = namespace.rstrip("/")
        self.topics = {key: f"{prefix}/{name}" for key, name in TOPIC_NAMES.items()}
        self._publishers = {}
        wanted = {"mesh": (config.publish_mesh, PanopticMeshMsg),
                  "mesh_marker": (config.publish_mesh_marker, Marker),
                  "instances": (config.publish_instance_markers, MarkerArray),
                  "cloud": (config.publish_cloud, PointCloud2)}
        for key, (enabled, msg_type) in wanted.items():
            if enabled:
                self._publishers[key] = node.create_publisher(msg_type, self.topics[key],
                                                              LATCHED_MAP_QOS)

    @property
    def published_version(self) -> int:
        """Version of the last snapshot sent (-1 before the first)."""
        return self._last_version

    def set_color_mode(self, color_mode: str) -> None:
        """Change the marker colouring; the next :meth:`publish` resends the marker."""
        with self._lock:
            if color_mode != self._config.mesh_color_mode:
                self._config = self._config.replace(mesh_color_mode=color_mode)
                self._marker_stale = True

    def publish(self, snapshot: MapSnapshot) -> PublishReport | None:
        """Send what changed since the last call; None when nothing was due."""
        with self._lock:
            new = snapshot.version != self._last_version
            if not new and not self._marker_stale:
                return None
            start = time.perf_counter()
            sent: list[str] = []
            decimation = 1
            stamp_ns = snapshot.stamp_ns
            mesh_due = new and (snapshot.mesh_changed or self._last_version < 0)
            if mesh_due and "mesh" in self._publishers:
                self._publishers["mesh"].publish(mesh_msg_from_core(
                    snapshot.mesh, stamp_ns, self._frame_id, self._source, self._voxel_size_m))
                sent.append("mesh")
            if (mesh_due or self._marker_stale) and "mesh_marker" in self._publishers:
                mesh, decimation = self._marker_mesh(snapshot.mesh)
                self._publishers["mesh_marker"].publish(mesh_marker(
                    mesh, stamp_ns, self._frame_id, self._config.mesh_color_mode,
                    self._registry))
                sent.append("mesh_marker")
            if mesh_due and "cloud" in self._publishers:
                mesh = snapshot.mesh
                self._publishers["cloud"].publish(cloud_msg_from_panoptic_cloud(
                    PanopticCloud(mesh.vertices_m, mesh.colors, mesh.label_ids,
                                  mesh.instance_ids), stamp_ns, self._frame_id))
                sent.append("cloud")
            if new and "instances" in self._publishers:
                self._publishers["instances"].publish(instance_markers(
                    snapshot.instances, stamp_ns, self._frame_id, self._registry))
                sent.append("instances")
            self._last_version = snapshot.version
            self._marker_stale = False
            return PublishReport(snapshot.version, sent, (time.perf_counter() - start) * 1e3,
                                 decimation)

    def _marker_mesh(self, mesh: PanopticMesh) -> tuple[PanopticMesh, int]:
        """The mesh to draw: every k-th triangle when it exceeds the marker budget."""
        limit = self._config.mesh_marker_max_triangles
        if mesh.num_triangles <= limit:
            return mesh, 1
        step = -(-mesh.num_triangles // limit)
        return PanopticMesh(mesh.vertices_m, mesh.triangles[::step], mesh.colors,
                            mesh.label_ids, mesh.instance_ids), step

    def destroy(self) -> None:
        """Destroy the publishers (idempotent)."""
        with self._lock:
            for publisher in self._publishers.values():
                self._node.destroy_publisher(publisher)
            self._publishers = {}
