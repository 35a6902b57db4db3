"""Where the mapper node's refined layer reads its prior from (``core/mapping/prior.py``).

* :class:`SessionPrior`: the instant map of a co-located instant semantics node (one process,
  several nodes). The layer reads the snapshots that node's refresh worker publishes and is
  offered every frame that node integrates (``MapSession.add_frame_listener``), so the stream is
  integrated once. Saving the refined map saves this instant map inside the same file (under
  the instant session's write lock); loading restores it; a reset empties it.
* :class:`ReceivedPrior`: the prior of a mapper on another machine (a GPU host): the instant
  node's mesh (``PanopticMesh`` on its ``~/mesh`` topic) and instance table (``~/instance_table``)
  as received over DDS. Point labels come from the nearest mesh vertex. Its part of a saved map
  is that mesh and table; a file saved by a co-located mapper (an instant map) loads too, as the
  mesh and table of that instant map.

ROS-free (the node converts the messages). Owns: both sources.
"""
from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.instant_map import InstantMapConfig, InstantPanopticMap
from panoptic_mapper.core.mapping.prior import PriorSnapshot
from panoptic_mapper.core.types import (NO_INSTANCE_ID, VOID_LABEL_ID, MapInstance,
                                        OrientedBox, PanopticMesh)
from panoptic_mapper.runtime.map_session import MapSession

RECEIVED_FORMAT_VERSION = 1


class SessionPrior:
    """The instant map of a co-located node, read through its session (module docstring)."""

    kind = "instant"

    def __init__(self, session: MapSession):
        self.session = session

    def get_prior_snapshot(self) -> PriorSnapshot:
        snapshot = self.session.snapshot
        # The snapshot's own version, not its mesh version: a frame that leaves the mesh as it
        # was still changes the frame count, the stamp and maybe the instance table, and the
        # mapper must serve those too.
        return PriorSnapshot(snapshot.version, snapshot.mesh, snapshot.instances,
                             snapshot.num_frames, snapshot.stamp_ns)

    def query_prior_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.session.map.query_labels(points_m)

    def save_prior(self, path: Path) -> None:
        self.session.save(path)

    def load_prior(self, path: Path, kind: str) -> None:
        if kind != self.kind:
            raise DataFormatError("prior_kind", kind,
                                  "the file was saved by a mapper without a co-located instant "
                                  "map (it holds the received mesh only); load it into a mapper "
                                  "that runs on its own (prior.source: topics)", kind="map_file")
        self.session.load(path)

    def reset_prior(self) -> None:
        self.session.reset()

    def finalize_prior(self) -> None:
        """The node never finalizes the instant map (it keeps integrating)."""


