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
instance_table     panoptic_mapper/MapInstanceArray  the instances as MapInstance messages
=================  ==============================  ===========================================

``mesh`` and ``instance_table`` of an instant node are what a mapper node on another machine
takes as its prior (``runtime/prior_sources.py``).

Owns: topic names, when to publish (only topics with subscribers, only content newer than
what was last sent on them, or a colour mode change), decimation of very large marker meshes.
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
from panoptic_mapper.msg import MapInstanceArray
from panoptic_mapper.msg import PanopticMesh as PanopticMeshMsg
from panoptic_mapper.ros.conversions import (PanopticCloud, cloud_msg_from_panoptic_cloud,
                                             header_msg)
from panoptic_mapper.runtime.served_map import MapSnapshot
from panoptic_mapper.ros.markers import instance_markers, mesh_marker
from panoptic_mapper.runtime.node_config import MapOutputConfig
from panoptic_mapper.ros.panoptic_conversions import (map_instance_msg_from_core,
                                                      mesh_msg_from_core)
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS

TOPIC_NAMES = {"mesh": "mesh", "mesh_marker": "mesh_marker", "instances": "instances",
               "cloud": "cloud", "instance_table": "instance_table"}
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
    """Latched publishers of the map products (see the module docstring).

    A topic is only built and sent while it has subscribers (a mesh marker of a large map costs
    seconds of CPU); a subscriber that arrives later gets the current product at the next
    :meth:`publish`, and from then on the latched copy.
    """

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
        self._sent: dict[str, tuple[int, str]] = {}
        self.namespace = namespace
        prefix = namespace.rstrip("/")
        self.topics = {key: f"{prefix}/{name}" for key, name in TOPIC_NAMES.items()}
        self._publishers = {}
        wanted = {"mesh": (config.publish_mesh, PanopticMeshMsg),
                  "mesh_marker": (config.publish_mesh_marker, Marker),
                  "instances": (config.publish_instance_markers, MarkerArray),
                  "cloud": (config.publish_cloud, PointCloud2),
                  "instance_table": (config.publish_instance_table, MapInstanceArray)}
        for key, (enabled, msg_type) in wanted.items():
            if enabled:
                self._publishers[key] = node.create_publisher(msg_type, self.topics[key],
                                                              LATCHED_MAP_QOS)

    def sent_version(self, key: str) -> int:
        """Version (mesh version for mesh products) last sent on output ``key`` (-1: never)."""
        return self._sent.get(key, (-1, ""))[0]

    def set_color_mode(self, color_mode: str) -> None:
        """Change the marker colouring; the next :meth:`publish` resends the marker."""
        with self._lock:
            self._config = self._config.replace(mesh_color_mode=color_mode)

    def publish(self, snapshot: MapSnapshot) -> PublishReport | None:
        """Send each subscribed output whose content changed since it was last sent; None when
        nothing was due."""
        with self._lock:
            start = time.perf_counter()
            sent: list[str] = []
            decimation = 1
            stamp_ns = snapshot.stamp_ns
            mesh = snapshot.mesh
            mode = self._config.mesh_color_mode
            due = {"mesh": (snapshot.mesh_version, ""),
                   "mesh_marker": (snapshot.mesh_version, mode),
                   "cloud": (snapshot.mesh_version, ""),
                   "instances": (snapshot.version, ""),
                   "instance_table": (snapshot.version, "")}
            for key, publisher in self._publishers.items():
                if self._sent.get(key) == due[key] or publisher.get_subscription_count() == 0:
                    continue
                if key == "mesh":
                    msg = mesh_msg_from_core(mesh, stamp_ns, self._frame_id, self._source,
                                             self._voxel_size_m)
                elif key == "mesh_marker":
                    marker_mesh, decimation = self._marker_mesh(mesh)
                    msg = mesh_marker(marker_mesh, stamp_ns, self._frame_id, mode,
                                      self._registry)
                elif key == "cloud":
                    msg = cloud_msg_from_panoptic_cloud(
                        PanopticCloud(mesh.vertices_m, mesh.colors, mesh.label_ids,
                                      mesh.instance_ids), stamp_ns, self._frame_id)
                elif key == "instance_table":
                    msg = MapInstanceArray(
                        header=header_msg(stamp_ns, self._frame_id),
                        instances=[map_instance_msg_from_core(i) for i in snapshot.instances])
                else:
                    msg = instance_markers(snapshot.instances, stamp_ns, self._frame_id,
                                           self._registry)
                publisher.publish(msg)
                self._sent[key] = due[key]
                sent.append(key)
            if not sent:
                return None
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
