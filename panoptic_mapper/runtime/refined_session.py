"""The mapper node's map: the refined layer over a prior, trained in chunks, served as snapshots.

A :class:`RefinedSession` owns a :class:`RefinedLayer` (``core/mapping/refined_layer.py``) whose
prior is the instant map of a co-located node or one received over DDS
(``runtime/prior_sources.py``). It never integrates: frames reach it through
:meth:`observe_frame` (keyframe candidates), the prior's products through its source.

* Training (:meth:`train`, one chunk of bounded wall time, from the training worker) excludes
  ``save``, ``load`` and ``reset`` (the session lock), nothing else: integration of the prior
  goes on, and readers keep answering from the snapshot.
* :meth:`refresh` (the node's refresh worker) publishes the snapshot: the prior's products as
  they are until the field is ready; afterwards the prior's current mesh relabelled by the
  field, at most every ``relabel_period_s`` while training goes on (relabelling a large mesh
  costs seconds of CPU), and at once when the field became ready, was replaced after a restart
  on a grown box, finished, or was stopped (:meth:`mark_changed`).

ROS-free. Owns: chunked training under the session lock, budget extension, when the served
snapshot is relabelled. Does not own: when to train (``training_worker``), the field itself
(``core/field``), or the prior.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.trainer import TrainingProgress
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.refined_layer import KeyframeReport, RefinedLayer
from panoptic_mapper.core.query.engine import QueryEngine
from panoptic_mapper.core.types import PanopticSegmentation2D, RgbdFrame
from panoptic_mapper.runtime.served_map import MapSnapshot, ServedMap, output_path


@dataclass(frozen=True)
class TrainedChunk:
    """What :meth:`RefinedSession.train` did."""

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


class RefinedSession(ServedMap):
    """The refined layer as a node serves it (see the module docstring).

    Args:
        layer_factory: builds an empty layer over the node's prior source (called once).
        registry: the label registry.
        query_engine: answers ``query_objects`` from the snapshots.
        relabel_period_s: while training goes on, relabel what is served at most this often.
    """

    def __init__(self, layer_factory: Callable[[], RefinedLayer], registry: LabelRegistry,
                 query_engine: QueryEngine | None = None, relabel_period_s: float = 10.0):
        super().__init__(registry, query_engine)
        self._layer = layer_factory()
        self.relabel_period_s = float(relabel_period_s)
        self._lock = threading.Lock()
        """Held by a training chunk, save, load and reset."""
        self._refresh_lock = threading.Lock()
        self._urgent = threading.Event()
        self._served: tuple[int, int] = (-1, -2)
        """(prior snapshot version, field step) of what the snapshot serves (step -1: prior)."""
        self._last_relabel = 0.0

    @property
    def layer(self) -> RefinedLayer:
        """The live layer (its state is swapped in place by load and reset)."""
        return self._layer

    @property
    def is_ready(self) -> bool:
        """The field answers (else the prior does)."""
        return self._layer.is_ready

    @property
    def serves_field(self) -> bool:
        """The latest snapshot (what the services and topics serve) comes from the field."""
        return self._served[1] >= 0

    @property
    def num_frames(self) -> int:
        """Frames integrated into the prior, as of its newest snapshot."""
        return self._layer.prior.get_prior_snapshot().num_frames

    def observe_frame(self, frame: RgbdFrame,
                      segmentation: PanopticSegmentation2D | None) -> KeyframeReport:
        """A frame the prior accepted: kept as a keyframe when the selector says so."""
        return self._layer.observe_frame(frame, segmentation)

    # ---- training ------------------------------------------------------------------------------
    def can_train(self) -> bool:
        """Enough keyframes are stored to train."""
        return self._layer.can_train()

    def progress(self) -> TrainingProgress:
        """Training progress, without training."""
        return self._layer.progress()

    def train(self, num_steps: int, deadline_s: float | None = None) -> TrainedChunk:
        """Train up to ``num_steps`` steps, stopping at ``deadline_s`` (``time.monotonic``).

        Raises:
            InvalidInputError: too few keyframes (see :meth:`can_train`).
        """
        with self._lock:
            layer = self._layer
            was_ready, restarts = layer.is_ready, layer.field_restarts
            box, serving = layer.field_box, layer.serving_trainer
            progress = layer.train_steps(num_steps, deadline_s)
            became_ready = layer.is_ready and not was_ready
            replaced = was_ready and layer.serving_trainer is not serving
        if became_ready or replaced or progress.done:
            self._urgent.set()
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
        with self._lock:
            trainer = self._layer.trainer
            if extra_steps:
                trainer.set_total_steps(trainer.total_steps + int(extra_steps))
            return trainer.total_steps

    def mark_changed(self) -> None:
        """Let the next refresh relabel what is served now (not after ``relabel_period_s``)."""
        self._urgent.set()

    # ---- serving -------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> MapSnapshot | None:
        """Publish a new snapshot when what should be served changed (module docstring);
        None when nothing changed."""
        with self._refresh_lock:
            layer = self._layer
            prior = layer.prior.get_prior_snapshot()
            start = time.perf_counter()
            if not layer.is_ready:
                if prior.version == self._served[0] and self._served[1] < 0 and not force:
                    return None
                self._served = (prior.version, -1)
                return self._serve(prior.mesh, prior.instances, prior.stamp_ns,
                                   prior.num_frames, False, (time.perf_counter() - start) * 1e3)
            urgent = self._urgent.is_set()
            now = time.monotonic()
            if not (force or urgent or self._served[1] < 0
                    or now - self._last_relabel >= self.relabel_period_s):
                return None
            self._urgent.clear()
            layer.update()
            step = layer.published_step
            if (prior.version, step) == self._served and not force:
                return None
            self._last_relabel = now
            self._served = (prior.version, step)
            return self._serve(layer.get_mesh(), tuple(layer.get_instances()), prior.stamp_ns,
                               prior.num_frames, False, (time.perf_counter() - start) * 1e3)

    # ---- the whole state -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the whole state (the prior's part, keyframes, field) to one file."""
        path = output_path(path, "path")
        with self._lock:
            self._layer.save(path)
        return path

    def load(self, path: str | Path) -> None:
        """Replace the whole state with a saved one (atomically; see ``RefinedLayer.load``)."""
        with self._lock:
            self._layer.load(Path(path).expanduser())
        self._served = (-1, -2)
        self.refresh(force=True)

    def reset(self) -> None:
        """Empty the prior and the layer, and serve the empty map."""
        with self._lock:
            self._layer.prior.reset_prior()
            self._layer.reset()
        self._served = (-1, -2)
        self.refresh(force=True)
