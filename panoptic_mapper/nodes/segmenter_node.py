"""``segmenter_node``: RGB in, PanopticSegmentation out (same stamp and frame), via a backend.

Backends (parameter ``backend``):

* ``replay``: the segmentation was recorded (a bag's ``/panoptic/segmentation``, played under
  ``topics.recorded_segmentation``); each message is checked against the label registry and
  forwarded unchanged on ``topics.output``; invalid ones are counted and not forwarded.
* ``emulator``: Grounded-SAM-like output computed from ground-truth topics of synthetic scenes
  (rgb, depth, ground-truth labels and instances matched by stamp).
* ``grounded_sam``: Grounding DINO + SAM on each RGB image.
* ``detector``: a packaged box detector on each RGB image, masks from the registered depth (or
  SAM), floor / walls / ceiling from depth normals and gravity; takes rgb (key), depth and pose
  (``sync.*_tolerance_s``) and the latest camera_info.

Model backends run in a worker thread behind a keep-latest queue: while the backend is busy,
newer images replace older ones (skipped frames are counted), so the output never lags behind.
Per-frame timing, processed/skipped/invalid/failed counts, the last frame's per-stage cost of a
model backend (``backend.*``: device, preprocess/detect/segment/merge ms, box counts) and input
problems go to ``/diagnostics``; a backend exception (e.g. CUDA out of memory) is counted as
``frames_failed`` and logged, and the worker goes on with the next frame.

Parameters: ``SegmenterNodeConfig`` (``runtime/node_config.py``), documented in
``config/mapper.yaml``. Lifecycle: see ``nodes/runtime.py``.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import (SegmentationRequest, SegmenterBackend,
                                                    create_segmenter)
from panoptic_mapper.core.types import GroundTruthLabels
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.nodes.runtime import (PanopticLifecycleNode, load_registry, quietly,
                                           run_node, sensor_qos)
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.diagnostics import (DIAGNOSTICS_TOPIC, diagnostic_array, node_status,
                                             timing_values)
from panoptic_mapper.runtime.node_config import SegmenterNodeConfig
from panoptic_mapper.runtime.node_stats import ProblemCounter, RollingTiming
from panoptic_mapper.ros.panoptic_conversions import (segmentation_from_msg,
                                                      segmentation_msg_from_core)
from panoptic_mapper.ros.params import ConfigParameters
from panoptic_mapper.ros.qos import SENSOR_QOS
from panoptic_mapper.runtime.sync import (KeepLatestQueue, LatePartnerReport, MatchedFrame,
                                      StampSynchronizer, StreamSpec)

NODE_NAME = "segmenter_node"
EMULATOR_STREAMS = ("rgb", "depth", "ground_truth_labels", "ground_truth_instances")
DETECTOR_MESSAGE_TYPES = {"rgb": Image, "depth": Image, "camera_info": CameraInfo,
                          "pose": PoseStamped}


class SegmenterNode(PanopticLifecycleNode):
    """2D panoptic segmentation as a node (see the module docstring)."""

    WORKER_JOIN_TIMEOUT_S = 60.0  # a model call on a CPU can take most of a minute

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._params = ConfigParameters(self, SegmenterNodeConfig)
        self.problems = ProblemCounter()
        self.timings = {"segment": RollingTiming(), "frame_latency": RollingTiming()}
        self.counters: dict[str, int] = {}
        self._counter_lock = threading.Lock()
        self._registry: LabelRegistry | None = None
        self._backend: SegmenterBackend | None = None
        self._sync: StampSynchronizer | None = None
        self._late_report: LatePartnerReport | None = None
        self._queue: KeepLatestQueue[tuple[float, MatchedFrame]] | None = None
        self._output = None
        self._diagnostics_pub = None
        self._subscriptions: list = []
        self._timers: list = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._release_lock = threading.Lock()

    @property
    def config(self) -> SegmenterNodeConfig:
        return self._params.config

    @property
    def autostart(self) -> bool:
        return self.config.autostart

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the registry and the backend's models; create the output publisher."""
        cfg = self.config
        try:
            self._registry = load_registry(cfg.label_file)
            if cfg.backend != "replay":
                self._backend = create_segmenter(cfg.backend, self._registry,
                                                 cfg.backend_config())
        except (PanopticMapperError, OSError, ImportError) as exc:
            self.get_logger().error(f"configure failed ({cfg.backend} backend): {exc}")
            return TransitionCallbackReturn.FAILURE
        if cfg.backend == "emulator":
            self._sync = StampSynchronizer(
                [StreamSpec("rgb", "key")] + [StreamSpec(s, "nearest")
                                              for s in EMULATOR_STREAMS[1:]],
                cfg.sync.max_wait_s, cfg.sync.max_pending, cfg.sync.time_jump_back_s)
            self._late_report = LatePartnerReport(cfg.sync)
        elif cfg.backend == "detector":
            self._sync = StampSynchronizer(_detector_streams(cfg), cfg.sync.max_wait_s,
                                           cfg.sync.max_pending, cfg.sync.time_jump_back_s)
            self._late_report = LatePartnerReport(cfg.sync)
        self._queue = KeepLatestQueue(cfg.queue_size)
        self._output = self.create_publisher(PanopticSegmentation, cfg.topics.output,
                                             SENSOR_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.get_logger().info(f"configured: backend '{cfg.backend}', output "
                               f"{cfg.topics.output}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the inputs and start the worker."""
        cfg = self.config
        qos = sensor_qos(cfg.qos)
        # One mutually exclusive group per subscription keeps each topic in order.
        if cfg.backend == "replay":
            self._subscriptions.append(self.create_subscription(
                PanopticSegmentation, cfg.topics.recorded_segmentation, self._forward, qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
            inputs = [cfg.topics.recorded_segmentation]
        elif cfg.backend == "emulator":
            topics = {"rgb": cfg.topics.rgb, "depth": cfg.topics.depth,
                      "ground_truth_labels": cfg.topics.ground_truth_labels,
                      "ground_truth_instances": cfg.topics.ground_truth_instances}
            for stream, topic in topics.items():
                self._subscriptions.append(self.create_subscription(
                    Image, topic, lambda msg, s=stream: self._offer(s, msg), qos,
                    callback_group=MutuallyExclusiveCallbackGroup()))
            inputs = list(topics.values())
        elif cfg.backend == "detector":
            topics = {"rgb": cfg.topics.rgb, "depth": cfg.topics.depth,
                      "camera_info": cfg.topics.camera_info, "pose": cfg.topics.pose}
            topics = {stream: topic for stream, topic in topics.items() if topic}
            for stream, topic in topics.items():
                self._subscriptions.append(self.create_subscription(
                    DETECTOR_MESSAGE_TYPES[stream], topic,
                    lambda msg, s=stream: self._offer(s, msg), qos,
                    callback_group=MutuallyExclusiveCallbackGroup()))
            inputs = list(topics.values())
        else:
            self._subscriptions.append(self.create_subscription(
                Image, cfg.topics.rgb, lambda msg: self._offer("rgb", msg), qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
            inputs = [cfg.topics.rgb]
        if cfg.backend != "replay":
            self._stop.clear()
            self._worker = threading.Thread(target=self._worker_loop, name="segmenter",
                                            daemon=True)
            self._worker.start()
        self._timers.append(self.create_timer(cfg.diagnostics_period_s, self._report,
                                              callback_group=MutuallyExclusiveCallbackGroup()))
        self.get_logger().info("active: listening on " + ", ".join(inputs))
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_streaming()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.release(save=False)
        return TransitionCallbackReturn.SUCCESS

    def release(self, save: bool = True) -> None:
        """Stop the worker and free the backend's models (nothing to save)."""
        with self._release_lock:
            self._stop_streaming()
            for publisher in (self._output, self._diagnostics_pub):
                if publisher is not None:
                    quietly(lambda p=publisher: self.destroy_publisher(p))
            self._output = self._diagnostics_pub = None
            self._backend = None

    # ---- input ---------------------------------------------------------------------------------
    def _count(self, name: str, increment: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] = self.counters.get(name, 0) + increment

    def _problem(self, kind: str, message: str) -> None:
        if self.problems.record(kind, message):
            self.get_logger().warning(f"[{kind}] {message} (logged once; further ones are "
                                      "counted in the diagnostics)")

    def _forward(self, msg: PanopticSegmentation) -> None:
        """replay: check a recorded segmentation and forward it unchanged."""
        self._count("received_recorded_segmentation")
        start = time.perf_counter()
        try:
            segmentation_from_msg(msg, self._registry)
        except InvalidInputError as exc:
            self._count("frames_invalid")
            self._problem(exc.kind, f"recorded segmentation not forwarded: {exc}")
            return
        self._output.publish(msg)
        self._count("frames_published")
        self.timings["segment"].add(time.perf_counter() - start)

    def _offer(self, stream: str, msg: Image) -> None:
        self._count(f"received_{stream}")
        try:
            stamp_ns = conv.stamp_ns_from_time_msg(msg.header.stamp, f"{stream}.header.stamp")
        except InvalidInputError as exc:
            self._problem(exc.kind, str(exc))
            return
        if self._sync is None:
            frames = [MatchedFrame(stamp_ns, {"rgb": msg}, {"rgb": stamp_ns})]
        else:
            result = self._sync.add(stream, stamp_ns, msg)
            for drop in result.drops:
                message = (f"{drop.stream} at {drop.stamp_ns / 1e9:.3f} s dropped by the "
                           f"synchroniser: {drop.detail}")
                if drop.kind.startswith("late_") and self._late_report is not None:
                    self.problems.record(drop.kind, message)
                    warning = self._late_report.record(drop)
                    if warning:
                        self.get_logger().warning(f"[{drop.kind}] {warning}")
                else:
                    self._problem(drop.kind, message)
            frames = result.frames
        for frame in frames:
            if self._queue.put((time.monotonic(), frame)) is not None:
                self._count("frames_skipped_busy")

    # ---- worker --------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        queue = self._queue
        while not self._stop.is_set():
            item = queue.get(timeout_s=0.5)
            if item is not None:
                self._segment(*item)

    def _segment(self, queued_at: float, matched: MatchedFrame) -> None:
        rgb_msg = matched.items["rgb"]
        start = time.perf_counter()
        try:
            request = self._request(matched)
            segmentation = self._backend.segment(request)
            out = segmentation_msg_from_core(segmentation, rgb_msg.header.frame_id)
        except InvalidInputError as exc:
            self._count("frames_invalid")
            self._problem(exc.kind, f"frame at {matched.stamp_ns / 1e9:.3f} s: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory: keep the worker alive
            self._count("frames_failed")
            self._problem("backend_error", f"frame at {matched.stamp_ns / 1e9:.3f} s: "
                          f"{type(exc).__name__}: {exc}")
            return
        # The output carries the RGB header exactly (stamp and frame), whatever the backend set.
        out.header = rgb_msg.header
        out.segment_ids.header = rgb_msg.header
        self._output.publish(out)
        self._count("frames_published")
        self.timings["segment"].add(time.perf_counter() - start)
        self.timings["frame_latency"].add(time.monotonic() - queued_at)

    def _request(self, matched: MatchedFrame) -> SegmentationRequest:
        rgb = conv.rgb_from_image_msg(matched.items["rgb"])
        if self.config.backend == "detector":
            return self._detector_request(rgb, matched)
        if self.config.backend != "emulator":
            return SegmentationRequest(rgb=rgb, stamp_ns=matched.stamp_ns)
        depth = conv.depth_from_image_msg(matched.items["depth"]).depth_m
        labels = conv.image_msg_to_array(matched.items["ground_truth_labels"],
                                         "ground_truth_labels")
        instances = conv.image_msg_to_array(matched.items["ground_truth_instances"],
                                            "ground_truth_instances")
        return SegmentationRequest(rgb=rgb, stamp_ns=matched.stamp_ns, depth_m=depth,
                                   ground_truth=GroundTruthLabels(labels, instances))

    def _detector_request(self, rgb, matched: MatchedFrame) -> SegmentationRequest:
        items = matched.items
        depth = conv.depth_from_image_msg(items["depth"], self.config.depth_scale).depth_m
        intrinsics = conv.intrinsics_from_camera_info_msg(items["camera_info"]).intrinsics
        pose = items.get("pose")
        T_world_cam = (conv.transform_from_pose_stamped_msg(pose).T_parent_child  # noqa: N806
                       if pose is not None else None)
        return SegmentationRequest(rgb=rgb, stamp_ns=matched.stamp_ns, depth_m=depth,
                                   intrinsics=intrinsics, T_world_cam=T_world_cam)

    def _report(self) -> None:
        with self._counter_lock:
            values: dict[str, object] = dict(self.counters)
        values["backend"] = self.config.backend
        values["queue_length"] = len(self._queue) if self._queue else 0
        for name, timing in self.timings.items():
            values.update(timing_values(name, timing))
        values.update(_backend_stats(self._backend))
        if self._diagnostics_pub is not None:
            status = node_status(self.get_name(), self.get_fully_qualified_name(), values,
                                 self.problems)
            self._diagnostics_pub.publish(diagnostic_array(
                self.get_clock().now().nanoseconds, [status]))
        if self.problems.changed_since_last_summary():
            self.get_logger().info(f"input problems so far: {self.problems.summary()}")


def _detector_streams(cfg: SegmenterNodeConfig) -> list[StreamSpec]:
    """rgb (key), depth and pose by stamp, the latest camera_info; no pose stream without a
    pose topic."""
    streams = [StreamSpec("rgb", "key"),
               StreamSpec("depth", "nearest", int(cfg.sync.depth_tolerance_s * 1e9)),
               StreamSpec("camera_info", "latest")]
    if cfg.topics.pose:
        streams.append(StreamSpec("pose", "nearest", int(cfg.sync.pose_tolerance_s * 1e9),
                                  per_frame=False))
    return streams


def _backend_stats(backend: object) -> dict[str, object]:
    """The last frame's per-stage cost of a model backend that reports it (Grounded SAM's
    ``last_stats``), as ``backend.*`` diagnostics values; empty for other backends."""
    stats = getattr(backend, "last_stats", None)
    if stats is None or not dataclasses.is_dataclass(stats):
        return {}
    return {f"backend.{name}": (round(value, 1) if isinstance(value, float) else value)
            for name, value in dataclasses.asdict(stats).items()}


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``segmenter_node --ros-args --params-file ...``."""
    return run_node(SegmenterNode, args)


if __name__ == "__main__":
    sys.exit(main())
