"""``instant_semantics_node``: RGB-D + pose + 2D panoptic segmentation in, the instant map out.

Data flow: subscription callbacks only stamp-match the raw messages
(``ros.sync.StampSynchronizer``); matched frames go through a keep-latest queue to one worker
thread, which decodes them (``ros.conversions``), integrates them (``ros.map_session``) and,
at ``output.rate_hz``, refreshes the map snapshot; a timer publishes a new snapshot on the
latched map topics (``nodes.map_outputs``); the planner services (``nodes.planner_api``) answer from
the snapshot when ``planner_api.serve`` is set. Bad input is logged once per kind and counted
(diagnostics on ``/diagnostics``); the node keeps running.

Parameters: ``InstantSemanticsNodeConfig`` (``runtime/node_config.py``), documented in
``config/mapper.yaml``. Lifecycle: see ``nodes/runtime.py``. ``mapper_node`` subclasses this
node for the same input pipeline and outputs over another map (the hooks ``node_name``,
``config_class``, ``map_source``, ``voxel_size_m``, ``_create_session`` and
``_extra_status_values``).
"""
from __future__ import annotations

import re
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.query.engine import create_query_engine
from panoptic_mapper.core.types import PanopticSegmentation2D, RgbdFrame
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.nodes.runtime import (PanopticLifecycleNode, load_registry, quietly,
                                           run_node, sensor_qos)
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.diagnostics import (DIAGNOSTICS_TOPIC, diagnostic_array, node_status,
                                             timing_values)
from panoptic_mapper.nodes.map_outputs import MapOutputs
from panoptic_mapper.runtime.map_session import MapSession
from panoptic_mapper.runtime.node_config import InstantSemanticsNodeConfig
from panoptic_mapper.runtime.node_stats import ProblemCounter, RollingTiming
from panoptic_mapper.ros.panoptic_conversions import segmentation_from_msg
from panoptic_mapper.ros.params import ConfigParameters
from panoptic_mapper.nodes.planner_api import PlannerApi, PlannerApiConflict
from panoptic_mapper.runtime.sync import (KeepLatestQueue, LatePartnerReport, MatchedFrame,
                                      StampSynchronizer, SyncDrop)
from panoptic_mapper.nodes.tf_pose import TfPoseSource

SILENCE_HINT_S = 10.0
"""After this long active with no message on any input, the node says what it listens to."""

NODE_NAME = "instant_semantics_node"
DYNAMIC_PARAMETERS = ("output.mesh_color_mode",)
"""Parameters that may be changed while the node runs (``ros2 param set``)."""
EXPECTED_DROPS = {"missing_segmentation"}
"""Synchroniser drops that are normal operation (the segmenter skips frames when busy): counted
in the diagnostics, logged at info level once."""


