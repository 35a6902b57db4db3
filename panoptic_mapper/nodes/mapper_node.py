"""``mapper_node``: the refined panoptic map (PanopticRecon++), a layer derived from the instant
map, trained in the background.

The node never integrates a frame. Its refined layer (``core/mapping/refined_layer.py``) reads
the instant map's products and keeps its own keyframes (``prior.source``):

* **colocated** (``panoptic-mapper launch`` and the launch file start the instant semantics
  node and this node in one process): the layer is offered every frame the instant node
  integrates and reads its snapshots (``runtime/shared_maps.py``); saving the refined map saves
  the instant map in the same file, loading restores both.
* **topics** (this node on another machine, e.g. a GPU host): the prior is the mesh and
  instance table the instant node publishes (``~/mesh``, ``~/instance_table``); keyframes come
  from the sensor stream (``input``), of which only the frames the keyframe selector keeps are
  decoded.

A training worker (``runtime/training_worker.py``) trains the field in chunks in its own
thread, with torch limited to ``torch_threads`` threads for the whole process, on the
device of ``map.training.trainer.device``; ``~/training_control`` starts, stops and reports it.
A refresh worker publishes the served snapshot: the prior's products until the field is ready,
then the prior's current mesh relabelled by the field (``runtime/refined_session.py``); tokens
keep the instance ids the planner has seen. The log and ``/diagnostics`` say which answers
(``answers_from``), and how training goes.

Parameters: ``MapperNodeConfig`` (``runtime/mapper_config.py``), documented in
``config/mapper.yaml``. Lifecycle: see ``nodes/node_base.py``.
"""
from __future__ import annotations

import sys
import time

import torch
from rclpy.lifecycle import TransitionCallbackReturn

from panoptic_mapper.core.errors import ConfigError, InvalidInputError, PanopticMapperError
from panoptic_mapper.core.mapping.input_checks import FrameChecker
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer
from panoptic_mapper.core.query.engine import create_query_engine
from panoptic_mapper.core.tracking.instance_geometry import InstanceSummaryConfig
from panoptic_mapper.core.tsdf.grid import TsdfConfig
from panoptic_mapper.msg import MapInstanceArray, PanopticMesh
from panoptic_mapper.nodes.frame_input import FrameInput, QueuedFrame
from panoptic_mapper.nodes.map_server import MapServer
from panoptic_mapper.nodes.node_base import (PanopticLifecycleNode, load_registry, quietly,
                                             run_node, set_torch_threads)
from panoptic_mapper.nodes.training_control import TrainingControlService, status_values
from panoptic_mapper.ros import conversions as conv
from panoptic_mapper.ros.panoptic_conversions import map_instance_from_msg, mesh_from_msg
from panoptic_mapper.ros.qos import LATCHED_MAP_QOS
from panoptic_mapper.runtime import shared_maps
from panoptic_mapper.runtime.mapper_config import MapperNodeConfig
from panoptic_mapper.runtime.prior_sources import ReceivedPrior, SessionPrior
from panoptic_mapper.runtime.refined_session import RefinedSession
from panoptic_mapper.runtime.training_worker import TrainingWorker
from panoptic_mapper.runtime.workers import QueueWorker

NODE_NAME = "mapper_node"
TIMINGS = ("keyframe", "refresh", "publish")


