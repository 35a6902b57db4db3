"""The node set of the mapping graph, and its launch arguments: one table for both launchers.

``launch/mapper.launch.py`` (launch_ros, on a ROS 2 install) and ``panoptic-mapper launch``
(subprocesses, in the pip environment, where launch_ros does not exist) both declare
:data:`LAUNCH_ARGUMENTS` and start the nodes :func:`plan` returns, with the same parameter
file and the same per-node overrides, so the two cannot drift apart.

Processes: the instant semantics node and the mapper node run in one process
(``mapping_process``) when both start here (``colocate_mapper``, default true): the mapper then
derives its refined layer from the instant node's map in memory, so the stream is integrated
once (``runtime/shared_maps.py``). Otherwise every node is a process of its own, and a mapper
takes its prior from the instant node's topics.

The "one endpoint for planners" rule lives here: at most one started node gets
``planner_api.serve: true``: with ``api_server:=auto`` the mapper node when it runs here, else
the instant semantics node. When the mapper runs on another machine (a GPU host, over DDS), the
robot's launch says ``with_mapper:=false api_server:=mapper`` so that its instant node does not
serve, and the GPU host's launch starts the mapper alone (``with_segmenter:=false
with_instant:=false``).

:func:`node_parameters` / :func:`node_config` give a planned node's effective parameters the
way rcl resolves them (the parameter file's sections matching the node, then the overrides), so
that tools around the graph (the bag player of ``panoptic-mapper launch``) see the topics and
backends the nodes will use, not the defaults.

ROS-free and free of launch imports. Owns: which nodes exist, how launch arguments map to
node parameters, reading a planned node's effective parameters. Does not own: the parameters'
defaults (``config/mapper.yaml``).
"""
from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from panoptic_mapper.core.config import ConfigBase
from panoptic_mapper.core.errors import ConfigError, DataFormatError

PACKAGE = "panoptic_mapper"


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument (``ros2 launch ... name:=value``; ``--arg name:=value`` for pip)."""

    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph."""

    key: str
    """Short name used by ``--nodes`` and the ``with_<key>`` launch arguments."""
    executable: str
    """Console script (pip) and ``lib/panoptic_mapper`` executable (ROS install)."""
    name: str
    """Node name; also its section in the parameter file."""
    module: str
    """Python module whose ``main()`` runs the node."""
    default_enabled: bool
    config_class: str
    """``module:Class`` of the node's root config dataclass ("" when not available yet)."""
    topic_parameters: dict[str, str] = field(default_factory=dict)
    """Launch argument -> the node parameter it sets (topic names, frames)."""


PARAMS_FILE_ARG = "params_file"

LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(PARAMS_FILE_ARG, "",
                   "ROS parameter file of all nodes; empty = the package's config/mapper.yaml"),
    LaunchArgument("label_file", "",
                   "Label registry YAML for all nodes; empty = as in the parameter file "
                   "(default: the shipped config/labels/default.yaml)"),
    LaunchArgument("use_sim_time", "false",
                   "Use /clock time; a bag player must then publish /clock (panoptic-mapper "
                   "launch --bag does; panoptic-mapper play and ros2 bag play need --clock)"),
    LaunchArgument("with_segmenter", "true", "Start segmenter_node"),
    LaunchArgument("with_instant", "true", "Start instant_semantics_node"),
    LaunchArgument("with_mapper", "true",
                   "Start mapper_node (refined map); false = instant map only"),
    LaunchArgument("colocate_mapper", "true",
                   "Run instant_semantics_node and mapper_node in one process when both start: "
                   "the mapper derives its refined map from the instant map in memory (the "
                   "stream is integrated once); false = separate processes, the mapper takes "
                   "its prior from the instant node's mesh and instance_table topics"),
    LaunchArgument("api_server", "auto",
                   "Node that serves the planner API under /panoptic_mapper: auto (mapper_node "
                   "when started here, else instant_semantics_node), instant, or mapper (also "
                   "when mapper_node runs on another machine: the local instant node then does "
                   "not serve)"),
    LaunchArgument("segmenter_backend", "",
                   "replay, emulator, grounded_sam or detector; empty = as in the parameter "
                   "file"),
    LaunchArgument("map_frame", "", "Map frame of poses and outputs; empty = as in the "
                   "parameter file (map)"),
    LaunchArgument("rgb_topic", "", "sensor_msgs/Image colour topic; empty = parameter file"),
    LaunchArgument("depth_topic", "", "sensor_msgs/Image depth topic; empty = parameter file"),
    LaunchArgument("camera_info_topic", "",
                   "sensor_msgs/CameraInfo topic; empty = parameter file"),
    LaunchArgument("pose_topic", "", "Camera pose topic (PoseStamped or Odometry); empty = "
                   "parameter file"),
    LaunchArgument("segmentation_topic", "",
                   "PanopticSegmentation topic between segmenter and mappers; empty = "
                   "parameter file"),
    LaunchArgument("corrections_topic", "",
                   "nav_msgs/Path of a SLAM system's optimised keyframe poses (loop "
                   "corrections, docs/slam_poses.md); empty = parameter file"),
)

