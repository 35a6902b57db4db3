"""The map a node integrates into: one writer, a refresh beside it, snapshots readers never wait
for.

The instant semantics node owns one :class:`MapSession`. Its integration worker is the only
caller of :meth:`MapSession.integrate` (and integrating is all it does); a refresh worker calls
:meth:`MapSession.refresh` beside it, which brings the mesh and the instance table up to date
on the map's own snapshots (``InstantPanopticMap`` meshes only changed blocks, off its lock) and
publishes a new :class:`MapSnapshot`, so a refresh never blocks integration. ``save``, ``load``
and ``reset`` take the write lock (they wait for the frame being integrated). Readers
(``list_instances``, queries, the map topics, a derived layer) only read snapshots.

Layers derived from this map (the refined layer of a co-located mapper node) register a frame
listener: every accepted frame is offered to them once, after it was integrated, and they read
the map's products from the snapshots, so nothing integrates a frame twice.

ROS-free. Owns: the map object's lifetime (create, reset, load), the write lock, snapshots,
frame listeners. Does not own: how a map integrates (``core/mapping``), text matching
(``core/query``), or messages (``nodes/planner_api.py`` / ``nodes/map_outputs.py``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, PanopticMap
from panoptic_mapper.core.mapping.frame_store import FrameStore
from panoptic_mapper.core.query.engine import QueryEngine
from panoptic_mapper.core.types import PanopticSegmentation2D, RgbdFrame
from panoptic_mapper.runtime.served_map import (ExportResult, MapSnapshot, ServedMap,
                                                output_path)

__all__ = ["ExportResult", "FrameListener", "MapSession", "MapSnapshot", "SessionStats"]

FrameListener = Callable[[RgbdFrame, PanopticSegmentation2D | None], None]
"""Called with every frame the map accepted, right after it was integrated."""
CorrectionListener = Callable[[dict[int, np.ndarray]], None]
"""Called after a loop correction with ``{stamp_ns: corrected T_world_cam}`` of the frames it
moved (``runtime/map_corrections``)."""


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


class MapSession(ServedMap):
    """Owns a :class:`PanopticMap` for a node (see the module docstring).

    Args:
        map_factory: builds an empty map (called now, and again on :meth:`reset`).
        registry: the label registry of the map.
        query_engine: answers ``query_objects`` from the snapshots (None: queries fail).
        frame_store: keeps the fused frames for loop corrections (``runtime/map_corrections``;
            None: none kept).
    """

    def __init__(self, map_factory: Callable[[], PanopticMap], registry: LabelRegistry,
                 query_engine: QueryEngine | None = None,
                 frame_store: FrameStore | None = None):
        super().__init__(registry, query_engine)
        self._factory = map_factory
        self.frame_store = frame_store
        self.frames_from_file = False
        """The map holds frames loaded from a file (not in the frame store)."""
        self._write_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._map = map_factory()
        self._generation = 0
        """Increases on reset and load: a refresh that began before must not publish."""
        self._dirty = True
        self._last_stamp_ns = 0
        self._frames = 0
        self._listeners: list[FrameListener] = []
        self._correction_listeners: list[CorrectionListener] = []
        self.stats = SessionStats()

    @property
    def last_frame_stamp_ns(self) -> int:
        """Stamp of the newest frame integrated so far (0 = none); ahead of the snapshot's."""
        return self._last_stamp_ns

    @property
    def num_frames(self) -> int:
        """Frames integrated since the map was created, reset or loaded."""
        return self._frames

    @property
    def map(self) -> PanopticMap:
        """The live map; hold no reference across a reset or load."""
        return self._map

    @property
    def write_lock(self) -> threading.Lock:
        """Held while a frame is integrated and during save, load and reset (a derived layer
        that saves or loads the whole state takes it too)."""
        return self._write_lock

    def add_frame_listener(self, listener: FrameListener) -> None:
        """Offer every accepted frame to ``listener`` after its integration (see the module
        docstring); a listener that raises is removed from nothing: it must not raise."""
        self._listeners.append(listener)

    def remove_frame_listener(self, listener: FrameListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_correction_listener(self, listener: CorrectionListener) -> None:
        """Tell ``listener`` the corrected poses after every loop correction (a derived layer
        moves its own copies of the frames)."""
        self._correction_listeners.append(listener)

    def remove_correction_listener(self, listener: CorrectionListener) -> None:
        if listener in self._correction_listeners:
            self._correction_listeners.remove(listener)

    def notify_poses_corrected(self, moved: dict[int, np.ndarray]) -> None:
        """Called by the corrector after it swapped a rebuilt map in."""
        for listener in list(self._correction_listeners):
            listener(moved)

    # ---- writer side ---------------------------------------------------------------------------
    def integrate(self, frame: RgbdFrame,
                  segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Fuse one frame (the integration worker only), then offer it to the listeners."""
        with self._write_lock:
            start = time.perf_counter()
            report = self._map.integrate_frame(frame, segmentation)
            self.stats.integrate_ms_total += (time.perf_counter() - start) * 1e3
            if report.accepted:
                self.stats.frames_accepted += 1
                self._frames += 1
                self._last_stamp_ns = max(self._last_stamp_ns, frame.stamp_ns)
                self._dirty = True
                if self.frame_store is not None:
                    self.frame_store.add(frame, segmentation, report.instance_votes)
            else:
                self.stats.frames_rejected += 1
                self.stats.last_reject_reason = report.reason
        if report.accepted:
            for listener in list(self._listeners):
                listener(frame, segmentation)
        return report

    def refresh(self, force: bool = False) -> MapSnapshot | None:
        """Bring the mesh and instance table up to date if the map changed and publish them as
        a new snapshot; None when nothing changed (and ``force`` is False). Runs beside
        integration (never takes the write lock); one refresh at a time."""
        with self._refresh_lock:
            if not (self._dirty or force):
                return None
            generation, the_map = self._generation, self._map
            # Read before the update: it covers at least every frame integrated until now.
            self._dirty = False
            stamp_ns, frames = self._last_stamp_ns, self._frames
            start = time.perf_counter()
            update = the_map.update_mesh()
            mesh = the_map.get_mesh()
            instances = tuple(the_map.get_instances())
            if generation != self._generation:  # reset or loaded meanwhile: the next refresh
                self._dirty = True
                return None
            return self._serve(mesh, instances, stamp_ns, frames, update.changed,
                               (time.perf_counter() - start) * 1e3)

    def new_map(self) -> PanopticMap:
        """An empty map like the live one (to rebuild into)."""
        return self._factory()

    def swap_map(self, rebuilt: PanopticMap) -> None:
        """Serve ``rebuilt`` (holding the same frames) instead of the live map; the caller
        holds the write lock (``runtime/map_corrections``)."""
        self._map = rebuilt
        self._generation += 1
        self._dirty = True

    def reset(self) -> None:
        """Replace the map with an empty one and publish an empty snapshot."""
        with self._write_lock:
            self._map = self._factory()
            self.frames_from_file = False
            if self.frame_store is not None:
                self.frame_store.reset()
            self._generation += 1
            self._frames = 0
            self._last_stamp_ns = 0
            self._dirty = True
            self.stats.resets += 1
        self.refresh(force=True)

    def save(self, path: str | Path) -> Path:
        """Write the full map state to ``path`` (parent folders created)."""
        path = output_path(path, "path")
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
            self.frames_from_file = True
            if self.frame_store is not None:
                self.frame_store.reset()
            self._generation += 1
            self._frames = int(getattr(self._map, "num_frames", 0))
            self._last_stamp_ns = int(getattr(self._map, "last_frame_stamp_ns", 0))
            self._dirty = True
            self.stats.loads += 1
        self.refresh(force=True)
