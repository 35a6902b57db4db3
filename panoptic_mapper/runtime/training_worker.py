"""The mapper node's background training: a thread that trains the refined map's field in
chunks while the node integrates frames and answers planners.

States (:class:`TrainingState`): ``stopped`` (not requested), ``waiting_for_keyframes``
(requested, fewer than ``map.min_keyframes`` keyframes), ``training``, ``done`` (the step
budget is used up; a START with ``extra_steps`` continues; a keyframe that sees beyond the
field's scene box restarts the field on a grown box and training goes on) and ``failed`` (a
chunk raised; the error is kept and logged, a START retries).

Sharing the CPU: a chunk trains for at most ``chunk_max_s`` (it excludes save, load and reset,
never integration); when frames wait for integration afterwards, the worker pauses until they
are integrated or until training is back at ``max_share`` of the time, and while
``pause_backlog_frames`` or more wait (integration falls behind the stream) it does not train
at all, so the map keeps up with the stream.

ROS-free. Owns: the thread, start/stop/extend, the state, progress logging. Does not own: the
training itself (``refined_session``, ``core/field``), when the served map is relabelled (the
session's refresh), or how status is shown (the node).
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from panoptic_mapper.core.field.trainer import TrainingProgress
from panoptic_mapper.runtime.mapper_config import TrainingWorkerConfig
from panoptic_mapper.runtime.refined_session import RefinedSession, TrainedChunk

IDLE_POLL_S = 0.2
"""How often an idle worker checks for keyframes (a start/stop wakes it at once)."""
YIELD_POLL_S = 0.01
"""How often a pausing worker checks whether the waiting frames were integrated."""


class Logger(Protocol):
    """The logging calls the worker makes (rclpy's node logger and ``logging`` both fit)."""

    def info(self, message: str) -> object: ...

    def warning(self, message: str) -> object: ...

    def error(self, message: str) -> object: ...


class TrainingState(str, enum.Enum):
    """Where the background training stands (see the module docstring)."""

    STOPPED = "stopped"
    WAITING = "waiting_for_keyframes"
    TRAINING = "training"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class TrainingStatus:
    """A snapshot of the worker and the field."""

    state: TrainingState
    ready: bool
    """The field answers the planner services (else the prior does)."""
    progress: TrainingProgress
    """Step, budget, phase, losses, tokens, keyframes; the rate is the last chunk's."""
    error: str = ""
    """Why the last chunk failed (state ``failed``)."""

    def summary(self) -> str:
        """One log line."""
        p = self.progress
        text = (f"training {self.state.value}: step {p.step}/{p.total_steps}, "
                f"{p.num_keyframes} keyframes, {p.num_tokens} tokens, "
                f"field {'ready' if self.ready else 'not ready (answers from the prior)'}")
        if p.field_restarts:
            text += f", restarted {p.field_restarts}x on a grown box {p.box}"
        if p.step:
            text += f", phase {p.phase}, {p.steps_per_s:.1f} steps/s"
            if "total" in p.losses:
                text += f", loss {p.losses['total']:.3g}"
        return text + (f"; error: {self.error}" if self.error else "")


class TrainingWorker:
    """Trains a :class:`RefinedSession` in chunks on its own thread (module docstring).

    Args:
        session: the node's map session (its map may be replaced by reset/load at any time).
        config: chunk size, CPU share and log period; ``autostart`` requests
            training from the start.
        logger: where state changes and the periodic progress line go.
        frames_waiting: how many frames wait for (or are in) integration.
    """

    def __init__(self, session: RefinedSession, config: TrainingWorkerConfig,
                 logger: Logger, frames_waiting: Callable[[], int] = lambda: 0):
        self._session = session
        self._config = config
        self._logger = logger
        self._frames_waiting = frames_waiting
        self._lock = threading.Lock()
        self._chunk_lock = threading.Lock()
        """Held by the thread while a chunk trains."""
        self._requested = config.autostart
        self._error = ""
        self._last_chunk_rate = 0.0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._last_log = 0.0
        self._reported_state: TrainingState | None = None
        self._thread: threading.Thread | None = None
        self.name = "training"
        self.busy_s = 0.0
        """Seconds spent in training chunks."""

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._closed.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    # ---- control -------------------------------------------------------------------------------
    def request_training(self, extra_steps: int = 0) -> TrainingStatus:
        """Request training (again), first adding ``extra_steps`` to the step budget.

        Raises:
            InvalidInputError: ``extra_steps`` is negative.
        """
        if extra_steps:
            total = self._session.extend_budget(extra_steps)
            self._logger.info(f"training budget extended by {extra_steps} to {total} steps")
        with self._lock:
            self._requested = True
            self._error = ""
        self._wake.set()
        return self.status()

    def stop_training(self) -> TrainingStatus:
        """Stop training; returns once the current chunk has ended (at most ``chunk_max_s``
        plus one step), so the status is final. The field keeps its state, and the next
        refresh serves it as of the stop (not as of the last periodic relabelling), so that what
        planners see matches what a save writes."""
        with self._lock:
            self._requested = False
        self._wake.set()
        with self._chunk_lock:
            if self._session.is_ready:
                self._session.mark_changed()
            return self.status()

    def status(self) -> TrainingStatus:
        """The current state and progress (waits at most for the current step, not for the
        chunk)."""
        progress = self._session.progress()
        with self._lock:
            requested, error, rate = self._requested, self._error, self._last_chunk_rate
        if error:
            state = TrainingState.FAILED
        elif not requested:
            state = TrainingState.STOPPED
        elif progress.done:
            state = TrainingState.DONE
        elif not self._session.can_train():
            state = TrainingState.WAITING
        else:
            state = TrainingState.TRAINING
        progress.steps_per_s = rate if state == TrainingState.TRAINING else 0.0
        return TrainingStatus(state, self._session.is_ready, progress, error)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after its current chunk (idempotent); training keeps its state."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        resume_at = 0.0
        while not self._closed.is_set():
            status = self.status()
            self._report(status)
            if status.state != TrainingState.TRAINING:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            waiting = self._frames_waiting()
            backlog = self._config.pause_backlog_frames
            if waiting and (time.monotonic() < resume_at or (backlog and waiting >= backlog)):
                time.sleep(YIELD_POLL_S)
                continue
            started = time.perf_counter()
            with self._chunk_lock:
                chunk = self._train_chunk()
            self.busy_s += time.perf_counter() - started
            if chunk is None:
                continue
            resume_at = time.monotonic() + chunk.progress.elapsed_s * \
                (1.0 - self._config.max_share) / self._config.max_share
            self._after_chunk(chunk)

    def _train_chunk(self) -> TrainedChunk | None:
        """One chunk, unless a stop came meanwhile; None when nothing was trained."""
        status = self.status()
        if status.state != TrainingState.TRAINING:
            return None
        remaining = status.progress.total_steps - status.progress.step
        try:
            return self._session.train(min(self._config.chunk_steps, remaining),
                                       time.monotonic() + self._config.chunk_max_s)
        except Exception as exc:  # noqa: BLE001 - a failed chunk must not end the thread
            if self._session.can_train():  # else a reset emptied the map meanwhile
                with self._lock:
                    self._error = f"{type(exc).__name__}: {exc}"
            return None

    def _after_chunk(self, chunk: TrainedChunk) -> None:
        with self._lock:
            self._last_chunk_rate = chunk.progress.steps_per_s
        if chunk.grown_from is not None:
            self._logger.info(
                f"field restart {chunk.progress.field_restarts} on a grown scene box (a "
                f"keyframe sees beyond it): {chunk.grown_from} -> {chunk.progress.box}; "
                f"{'the previous field' if self._session.is_ready else 'the prior'} answers "
                "until the new field is ready")
        if chunk.became_ready or chunk.replaced_previous:
            self._logger.info(
                f"field {'restarted on the grown box ' if chunk.replaced_previous else ''}"
                f"ready at step {chunk.progress.step}: the planner services and map topics "
                "now answer from it")
        for change in chunk.progress.token_changes:
            self._logger.info(
                f"tokens at step {change.step}: pruned unused {change.pruned_unused}, "
                f"pruned duplicates {change.pruned_duplicate}, merged {change.merged}, "
                f"split {change.split}, spawned {change.spawned}")
        if chunk.progress.done:  # logged here: a stop() right now would hide it from the loop
            self._reported_state = TrainingState.DONE
            self._logger.info(TrainingStatus(TrainingState.DONE, self._session.is_ready,
                                             chunk.progress).summary())

    def _report(self, status: TrainingStatus) -> None:
        """Log state changes, and the progress line every ``log_period_s`` while training."""
        now = time.monotonic()
        changed = status.state != self._reported_state
        if changed:
            self._reported_state = status.state
            log = self._logger.error if status.state == TrainingState.FAILED else \
                self._logger.info
            log(status.summary())
            self._last_log = now
        elif (status.state == TrainingState.TRAINING
              and now - self._last_log >= self._config.log_period_s):
            self._logger.info(status.summary())
            self._last_log = now