class MapperNode(PanopticLifecycleNode):
    """The refined layer as a node (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, MapperNodeConfig, TIMINGS, **kwargs)
        self.session: RefinedSession | None = None
        self.training: TrainingWorker | None = None
        self.server: MapServer | None = None
        self.input: FrameInput | None = None
        self.prior_mode = ""
        """"colocated" or "topics" once configured."""
        self._shared: shared_maps.SharedInstantMap | None = None
        self._received: ReceivedPrior | None = None
        self._checker: FrameChecker | None = None
        self._control: TrainingControlService | None = None

    @property
    def config(self) -> MapperNodeConfig:
        return self._params.config

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Limit torch's threads; find the prior; build the layer (loading a saved map when
        asked), the training control, the outputs and (if serving) the API."""
        cfg = self.config
        set_torch_threads(cfg.torch_threads)
        try:
            registry = load_registry(cfg.label_file)
            prior, summary, voxel_size_m = self._prior_source(registry)
            try:
                self.session = RefinedSession(
                    lambda: RefinedLayer(registry, cfg.map, prior, summary), registry,
                    create_query_engine(cfg.query, registry), cfg.training.relabel_period_s)
            except ConfigError as exc:  # e.g. a CUDA device this machine lacks
                raise ConfigError(f"map.{exc.field}", exc.value, exc.reason) from exc
            if cfg.load_on_start_path:
                self.session.load(cfg.load_on_start_path)
                self.get_logger().info(f"loaded {cfg.load_on_start_path}")
        except (PanopticMapperError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.session = None
            return TransitionCallbackReturn.FAILURE
        if self._shared is not None:
            self._shared.session.add_frame_listener(self._observe)
            self._shared.session.add_correction_listener(self._move_keyframes)
        self.training = TrainingWorker(self.session, cfg.training, self.get_logger(),
                                       self._frames_waiting)
        self._control = TrainingControlService(self, self.training, self.session)
        self.server = MapServer(self, self.session, cfg.output, cfg.planner_api, cfg.map_frame,
                                "refined", voxel_size_m, self._frames_waiting)
        self.create_diagnostics_publisher()
        self.get_logger().info(
            f"configured: prior {self.prior_mode}"
            f"{' (' + cfg.prior.instant_node + ' in this process)' if self._shared else ''}, "
            f"the field trains on {self.session.layer.trainer.device} "
            f"({torch.get_num_threads()} torch CPU threads), planner API "
            f"{'at ' + cfg.planner_api.namespace if self.api else 'not served'}")
        return TransitionCallbackReturn.SUCCESS

    def _prior_source(self, registry):
        """(prior source, instance summary rules, voxel size) per ``prior.source``."""
        cfg = self.config
        shared = shared_maps.lookup(cfg.prior.instant_node)
        if cfg.prior.source == "colocated" and shared is None:
            raise ConfigError("prior.source", "colocated",
                              f"no configured '{cfg.prior.instant_node}' in this process "
                              "(start both nodes in one process, or use prior.source: topics)")
        if shared is not None and cfg.prior.source != "topics":
            self._shared, self.prior_mode = shared, "colocated"
            return SessionPrior(shared.session), shared.summary, shared.voxel_size_m
        self.prior_mode = "topics"
        self._received = ReceivedPrior(registry, cfg.prior.max_label_distance_m)
        self.input = FrameInput(self, cfg.input, cfg.sync, cfg.queue_size, cfg.map_frame,
                                registry)
        self._checker = FrameChecker(cfg.prior.input_checks, registry,
                                     cfg.map.training.sampler.near_m, TsdfConfig().depth_max_m)
        return self._received, InstanceSummaryConfig(), 0.0

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe (topics mode), start the refresh and training workers and the timers."""
        cfg = self.config
        listening = [f"the map of {cfg.prior.instant_node} in this process"]
        if self.prior_mode == "topics":
            self.subscribe(PanopticMesh, cfg.prior.mesh_topic, self._on_prior_mesh,
                           LATCHED_MAP_QOS)
            self.subscribe(MapInstanceArray, cfg.prior.instance_table_topic,
                           self._on_prior_instances, LATCHED_MAP_QOS)
            listening = [cfg.prior.mesh_topic, cfg.prior.instance_table_topic,
                         *self.input.subscribe()]
            self.start_worker(QueueWorker("keyframes", self.input.queue, self._offer_keyframe,
                                          self.worker_error))
        self.server.start()
        self.start_worker(self.training)
        self.add_timer(cfg.diagnostics_period_s, self._report)
        self.get_logger().info("active: listening on " + ", ".join(listening))
        return super().on_activate(state)

    def _release_resources(self, save: bool) -> None:
        """Save the whole map first when ``save_on_shutdown_path`` is set; withdraw all."""
        if self._shared is not None:
            self._shared.session.remove_frame_listener(self._observe)
            self._shared.session.remove_correction_listener(self._move_keyframes)
        if self._control is not None:
            quietly(self._control.destroy)
        if self.server is not None:
            if save:
                self.server.save_on_shutdown(self.config.save_on_shutdown_path)
            self.server.release()
        self._control = self.server = self.session = self.training = None

    def _frames_waiting(self) -> int:
        """Frames waiting for integration (or keyframe selection): the trainer and the
        refresh yield to them."""
        if self._shared is not None:
            return self._shared.frames_waiting()
        return self.input.pending if self.input is not None else 0

    # ---- frames and the prior ------------------------------------------------------------------
    def _observe(self, frame, segmentation) -> None:
        """colocated: a frame the instant map integrated (its integration worker calls this)."""
        start = time.perf_counter()
        report = self.session.observe_frame(frame, segmentation)
        if report.kept:
            self.count("keyframes_kept")
            self.stats.time("keyframe", time.perf_counter() - start)
        for warning in report.warnings:
            self.problem("keyframe_warning", warning)

    def _move_keyframes(self, moved) -> None:
        """colocated: a loop correction moved the instant map's frames; keyframes follow."""
        self.count("keyframes_corrected", self.session.layer.move_keyframes(moved))

    def _offer_keyframe(self, item: QueuedFrame) -> None:
        """topics: decode a frame only when the keyframe selector would keep it."""
        _, matched = item
        try:
            T_map_cam = self.input.decode_pose(matched)  # noqa: N806
            if not self.session.layer.wants_keyframe(T_map_cam, matched.stamp_ns):
                self.count("frames_not_keyframes")
                return
            frame, segmentation = self.input.decode(matched)
        except InvalidInputError as exc:
            self.count("frames_invalid")
            self.problem(exc.kind, f"frame at {matched.stamp_ns / 1e9:.3f} s: {exc}")
            return
        checked = self._checker.check(frame, segmentation)
        if not checked.accepted:
            self.count("frames_rejected")
            self.problem("keyframe_rejected", f"frame at {matched.stamp_ns / 1e9:.3f} s not "
                         f"kept: {checked.reject_reason}")
            return
        self._checker.accept(frame)
        self._observe(frame, segmentation)

    def _on_prior_mesh(self, msg) -> None:
        try:
            mesh = mesh_from_msg(msg)
            stamp_ns = conv.stamp_ns_from_time_msg(msg.header.stamp, "mesh.header.stamp")
        except InvalidInputError as exc:
            self.problem(exc.kind, f"prior mesh ignored: {exc}")
            return
        self.count("prior_meshes_received")
        self._received.update_mesh(mesh, stamp_ns)

    def _on_prior_instances(self, msg) -> None:
        try:
            instances = tuple(map_instance_from_msg(m) for m in msg.instances)
        except InvalidInputError as exc:
            self.problem(exc.kind, f"prior instance table ignored: {exc}")
            return
        self.count("prior_instance_tables_received")
        self._received.update_instances(instances)

    # ---- diagnostics ---------------------------------------------------------------------------
    def _report(self) -> None:
        session, training = self.session, self.training
        if session is None or training is None:
            return
        values: dict[str, object] = {
            "prior_source": self.prior_mode,
            "answers_from": "field" if session.serves_field else "prior",
            "training_device": str(session.layer.trainer.device),
            "training_busy_s": f"{training.busy_s:.1f}",
            **self.server.diagnostics_values(), **status_values(training.status())}
        if self.prior_mode == "topics":
            values["queue_length"] = self.input.pending
        self.publish_diagnostics(values)
        if self.input is not None:
            self.input.hint_missing_inputs(self.stats.counters())


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``mapper_node --ros-args --params-file ...``."""
    return run_node(MapperNode, args)


if __name__ == "__main__":
    sys.exit(main())
