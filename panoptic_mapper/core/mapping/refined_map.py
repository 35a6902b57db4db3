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

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.appearance import (GsplatAppearance,
                                                  appearance_unavailable_reason)
from panoptic_mapper.core.field.trainer import FieldTrainer, TrainingProgress
from panoptic_mapper.core.field.keyframes import KeyframeSelector, KeyframeStore
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.schedule import phase_at
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate, PanopticMap
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap
from panoptic_mapper.core.mapping.prior import MapPrior
from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig, RefinedMapConfig
from panoptic_mapper.core.mapping.refined_layer import RefinedLayer
from panoptic_mapper.core.types import (CameraIntrinsics, LabelRender, MapInstance,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame,
                                        validate_rigid_transform)

__all__ = ["RefinedMapConfig", "RefinedLayerConfig", "RefinedPanopticMap"]

LOGGER = logging.getLogger(__name__)
BUDGET_CHECK_STEPS = 10
"""``finalize`` re-fits the step budget to the time budget every this many steps."""
BUDGET_SAFETY = 0.9
"""Share of the remaining time the re-fitted budget plans to use (the rate fluctuates)."""


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
        """([H, W, 3] uint8 colour, [H, W] float32 depth) from the appearance branch.

        Raises:
            InvalidInputError: the branch was not trained (disabled, or no CUDA / gsplat).
        """
        appearance = self.layer.appearance
        if appearance is None:
            reason = (appearance_unavailable_reason(self.layer.trainer.device)
                      or "it is disabled or not trained yet")
            raise InvalidInputError("appearance", None, f"no appearance model: {reason}",
                                    kind="appearance")
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        with torch.no_grad():
            rgb, depth, _ = appearance.render(T, intrinsics)
        return ((rgb.clamp(0, 1) * 255).round().byte().cpu().numpy(),
                depth.float().cpu().numpy())

    def finalize(self) -> None:
        """Finish the prior, then train to the end of the step budget (within
        ``finalize_max_s``; with ``auto_budget`` the budget shrinks to fit) and publish. With
        too few keyframes the map keeps answering from the prior.

        A field set up earlier is first restarted on a grown box if any keyframe point or prior
        mesh vertex lies beyond its box, so that the field of an offline run covers everything
        it saw."""
        self.prior.finalize()
        layer = self.layer
        if not layer.can_train():
            LOGGER.warning("refined map: %d keyframes (< %d), field not trained; answering "
                           "from the prior", len(layer.store), self.config.min_keyframes)
            return
        layer.prepare_training(cover_everything=True)
        limit = self.config.finalize_max_s
        started = (time.monotonic(), layer.trainer.step_count)
        deadline = started[0] + limit if limit > 0 else None
        while layer.trainer.step_count < layer.trainer.total_steps:
            trainer = layer.trainer
            if deadline is not None and time.monotonic() >= deadline:
                LOGGER.warning("refined map: time budget of %.0f s reached at step %d of %d",
                               limit, trainer.step_count, trainer.total_steps)
                break
            chunk = BUDGET_CHECK_STEPS if self.config.auto_budget else trainer.total_steps
            trainer.train_steps(min(chunk, trainer.total_steps - trainer.step_count), deadline)
            if self.config.auto_budget and deadline is not None:
                self._fit_budget(started, deadline)
        layer.publish_field(layer.trainer)
        layer.mark_finalized()
        if self.config.appearance.enabled:
            self._train_appearance()

    def _train_appearance(self) -> None:
        """Train the gsplat colour branch on the field's device, or say why it is skipped."""
        layer = self.layer
        reason = appearance_unavailable_reason(layer.trainer.device)
        if reason is not None:
            LOGGER.warning("refined map: %s", reason)
            return
        if layer.appearance is None:
            layer.appearance = GsplatAppearance(self.config.appearance, layer.store.snapshot(),
                                                self.config.training.trainer.seed,
                                                layer.trainer.device)
        remaining = self.config.appearance.steps - layer.appearance.step_count
        if remaining > 0:
            layer.appearance.train_steps(remaining)

    def _fit_budget(self, started: tuple[float, int], deadline: float) -> None:
        """Re-fit the step budget so that the schedule ends by ``deadline`` at the step rate
        measured since ``started`` (time, step). Phases are fractions of the budget, so a
        shrunk schedule stays complete; the budget grows back (up to the configured one) only
        where that does not return training to an earlier phase."""
        trainer = self.layer.trainer
        now = time.monotonic()
        done = trainer.step_count - started[1]
        if done < BUDGET_CHECK_STEPS or now <= started[0]:
            return
        rate = done / (now - started[0])
        affordable = int(BUDGET_SAFETY * rate * max(deadline - now, 0.0))
        budget = min(max(trainer.step_count + affordable, trainer.step_count + 1),
                     self.config.training.trainer.total_steps)
        if budget == trainer.total_steps:
            return
        schedule = self.config.training.schedule
        same_phase = (phase_at(trainer.step_count, budget, schedule)
                      == phase_at(trainer.step_count, trainer.total_steps, schedule))
        if budget < trainer.total_steps or same_phase:
            LOGGER.info("refined map: step budget %d -> %d to fit %.0f s", trainer.total_steps,
                        budget, self.config.finalize_max_s)
            trainer.set_total_steps(budget)

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
