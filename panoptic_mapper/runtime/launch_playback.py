"""How ``panoptic-mapper launch --bag`` plays a bag into the planned graph, checked up front.

From the nodes' effective parameters (``launch_plan.node_config``: the parameter file and the
launch overrides, not the dataclass defaults) and the bag's topics, :func:`plan_playback`
decides what the player does:

* which played topics to wait for, once per node that subscribes to each (a message published
  before discovery completes would be lost);
* where the bag's recorded segmentation goes: with a segmenter running, never straight to the
  mapping nodes (they get the segmenter's output), but to the ``replay`` backend's
  ``topics.recorded_segmentation``;
* whether to publish ``/clock`` (nodes with ``use_sim_time``: their timers would stand still
  without it).

A bag that lacks a topic a started node needs is refused with one message naming the topic,
the node and the ways out, before anything starts: otherwise the player would stop with
"not a played topic", or the graph would wait forever.

ROS-free. Owns: the playback decisions and the bag/graph consistency check. Does not own:
reading bags (``core/io/bag.py``), the player (``tools/play.py``) or the node set
(``launch_plan``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.io.bag import BagTopics
from panoptic_mapper.runtime.launch_plan import PlannedNode, node_config, node_parameters
from panoptic_mapper.runtime.node_config import SegmenterNodeConfig

SEGMENTATION_TYPE = "panoptic_mapper/msg/PanopticSegmentation"
MAPPING_NODES = ("instant", "mapper")
"""Node keys whose ``input`` section subscribes to the sensor stream."""


@dataclass
class PlaybackPlan:
    """What the bag player is asked to do (``panoptic-mapper play`` options)."""

    wait_for: list[str] = field(default_factory=list)
    """Played topic names, once per subscribing node (``--wait-for``)."""
    remaps: dict[str, str] = field(default_factory=dict)
    """Bag topic -> played name (``--remap``)."""
    topics: list[str] | None = None
    """Bag topics to play (``--topics``); None = all."""
    clock: bool = False
    """Publish the bag time on ``/clock`` (``--clock``)."""
    warnings: list[str] = field(default_factory=list)
    """Things that will not stop the graph but probably are not what the user wants."""


@dataclass
class _Need:
    topic: str
    node: str
    parameter: str


def plan_playback(planned: Sequence[PlannedNode], bag_topics: Mapping[str, str],
                  bag: str = "the bag") -> PlaybackPlan:
    """The player's options for ``planned`` nodes and a bag with ``bag_topics`` (topic ->
    message type, e.g. ``"sensor_msgs/msg/Image"``).

    Raises:
        ConfigError: the bag lacks a topic a started node needs (the message names the topic,
            the node and its parameter, and what to do), or a node's parameters are invalid.
        DataFormatError: a parameter file is not readable.
    """
    configs = {node.spec.key: (node, node_config(node)) for node in planned}
    out = PlaybackPlan(clock=any(bool(node_parameters(node).get("use_sim_time", False))
                                 for node in planned))
    recorded = [t for t, msgtype in bag_topics.items() if msgtype == SEGMENTATION_TYPE]
    played = set(bag_topics)
    needs: list[_Need] = []
    if "segmenter" in configs:
        node, cfg = configs["segmenter"]
        source = _recorded_source(recorded, cfg)
        if cfg.backend == "replay":
            if source is None:
                raise ConfigError("bag", bag, _no_recorded_segmentation(cfg, recorded))
            if source != cfg.topics.recorded_segmentation:
                out.remaps[source] = cfg.topics.recorded_segmentation
            out.wait_for.append(cfg.topics.recorded_segmentation)
        else:
            source = None  # nothing forwards a recorded segmentation
            needs.append(_Need(cfg.topics.rgb, node.spec.name, "topics.rgb"))
            if cfg.backend == "emulator":
                needs += [_Need(cfg.topics.depth, node.spec.name, "topics.depth"),
                          _Need(cfg.topics.ground_truth_labels, node.spec.name,
                                "topics.ground_truth_labels"),
                          _Need(cfg.topics.ground_truth_instances, node.spec.name,
                                "topics.ground_truth_instances")]
            elif cfg.backend == "detector":
                needs += [_Need(cfg.topics.depth, node.spec.name, "topics.depth"),
                          _Need(cfg.topics.camera_info, node.spec.name, "topics.camera_info")]
                if cfg.topics.pose:
                    needs.append(_Need(cfg.topics.pose, node.spec.name, "topics.pose"))
        # The mapping nodes get the segmenter's output: a recorded segmentation played under
        # that name would reach them twice.
        mapping_inputs = {c.input.topics.segmentation for key, (n, c) in configs.items()
                          if key in MAPPING_NODES and _reads_sensors(n, c, planned)} \
            | {cfg.topics.output}
        excluded = {t for t in recorded if t != source and t in mapping_inputs}
        if excluded:
            played -= excluded
            out.topics = sorted(played)
    for key in MAPPING_NODES:
        if key not in configs or not _reads_sensors(configs[key][0], configs[key][1], planned):
            continue
        node, cfg = configs[key]
        topics = cfg.input.topics
        names = ["rgb", "depth", "camera_info"]
        if cfg.input.pose_source != "tf":
            names.append("pose")
        needs += [_Need(getattr(topics, n), node.spec.name, f"input.topics.{n}") for n in names]
        if not cfg.input.use_segmentation:
            continue
        if "segmenter" in configs:
            output = configs["segmenter"][1].topics.output
            if output != topics.segmentation:
                out.warnings.append(
                    f"{node.spec.name} takes its segmentation from {topics.segmentation} "
                    f"(input.topics.segmentation) but segmenter_node publishes on {output} "
                    "(topics.output): it will integrate no frame")
        elif topics.segmentation in played:
            out.wait_for.append(topics.segmentation)
        else:
            out.warnings.append(
                f"{bag} has no {topics.segmentation} and no segmenter_node is started: "
                f"{node.spec.name} (input.use_segmentation: true) integrates no frame unless a "
                "segmenter on another machine publishes it; set input.use_segmentation: false "
                "in a --params file to map geometry only")
    missing = [need for need in needs if need.topic not in played]
    if missing:
        raise ConfigError("bag", bag, _missing_topics(missing, bag_topics))
    out.wait_for = [need.topic for need in needs] + out.wait_for
    return out


def _reads_sensors(node: PlannedNode, cfg, planned: Sequence[PlannedNode]) -> bool:
    """The node subscribes to the sensor stream: the instant node always, a mapper only when
    its prior comes over topics (a mapper sharing the instant node's process is offered the
    frames that node integrates)."""
    if node.spec.key != "mapper":
        return True
    source = cfg.prior.source
    if source == "auto":
        source = "colocated" if any(other.spec.key == "instant" and other.process == node.process
                                    for other in planned) else "topics"
    return source == "topics"


def _recorded_source(recorded: list[str], cfg: SegmenterNodeConfig) -> str | None:
    """The bag topic holding the segmentation the replay backend forwards: one already named
    ``topics.recorded_segmentation``, else the segmenter's output name (how our bags record
    it), else our bags' name, else the only one."""
    for name in (cfg.topics.recorded_segmentation, cfg.topics.output, BagTopics().segmentation):
        if name in recorded:
            return name
    return recorded[0] if len(recorded) == 1 else None


