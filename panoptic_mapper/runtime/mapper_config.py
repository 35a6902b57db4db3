"""Configuration of the mapper_node (the refined map as a node): its root config and the
settings of its background training worker.

ROS-free on purpose (the YAML generator, the launcher and tests import it without rclpy). The
node takes the same input stream, outputs and planner API settings as the instant semantics
node (the shared pieces of ``node_config``), and the refined map's own config under ``map``.

Owns: :class:`TrainingWorkerConfig`, :class:`MapperNodeConfig`.
Does not own: the refined map's settings (``core/mapping/refined_map.py``) or the shared node
pieces (``runtime/node_config.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig
from panoptic_mapper.core.query.engine import QueryConfig
from panoptic_mapper.runtime.node_config import (InstantInputConfig, MapOutputConfig,
                                             PlannerApiConfig)
from panoptic_mapper.runtime.sync import SyncConfig


@dataclass
class TrainingWorkerConfig(ConfigBase):
    """How the mapper node trains the neural field in the background."""

    autostart: bool = True
    """Train as soon as ``map.min_keyframes`` keyframes are stored; false = wait for a START
    on the ``~/training_control`` service."""
    torch_threads: int = 1
    """torch CPU threads of the node process (training and field queries), so that the
    instant semantics node keeps its frame rate on a shared CPU; 0 = torch's default (all
    cores)."""
    chunk_max_s: float = 0.25
    """Wall time of one training chunk, seconds (a chunk ends after the step running at this
    time). The map is locked while a chunk trains, so this bounds how long a frame or a
    save/load/reset call waits for the trainer."""
    chunk_steps: int = 20
    """Most training steps per chunk."""
    max_share: float = 0.25
    """While frames wait for integration, training takes at most this share of the time (it
    pauses after each chunk until the frames are integrated or its share is restored); without
    frames it trains all the time. 0.25 kept the node's prior about as complete as the instant
    node's map on 7-Scenes at 7.5 Hz on a loaded 2-core CPU (BENCHMARKS.md)."""
    relabel_period_s: float = 10.0
    """Once the field is ready, the published map (mesh labels, instances, query table) is
    relabelled with the current field at most this often while training goes on, seconds
    (relabelling a 140k-vertex mesh takes about 2 s on one CPU thread)."""
    log_period_s: float = 10.0
    """Period of the training progress line in the log, seconds."""

    def validate(self) -> None:
        require(0 <= self.torch_threads <= 256, "torch_threads", self.torch_threads,
                "must be in 0..256")
        require(0.01 <= self.chunk_max_s <= 60.0, "chunk_max_s", self.chunk_max_s,
                "must be in [0.01, 60] seconds")
        require(self.chunk_steps >= 1, "chunk_steps", self.chunk_steps, "must be >= 1")
        require(0.0 < self.max_share <= 1.0, "max_share", self.max_share, "must be in (0, 1]")
        require(self.relabel_period_s > 0, "relabel_period_s", self.relabel_period_s,
                "must be > 0")
        require(self.log_period_s > 0, "log_period_s", self.log_period_s, "must be > 0")


@dataclass
class MapperNodeConfig(ConfigBase):
    """The mapper node: frames in, the refined (PanopticRecon++) panoptic map out."""

    label_file: str = ""
    """Label registry YAML (config/labels/*.yaml); empty = the shipped default registry."""
    map_frame: str = "map"
    """Frame of the map and of every output; input poses must be expressed in it."""
    autostart: bool = True
    """Configure and activate at start-up (lifecycle); false = wait for a lifecycle manager."""
    save_on_shutdown_path: str = ""
    """Save the map (with the field checkpoint) here when the node shuts down, e.g. on
    Ctrl-C; empty = do not save."""
    queue_size: int = 8
    """Frames waiting for the integration worker; when full the oldest is dropped (counted)."""
    input: InstantInputConfig = field(default_factory=InstantInputConfig)
    """Input topics and decoding (the same stream as the instant semantics node's)."""
    sync: SyncConfig = field(default_factory=SyncConfig)
    """Stamp matching of rgb, depth, segmentation, pose and camera_info."""
    output: MapOutputConfig = field(default_factory=MapOutputConfig)
    """Published map products (PanopticMesh.source = "refined")."""
    planner_api: PlannerApiConfig = field(default_factory=PlannerApiConfig)
    """The planner-facing services and topics (the launch plan sets ``serve``)."""
    diagnostics_period_s: float = 2.0
    """Period of the diagnostics (input counters, timings, training progress), seconds."""
    training: TrainingWorkerConfig = field(default_factory=TrainingWorkerConfig)
    """The background training worker."""
    map: RefinedMapConfig = field(default_factory=RefinedMapConfig)
    """The refined map (core/mapping/refined_map.py): its prior instant map, keyframes and
    field training."""
    query: QueryConfig = field(default_factory=QueryConfig)
    """Free-text queries of the query_objects service (core/query/engine.py)."""

    def validate(self) -> None:
        require(1 <= self.queue_size <= 100, "queue_size", self.queue_size, "must be in 1..100")
        require(bool(self.map_frame), "map_frame", self.map_frame, "must not be empty")
        require(self.diagnostics_period_s > 0, "diagnostics_period_s", self.diagnostics_period_s,
                "must be > 0")
