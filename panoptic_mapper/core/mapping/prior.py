"""What a derived layer reads of the map below it: the prior's products as one snapshot.

The refined layer (``refined_layer.py``) derives from a prior map as nvblox derives its mesh and
ESDF layers from the TSDF: it never integrates a frame itself, it reads the prior's mesh (with
vertex labels and instance ids) and instance table, and asks the prior for labels at points
where its own field is unsure. :class:`PriorSource` is that read interface; the sources are

* :class:`MapPrior` (here): a ``PanopticMap`` the caller integrates into (the stand-alone
  ``"refined"`` map owns an instant map; tests use stand-ins);
* ``runtime.prior_sources.SessionPrior``: the instant map of a co-located node, read through the
  snapshots its refresh worker publishes (no lock shared with integration);
* ``runtime.prior_sources.ReceivedPrior``: a prior received over DDS (mesh and instance table
  published by an instant node on another machine).

A source is also where the prior's part of a saved map comes from and goes to (one file holds
the whole state): :meth:`PriorSource.save_prior` / :meth:`PriorSource.load_prior`.

Owns: :class:`PriorSnapshot`, :class:`PriorSource`, :class:`MapPrior`.
"""
from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from panoptic_mapper.core.mapping.base import PanopticMap
from panoptic_mapper.core.types import MapInstance, PanopticMesh


@dataclass(frozen=True)
class PriorSnapshot:
    """The prior's products at one moment (immutable)."""

    version: int
    """Increases whenever the mesh or the instances may have changed (0 = nothing yet)."""
    mesh: PanopticMesh
    """Surface mesh with per-vertex label and instance ids."""
    instances: tuple[MapInstance, ...]
    """Thing instances and stuff regions, by id."""
    num_frames: int = 0
    """Frames integrated into the prior when the snapshot was taken."""
    stamp_ns: int = 0
    """Stamp of the newest frame in the snapshot (0 = unknown)."""


@runtime_checkable
class PriorSource(Protocol):
    """Read access to a prior map, plus its part of a saved map file."""

    kind: str
    """What :meth:`save_prior` writes: ``"instant"`` (an instant map's own save file) or
    ``"received"`` (a mesh and instance table)."""

    def get_prior_snapshot(self) -> PriorSnapshot:
        """The newest products (may trigger the prior's mesh update for a :class:`MapPrior`)."""

    def query_prior_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label ids [N], instance ids [N]) at world points [N, 3]; 0 where unknown."""

    def save_prior(self, path: Path) -> None:
        """Write the prior's state to ``path`` (format per :attr:`kind`)."""

    def load_prior(self, path: Path, kind: str) -> None:
        """Replace the prior's state with a file written by :meth:`save_prior` of a source of
        ``kind``; raises ``DataFormatError`` (prior unchanged) when it cannot."""

    def reset_prior(self) -> None:
        """Empty the prior (a reset of the whole map)."""

    def finalize_prior(self) -> None:
        """End of sequence for the prior (a no-op where the prior is not ours)."""


class MapPrior:
    """A :class:`PriorSource` over a ``PanopticMap`` object (its owner integrates into it).

    ``get_prior_snapshot`` brings the map's mesh up to date first; the version increases when
    the mesh changed or a different mesh object is served.
    """

    kind = "instant"

    def __init__(self, prior_map: PanopticMap):
        self.map = prior_map
        self._lock = threading.Lock()
        self._snapshot = PriorSnapshot(0, PanopticMesh.empty(), ())

    def get_prior_snapshot(self) -> PriorSnapshot:
        with self._lock:
            update = self.map.update_mesh()
            mesh = self.map.get_mesh()
            instances = tuple(self.map.get_instances())
            previous = self._snapshot
            # The instance table changes with the map's state, and so does the mesh (its labels):
            # the mesh alone decides the version; the table rides along.
            changed = update.changed or mesh is not previous.mesh
            frames = int(getattr(self.map, "num_frames", 0))
            self._snapshot = PriorSnapshot(previous.version + int(changed), mesh, instances,
                                           frames)
            return self._snapshot

    def query_prior_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.map.query_labels(points_m)

    def save_prior(self, path: Path) -> None:
        self.map.save(path)

    def load_prior(self, path: Path, kind: str) -> None:
        from panoptic_mapper.core.errors import DataFormatError

        if kind != self.kind:
            raise DataFormatError("prior_kind", kind,
                                  f"the file's prior is a '{kind}' snapshot, not an instant map "
                                  "this map could continue integrating into", kind="map_file")
        self.map.load(path)

    def reset_prior(self) -> None:
        reset = getattr(self.map, "reset", None)
        if reset is not None:
            reset()

    def finalize_prior(self) -> None:
        self.map.finalize()

    def prior_bytes(self) -> bytes:
        """The prior's save file as bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prior.npz"
            self.save_prior(path)
            return path.read_bytes()