NODES: tuple[NodeSpec, ...] = (
    NodeSpec("segmenter", "segmenter_node", "segmenter_node",
             "panoptic_mapper.nodes.segmenter_node", True,
             "panoptic_mapper.runtime.node_config:SegmenterNodeConfig",
             {"rgb_topic": "topics.rgb", "depth_topic": "topics.depth",
              "camera_info_topic": "topics.camera_info", "pose_topic": "topics.pose",
              "segmentation_topic": "topics.output", "segmenter_backend": "backend"}),
    NodeSpec("instant", "instant_semantics_node", "instant_semantics_node",
             "panoptic_mapper.nodes.instant_semantics_node", True,
             "panoptic_mapper.runtime.node_config:InstantSemanticsNodeConfig",
             {"rgb_topic": "input.topics.rgb", "depth_topic": "input.topics.depth",
              "camera_info_topic": "input.topics.camera_info",
              "pose_topic": "input.topics.pose",
              "segmentation_topic": "input.topics.segmentation", "map_frame": "map_frame",
              "corrections_topic": "input.topics.keyframe_corrections"}),
    NodeSpec("mapper", "mapper_node", "mapper_node", "panoptic_mapper.nodes.mapper_node", True,
             "panoptic_mapper.runtime.mapper_config:MapperNodeConfig",
             {"rgb_topic": "input.topics.rgb", "depth_topic": "input.topics.depth",
              "camera_info_topic": "input.topics.camera_info",
              "pose_topic": "input.topics.pose",
              "segmentation_topic": "input.topics.segmentation", "map_frame": "map_frame"}),
)
NODE_KEYS = tuple(spec.key for spec in NODES)
MAPPING_PROCESS = "mapping_process"
"""Name, executable and module basename of the process hosting the instant and mapper nodes."""
MAPPING_PROCESS_MODULE = "panoptic_mapper.nodes.mapping_process"
API_SERVERS = ("auto", "instant", "mapper")
"""Values of the ``api_server`` launch argument."""


@dataclass
class PlannedNode:
    """A node to start, with the overrides applied on top of the parameter file."""

    spec: NodeSpec
    params_file: str
    overrides: dict[str, Any]
    """Dotted parameter name -> value (typed: bool, str, ...)."""
    process: str = ""
    """The process that hosts the node: its own name, or :data:`MAPPING_PROCESS`."""


@dataclass
class PlannedProcess:
    """A process to start and the nodes it hosts (in start order)."""

    name: str
    executable: str
    """Console script (pip) and ``lib/panoptic_mapper`` executable (ROS install)."""
    module: str
    """Python module whose ``main()`` runs the process."""
    nodes: list[PlannedNode]

    @property
    def params_file(self) -> str:
        return self.nodes[0].params_file


def default_arguments() -> dict[str, str]:
    """Every launch argument with its default value."""
    return {arg.name: arg.default for arg in LAUNCH_ARGUMENTS}


def plan(arguments: Mapping[str, str], default_params_file: str) -> list[PlannedNode]:
    """The nodes to start for the given launch argument values (strings, as launch passes them).

    Raises:
        ConfigError: an unknown argument, a boolean argument that is not true/false, an
            unknown ``api_server``, or no node selected.
    """
    args = default_arguments()
    unknown = sorted(set(arguments) - set(args))
    if unknown:
        raise ConfigError("launch argument", unknown[0],
                          f"unknown; known: {sorted(args)}")
    args.update({k: str(v) for k, v in arguments.items()})
    enabled = {spec.key: _bool(args, f"with_{spec.key}") for spec in NODES}
    if not any(enabled.values()):
        raise ConfigError("with_*", "false", "no node selected")
    params_file = args[PARAMS_FILE_ARG] or default_params_file
    use_sim_time = _bool(args, "use_sim_time")
    server = args["api_server"].strip().lower()
    if server not in API_SERVERS:
        raise ConfigError("api_server", args["api_server"], f"must be one of {list(API_SERVERS)}")
    if server == "auto":
        server = "mapper" if enabled["mapper"] else "instant"
    colocate = _bool(args, "colocate_mapper") and enabled["instant"] and enabled["mapper"]
    planned = []
    for spec in NODES:
        if not enabled[spec.key]:
            continue
        overrides: dict[str, Any] = {"use_sim_time": use_sim_time}
        if args["label_file"]:
            overrides["label_file"] = args["label_file"]
        for argument, parameter in spec.topic_parameters.items():
            if args[argument]:
                overrides[parameter] = args[argument]
        if spec.key in ("instant", "mapper"):
            overrides["planner_api.serve"] = spec.key == server
        if spec.key == "mapper":
            overrides["prior.source"] = "colocated" if colocate else "topics"
        process = MAPPING_PROCESS if colocate and spec.key in ("instant", "mapper") \
            else spec.name
        planned.append(PlannedNode(spec, params_file, overrides, process))
    return planned


