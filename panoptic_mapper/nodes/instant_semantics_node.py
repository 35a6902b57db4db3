"""``instant_semantics_node``: RGB-D + pose + 2D panoptic segmentation in, the instant map out.

Data flow: subscription callbacks only stamp-match the raw messages and queue matched frames
(``nodes/frame_input.py``); the integration worker decodes and integrates them, and that is all
it does; the refresh worker, a thread of its own at lower priority, brings the mesh (only the
changed blocks) and the instance table up to date on the map's snapshots at ``output.rate_hz``,
within ``output.max_refresh_share`` of the time (``runtime/map_session.py``); a timer publishes
new snapshots on the latched map topics (``nodes/map_outputs.py``), including the instance
table a mapper on another machine takes as its prior; the planner services
(``nodes/planner_api.py``) answer from the snapshot when ``planner_api.serve`` is set.

A mapper node in the same process derives its refined layer from this node's map
(``runtime/shared_maps.py``): it is offered every integrated frame and reads the snapshots, so
the stream is integrated once.

Loop corrections (``input.topics.keyframe_corrections``, nav_msgs/Path) go to a correction
worker that re-fuses the kept frames at the corrected poses beside integration and swaps the
rebuilt map in (``nodes/correction_input.py``, ``runtime/map_corrections.py``,
``docs/slam_poses.md``).

Bad input is logged once per kind and counted (``/diagnostics``); the node keeps running.
Parameters: ``InstantSemanticsNodeConfig`` (``runtime/node_config.py``), documented in
``config/mapper.yaml``. Lifecycle: see ``nodes/node_base.py``.
"""
from __future__ import annotations

import re
import sys
import time

from rclpy.lifecycle import TransitionCallbackReturn

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.mapping.frame_store import FrameStore
from panoptic_mapper.core.query.engine import create_query_engine
from panoptic_mapper.nodes.correction_input import CorrectionInput
from panoptic_mapper.nodes.frame_input import FrameInput, QueuedFrame
from panoptic_mapper.nodes.map_server import MapServer
from panoptic_mapper.nodes.node_base import (PanopticLifecycleNode, load_registry, run_node,
                                             sensor_qos, set_torch_threads)
from panoptic_mapper.runtime import shared_maps
from panoptic_mapper.runtime.map_session import MapSession
from panoptic_mapper.runtime.node_config import InstantSemanticsNodeConfig
from panoptic_mapper.runtime.workers import QueueWorker

NODE_NAME = "instant_semantics_node"
DYNAMIC_PARAMETERS = ("output.mesh_color_mode",)
"""Parameters that may be changed while the node runs (``ros2 param set``)."""
TIMINGS = ("decode", "integrate", "refresh", "publish", "frame_latency")


