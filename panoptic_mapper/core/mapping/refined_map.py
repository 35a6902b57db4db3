"""The stand-alone refined map: an instant map plus the refined layer derived from it.

``RefinedPanopticMap`` implements ``PanopticMap`` for library use and the core's tests: it owns
a prior map (an :class:`InstantPanopticMap` built from ``config.instant`` by default; any
``PanopticMap`` works), integrates every frame into it once, offers the accepted frames to a
:class:`RefinedLayer` as keyframe candidates, and serves the layer's view. ``finalize()`` trains
the field to the end of its step budget in the calling thread.

The nodes and ``panoptic-mapper eval --method refined`` do not use this class: they run the
same two layers through the runtime (``runtime/streamed_refined.py``), with the field trained
by the background worker the mapper node uses.

Ablations of the paper's Table V (config paths under ``training``):

=====================  ============================================================
Gaussian prior         ``tokens.gaussian_prior`` (False: mask = sigmoid(f_q . f_k))
token prune/split      ``token_manager.enabled``
panoptic head          ``schedule.panoptic_head``
token class head       ``thing_label_from_token`` (this config; False: semantic branch)
=====================  ============================================================

Owns: :class:`RefinedPanopticMap`. Re-exports :class:`RefinedMapConfig`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from panoptic_mapper.core.field.trainer import FieldTrainer, TrainingProgress
from panoptic_mapper.core.field.keyframes import KeyframeSelector, KeyframeStore
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate, PanopticMap
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap
from panoptic_mapper.core.mapping.prior import MapPrior
from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig, RefinedMapConfig
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame)

__all__ = ["RefinedMapConfig", "RefinedLayerConfig", "RefinedPanopticMap"]


class RefinedPanopticMap:
    """PanopticRecon++ over a prior map it owns (see the module docstring).

    Args:
        registry: the label registry.
        config: settings (defaults when None).
        prior: the prior map; by default an :class:`InstantPanopticMap` built from
            ``config.instant``.
    """

    method_name = "refined"

    def __init__(self, registry: LabelRegistry, config: RefinedMapConfig | None = None,
                 prior: PanopticMap | None = None):
        self.registry = registry
        self.config = config or RefinedMapConfig()
        self.prior = prior if prior is not None else InstantPanopticMap(registry,
                                                                       self.config.instant)
        self.layer = RefinedLayer(registry, self.config, MapPrior(self.prior),
                                  self.config.instant.instances)

    @classmethod
    def from_config(cls, config: dict[str, Any] | RefinedMapConfig | None,
                    registry: LabelRegistry) -> "RefinedPanopticMap":
        """Build from a nested dict (YAML section), a config object or None (defaults)."""
        if isinstance(config, RefinedMapConfig):
            return cls(registry, config)
        return cls(registry, RefinedMapConfig.from_dict(config))

    # ---- integration ---------------------------------------------------------------------------
    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Integrate into the prior; offer the accepted frame to the layer as a keyframe."""
        report = self.prior.integrate_frame(frame, segmentation)
        if not report.accepted:
            return report
        keyframe = self.layer.observe_frame(frame, segmentation)
        report.warnings.extend(keyframe.warnings)
        if keyframe.evicted_stamp_ns is not None:
            report.stats["refined_evicted_keyframe"] = float(keyframe.evicted_stamp_ns)
        report.stats["refined_keyframe"] = float(keyframe.kept)
        report.stats["refined_keyframes"] = float(keyframe.num_keyframes)
        return report

    # ---- the layer's training state ------------------------------------------------------------
    @property
    def classes(self):
        """The field's class spaces (``ClassSpace``)."""
        return self.layer.classes

    @property
    def store(self) -> KeyframeStore:
        return self.layer.store

    @property
    def selector(self) -> KeyframeSelector:
        return self.layer.selector

    @property
    def trainer(self) -> FieldTrainer:
        """The field in training."""
        return self.layer.trainer

    @property
    def is_ready(self) -> bool:
        return self.layer.is_ready

    @property
    def field_restarts(self) -> int:
        return self.layer.field_restarts

    @property
    def field_box(self) -> SceneBox | None:
        return self.layer.field_box

    @property
    def serving_trainer(self) -> FieldTrainer | None:
        return self.layer.serving_trainer

    @property
    def appearance(self):
        """The trained gsplat colour branch (``GsplatAppearance``), or None."""
        return self.layer.appearance

    def can_train(self) -> bool:
        return self.layer.can_train()

    def train_steps(self, num_steps: int, deadline_s: float | None = None) -> TrainingProgress:
        """See :meth:`RefinedLayer.train_steps`."""
        return self.layer.train_steps(num_steps, deadline_s)

    def progress(self) -> TrainingProgress:
        return self.layer.progress()

    # ---- PanopticMap ---------------------------------------------------------------------------
    def update_mesh(self) -> MeshUpdate:
        """Update the prior's mesh; once ready, relabel it with the serving field (only when
        that field trained or the prior's mesh changed since the last time)."""
        update = self.prior.update_mesh()
        relabelled = self.layer.update()
        if not self.layer.is_ready:
            return update
        mesh = self.layer.get_mesh()
        return MeshUpdate(changed=relabelled, num_vertices=mesh.num_vertices,
                          num_triangles=mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        return self.layer.get_mesh()

    def get_instances(self) -> list[MapInstance]:
        return self.layer.get_instances()

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`RefinedLayer.query_labels`."""
        return self.layer.query_labels(points_m)

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        """Raycast the labelled mesh (once ready), else the prior's own render."""
        if not self.layer.is_ready:
            return self.prior.render_labels(T_world_cam, intrinsics)
        return self.layer.render_labels(T_world_cam, intrinsics)

    def render_color(self, T_world_cam: np.ndarray,  # noqa: N803
                     intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`RefinedLayer.render_color`."""
        return self.layer.render_color(T_world_cam, intrinsics)

    def finalize(self) -> None:
        """Finish the prior, then train to the end of the step budget (within
        ``finalize_max_s``) and publish."""
        self.prior.finalize()
        self.layer.finish_training()

    def reset(self) -> None:
        """Forget everything (configuration kept)."""
        if hasattr(self.prior, "reset"):
            self.prior.reset()
        self.layer.reset()

    @property
    def num_frames(self) -> int:
        """Frames integrated into the prior so far."""
        return int(getattr(self.prior, "num_frames", 0))

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the prior, the keyframes and the field checkpoint to one ``.npz`` file."""
        self.layer.save(path, full_config=self.config.to_dict())

    def load(self, path: str | Path) -> None:
        """Replace the state with one written by :meth:`save`, atomically (see
        :meth:`RefinedLayer.load`); the file's configuration becomes this map's."""
        self.layer.load(path)
        self.config = self.layer.config