def processes(planned: list[PlannedNode]) -> list[PlannedProcess]:
    """The processes that host the planned nodes, in start order (a process starts its nodes
    in the order of :data:`NODES`: the instant node before the mapper that derives from it)."""
    out: dict[str, PlannedProcess] = {}
    for node in planned:
        if node.process == MAPPING_PROCESS:
            entry = out.setdefault(node.process, PlannedProcess(
                MAPPING_PROCESS, MAPPING_PROCESS, MAPPING_PROCESS_MODULE, []))
        else:
            entry = out.setdefault(node.process, PlannedProcess(
                node.spec.name, node.spec.executable, node.spec.module, []))
        entry.nodes.append(node)
    return list(out.values())


def nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (a parameter-file section)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def config_class(spec: NodeSpec) -> type[ConfigBase] | None:
    """The node's root config dataclass (None when it has none yet)."""
    if not spec.config_class:
        return None
    module, name = spec.config_class.split(":")
    return getattr(importlib.import_module(module), name)


def node_parameters(node: PlannedNode) -> dict[str, Any]:
    """The parameters ``node`` starts with, by dotted name, as rcl resolves them: every section
    of its parameter file whose node name matches (``/**``, ``/**/name``, ``name``, ...; later
    sections win), then the launch overrides. Parameters the file does not set are absent.

    Raises:
        DataFormatError: the parameter file is missing or not a ROS parameter file.
    """
    path = Path(node.params_file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataFormatError("params_file", str(path), f"not readable: {exc}",
                              kind="params_file") from exc
    if not isinstance(data, dict):
        raise DataFormatError("params_file", str(path),
                              "not a ROS parameter file (<node>: ros__parameters: ...)",
                              kind="params_file")
    params: dict[str, Any] = {}
    for key, section in data.items():
        if (isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict)
                and _node_name_matches(str(key), node.spec.name)):
            params.update(_flatten(section["ros__parameters"]))
    params.update(node.overrides)
    return params


def node_config(node: PlannedNode) -> ConfigBase:
    """The node's effective config dataclass (:func:`node_parameters` over the defaults).
    Parameters that are not fields of the config (``use_sim_time``, ...) are left out, as the
    node does.

    Raises:
        ConfigError: a value the node would reject, named by its parameter.
        DataFormatError: the parameter file is not readable.
    """
    cls = config_class(node.spec)
    if cls is None:
        raise ConfigError("node", node.spec.name, "has no config class")
    known = cls().to_flat_dict()
    params = {k: v for k, v in node_parameters(node).items() if k in known}
    try:
        return cls.from_flat_dict(params)
    except ConfigError as exc:
        raise ConfigError(f"{node.spec.name}.{exc.field}", exc.value, exc.reason) from exc


def _node_name_matches(pattern: str, node_name: str) -> bool:
    """rcl's node-name rule for a root-namespace node: ``*`` is one name token, ``**`` any
    number of them (none included); a name without a leading ``/`` is absolute."""
    wanted = [t for t in pattern.strip("/").split("/") if t]
    return _tokens_match(wanted, [node_name])


def _tokens_match(pattern: list[str], name: list[str]) -> bool:
    if not pattern:
        return not name
    if pattern[0] == "**":
        return any(_tokens_match(pattern[1:], name[i:]) for i in range(len(name) + 1))
    return bool(name) and fnmatch.fnmatchcase(name[0], pattern[0]) and \
        _tokens_match(pattern[1:], name[1:])


def _flatten(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _bool(args: Mapping[str, str], name: str) -> bool:
    value = args[name].strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(name, args[name], "must be true or false")
    return value == "true"
