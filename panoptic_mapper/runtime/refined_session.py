"""The mapper node's map session: a :class:`MapSession` over a :class:`RefinedPanopticMap` that
also trains the field, one chunk at a time, under the session's write lock.

The refined map's prior (the instant map inside it) is not thread-safe, and a training chunk
reads it (token seeding, publishing the field), so a chunk excludes integration, refresh,
save, load and reset exactly like a frame does; readers keep answering from the snapshot.
Training in chunks of bounded wall time (``deadline_s``) keeps those waits short.

ROS-free. Owns: chunked training under the lock, budget extension, marking the snapshot stale
when the field changed what it serves. Does not own: when to train (``training_worker``) or the
field itself (``core/field``, ``core/mapping/refined_map.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.trainer import TrainingProgress
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.refined_map import RefinedPanopticMap
from panoptic_mapper.core.query.engine import QueryEngine
from panoptic_mapper.runtime.map_session import MapSession


@dataclass(frozen=True)
class TrainedChunk:
    """What :meth:`RefinedMapSession.train` did."""

    progress: TrainingProgress
    """Progress after the chunk (``steps_per_s`` and ``elapsed_s`` are the chunk's)."""
    became_ready: bool
    """The field started answering instead of the prior during this chunk."""
    grown_from: SceneBox | None = None
    """The box before the chunk when the chunk restarted the field on a grown box (the new
    one is ``progress.box``), else None."""
    replaced_previous: bool = False
    """A field restarted on a grown box became ready during this chunk and now answers
    instead of the previous field."""


class RefinedMapSession(MapSession):
    """A :class:`MapSession` whose ``map_factory`` builds :class:`RefinedPanopticMap`\\ s (see
    the module docstring)."""

    def __init__(self, map_factory: Callable[[], RefinedPanopticMap], registry: LabelRegistry,
                 query_engine: QueryEngine | None = None):
        super().__init__(map_factory, registry, query_engine)
        self._ready_after_version = -1
        """Version of the last snapshot built before the field became ready."""

    @property
    def map(self) -> RefinedPanopticMap:
        """The live refined map; hold no reference across a reset or load."""
        return self._map

    @property
    def is_ready(self) -> bool:
        """The field answers (else the prior does)."""
        return self._map.is_ready

    @property
    def serves_field(self) -> bool:
        """The latest snapshot (what the services and topics serve) comes from the field."""
        return self._map.is_ready and self.snapshot.version > self._ready_after_version

    def can_train(self) -> bool:
        """Enough keyframes are stored to train."""
        return self._map.can_train()

    def progress(self) -> TrainingProgress:
        """Training progress of the current map, without training."""
        return self._map.progress()

    def train(self, num_steps: int, deadline_s: float | None = None) -> TrainedChunk:
        """Train up to ``num_steps`` steps, stopping at ``deadline_s`` (``time.monotonic``).

        When the field becomes ready, or a field restarted on a grown box replaces the
        previous one, the next refresh serves it.

        Raises:
            InvalidInputError: too few keyframes (see :meth:`can_train`).
        """
        with self._write_lock:
            refined = self._map
            was_ready, restarts = refined.is_ready, refined.field_restarts
            box, serving = refined.field_box, refined.serving_trainer
            progress = refined.train_steps(num_steps, deadline_s)
            became_ready = refined.is_ready and not was_ready
            replaced = was_ready and refined.serving_trainer is not serving
            if became_ready:
                self._ready_after_version = self.snapshot.version
            if became_ready or replaced:
                self._dirty = True
        grown_from = box if progress.field_restarts != restarts else None
        return TrainedChunk(progress, became_ready, grown_from, replaced)

    def extend_budget(self, extra_steps: int) -> int:
        """Add ``extra_steps`` to the step budget (the schedule's phases are fractions of it);
        returns the new budget.

        Raises:
            InvalidInputError: ``extra_steps`` is negative.
        """
        if extra_steps < 0:
            raise InvalidInputError("extra_steps", extra_steps, "must be >= 0", kind="request")
        with self._write_lock:
            trainer = self._map.trainer
            if extra_steps:
                trainer.set_total_steps(trainer.total_steps + int(extra_steps))
            return trainer.total_steps

    def mark_changed(self) -> None:
        """Let the next refresh rebuild the snapshot (the field changed what it serves)."""
        with self._write_lock:
            self._dirty = True
