"""Configuration of the mapper_node (the refined layer as a node): its root config, where its
prior comes from, and the settings of its background training worker.

ROS-free on purpose (the YAML generator, the launcher and tests import it without rclpy). The
node shares the output and planner API settings with the instant semantics node (the shared
pieces of ``node_config``), takes the input stream only when its prior comes over topics, and
the refined layer's own config under ``map``.

Owns: :class:`TrainingWorkerConfig`, :class:`PriorConfig`, :class:`MapperNodeConfig`.
Does not own: the refined layer's settings (``core/mapping/refined_config.py``) or the shared
node pieces (``runtime/node_config.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.mapping.input_checks import InputChecksConfig
from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig
from panoptic_mapper.core.query.engine import QueryConfig
from panoptic_mapper.runtime.node_config import (InstantInputConfig, MapOutputConfig,
                                                PlannerApiConfig)
from panoptic_mapper.runtime.sync import SyncConfig


@dataclass
class TrainingWorkerConfig(ConfigBase):
    """How the mapper node trains the neural field in the background."""

    REMOVED_SETTINGS = {"torch_threads": "torch's thread count is the process's: the node's "
                        "torch_threads"}

    autostart: bool = True
    """Train as soon as ``map.min_keyframes`` keyframes are stored; false = wait for a START
    on the ``~/training_control`` service."""
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
    pause_backlog_frames: int = 3
    """While this many frames (or more) wait for integration, the stream is faster than
    integration: training pauses until the backlog is down (0 = only ``max_share``)."""
    relabel_period_s: float = 10.0
    """Once the field is ready, the published map (mesh labels, instances, query table) is
    relabelled with the current field at most this often while training goes on, seconds
    (relabelling a 140k-vertex mesh takes about 2 s on one CPU thread)."""
    log_period_s: float = 10.0
    """Period of the training progress line in the log, seconds."""

    def validate(self) -> None:
        require(0.01 <= self.chunk_max_s <= 60.0, "chunk_max_s", self.chunk_max_s,
                "must be in [0.01, 60] seconds")
        require(self.chunk_steps >= 1, "chunk_steps", self.chunk_steps, "must be >= 1")
        require(0.0 < self.max_share <= 1.0, "max_share", self.max_share, "must be in (0, 1]")
        require(self.pause_backlog_frames >= 0, "pause_backlog_frames",
                self.pause_backlog_frames, "must be >= 0")
        require(self.relabel_period_s > 0, "relabel_period_s", self.relabel_period_s,
                "must be > 0")
        require(self.log_period_s > 0, "log_period_s", self.log_period_s, "must be > 0")


@dataclass
class PriorConfig(ConfigBase):
    """Where the mapper node's refined layer gets its prior (the instant map) from."""

    source: Literal["auto", "colocated", "topics"] = "auto"
    """colocated: the instant semantics node running in this process (its map is shared, the
    stream is integrated once; what ``panoptic-mapper launch`` and the launch file do when both
    nodes run on one machine); topics: the mesh and instance table an instant node publishes
    (a mapper on another machine, e.g. a GPU host; keyframes then come from the sensor topics
    under ``input``); auto: colocated when that node runs in this process, else topics."""
    instant_node: str = "instant_semantics_node"
    """Name of the instant semantics node whose map is the prior."""
    mesh_topic: str = "/instant_semantics_node/mesh"
    """topics: the instant node's PanopticMesh (latched)."""
    instance_table_topic: str = "/instant_semantics_node/instance_table"
    """topics: the instant node's MapInstanceArray (latched)."""
    max_label_distance_m: float = 0.05
    """topics: a point takes the label of the nearest received mesh vertex within this
    distance (where the field is unsure), metres."""
    input_checks: InputChecksConfig = field(default_factory=InputChecksConfig)
    """topics: checks a frame must pass to become a keyframe (the instant node's own checks
    are not visible over DDS)."""

    def validate(self) -> None:
        require(bool(self.instant_node), "instant_node", self.instant_node, "must not be empty")
        for name in ("mesh_topic", "instance_table_topic"):
            value = getattr(self, name)
            require(value.startswith("/") and " " not in value, name, value,
                    "must be an absolute topic name")
        require(self.max_label_distance_m > 0, "max_label_distance_m",
                self.max_label_distance_m, "must be > 0")


@dataclass
class MapperNodeConfig(ConfigBase):
    """The mapper node: the refined (PanopticRecon++) panoptic map, derived from the instant
    map."""

    label_file: str = ""
    """Label registry YAML (config/labels/*.yaml); empty = the shipped default registry."""
    map_frame: str = "map"
    """Frame of the map and of every output; input poses must be expressed in it."""
    autostart: bool = True
    """Configure and activate at start-up (lifecycle); false = wait for a lifecycle manager."""
    torch_threads: int = 1
    """torch CPU threads of the whole process (field training and queries, the query
    engine's text model), set when the node is configured, so that integration keeps its
    frame rate on a shared CPU; 0 = torch's default (all cores)."""
    save_on_shutdown_path: str = ""
    """Save the whole map (the prior's part, keyframes, field checkpoint) here when the node
    shuts down, e.g. on Ctrl-C; empty = do not save."""
    load_on_start_path: str = ""
    """Load this saved map (save_map format; with a co-located prior it also restores the
    instant map) when the node is configured, so that a relaunched graph resumes with the same
    instance ids and field; empty = start empty. A file that cannot be loaded fails the
    configuration with the reason."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Where the prior comes from."""
    queue_size: int = 8
    """topics: frames waiting to be offered as keyframes; when full the oldest is dropped."""
    input: InstantInputConfig = field(default_factory=InstantInputConfig)
    """topics: the sensor stream keyframes are taken from (the instant node's input)."""
    sync: SyncConfig = field(default_factory=SyncConfig)
    """topics: stamp matching of rgb, depth, segmentation, pose and camera_info."""
    output: MapOutputConfig = field(default_factory=MapOutputConfig)
    """Published map products (PanopticMesh.source = "refined")."""
    planner_api: PlannerApiConfig = field(default_factory=PlannerApiConfig)
    """The planner-facing services and topics (the launch plan sets ``serve``)."""
    diagnostics_period_s: float = 2.0
    """Period of the diagnostics (keyframes, timings, training progress), seconds."""
    training: TrainingWorkerConfig = field(default_factory=TrainingWorkerConfig)
    """The background training worker."""
    map: RefinedLayerConfig = field(default_factory=RefinedLayerConfig)
    """The refined layer (core/mapping/refined_layer.py): keyframes, field training, scene box,
    publishing over the prior."""
    query: QueryConfig = field(default_factory=QueryConfig)
    """Free-text queries of the query_objects service (core/query/engine.py)."""

    def validate(self) -> None:
        require(1 <= self.queue_size <= 100, "queue_size", self.queue_size, "must be in 1..100")
        require(bool(self.map_frame), "map_frame", self.map_frame, "must not be empty")
        require(self.diagnostics_period_s > 0, "diagnostics_period_s", self.diagnostics_period_s,
                "must be > 0")
        require(0 <= self.torch_threads <= 256, "torch_threads", self.torch_threads,
                "must be in 0..256")
