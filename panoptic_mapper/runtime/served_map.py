"""What planners read of a map: the latest snapshot, and the answers computed from it.

Every map a node serves (the instant map, the refined layer) publishes its products as one
immutable :class:`MapSnapshot`, replaced as a whole by the map's refresh. Planner requests
(``list_instances``, ``query_objects``, ``export_mesh``), the map topics and the diagnostics all
read the snapshot and never wait for integration or training. :class:`ServedMap` holds the
snapshot, the query engine's instance table and the read-only answers; the sessions
(``map_session.py``, ``refined_session.py``) add the writer side.

ROS-free. Owns: :class:`MapSnapshot`, :class:`ServedMap`, :class:`ExportResult`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io.ply import COLOR_MODES, write_ply
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import normalize_phrase
from panoptic_mapper.core.query.engine import QueryEngine, QueryResult
from panoptic_mapper.core.types import MapInstance, PanopticMesh


@dataclass(frozen=True)
class MapSnapshot:
    """The map's products at one moment (immutable; replaced as a whole on refresh)."""

    version: int
    """Increases with every refresh that found the map changed."""
    stamp_ns: int
    """Stamp of the newest frame whose integration the snapshot includes (0 = none yet)."""
    mesh: PanopticMesh
    mesh_version: int
    """Increases whenever the mesh changes (outputs built from the mesh compare it)."""
    instances: tuple[MapInstance, ...]
    """Thing instances and stuff regions, by id."""
    num_frames: int
    """Frames integrated (into the map, or the prior of a derived layer) when it was taken."""
    refresh_ms: float = 0.0
    """Time the refresh took (mesh update, labelling, instance table)."""

    @classmethod
    def empty(cls) -> "MapSnapshot":
        return cls(0, 0, PanopticMesh.empty(), 0, (), 0)


@dataclass
class ExportResult:
    """What :meth:`ServedMap.export_mesh` wrote."""

    path: Path
    num_vertices: int
    num_triangles: int


class ServedMap:
    """The snapshot of a map and the planner answers read from it (module docstring).

    Args:
        registry: the label registry of the map (for colours and label filters).
        query_engine: answers :meth:`query_objects`; its instance table is replaced with every
            new snapshot (None: queries fail with a message saying so).
    """

    def __init__(self, registry: LabelRegistry, query_engine: QueryEngine | None = None):
        self.registry = registry
        self._query_engine = query_engine
        self.query_table_error = ""
        """Why the last snapshot could not update the query engine's table ("" = it did)."""
        self._snapshot = MapSnapshot.empty()
        self._snapshot_lock = threading.Lock()

    @property
    def snapshot(self) -> MapSnapshot:
        """The latest snapshot (never blocks)."""
        return self._snapshot

    def _serve(self, mesh: PanopticMesh, instances: tuple[MapInstance, ...], stamp_ns: int,
               num_frames: int, mesh_changed: bool, refresh_ms: float) -> MapSnapshot:
        """Replace the snapshot (and the query table) with these products."""
        with self._snapshot_lock:
            self._update_query_table(instances)
            previous = self._snapshot
            self._snapshot = MapSnapshot(
                version=previous.version + 1, stamp_ns=stamp_ns, mesh=mesh,
                mesh_version=previous.mesh_version + int(mesh_changed
                                                         or mesh is not previous.mesh),
                instances=instances, num_frames=num_frames, refresh_ms=refresh_ms)
            return self._snapshot

    def _update_query_table(self, instances: tuple[MapInstance, ...]) -> None:
        if self._query_engine is None:
            return
        try:
            self._query_engine.update_instances(instances)
            self.query_table_error = ""
        except InvalidInputError as exc:  # the engine keeps its previous table
            self.query_table_error = str(exc)

    # ---- reader side ---------------------------------------------------------------------------
    def list_instances(self, label: str = "", things_only: bool = False) -> list[MapInstance]:
        """Instances of the latest snapshot, by id; ``label`` is a label name or prompt phrase
        (exact, case-insensitive) and raises :class:`InvalidInputError` when unknown."""
        instances = list(self._snapshot.instances)
        if label:
            found = self.registry.find_phrase(label)
            if found is None:
                raise InvalidInputError("label", label,
                                        "not a label name or phrase of the label registry",
                                        kind="unknown_label")
            instances = [i for i in instances if i.label_id == found.id]
        if things_only:
            instances = [i for i in instances if i.is_thing]
        return sorted(instances, key=lambda i: i.id)

    def query_objects(self, query: str, max_results: int = 0,
                      min_score: float = 0.0) -> QueryResult:
        """Instances of the latest snapshot that match a free-text query, best first.

        ``min_score`` 0 applies the engine's calibrated default threshold.
        """
        if self._query_engine is None:
            raise InvalidInputError("query", query, "this node has no query engine configured",
                                    kind="request")
        return self._query_engine.query_objects(query, int(max_results),
                                                float(min_score) if min_score > 0 else None)

    def export_mesh(self, path: str | Path, color_mode: str = "rgb") -> ExportResult:
        """Write the latest snapshot's mesh as PLY (colour per ``color_mode``, ids always)."""
        color_mode = normalize_phrase(color_mode) or "rgb"
        if color_mode not in COLOR_MODES:
            raise InvalidInputError("color_mode", color_mode,
                                    f"must be one of {list(COLOR_MODES)}", kind="request")
        path = output_path(path, "path")
        if path.suffix.lower() != ".ply":
            raise InvalidInputError("path", str(path), "must end in .ply", kind="request")
        mesh = self._snapshot.mesh
        written = write_ply(path, mesh, color_mode=color_mode, registry=self.registry)
        return ExportResult(written, mesh.num_vertices, mesh.num_triangles)


def output_path(path: str | Path, field_name: str) -> Path:
    """A writable file path from a request (parent folders created)."""
    text = str(path).strip()
    if not text:
        raise InvalidInputError(field_name, text, "an output path is required", kind="request")
    out = Path(text).expanduser()
    if out.exists() and out.is_dir():
        raise InvalidInputError(field_name, text, "is a directory; give a file name",
                                kind="request")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
