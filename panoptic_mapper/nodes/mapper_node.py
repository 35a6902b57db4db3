"""``mapper_node``: the refined panoptic map (PanopticRecon++) as a node, beside the instant
semantics node, on the same machine or on another one over DDS.

It is the instant semantics node's pipeline over a :class:`RefinedPanopticMap`: the same
synchronised input stream (RGB, depth, camera_info, pose, PanopticSegmentation) goes through
the same stamp matching, keep-latest queue and integration worker; the same latched map topics
and planner services are served (``output``, ``planner_api``). On top of that, a training
worker (``runtime/training_worker.py``) trains the field in chunks in its own thread, with torch
limited to ``training.torch_threads`` CPU threads, on the device of
``map.training.trainer.device`` (``auto``: CUDA where present; the configure log line and the
``training_device`` diagnostics value say which), and ``~/training_control``
(``panoptic_mapper/TrainingControl``) starts, stops and reports it; progress goes to the log
and to ``/diagnostics``.

The prior: the node runs its own instant map inside the refined map (what
``RefinedPanopticMap`` does) instead of subscribing to the instant node's outputs. Its ids,
geometry and keyframes then come from exactly the frames the field trains on; ``save_map`` /
``load_map`` hold the whole state (prior, keyframes, field checkpoint) in one file; it works
when the instant node runs elsewhere, is restarted or is left out; and no mesh has to cross
DDS. The price is a second instant-map integration of the stream (CPU), which the launch file
can avoid by leaving the instant node out (``with_instant:=false``).

Until the field is ready the map answers from the prior; afterwards mesh labels come from the
field and instances from its tokens, which keep the prior's instance ids by 3D overlap
(``core/field/instance_ids.py``), so ids a planner already knows stay valid. When the robot
explores beyond the field's scene box, the field restarts on a grown box (``map.scene_box``);
the previous field answers until the new one is ready, whose tokens keep the published ids. The
log says so, and ``/diagnostics`` shows ``field_restarts`` and ``field_box``.

Parameters: ``MapperNodeConfig`` (``runtime/mapper_config.py``), documented in
``config/mapper.yaml``. Lifecycle: see ``nodes/runtime.py``.
"""
from __future__ import annotations

import sys
import threading

import torch
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn

from panoptic_mapper.core.errors import ConfigError, InvalidInputError, PanopticMapperError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.query.engine import create_query_engine
from panoptic_mapper.nodes.instant_semantics_node import InstantSemanticsNode
from panoptic_mapper.nodes.runtime import quietly, run_node
from panoptic_mapper.runtime.mapper_config import MapperNodeConfig
from panoptic_mapper.runtime.refined_session import RefinedMapSession
from panoptic_mapper.runtime.sync import MatchedFrame
from panoptic_mapper.runtime.training_worker import TrainingStatus, TrainingWorker
from panoptic_mapper.srv import TrainingControl

NODE_NAME = "mapper_node"
CONTROL_SERVICE = "~/training_control"
"""The TrainingControl service, in the node's private namespace."""