class ReceivedPrior:
    """The mesh and instance table of an instant node elsewhere (module docstring).

    Args:
        registry: label registry (to read a file holding an instant map).
        max_label_distance_m: ``query_prior_labels`` answers 0 farther than this from the mesh.
    """

    kind = "received"

    def __init__(self, registry: LabelRegistry, max_label_distance_m: float = 0.05):
        self.registry = registry
        self.max_label_distance_m = float(max_label_distance_m)
        self._lock = threading.Lock()
        self._snapshot = PriorSnapshot(0, PanopticMesh.empty(), ())
        self._tree: tuple[int, cKDTree | None] = (-1, None)
        self.mesh_received = False
        self.instances_received = False

    def update_mesh(self, mesh: PanopticMesh, stamp_ns: int, num_frames: int = 0) -> None:
        """A new mesh from the instant node."""
        with self._lock:
            old = self._snapshot
            self._snapshot = PriorSnapshot(old.version + 1, mesh, old.instances, num_frames,
                                           stamp_ns)
            self.mesh_received = True

    def update_instances(self, instances: tuple[MapInstance, ...]) -> None:
        """A new instance table from the instant node."""
        with self._lock:
            old = self._snapshot
            self._snapshot = PriorSnapshot(old.version + 1, old.mesh, tuple(instances),
                                           old.num_frames, old.stamp_ns)
            self.instances_received = True

    def get_prior_snapshot(self) -> PriorSnapshot:
        return self._snapshot

    def query_prior_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points_m, np.float64).reshape(-1, 3)
        snapshot = self._snapshot
        labels = np.full(len(points), VOID_LABEL_ID, np.int32)
        instances = np.full(len(points), NO_INSTANCE_ID, np.int32)
        if snapshot.mesh.num_vertices == 0 or len(points) == 0:
            return labels, instances
        version, tree = self._tree
        if version != snapshot.version or tree is None:
            tree = cKDTree(snapshot.mesh.vertices_m)
            self._tree = (snapshot.version, tree)
        distance, nearest = tree.query(points, distance_upper_bound=self.max_label_distance_m)
        hit = np.isfinite(distance)
        labels[hit] = snapshot.mesh.label_ids[nearest[hit]]
        instances[hit] = snapshot.mesh.instance_ids[nearest[hit]]
        return labels, instances

    def save_prior(self, path: Path) -> None:
        snapshot = self._snapshot
        mesh = snapshot.mesh
        meta = {"format_version": RECEIVED_FORMAT_VERSION, "stamp_ns": snapshot.stamp_ns,
                "num_frames": snapshot.num_frames,
                "instances": [instance_to_dict(i) for i in snapshot.instances]}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 vertices_m=mesh.vertices_m, triangles=mesh.triangles, colors=mesh.colors,
                 label_ids=mesh.label_ids, instance_ids=mesh.instance_ids)
        Path(path).write_bytes(buffer.getvalue())

    def load_prior(self, path: Path, kind: str) -> None:
        if kind == "instant":
            prior = InstantPanopticMap(self.registry, InstantMapConfig())
            prior.load(path)
            prior.update_mesh()
            mesh, instances = prior.get_mesh(), tuple(prior.get_instances())
            stamp_ns, frames = prior.last_frame_stamp_ns, prior.num_frames
        elif kind == self.kind:
            try:
                with np.load(path) as data:
                    meta = json.loads(bytes(data["meta"]).decode())
                    mesh = PanopticMesh(data["vertices_m"], data["triangles"], data["colors"],
                                        data["label_ids"], data["instance_ids"])
                instances = tuple(instance_from_dict(d) for d in meta["instances"])
                stamp_ns, frames = int(meta["stamp_ns"]), int(meta["num_frames"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataFormatError("path", str(path), f"not a received prior: {exc}",
                                      kind="map_file") from exc
        else:
            raise DataFormatError("prior_kind", kind, "unknown kind of prior", kind="map_file")
        with self._lock:
            old = self._snapshot
            self._snapshot = PriorSnapshot(old.version + 1, mesh, instances, frames, stamp_ns)

    def reset_prior(self) -> None:
        """Forget what was received (the instant node elsewhere keeps its own map and sends it
        again with its next update)."""
        with self._lock:
            old = self._snapshot
            self._snapshot = PriorSnapshot(old.version + 1, PanopticMesh.empty(), ())

    def finalize_prior(self) -> None:
        """Not ours: the instant node elsewhere keeps integrating."""


def instance_to_dict(instance: MapInstance) -> dict:
    """A JSON-able record of a map instance (what ``msg/MapInstance`` carries, and more)."""
    color = instance.mean_color_rgb
    return {"id": instance.id, "label": instance.label, "label_id": instance.label_id,
            "is_thing": instance.is_thing, "confidence": instance.confidence,
            "centroid_m": instance.centroid_m.tolist(),
            "bbox": {"center_m": instance.bbox.center_m.tolist(),
                     "R_world_box": instance.bbox.R_world_box.tolist(),
                     "size_m": instance.bbox.size_m.tolist()},
            "num_observations": instance.num_observations,
            "label_distribution": {str(k): v for k, v in instance.label_distribution.items()},
            "num_voxels": instance.num_voxels,
            "mean_color_rgb": None if color is None else np.asarray(color).tolist()}


def instance_from_dict(data: dict) -> MapInstance:
    """The inverse of :func:`instance_to_dict`."""
    box = data["bbox"]
    color = data.get("mean_color_rgb")
    return MapInstance(
        id=int(data["id"]), label=str(data["label"]), label_id=int(data["label_id"]),
        is_thing=bool(data["is_thing"]), confidence=float(data["confidence"]),
        centroid_m=np.asarray(data["centroid_m"], np.float64),
        bbox=OrientedBox(box["center_m"], box["R_world_box"], box["size_m"]),
        num_observations=int(data["num_observations"]),
        label_distribution={int(k): float(v)
                            for k, v in data.get("label_distribution", {}).items()},
        num_voxels=int(data.get("num_voxels", 0)),
        mean_color_rgb=None if color is None else np.asarray(color, np.uint8))
