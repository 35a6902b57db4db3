"""The refined map as the mapper node runs it, for offline evaluation (``eval --method refined``).

``StreamedRefinedMap`` implements ``PanopticMap`` over the same runtime objects as the
co-located instant and mapper nodes: an instant :class:`MapSession` that integrates every frame
once and offers it to a :class:`RefinedSession` (the refined layer over the instant map's
snapshots), the refresh workers of both at the nodes' output rate and CPU share, and the
:class:`TrainingWorker` that trains the field in chunks in the background, yielding while a frame
is being integrated. Frames are fed at the pace of their stamps (``streaming.pace``), like a
sensor at 1x, so training gets the share of the time it gets in the graph. ``finalize()`` waits,
as the node does after the stream ends, until the step budget is trained (at most
``streaming.finish_timeout_s``), then serves the last relabelling. So the evaluation measures the
code and the schedule that are deployed; only DDS and the frames a busy node skips are missing
(``benchmarks/graph_quality.py`` measures those).

The instant map is never finalized (the node keeps integrating and never does).

Owns: :class:`StreamingConfig`, :class:`StreamedRefinedMap` (the ``"refined"`` method of
``create_map``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap
from panoptic_mapper.core.mapping.refined_config import RefinedMapConfig
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame,
                                        validate_rigid_transform)
from panoptic_mapper.runtime.map_session import MapSession
from panoptic_mapper.runtime.mapper_config import TrainingWorkerConfig
from panoptic_mapper.runtime.node_config import MapOutputConfig
from panoptic_mapper.runtime.prior_sources import SessionPrior
from panoptic_mapper.runtime.refined_session import RefinedSession
from panoptic_mapper.runtime.training_worker import TrainingState, TrainingWorker
from panoptic_mapper.runtime.workers import PeriodicWorker

LOGGER = logging.getLogger(__name__)
REFRESH_NICE = 5
END_STATES = (TrainingState.DONE, TrainingState.FAILED, TrainingState.STOPPED)


@dataclass
class StreamingConfig(ConfigBase):
    """How the offline refined map is run: as the nodes run it (defaults: theirs)."""

    training: TrainingWorkerConfig = field(default_factory=TrainingWorkerConfig)
    """The background training worker (the mapper node's ``training``)."""
    output: MapOutputConfig = field(default_factory=MapOutputConfig)
    """Refresh rate and CPU share of the snapshots (the nodes' ``output``)."""
    pace: Literal["stamps", "none"] = "stamps"
    """stamps: feed frames no faster than their stamps (a sensor played at ``rate``); none:
    as fast as they come (training then gets less time per frame than in the graph)."""
    rate: float = 1.0
    """Playback rate of ``pace: stamps``."""
    finish_timeout_s: float = 900.0
    """``finalize()`` waits at most this long for the step budget to be trained, seconds."""
    torch_threads: int = 1
    """torch CPU threads of the process (the nodes' ``torch_threads``); 0 = leave it."""

    def validate(self) -> None:
        require(self.rate > 0, "rate", self.rate, "must be > 0")
        require(self.finish_timeout_s > 0, "finish_timeout_s", self.finish_timeout_s,
                "must be > 0")
        require(self.torch_threads >= 0, "torch_threads", self.torch_threads, "must be >= 0")


class StreamedRefinedMap:
    """The co-located instant and mapper nodes' maps and workers, without ROS (see the module
    docstring); implements ``PanopticMap``."""

    method_name = "refined"

    def __init__(self, registry: LabelRegistry, config: RefinedMapConfig | None = None,
                 streaming: StreamingConfig | None = None):
        self.registry = registry
        self.config = config or RefinedMapConfig()
        self.streaming = streaming or StreamingConfig()
        if self.streaming.torch_threads:
            import torch

            torch.set_num_threads(self.streaming.torch_threads)
        instant_config, layer_config = self.config.instant, self.config.layer_config()
        self.instant = MapSession(lambda: InstantPanopticMap(registry, instant_config),
                                  registry)
        self.session = RefinedSession(
            lambda: RefinedLayer(registry, layer_config, SessionPrior(self.instant),
                                 instant_config.instances),
            registry, None, self.streaming.training.relabel_period_s)
        self.instant.add_frame_listener(self.session.observe_frame)
        self._integrating = threading.Event()
        output = self.streaming.output
        self._workers = [
            PeriodicWorker("refresh", 1.0 / output.rate_hz, output.max_refresh_share,
                           self.instant.refresh, self._worker_error, nice=REFRESH_NICE),
            PeriodicWorker("refined_refresh", 1.0 / output.rate_hz, output.max_refresh_share,
                           self.session.refresh, self._worker_error, nice=REFRESH_NICE)]
        self.training = TrainingWorker(self.session, self.streaming.training, LOGGER,
                                       lambda: int(self._integrating.is_set()))
        for worker in (*self._workers, self.training):
            worker.start()
        self._stream_start: tuple[float, int] | None = None
        self._raycaster: tuple[int, MeshRaycaster] | None = None
        self.finish_s = 0.0
        """How long ``finalize()`` waited for training."""

    @classmethod
    def from_config(cls, config: dict[str, Any] | None,
                    registry: LabelRegistry) -> "StreamedRefinedMap":
        """From a nested dict: ``RefinedMapConfig`` keys, plus ``streaming`` for
        :class:`StreamingConfig`."""
        data = dict(config or {})
        streaming = StreamingConfig.from_dict(data.pop("streaming", None), "streaming")
        return cls(registry, RefinedMapConfig.from_dict(data), streaming)

    def _worker_error(self, worker: str, exc: BaseException) -> None:
        LOGGER.error("%s failed: %s: %s", worker, type(exc).__name__, exc)

    # ---- the stream ----------------------------------------------------------------------------
    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Integrate into the instant map (the refined layer is offered the frame), no
        earlier than the frame's stamp allows at ``streaming.rate``."""
        self._pace(frame.stamp_ns)
        self._integrating.set()
        try:
            return self.instant.integrate(frame, segmentation)
        finally:
            self._integrating.clear()

    def _pace(self, stamp_ns: int) -> None:
        if self.streaming.pace != "stamps":
            return
        now = time.monotonic()
        if self._stream_start is None or stamp_ns < self._stream_start[1]:
            self._stream_start = (now, stamp_ns)
            return
        due = self._stream_start[0] + (stamp_ns - self._stream_start[1]) * 1e-9 \
            / self.streaming.rate
        if due > now:
            time.sleep(due - now)

    def finalize(self) -> None:
        """The end of the stream: wait, as the node does, until the field's step budget is
        trained (or it cannot train, or ``finish_timeout_s``), then serve its labels."""
        start = time.monotonic()
        deadline = start + self.streaming.finish_timeout_s
        while time.monotonic() < deadline:
            status = self.training.status()
            if status.state in END_STATES or (status.state == TrainingState.WAITING
                                               and not self.session.can_train()):
                break
            time.sleep(0.2)
        else:
            LOGGER.warning("refined map: training not done after %.0f s (step %d of %d); "
                           "serving the field as it is", self.streaming.finish_timeout_s,
                           self.training.status().progress.step,
                           self.training.status().progress.total_steps)
            self.training.stop_training()
        self.finish_s = time.monotonic() - start
        self.close()
        self.instant.refresh(force=True)
        self.session.refresh(force=True)

    def close(self) -> None:
        """Stop the workers (idempotent); the map keeps its state."""
        for worker in (self.training, *self._workers):
            worker.stop()

    @property
    def num_frames(self) -> int:
        return self.instant.num_frames

    # ---- PanopticMap ---------------------------------------------------------------------------
    def update_mesh(self) -> MeshUpdate:
        """Refresh both snapshots now (the workers do it periodically)."""
        self.instant.refresh()
        snapshot = self.session.refresh(force=True) or self.session.snapshot
        return MeshUpdate(changed=True, num_vertices=snapshot.mesh.num_vertices,
                          num_triangles=snapshot.mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        return self.session.snapshot.mesh

    def get_instances(self) -> list[MapInstance]:
        return list(self.session.snapshot.instances)

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.session.layer.query_labels(points_m)

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        """Raycast the served mesh."""
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        snapshot = self.session.snapshot
        cached = self._raycaster
        if cached is None or cached[0] != snapshot.version:
            cached = (snapshot.version, MeshRaycaster(snapshot.mesh))
            self._raycaster = cached
        return cached[1].render(T, intrinsics)

    def save(self, path: str | Path) -> None:
        self.session.save(path)

    def load(self, path: str | Path) -> None:
        self.session.load(path)

    def reset(self) -> None:
        self.session.reset()
