"""The RGB-D input of a mapping node: subscriptions, stamp matching, a keep-latest queue and
decoding into core frames.

Subscription callbacks only stamp-match the raw messages (``runtime.sync.StampSynchronizer``)
and put matched frames into a keep-latest queue (frames that arrive while ``queue_size`` wait
replace the oldest one; counted as ``frames_skipped_busy``); the node's worker takes them from
the queue and decodes them (:meth:`FrameInput.decode`, ``ros.conversions``), so a callback
never waits for integration. The instant semantics node integrates what it decodes; a mapper
node whose prior comes over topics decodes only the frames its keyframe selector would keep
(:meth:`FrameInput.decode_pose` first).

Owns: the input topics, matching, queueing, decoding, and the "nothing arrives" hints.
Does not own: what is done with a frame (the nodes).
"""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import PanopticSegmentation2D, RgbdFrame
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.nodes.node_base import PanopticLifecycleNode, sensor_qos
from panoptic_mapper.nodes.tf_pose import TfPoseSource
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.panoptic_conversions import segmentation_from_msg
from panoptic_mapper.runtime.node_config import InstantInputConfig
from panoptic_mapper.runtime.sync import (KeepLatestQueue, LatePartnerReport, MatchedFrame,
                                          StampSynchronizer, SyncConfig)

SILENCE_HINT_S = 10.0
"""After this long active with no message on any input, the node says what it listens to."""
EXPECTED_DROPS = ("missing_segmentation",)
"""Synchroniser drops that are normal operation (the segmenter skips frames when busy)."""

QueuedFrame = tuple[float, MatchedFrame]
"""(``time.monotonic()`` when matched, the matched messages)."""


