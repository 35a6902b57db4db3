"""The mapper node's ``~/training_control`` service (``panoptic_mapper/srv/TrainingControl``)
and the training values of its diagnostics.

``command``: STATUS (0), START (1, optionally ``extra_steps`` to extend a used-up budget) or
STOP (2). Every answer carries the state (``stopped``, ``waiting_for_keyframes``, ``training``,
``done``, ``failed``), readiness, step, phase, tokens, keyframes and losses; a bad request is
answered ``success=False`` with the reason, never raised (an exception escaping a service
callback would stop the executor).

Owns: the service, request validation, status <-> srv and diagnostics values.
Does not own: training (``runtime/training_worker.py``).
"""
from __future__ import annotations

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from panoptic_mapper.core.errors import InvalidInputError, PanopticMapperError
from panoptic_mapper.runtime.refined_session import RefinedSession
from panoptic_mapper.runtime.training_worker import TrainingStatus, TrainingWorker
from panoptic_mapper.srv import TrainingControl

SERVICE_NAME = "~/training_control"


class TrainingControlService:
    """Serves ``~/training_control`` for a training worker (see the module docstring)."""

    def __init__(self, node: Node, worker: TrainingWorker, session: RefinedSession):
        self._node = node
        self._worker = worker
        self._session = session
        self._service = node.create_service(TrainingControl, SERVICE_NAME, self._handle,
                                            callback_group=ReentrantCallbackGroup())

    def destroy(self) -> None:
        self._node.destroy_service(self._service)

    def _handle(self, request: TrainingControl.Request,
                response: TrainingControl.Response) -> TrainingControl.Response:
        try:
            command, extra = int(request.command), int(request.extra_steps)
            if extra and command != TrainingControl.Request.START:
                raise InvalidInputError("extra_steps", extra, "only valid with START",
                                        kind="request")
            if command == TrainingControl.Request.START:
                status = self._worker.request_training(extra)
            elif command == TrainingControl.Request.STOP:
                status = self._worker.stop_training()
                # Serve the stopped field at once: a planner that lists instances right after
                # STOP (or saves the map) sees the state the field stopped in.
                self._session.refresh()
            elif command == TrainingControl.Request.STATUS:
                status = self._worker.status()
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
            self._node.get_logger().error(f"training_control failed: {response.message}")
            return response
        fill_response(response, status)
        response.success = True
        response.message = status.summary()
        return response


def fill_response(response: TrainingControl.Response, status: TrainingStatus) -> None:
    """The status fields of a TrainingControl answer."""
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


def status_values(status: TrainingStatus) -> dict[str, object]:
    """Diagnostics values of the training state."""
    progress = status.progress
    values: dict[str, object] = {
        "training_state": status.state.value, "field_ready": str(status.ready).lower(),
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