class InstantSemanticsNode(PanopticLifecycleNode):
    """The instant map as a node (see the module docstring)."""

    node_name = NODE_NAME
    """Default node name."""
    config_class: type = InstantSemanticsNodeConfig
    """Root config dataclass of the node's parameters."""
    map_source = "instant"
    """``PanopticMesh.source`` of the published mesh."""

    def __init__(self, **kwargs):
        super().__init__(self.node_name, **kwargs)
        self._params = ConfigParameters(self, self.config_class, dynamic=DYNAMIC_PARAMETERS)
        self._params.add_listener(self._on_parameters_changed)
        self.problems = ProblemCounter()
        self.timings = {name: RollingTiming() for name in
                        ("decode", "integrate", "refresh", "publish", "frame_latency")}
        self.counters: dict[str, int] = {}
        self._counter_lock = threading.Lock()
        self._info_once: set[str] = set()
        self.session: MapSession | None = None
        self.api: PlannerApi | None = None
        self.outputs: MapOutputs | None = None
        self._registry: LabelRegistry | None = None
        self._sync: StampSynchronizer | None = None
        self._late_report: LatePartnerReport | None = None
        self._queue: KeepLatestQueue[tuple[float, MatchedFrame]] | None = None
        self._tf: TfPoseSource | None = None
        self._diagnostics_pub = None
        self._subscriptions: list = []
        self._timers: list = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._release_lock = threading.Lock()
        self._saved_on_shutdown = False
        self._waiting_reported = False
        self._silence_reported = False
        self._activated_at = time.monotonic()
        self._busy_s = 0.0
        self._busy_reported = (time.perf_counter(), 0.0)

    @property
    def config(self) -> InstantSemanticsNodeConfig:
        return self._params.config

    @property
    def autostart(self) -> bool:
        return self.config.autostart

    @property
    def voxel_size_m(self) -> float:
        """Resolution of the published mesh, metres."""
        return self.config.map.tsdf.voxel_size_m

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the registry, the map, the synchroniser, outputs and (if serving) the API."""
        cfg = self.config
        try:
            if cfg.input.pose_source == "tf":
                self._tf = TfPoseSource(self, cfg.map_frame)
            self._registry = load_registry(cfg.label_file)
            self.session = self._create_session(self._registry)
        except (PanopticMapperError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._sync = StampSynchronizer.for_rgbd(cfg.sync, cfg.input.use_segmentation,
                                                with_pose=cfg.input.pose_source != "tf")
        self._late_report = LatePartnerReport(cfg.sync)
        self._queue = KeepLatestQueue(cfg.queue_size)
        self._output_group = MutuallyExclusiveCallbackGroup()
        namespace = "~"
        if cfg.planner_api.serve:
            self.api = PlannerApi(self, self.session, cfg.planner_api,
                                  on_withdraw=self._on_api_withdrawn,
                                  callback_group=ReentrantCallbackGroup())
            try:
                self.api.advertise()
                namespace = cfg.planner_api.namespace
            except PlannerApiConflict as exc:
                self.get_logger().error(f"planner API not served: {exc}")
                self.api = None
        self._make_outputs(namespace)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.get_logger().info(
            f"configured: map frame '{cfg.map_frame}', voxel {self.voxel_size_m} m, "
            f"planner API {'at ' + cfg.planner_api.namespace if self.api else 'not served'}, "
            f"map topics under {self.outputs.namespace if self.outputs else '-'}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the inputs and start the worker and the timers."""
        cfg = self.config
        self._activated_at = time.monotonic()
        topics, qos = cfg.input.topics, sensor_qos(cfg.input.qos)
        # One mutually exclusive group per subscription: a topic's messages reach the
        # (thread-safe) synchroniser in order, different topics in parallel, and no callback
        # ever waits for integration.
        subs = [(Image, topics.rgb, "rgb"), (Image, topics.depth, "depth"),
                (CameraInfo, topics.camera_info, "camera_info")]
        if cfg.input.pose_source != "tf":
            pose_type = PoseStamped if cfg.input.pose_source == "pose_stamped" else Odometry
            subs.append((pose_type, topics.pose, "pose"))
        if cfg.input.use_segmentation:
            subs.append((PanopticSegmentation, topics.segmentation, "segmentation"))
        for msg_type, topic, stream in subs:
            self._subscriptions.append(self.create_subscription(
                msg_type, topic, lambda msg, s=stream: self._offer(s, msg), qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, name="integration",
                                        daemon=True)
        self._worker.start()
        self._timers.append(self.create_timer(1.0 / cfg.output.rate_hz, self._publish_outputs,
                                              callback_group=self._output_group))
        self._timers.append(self.create_timer(cfg.diagnostics_period_s, self._report,
                                              callback_group=self._output_group))
        self.get_logger().info("active: listening on " + ", ".join(t for _, t, _ in subs))
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking frames: unsubscribe, stop the timers and the worker."""
        self._stop_streaming()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Release the map, outputs and services (no save)."""
        self.release(save=False)
        return TransitionCallbackReturn.SUCCESS

    def release(self, save: bool = True) -> None:
        """Stop everything; save the map first if ``save_on_shutdown_path`` is set."""
        with self._release_lock:
            self._stop_streaming()
            path = self.config.save_on_shutdown_path
            if save and path and self.session is not None and not self._saved_on_shutdown:
                try:
                    written = self.session.save(path)
                    self._saved_on_shutdown = True
                    self.get_logger().info(f"map saved to {written} "
                                           f"({self.session.snapshot.num_frames} frames)")
                except (PanopticMapperError, OSError) as exc:
                    self.get_logger().error(f"saving the map on shutdown failed: {exc}")
            if self.api is not None:
                quietly(self.api.withdraw)
                self.api = None
            if self.outputs is not None:
                quietly(self.outputs.destroy)
                self.outputs = None
            if self._diagnostics_pub is not None:
                quietly(lambda: self.destroy_publisher(self._diagnostics_pub))
                self._diagnostics_pub = None
            self.session = None

    def _create_session(self, registry: LabelRegistry) -> MapSession:
        """The session of the map this node serves (built at configure)."""
        cfg = self.config
        map_config = cfg.map.to_dict()
        return MapSession(lambda: create_map("instant", registry, map_config), registry,
                          create_query_engine(cfg.query, registry))

    def _make_outputs(self, namespace: str) -> None:
        cfg = self.config
        self.outputs = MapOutputs(self, self._registry, cfg.output, namespace, cfg.map_frame,
                                  self.map_source, self.voxel_size_m)

    def _on_api_withdrawn(self, reason: str) -> None:
        self.api = None
        if self.outputs is not None:
            self.outputs.destroy()
        self._make_outputs("~")
        if self.session is not None:
            self.session.refresh(force=True)

    def _on_parameters_changed(self, config: InstantSemanticsNodeConfig) -> None:
        if self.outputs is not None:
            self.outputs.set_color_mode(config.output.mesh_color_mode)

    # ---- input ---------------------------------------------------------------------------------
    def _count(self, name: str, increment: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] = self.counters.get(name, 0) + increment

    def _problem(self, kind: str, message: str) -> None:
        if self.problems.record(kind, message):
            self.get_logger().warning(f"[{kind}] {message} (logged once; further ones are "
                                      "counted in the diagnostics)")

    def _drop(self, drop: SyncDrop) -> None:
        message = (f"{drop.stream} at {drop.stamp_ns / 1e9:.3f} s dropped by the synchroniser: "
                   f"{drop.detail}")
        if drop.kind in EXPECTED_DROPS:
            self._count(f"sync_{drop.kind}")
            if drop.kind not in self._info_once:
                self._info_once.add(drop.kind)
                self.get_logger().info(f"[{drop.kind}] {message} (normal when the segmenter "
                                       "skips frames; counted in the diagnostics)")
            return
        if drop.kind.startswith("late_") and self._late_report is not None:
            # Counted like any problem, but warned about again (rate-limited) with the delay
            # measured so far: a stream that is always late starves the map.
            self.problems.record(drop.kind, message)
            warning = self._late_report.record(drop)
            if warning:
                self.get_logger().warning(f"[{drop.kind}] {warning}")
            return
        self._problem(drop.kind, message)

    def _offer(self, stream: str, msg) -> None:
        self._count(f"received_{stream}")
        try:
            stamp_ns = conv.stamp_ns_from_time_msg(msg.header.stamp, f"{stream}.header.stamp")
        except InvalidInputError as exc:
            self._problem(exc.kind, str(exc))
            return
        result = self._sync.add(stream, stamp_ns, msg)
        for drop in result.drops:
            self._drop(drop)
        for frame in result.frames:
            self._count("frames_matched")
            if self._queue.put((time.monotonic(), frame)) is not None:
                self._count("frames_skipped_busy")

    # ---- worker --------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        """The only writer of the map: integrates queued frames and refreshes the snapshot."""
        period_s = 1.0 / self.config.output.rate_hz
        max_share = self.config.output.max_refresh_share
        next_refresh = time.monotonic() + period_s
        queue, session = self._queue, self.session
        while not self._stop.is_set():
            item = queue.get(timeout_s=max(0.0, next_refresh - time.monotonic()))
            busy_from = time.perf_counter()
            if item is not None:
                self._process(*item)
            self._busy_s += time.perf_counter() - busy_from
            if time.monotonic() >= next_refresh:
                start = time.perf_counter()
                refreshed = session.refresh() is not None
                took_s = time.perf_counter() - start
                self._busy_s += took_s
                if refreshed:
                    self.timings["refresh"].add(took_s)
                    if session.query_table_error:
                        self._problem("query_table", "query_objects answers from the previous "
                                      f"instance table: {session.query_table_error}")
                next_refresh = time.monotonic() + max(period_s, took_s / max_share)

    def _process(self, matched_at: float, matched: MatchedFrame) -> None:
        start = time.perf_counter()
        try:
            frame, segmentation = self._decode(matched)
        except InvalidInputError as exc:
            self._count("frames_invalid")
            self._problem(exc.kind, f"frame at {matched.stamp_ns / 1e9:.3f} s: {exc}")
            return
        decoded = time.perf_counter()
        self.timings["decode"].add(decoded - start)
        report = self.session.integrate(frame, segmentation)
        self.timings["integrate"].add(time.perf_counter() - decoded)
        self.timings["frame_latency"].add(time.monotonic() - matched_at)
        if report.accepted:
            self._count("frames_integrated")
            for warning in report.warnings:
                self._problem(f"frame_warning.{_reason_key(warning)}", warning)
        else:
            self._count("frames_rejected")
            self._problem(f"frame_rejected.{_reason_key(report.reason)}",
                          f"frame at {matched.stamp_ns / 1e9:.3f} s rejected by the map: "
                          f"{report.reason}")

    def _decode(self, matched: MatchedFrame) -> tuple[RgbdFrame, PanopticSegmentation2D | None]:
        """Messages of one frame -> core frame + segmentation (raises InvalidInputError)."""
        cfg = self.config
        rgb_msg, depth_msg = matched.items["rgb"], matched.items["depth"]
        camera = conv.intrinsics_from_camera_info_msg(matched.items["camera_info"],
                                                      cfg.input.reject_distortion)
        for warning in camera.warnings:
            self._problem("camera_info_warning", warning)
        T_map_cam = self._pose(matched, rgb_msg.header.frame_id)  # noqa: N806
        depth = conv.depth_from_image_msg(depth_msg, cfg.input.depth_scale)
        if depth.stats.num_nan or depth.stats.num_inf:
            self._count("depth_frames_with_nan_or_inf")
            if "depth_nan" not in self._info_once:
                self._info_once.add("depth_nan")
                self.get_logger().info(
                    f"depth has {depth.stats.num_nan} NaN and {depth.stats.num_inf} inf pixels; "
                    "treated as 'no measurement' (REP 118); counted in the diagnostics")
        frame = RgbdFrame(stamp_ns=matched.stamp_ns, rgb=conv.rgb_from_image_msg(rgb_msg),
                          depth_m=depth.depth_m, T_world_cam=T_map_cam,
                          intrinsics=camera.intrinsics, frame_id=rgb_msg.header.frame_id)
        segmentation = None
        if cfg.input.use_segmentation:
            segmentation = segmentation_from_msg(matched.items["segmentation"], self._registry,
                                                 image_shape=camera.intrinsics.shape)
        return frame, segmentation

    def _pose(self, matched: MatchedFrame, image_frame: str):
        cfg = self.config
        camera_frame = cfg.input.camera_frame or image_frame
        if cfg.input.pose_source == "tf":
            return self._tf.lookup(camera_frame, matched.stamp_ns)
        msg = matched.items["pose"]
        if cfg.input.pose_source == "odometry":
            transform = conv.transform_from_odometry_msg(msg)
            if cfg.input.camera_frame and transform.child_frame_id != cfg.input.camera_frame:
                raise InvalidInputError("odometry.child_frame_id", transform.child_frame_id,
                                        f"expected the camera frame '{cfg.input.camera_frame}'",
                                        kind="pose_frame")
        else:
            transform = conv.transform_from_pose_stamped_msg(msg)
        if transform.parent_frame_id != cfg.map_frame:
            raise InvalidInputError("pose.header.frame_id", transform.parent_frame_id,
                                    f"poses must be given in the map frame '{cfg.map_frame}' "
                                    "(parameter map_frame)", kind="pose_frame")
        return transform.T_parent_child

    # ---- output --------------------------------------------------------------------------------
    def _publish_outputs(self) -> None:
        if self.outputs is None or self.session is None:
            return
        report = self.outputs.publish(self.session.snapshot)
        if report is not None:
            self.timings["publish"].add(report.build_ms / 1e3)

    def _report(self) -> None:
        """Diagnostics, a summary of new problems, and a hint while no frame gets through."""
        if self.session is None:
            return
        with self._counter_lock:
            counters = dict(self.counters)
        snapshot = self.session.snapshot
        now, busy = time.perf_counter(), self._busy_s
        since, busy_before = self._busy_reported
        self._busy_reported = (now, busy)
        busy_pct = 100.0 * (busy - busy_before) / max(now - since, 1e-9)
        values: dict[str, object] = {**counters, "worker_busy_pct": f"{busy_pct:.0f}",
                                     "queue_length": len(self._queue) if self._queue else 0,
                                     "map_frames": snapshot.num_frames,
                                     "last_frame_stamp_s":
                                         f"{self.session.last_frame_stamp_ns / 1e9:.3f}",
                                     "map_instances": len(snapshot.instances),
                                     "mesh_vertices": snapshot.mesh.num_vertices,
                                     "planner_api": "served" if self.api else "not served",
                                     **self._extra_status_values()}
        for name, timing in self.timings.items():
            values.update(timing_values(name, timing))
        if self._diagnostics_pub is not None:
            status = node_status(self.get_name(), self.get_fully_qualified_name(), values,
                                 self.problems)
            self._diagnostics_pub.publish(diagnostic_array(
                self.get_clock().now().nanoseconds, [status]))
        if self.problems.changed_since_last_summary():
            self.get_logger().info(f"input problems so far: {self.problems.summary()}")
        self._hint_missing_inputs(counters)

    def _extra_status_values(self) -> dict[str, object]:
        """Diagnostics values of the map beyond the instant map's (none here)."""
        return {}

    def _hint_missing_inputs(self, counters: dict[str, int]) -> None:
        if self._waiting_reported or counters.get("frames_matched", 0):
            return
        streams = self._sync.stream_names if self._sync else ()
        received = [s for s in streams if counters.get(f"received_{s}", 0)]
        missing = [s for s in streams if not counters.get(f"received_{s}", 0)]
        if received and missing:
            self._waiting_reported = True
            self.get_logger().warning(f"receiving {received} but nothing yet on {missing}; "
                                      "no frame can be integrated (check topic names, QoS "
                                      "and pose_source)")
        elif (streams and not received and not self._silence_reported
              and time.monotonic() - self._activated_at >= SILENCE_HINT_S):
            self._silence_reported = True
            topics = sorted(sub.topic_name for sub in self._subscriptions)
            self.get_logger().warning(
                f"nothing received on any input after {SILENCE_HINT_S:.0f} s; subscribed to "
                f"{topics} (is the camera / bag running, in this ROS_DOMAIN_ID, on these "
                "topic names, with a matching QoS reliability?)")


def _reason_key(reason: str) -> str:
    """A short stable key of a map's reject/warning text: the kind of a segment warning
    (``input_checks.py`` words them "segment N ... skipped: ..." for a label the registry does
    not know, "segment N: is_thing=..." for a thing/stuff flag that disagrees with it), else
    the text's leading field name."""
    if re.match(r"\s*segment \d+ \(label .*\) skipped:", reason):
        return "segment_unknown_label"
    if re.match(r"\s*segment \d+: is_thing=", reason):
        return "segment_is_thing_mismatch"
    match = re.match(r"\s*([A-Za-z_][\w.\[\]]*)\s*[=:]", reason)
    return match.group(1) if match else "other"


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``instant_semantics_node --ros-args --params-file ...``."""
    return run_node(InstantSemanticsNode, args)


if __name__ == "__main__":
    sys.exit(main())