def _no_recorded_segmentation(cfg: SegmenterNodeConfig, recorded: list[str]) -> str:
    topic = cfg.topics.recorded_segmentation
    found = (f"its {SEGMENTATION_TYPE} topics {recorded} are none of {topic} and "
             f"{cfg.topics.output}" if recorded else
             f"it has no {SEGMENTATION_TYPE} topic at all (bags converted from 7-Scenes or "
             "Replica by bag-from-dataset have none)")
    return (
        f"no recorded segmentation for {topic}: segmenter_node runs the replay backend, which "
        f"only forwards a segmentation recorded in the bag (topics.recorded_segmentation), but "
        f"{found}. Either\n"
        "  * compute the segmentation from the images: --arg segmenter_backend:=grounded_sam "
        "(or emulator, for bags with ground-truth label and instance topics), or\n"
        "  * map geometry only: --nodes instant (or instant mapper) with a --params file (a "
        "copy of config/mapper.yaml) that sets input.use_segmentation: false for them")


def _missing_topics(missing: list[_Need], bag_topics: Mapping[str, str]) -> str:
    lines = ", ".join(f"{need.topic} ({need.node} {need.parameter})" for need in missing)
    hint = ""
    if any(need.parameter.startswith("topics.ground_truth") for need in missing):
        hint = (" The emulator backend computes its segmentation from ground truth (scenes of "
                "make-scene); for other data use --arg segmenter_backend:=grounded_sam.")
    return (f"lacks topics the started nodes subscribe to: {lines}.{hint} Set those "
            "parameters (launch arguments rgb_topic:=, depth_topic:=, camera_info_topic:=, "
            "pose_topic:=, or a --params file) to the bag's topics: "
            + ", ".join(f"{t} [{bag_topics[t]}]" for t in sorted(bag_topics)))