class MapperNode(InstantSemanticsNode):
    """The refined map as a node (see the module docstring)."""

    node_name = NODE_NAME
    config_class = MapperNodeConfig
    map_source = "refined"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.training: TrainingWorker | None = None
        self._control_service = None
        self._integrating = threading.Event()

    @property
    def config(self) -> MapperNodeConfig:
        return self._params.config

    @property
    def voxel_size_m(self) -> float:
        return self.config.map.instant.tsdf.voxel_size_m

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Limit torch's threads, build the map (as the instant node does) and the control
        service; log where the field trains."""
        if self.config.training.torch_threads:
            torch.set_num_threads(self.config.training.torch_threads)
        result = super().on_configure(state)
        if result == TransitionCallbackReturn.SUCCESS:
            self._control_service = self.create_service(
                TrainingControl, CONTROL_SERVICE, self._on_training_control,
                callback_group=ReentrantCallbackGroup())
            self.get_logger().info(
                f"the refined field trains on {self.session.map.trainer.device} "
                f"(map.training.trainer.device: '{self.config.map.training.trainer.device}', "
                f"{torch.get_num_threads()} torch CPU threads)")
        return result

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Start streaming, then the training worker (training when ``training.autostart``)."""
        result = super().on_activate(state)
        if result == TransitionCallbackReturn.SUCCESS:
            self.training = TrainingWorker(self.session, self.config.training,
                                           self.get_logger(), self._frames_pending)
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop training, then streaming."""
        self._close_training()
        return super().on_deactivate(state)

    def release(self, save: bool = True) -> None:
        """Stop training first, then as the instant node (save when configured, release)."""
        self._close_training()
        if self._control_service is not None:
            quietly(lambda: self.destroy_service(self._control_service))
            self._control_service = None
        super().release(save)

    def _close_training(self) -> None:
        if self.training is not None:
            self.training.close()
            self.training = None

    def _create_session(self, registry: LabelRegistry) -> RefinedMapSession:
        cfg = self.config
        map_config = cfg.map.to_dict()
        query_engine = create_query_engine(cfg.query, registry)
        try:
            return RefinedMapSession(lambda: create_map("refined", registry, map_config),
                                     registry, query_engine)
        except ConfigError as exc:  # e.g. a CUDA device this machine lacks: name the parameter
            raise ConfigError(f"map.{exc.field}", exc.value, exc.reason) from exc

    # ---- integration and training share the map -------------------------------------------------
    def _process(self, matched_at: float, matched: MatchedFrame) -> None:
        self._integrating.set()
        try:
            super()._process(matched_at, matched)
        finally:
            self._integrating.clear()

    def _frames_pending(self) -> bool:
        """Frames wait for integration or one is being integrated (the trainer yields)."""
        queue = self._queue
        return self._integrating.is_set() or (queue is not None and len(queue) > 0)

    # ---- training control and status ------------------------------------------------------------
    def _training_status(self) -> TrainingStatus | None:
        return self.training.status() if self.training is not None else None

    def _extra_status_values(self) -> dict[str, object]:
        status = self._training_status()
        if status is None:
            return {"training_state": "inactive"}
        progress = status.progress
        values: dict[str, object] = {
            "training_state": status.state.value, "field_ready": str(status.ready).lower(),
            "training_device": str(self.session.map.trainer.device),
            "answers_from": "field" if self.session.serves_field else "prior",
            "training_step": progress.step, "training_total_steps": progress.total_steps,
            "training_phase": progress.phase if progress.step else "",
            "training_steps_per_s": f"{progress.steps_per_s:.2f}",
            "training_tokens": progress.num_tokens, "keyframes": progress.num_keyframes,
            "field_restarts": progress.field_restarts,
            "field_box": str(progress.box) if progress.box is not None else ""}
        values.update({f"loss.{name}": f"{value:.4g}"
                       for name, value in sorted(progress.losses.items())})
        if status.error:
            values["training_error"] = status.error
        return values

    def _on_training_control(self, request: TrainingControl.Request,
                             response: TrainingControl.Response) -> TrainingControl.Response:
        """START / STOP / STATUS; answers ``success=False`` with the reason instead of raising."""
        try:
            if self.training is None:
                raise InvalidInputError("node", self.get_name(), "is not active; training "
                                        "runs only while the node is active", kind="request")
            command, extra = int(request.command), int(request.extra_steps)
            if extra and command != TrainingControl.Request.START:
                raise InvalidInputError("extra_steps", extra, "only valid with START",
                                        kind="request")
            if command == TrainingControl.Request.START:
                status = self.training.start(extra)
            elif command == TrainingControl.Request.STOP:
                status = self.training.stop()
                # Serve the stopped field at once: a planner that lists instances right after
                # STOP (or saves the map) sees the state the field stopped in.
                self.session.refresh()
            elif command == TrainingControl.Request.STATUS:
                status = self.training.status()
            else:
                raise InvalidInputError("command", command,
                                        "must be STATUS (0), START (1) or STOP (2)",
                                        kind="request")
        except PanopticMapperError as exc:
            response.success = False
            response.message = str(exc)
            return response
        except Exception as exc:  # noqa: BLE001 - an escaping exception stops the executor
            response.success = False
            response.message = f"internal error: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"training_control failed: {response.message}")
            return response
        _fill_status(response, status)
        response.success = True
        response.message = status.summary()
        return response


def _fill_status(response: TrainingControl.Response, status: TrainingStatus) -> None:
    progress = status.progress
    response.state = status.state.value
    response.ready = status.ready
    response.phase = progress.phase if progress.step else ""
    response.step = progress.step
    response.total_steps = progress.total_steps
    response.num_tokens = progress.num_tokens
    response.num_keyframes = progress.num_keyframes
    response.steps_per_s = float(progress.steps_per_s)
    names = sorted(progress.losses)
    response.loss_names = names
    response.loss_values = [float(progress.losses[name]) for name in names]


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``mapper_node --ros-args --params-file ...``."""
    return run_node(MapperNode, args)


if __name__ == "__main__":
    sys.exit(main())
