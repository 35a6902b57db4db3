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
``config/mapper.yaml``. Lifecycle: see ``nodes/node_base.py``.
"""
from __future__ import annotations

import dataclasses
import sys
import time

from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import (SegmentationRequest, SegmenterBackend,
                                                    create_segmenter)
from panoptic_mapper.core.types import GroundTruthLabels
from panoptic_mapper.msg import PanopticSegmentation
from panoptic_mapper.nodes.node_base import (PanopticLifecycleNode, load_registry, quietly,
                                             run_node, sensor_qos)
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.panoptic_conversions import (segmentation_from_msg,
                                                      segmentation_msg_from_core)
from panoptic_mapper.ros.qos import SENSOR_QOS
from panoptic_mapper.runtime.node_config import SegmenterNodeConfig
from panoptic_mapper.runtime.sync import (KeepLatestQueue, LatePartnerReport, MatchedFrame,
                                          StampSynchronizer, StreamSpec)
from panoptic_mapper.runtime.workers import QueueWorker

NODE_NAME = "segmenter_node"
EMULATOR_STREAMS = ("rgb", "depth", "ground_truth_labels", "ground_truth_instances")
DETECTOR_MESSAGE_TYPES = {"rgb": Image, "depth": Image, "camera_info": CameraInfo,
                          "pose": PoseStamped}


class SegmenterNode(PanopticLifecycleNode):
    """2D panoptic segmentation as a node (see the module docstring)."""

    WORKER_JOIN_TIMEOUT_S = 60.0  # a model call on a CPU can take most of a minute

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, SegmenterNodeConfig, ("segment", "frame_latency"), **kwargs)
        self._registry: LabelRegistry | None = None
        self._backend: SegmenterBackend | None = None
        self._sync: StampSynchronizer | None = None
        self._late_report: LatePartnerReport | None = None
        self._queue: KeepLatestQueue[tuple[float, MatchedFrame]] | None = None
        self._output = None

    @property
    def config(self) -> SegmenterNodeConfig:
        return self._params.config

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
        self.create_diagnostics_publisher()
        self.get_logger().info(f"configured: backend '{cfg.backend}', output "
                               f"{cfg.topics.output}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the inputs and start the worker."""
        cfg = self.config
        qos = sensor_qos(cfg.qos)
        # One mutually exclusive group per subscription keeps each topic in order.
        if cfg.backend == "replay":
            self.subscribe(PanopticSegmentation, cfg.topics.recorded_segmentation,
                           self._forward, qos)
            inputs = [cfg.topics.recorded_segmentation]
        else:
            if cfg.backend == "emulator":
                topics = {"rgb": cfg.topics.rgb, "depth": cfg.topics.depth,
                          "ground_truth_labels": cfg.topics.ground_truth_labels,
                          "ground_truth_instances": cfg.topics.ground_truth_instances}
            elif cfg.backend == "detector":
                topics = {"rgb": cfg.topics.rgb, "depth": cfg.topics.depth,
                          "camera_info": cfg.topics.camera_info, "pose": cfg.topics.pose}
                topics = {stream: topic for stream, topic in topics.items() if topic}
            else:
                topics = {"rgb": cfg.topics.rgb}
            for stream, topic in topics.items():
                self.subscribe(DETECTOR_MESSAGE_TYPES.get(stream, Image), topic,
                               lambda msg, s=stream: self._offer(s, msg), qos)
            inputs = list(topics.values())
        if cfg.backend != "replay":
            self.start_worker(QueueWorker("segmenter", self._queue,
                                          lambda item: self._segment(*item), self.worker_error))
        self.add_timer(cfg.diagnostics_period_s, self._report)
        self.get_logger().info("active: listening on " + ", ".join(inputs))
        return super().on_activate(state)

    def _release_resources(self, save: bool) -> None:
        """Free the output and the backend's models (nothing to save)."""
        if self._output is not None:
            quietly(lambda: self.destroy_publisher(self._output))
        self._output = None
        self._backend = None

    # ---- input ---------------------------------------------------------------------------------

    def _forward(self, msg: PanopticSegmentation) -> None:
        """replay: check a recorded segmentation and forward it unchanged."""
        self.count("received_recorded_segmentation")
        start = time.perf_counter()
        try:
            segmentation_from_msg(msg, self._registry)
        except InvalidInputError as exc:
            self.count("frames_invalid")
            self.problem(exc.kind, f"recorded segmentation not forwarded: {exc}")
            return
        self._output.publish(msg)
        self.count("frames_published")
        self.stats.time("segment", time.perf_counter() - start)

    def _offer(self, stream: str, msg: Image) -> None:
        stamp_ns = self.received_stamp_ns(stream, msg)
        if stamp_ns is None:
            return
        if self._sync is None:
            frames = [MatchedFrame(stamp_ns, {"rgb": msg}, {"rgb": stamp_ns})]
        else:
            result = self._sync.add(stream, stamp_ns, msg)
            for drop in result.drops:
                self.report_drop(drop, self._late_report)
            frames = result.frames
        for frame in frames:
            if self._queue.put((time.monotonic(), frame)) is not None:
                self.count("frames_skipped_busy")

    # ---- worker --------------------------------------------------------------------------------
    def _segment(self, queued_at: float, matched: MatchedFrame) -> None:
        rgb_msg = matched.items["rgb"]
        start = time.perf_counter()
        try:
            request = self._request(matched)
            segmentation = self._backend.segment(request)
            out = segmentation_msg_from_core(segmentation, rgb_msg.header.frame_id)
        except InvalidInputError as exc:
            self.count("frames_invalid")
            self.problem(exc.kind, f"frame at {matched.stamp_ns / 1e9:.3f} s: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory: keep the worker alive
            self.count("frames_failed")
            self.problem("backend_error", f"frame at {matched.stamp_ns / 1e9:.3f} s: "
                          f"{type(exc).__name__}: {exc}")
            return
        # The output carries the RGB header exactly (stamp and frame), whatever the backend set.
        out.header = rgb_msg.header
        out.segment_ids.header = rgb_msg.header
        self._output.publish(out)
        self.count("frames_published")
        self.stats.time("segment", time.perf_counter() - start)
        self.stats.time("frame_latency", time.monotonic() - queued_at)

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
        values: dict[str, object] = {"backend": self.config.backend,
                                     "queue_length": len(self._queue) if self._queue else 0,
                                     **_backend_stats(self._backend)}
        self.publish_diagnostics(values)


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
