"""The map a node serves: one writer at a time, and snapshots that readers never wait for.

The instant semantics node (and later the mapper node) owns one :class:`MapSession`. Its
integration worker is the only caller of :meth:`MapSession.integrate` and
:meth:`MapSession.refresh`; service threads call ``save``/``load``/``reset``/``export_mesh``,
which take the same write lock, and the read-only answers (``list_instances``, queries) come
from the latest :class:`MapSnapshot`, so a planner's query is never queued behind a frame
being integrated. The snapshot is refreshed between frames, at the node's output rate and
right after a load or reset; answers are "as of the last refresh" (its stamp says when).

ROS-free. Owns: the map object's lifetime (create, reset, load), the write lock, snapshots,
mesh export. Does not own: how a map integrates (``core/mapping``), text matching
(``core/query``), or messages (``panoptic_mapper.nodes.planner_api`` / ``map_outputs``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io.ply import COLOR_MODES, write_ply
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import normalize_phrase
from panoptic_mapper.core.mapping.base import IntegrationReport, PanopticMap
from panoptic_mapper.core.query.engine import QueryEngine, QueryResult
from panoptic_mapper.core.types import (MapInstance, PanopticMesh, PanopticSegmentation2D,
                                        RgbdFrame)


@dataclass(frozen=True)
class MapSnapshot:
    """The map's products at one moment (immutable; replaced as a whole on refresh)."""

    version: int
    """Increases with every refresh that found the map changed."""
    stamp_ns: int
    """Stamp of the last frame integrated before the refresh (0 = none yet)."""
    mesh: PanopticMesh
    mesh_version: int
    """Increases whenever the mesh changes (outputs built from the mesh compare it)."""
    instances: tuple[MapInstance, ...]
    """Thing instances and stuff regions, by id."""
    num_frames: int
    """Frames integrated since the map was created, reset or loaded."""
    refresh_ms: float = 0.0
    """Time the refresh took (mesh update + instance table)."""


@dataclass
class ExportResult:
    """What :meth:`MapSession.export_mesh` wrote."""

    path: Path
    num_vertices: int
    num_triangles: int


@dataclass
class SessionStats:
    """Counters of a session since it was created."""

    frames_accepted: int = 0
    frames_rejected: int = 0
    integrate_ms_total: float = 0.0
    last_reject_reason: str = ""
    resets: int = 0
    loads: int = 0
    saves: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class MapSession:
    """Owns a :class:`PanopticMap` for a node (see the module docstring)."""

    def __init__(self, map_factory: Callable[[], PanopticMap], registry: LabelRegistry,
                 query_engine: QueryEngine | None = None):
        """Args:
            map_factory: builds an empty map (called now, and again on :meth:`reset`).
            registry: the label registry of the map (for colours and label filters).
            query_engine: answers :meth:`query_objects`; its instance table is replaced at
                every refresh (None: queries fail with a message saying so).
        """
        self._factory = map_factory
        self.registry = registry
        self._query_engine = query_engine
        self.query_table_error = ""
        """Why the last refresh could not update the query engine's table ("" = it did)."""
        self._write_lock = threading.Lock()
        self._map = map_factory()
        self._dirty = True
        self._last_stamp_ns = 0
        self._frames = 0
        self._snapshot = MapSnapshot(0, 0, PanopticMesh.empty(), 0, (), 0)
        self.stats = SessionStats()

    @property
    def snapshot(self) -> MapSnapshot:
        """The latest snapshot (never blocks)."""
        return self._snapshot

    @property
    def last_frame_stamp_ns(self) -> int:
        """Stamp of the newest frame integrated so far (0 = none); ahead of the snapshot's."""
        return self._last_stamp_ns

    @property
    def map(self) -> PanopticMap:
        """The live map; hold no reference across a reset or load."""
        return self._map

    # ---- writer side ---------------------------------------------------------------------------
    def integrate(self, frame: RgbdFrame,
                  segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Fuse one frame (the worker thread only)."""
        with self._write_lock:
            start = time.perf_counter()
            report = self._map.integrate_frame(frame, segmentation)
            self.stats.integrate_ms_total += (time.perf_counter() - start) * 1e3
            if report.accepted:
                self.stats.frames_accepted += 1
                self._frames += 1
                self._last_stamp_ns = max(self._last_stamp_ns, frame.stamp_ns)
                self._dirty = True
            else:
                self.stats.frames_rejected += 1
                self.stats.last_reject_reason = report.reason
            return report

    def refresh(self, force: bool = False) -> MapSnapshot | None:
        """Update the mesh and instance table if the map changed; returns the new snapshot, or
        None when nothing changed (and ``force`` is False)."""
        with self._write_lock:
            if not (self._dirty or force):
                return None
            start = time.perf_counter()
            update = self._map.update_mesh()
            mesh = self._map.get_mesh()
            instances = tuple(self._map.get_instances())
            self._update_query_table(instances)
            previous = self._snapshot
            mesh_changed = update.changed or mesh is not previous.mesh
            self._snapshot = MapSnapshot(
                version=previous.version + 1, stamp_ns=self._last_stamp_ns, mesh=mesh,
                mesh_version=previous.mesh_version + int(mesh_changed),
                instances=instances, num_frames=self._frames,
                refresh_ms=(time.perf_counter() - start) * 1e3)
            self._dirty = False
            return self._snapshot

    def _update_query_table(self, instances: tuple[MapInstance, ...]) -> None:
        if self._query_engine is None:
            return
        try:
            self._query_engine.update_instances(instances)
            self.query_table_error = ""
        except InvalidInputError as exc:  # the engine keeps its previous table
            self.query_table_error = str(exc)

    def reset(self) -> None:
        """Replace the map with an empty one and publish an empty snapshot."""
        with self._write_lock:
            self._map = self._factory()
            self._frames = 0
            self._last_stamp_ns = 0
            self._dirty = True
            self.stats.resets += 1
        self.refresh(force=True)

    def save(self, path: str | Path) -> Path:
        """Write the full map state to ``path`` (parent folders created)."""
        path = _output_path(path, "path")
        with self._write_lock:
            self._map.save(path)
            self.stats.saves += 1
        return path

    def load(self, path: str | Path) -> None:
        """Replace the map state with one written by :meth:`save`; the current state is kept
        when the file is rejected (the map's ``load`` raises before changing anything)."""
        path = Path(path).expanduser()
        with self._write_lock:
            self._map.load(path)
            self._frames = getattr(self._map, "num_frames", 0)
            self._dirty = True
            self.stats.loads += 1
        self.refresh(force=True)

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
        path = _output_path(path, "path")
        if path.suffix.lower() != ".ply":
            raise InvalidInputError("path", str(path), "must end in .ply", kind="request")
        mesh = self._snapshot.mesh
        written = write_ply(path, mesh, color_mode=color_mode, registry=self.registry)
        return ExportResult(written, mesh.num_vertices, mesh.num_triangles)


def _output_path(path: str | Path, field_name: str) -> Path:
    text = str(path).strip()
    if not text:
        raise InvalidInputError(field_name, text, "an output path is required", kind="request")
    out = Path(text).expanduser()
    if out.exists() and out.is_dir():
        raise InvalidInputError(field_name, text, "is a directory; give a file name",
                                kind="request")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
