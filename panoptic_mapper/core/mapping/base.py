"""The contract every panoptic map implementation fulfils, and the registry of named methods.

The evaluator (``panoptic-mapper eval``), the ROS nodes and the benchmarks only talk to maps through
:class:`PanopticMap`, so the instant map, the refined (neural) map and the baselines are
interchangeable and can run side by side in one evaluation.

Owns: the protocol, :class:`IntegrationReport`, and ``create_map`` (method name -> instance).
Does not own: any mapping algorithm.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame)


@dataclass
class IntegrationReport:
    """What ``integrate_frame`` did with one frame."""

    accepted: bool
    """False when the frame was rejected (the map is unchanged)."""
    reason: str = ""
    """Why it was rejected, or warnings (e.g. unknown labels that were skipped)."""
    warnings: list[str] = field(default_factory=list)
    """Non-fatal problems, each a short sentence naming the field and value."""
    stats: dict[str, float] = field(default_factory=dict)
    """Per-frame numbers for logs and benchmarks (timings in ms, counts)."""
    instance_votes: np.ndarray | None = None
    """[M, 3] int64 (frame segment id, map instance id as stored, samples) the frame's thing
    pixels voted for; None for maps without instance tracking (kept for loop corrections)."""


@dataclass
class MeshUpdate:
    """What ``update_mesh`` changed."""

    changed: bool
    """True when the mesh differs from the previous ``update_mesh`` call."""
    changed_block_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    """[B, 3] voxel-block indices whose mesh changed (empty when not tracked)."""
    num_vertices: int = 0
    num_triangles: int = 0


@runtime_checkable
class PanopticMap(Protocol):
    """A panoptic 3D map built from posed RGB-D frames and 2D panoptic segmentations."""

    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Fuse one frame (and its 2D segmentation, if any). Never raises on bad input:
        rejected frames are reported with ``accepted=False`` and leave the map unchanged."""

    def update_mesh(self) -> MeshUpdate:
        """Recompute the mesh where the map changed; returns what changed."""

    def get_mesh(self) -> PanopticMesh:
        """The current mesh (as of the last ``update_mesh``), read-only."""

    def get_instances(self) -> list[MapInstance]:
        """The current instances (things and stuff regions), read-only."""

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label and instance ids at world points [N, 3] (0 where unknown), read-only."""

    def render_labels(self, T_world_cam: np.ndarray, intrinsics: CameraIntrinsics) -> LabelRender:
        """What the map predicts for each pixel of a camera, read-only."""

    def finalize(self) -> None:
        """Finish pending work (e.g. train the refined field to convergence). May be a no-op."""

    def save(self, path: str | Path) -> None:
        """Write the full map state so that ``load`` restores it losslessly."""

    def load(self, path: str | Path) -> None:
        """Replace the map state with one written by ``save``."""


# Method name -> "module:Class". Each class provides
#   ``from_config(config: dict | None, registry: LabelRegistry) -> PanopticMap``.
MAP_METHODS: dict[str, str] = {
    "instant": "panoptic_mapper.core.mapping.instant_map:InstantPanopticMap",
    "per_frame": "panoptic_mapper.core.mapping.baselines:PerFrameLiftingMap",
    "components": "panoptic_mapper.core.mapping.baselines:ConnectedComponentsMap",
    # The refined map runs through the runtime, as the mapper node runs it (background training
    # in chunks beside the stream): an evaluation measures what is deployed. The stand-alone
    # ``core.mapping.refined_map.RefinedPanopticMap`` is for library use.
    "refined": "panoptic_mapper.runtime.streamed_refined:StreamedRefinedMap",
}


def create_map(method: str, registry: LabelRegistry,
               config: dict[str, Any] | None = None) -> PanopticMap:
    """Instantiate a map method by name (see :data:`MAP_METHODS`)."""
    if method not in MAP_METHODS:
        raise ConfigError("method", method, f"unknown map method; known: {sorted(MAP_METHODS)}")
    module_name, class_name = MAP_METHODS[method].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(config, registry)