class FrameInput:
    """A node's synchronised RGB-D input (see the module docstring).

    Args:
        node: the node (subscriptions, counters, problems and the logger are its).
        config: topics, pose source, decoding, QoS.
        sync: stamp matching.
        queue_size: frames waiting for the worker.
        map_frame: poses must be given in this frame.
        registry: labels of the segmentation.
    """

    def __init__(self, node: PanopticLifecycleNode, config: InstantInputConfig,
                 sync: SyncConfig, queue_size: int, map_frame: str, registry: LabelRegistry):
        self.node = node
        self.config = config
        self.map_frame = map_frame
        self.registry = registry
        self.tf = TfPoseSource(node, map_frame) if config.pose_source == "tf" else None
        self.sync = StampSynchronizer.for_rgbd(sync, config.use_segmentation,
                                               with_pose=config.pose_source != "tf")
        self.late_report = LatePartnerReport(sync)
        self.queue: KeepLatestQueue[QueuedFrame] = KeepLatestQueue(queue_size)
        self.topics: list[str] = []
        self._activated_at = time.monotonic()
        self._waiting_reported = False
        self._silence_reported = False

    def subscribe(self) -> list[str]:
        """Create the subscriptions; returns their topics."""
        cfg = self.config
        topics, qos = cfg.topics, sensor_qos(cfg.qos)
        subs = [(Image, topics.rgb, "rgb"), (Image, topics.depth, "depth"),
                (CameraInfo, topics.camera_info, "camera_info")]
        if cfg.pose_source != "tf":
            pose_type = PoseStamped if cfg.pose_source == "pose_stamped" else Odometry
            subs.append((pose_type, topics.pose, "pose"))
        if cfg.use_segmentation:
            subs.append((PanopticSegmentation, topics.segmentation, "segmentation"))
        for msg_type, topic, stream in subs:
            self.node.subscribe(msg_type, topic, lambda msg, s=stream: self._offer(s, msg), qos)
        self.queue.clear()
        self._activated_at = time.monotonic()
        self.topics = [topic for _, topic, _ in subs]
        return self.topics

    @property
    def pending(self) -> int:
        """Frames waiting in the queue."""
        return len(self.queue)

    def _offer(self, stream: str, msg) -> None:
        node = self.node
        stamp_ns = node.received_stamp_ns(stream, msg)
        if stamp_ns is None:
            return
        result = self.sync.add(stream, stamp_ns, msg)
        for drop in result.drops:
            node.report_drop(drop, self.late_report, EXPECTED_DROPS)
        for frame in result.frames:
            node.count("frames_matched")
            if self.queue.put((time.monotonic(), frame)) is not None:
                node.count("frames_skipped_busy")

    # ---- decoding ------------------------------------------------------------------------------
    def decode(self, matched: MatchedFrame) -> tuple[RgbdFrame, PanopticSegmentation2D | None]:
        """Messages of one frame -> core frame + segmentation (raises InvalidInputError)."""
        cfg = self.config
        rgb_msg, depth_msg = matched.items["rgb"], matched.items["depth"]
        camera = conv.intrinsics_from_camera_info_msg(matched.items["camera_info"],
                                                      cfg.reject_distortion)
        for warning in camera.warnings:
            self.node.problem("camera_info_warning", warning)
        T_map_cam = self.decode_pose(matched)  # noqa: N806
        depth = conv.depth_from_image_msg(depth_msg, cfg.depth_scale)
        if depth.stats.num_nan or depth.stats.num_inf:
            self.node.count("depth_frames_with_nan_or_inf")
            self.node.info_once(
                "depth_nan", f"depth has {depth.stats.num_nan} NaN and {depth.stats.num_inf} "
                "inf pixels; treated as 'no measurement' (REP 118); counted in the diagnostics")
        frame = RgbdFrame(stamp_ns=matched.stamp_ns, rgb=conv.rgb_from_image_msg(rgb_msg),
                          depth_m=depth.depth_m, T_world_cam=T_map_cam,
                          intrinsics=camera.intrinsics, frame_id=rgb_msg.header.frame_id)
        segmentation = None
        if cfg.use_segmentation:
            segmentation = segmentation_from_msg(matched.items["segmentation"], self.registry,
                                                 image_shape=camera.intrinsics.shape)
        return frame, segmentation

    def decode_pose(self, matched: MatchedFrame) -> np.ndarray:
        """``T_map_camera`` [4, 4] of a matched frame (raises InvalidInputError)."""
        cfg = self.config
        camera_frame = cfg.camera_frame or matched.items["rgb"].header.frame_id
        if cfg.pose_source == "tf":
            return self.tf.lookup(camera_frame, matched.stamp_ns)
        msg = matched.items["pose"]
        if cfg.pose_source == "odometry":
            transform = conv.transform_from_odometry_msg(msg)
            if cfg.camera_frame and transform.child_frame_id != cfg.camera_frame:
                raise InvalidInputError("odometry.child_frame_id", transform.child_frame_id,
                                        f"expected the camera frame '{cfg.camera_frame}'",
                                        kind="pose_frame")
        else:
            transform = conv.transform_from_pose_stamped_msg(msg)
        if transform.parent_frame_id != self.map_frame:
            raise InvalidInputError("pose.header.frame_id", transform.parent_frame_id,
                                    f"poses must be given in the map frame '{self.map_frame}' "
                                    "(parameter map_frame)", kind="pose_frame")
        return transform.T_parent_child

    # ---- hints ---------------------------------------------------------------------------------
    def hint_missing_inputs(self, counters: dict[str, int]) -> None:
        """Warn once when some streams arrive and others do not, or nothing arrives at all."""
        if self._waiting_reported or counters.get("frames_matched", 0):
            return
        streams = self.sync.stream_names
        received = [s for s in streams if counters.get(f"received_{s}", 0)]
        missing = [s for s in streams if not counters.get(f"received_{s}", 0)]
        log = self.node.get_logger()
        if received and missing:
            self._waiting_reported = True
            log.warning(f"receiving {received} but nothing yet on {missing}; no frame can be "
                        "integrated (check topic names, QoS and pose_source)")
        elif (streams and not received and not self._silence_reported
              and time.monotonic() - self._activated_at >= SILENCE_HINT_S):
            self._silence_reported = True
            log.warning(
                f"nothing received on any input after {SILENCE_HINT_S:.0f} s; subscribed to "
                f"{sorted(self.topics)} (is the camera / bag running, in this ROS_DOMAIN_ID, on "
                "these topic names, with a matching QoS reliability?)")