class InstantSemanticsNode(PanopticLifecycleNode):
    """The instant map as a node (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, InstantSemanticsNodeConfig, TIMINGS, DYNAMIC_PARAMETERS,
                         **kwargs)
        self._params.add_listener(self._on_parameters_changed)
        self.session: MapSession | None = None
        self.server: MapServer | None = None
        self.input: FrameInput | None = None
        self.corrections: CorrectionInput | None = None
        self._integration: QueueWorker | None = None
        self._busy_reported = (time.perf_counter(), 0.0)

    @property
    def config(self) -> InstantSemanticsNodeConfig:
        return self._params.config

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Build the registry, the map (loading a saved one when asked), the input, outputs,
        the API, and offer the map to the layers of this process."""
        cfg = self.config
        set_torch_threads(cfg.torch_threads)
        try:
            registry = load_registry(cfg.label_file)
            map_config = cfg.map.to_dict()
            corrections = bool(cfg.input.topics.keyframe_corrections and cfg.corrections.enabled)
            self.session = MapSession(lambda: create_map("instant", registry, map_config),
                                      registry, create_query_engine(cfg.query, registry),
                                      FrameStore(cfg.corrections) if corrections else None)
            if cfg.load_on_start_path:
                self.session.load(cfg.load_on_start_path)
                self.get_logger().info(f"loaded {cfg.load_on_start_path} "
                                       f"({self.session.num_frames} frames)")
            self.input = FrameInput(self, cfg.input, cfg.sync, cfg.queue_size, cfg.map_frame,
                                    registry)
            self.corrections = CorrectionInput(
                self, self.session, cfg.input.topics.keyframe_corrections, cfg.map_frame,
                sensor_qos(cfg.input.qos), self.frames_waiting) if corrections else None
        except (PanopticMapperError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.session = None
            return TransitionCallbackReturn.FAILURE
        self.server = MapServer(self, self.session, cfg.output, cfg.planner_api, cfg.map_frame,
                                "instant", cfg.map.tsdf.voxel_size_m, self.frames_waiting)
        self.create_diagnostics_publisher()
        shared_maps.register(shared_maps.SharedInstantMap(
            self.get_name(), self.session, self.frames_waiting, cfg.map.instances,
            cfg.map.tsdf.voxel_size_m))
        self.get_logger().info(
            f"configured: map frame '{cfg.map_frame}', voxel {cfg.map.tsdf.voxel_size_m} m, "
            f"planner API {'at ' + cfg.planner_api.namespace if self.api else 'not served'}, "
            f"map topics under {self.server.namespace}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the inputs; start the integration and refresh workers and the timers."""
        cfg = self.config
        topics = list(self.input.subscribe())
        if self.corrections is not None:
            topics.append(self.corrections.subscribe() + " (loop corrections)")
        self._integration = QueueWorker("integration", self.input.queue, self._integrate,
                                        self.worker_error)
        self.start_worker(self._integration)
        self.server.start()
        self.add_timer(cfg.diagnostics_period_s, self._report)
        self.get_logger().info("active: listening on " + ", ".join(topics))
        return super().on_activate(state)

    def _release_resources(self, save: bool) -> None:
        """Save the map first when ``save_on_shutdown_path`` is set; withdraw everything."""
        if self.server is not None:
            if save:
                self.server.save_on_shutdown(self.config.save_on_shutdown_path)
            self.server.release()
        if self.session is not None:
            shared_maps.unregister(self.get_name(), self.session)
        self.session = self.server = self.corrections = None

    def _on_parameters_changed(self, config: InstantSemanticsNodeConfig) -> None:
        if self.server is not None:
            self.server.set_color_mode(config.output.mesh_color_mode)

    def frames_waiting(self) -> int:
        """Frames waiting for integration, plus the one being integrated."""
        worker = self._integration
        if worker is None:
            return 0
        return len(worker.queue) + int(worker.is_busy)

    # ---- workers -------------------------------------------------------------------------------
    def _integrate(self, item: QueuedFrame) -> None:
        """The integration worker: decode and integrate one frame."""
        matched_at, matched = item
        start = time.perf_counter()
        try:
            frame, segmentation = self.input.decode(matched)
        except InvalidInputError as exc:
            self.count("frames_invalid")
            self.problem(exc.kind, f"frame at {matched.stamp_ns / 1e9:.3f} s: {exc}")
            return
        decoded = time.perf_counter()
        self.stats.time("decode", decoded - start)
        report = self.session.integrate(frame, segmentation)
        self.stats.time("integrate", time.perf_counter() - decoded)
        self.stats.time("frame_latency", time.monotonic() - matched_at)
        if report.accepted:
            self.count("frames_integrated")
            for warning in report.warnings:
                self.problem(f"frame_warning.{reason_key(warning)}", warning)
        else:
            self.count("frames_rejected")
            self.problem(f"frame_rejected.{reason_key(report.reason)}",
                         f"frame at {matched.stamp_ns / 1e9:.3f} s rejected by the map: "
                         f"{report.reason}")

    def _report(self) -> None:
        """Diagnostics, and a hint while no frame gets through."""
        session = self.session
        if session is None:
            return
        busy = self._integration.busy_s if self._integration else 0.0
        now = time.perf_counter()
        since, busy_before = self._busy_reported
        self._busy_reported = (now, busy)
        values: dict[str, object] = {
            "queue_length": self.input.pending,
            "worker_busy_pct": f"{100.0 * (busy - busy_before) / max(now - since, 1e-9):.0f}",
            "map_frames": session.num_frames,
            "last_frame_stamp_s": f"{session.last_frame_stamp_ns / 1e9:.3f}",
            **self.server.diagnostics_values(),
            **(self.corrections.diagnostics_values() if self.corrections else {})}
        self.publish_diagnostics(values)
        self.input.hint_missing_inputs(self.stats.counters())


def reason_key(reason: str) -> str:
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
