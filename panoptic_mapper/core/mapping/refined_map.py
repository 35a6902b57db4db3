"""The refined panoptic map: a PanopticRecon++ neural field trained on keyframes, over a prior.

``RefinedPanopticMap`` implements ``PanopticMap`` (the ``"refined"`` method of ``create_map``):

* ``integrate_frame`` feeds every frame to the prior (the instant map by default) and keeps a
  keyframe when the camera moved, turned or waited enough (``KeyframeConfig``);
* training starts from the prior: one token per prior thing instance (and later ones for
  instances the prior confirms afterwards), and the prior's vertex labels are distilled into the
  field while the 2D masks of all keyframes refine it jointly;
* ``train_steps(n)`` trains the field in chunks (for a background worker; thread-safe against the
  getters); ``finalize()`` trains to the end of the step budget within ``finalize_max_s``,
  scaling the budget to the measured step rate when ``auto_budget`` is on;
* until the field is ready (``is_ready``: the schedule passed ``ready_fraction`` and the field was
  published) every getter answers from the prior; afterwards the mesh is the prior's geometry
  with vertex labels from the field (Bayes panoptic head), instances are the tokens, and
  ``render_labels`` raycasts that labelled mesh. Tokens inherit the prior's instance ids by 3D
  overlap on the mesh vertices (``core/field/instance_ids.py``);
* the field's scene box (the cube its hash grids cover) is set at the first training call; when
  a keyframe later sees beyond it (``scene_box``, ``core/field/box_growth.py``), the next
  training call restarts the field on a grown box (tokens and distillation targets from the
  prior again, step counter and schedule from zero). Until the restarted field is ready, the
  previous field keeps labelling what the getters serve; the restarted field's tokens then take
  the ids published before (``rebind_tokens``). A user-given workspace box never grows;
* ``save``/``load`` write one ``.npz`` file with the prior's state, the keyframes and the field
  checkpoint (optimiser and token-manager state included, so training resumes). ``load`` is
  atomic: it builds the complete new state first and swaps it in only once every part was read;
  a bad file raises ``DataFormatError`` and leaves the map as it was.

Ablations of the paper's Table V (config paths under ``training``):

=====================  ============================================================
Gaussian prior         ``tokens.gaussian_prior`` (False: mask = sigmoid(f_q . f_k))
token prune/split      ``token_manager.enabled``
panoptic head          ``schedule.panoptic_head``
token class head       ``thing_label_from_token`` (this config; False: semantic branch)
=====================  ============================================================

Owns: :class:`RefinedMapConfig`, :class:`RefinedPanopticMap`.
Does not own: the field and its training (``core/field``), the prior map.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError, DataFormatError, InvalidInputError
from panoptic_mapper.core.field.appearance import (AppearanceConfig, GsplatAppearance,
                                                  appearance_unavailable_reason)
from panoptic_mapper.core.field.box_growth import (SceneBoxConfig, grown_box,
                                                   keyframe_surface_sample, outside_share)
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import GRID_NAMES, FieldTrainingConfig, KeyframeConfig
from panoptic_mapper.core.field.instance_ids import (IdBindingState, bind_ids,
                                                     passthrough_ids, published_instance_ids,
                                                     rebind_tokens)
from panoptic_mapper.core.field.keyframes import Keyframe, KeyframeSelector, KeyframeStore
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.panoptic_head import NO_TOKEN, decode_panoptic
from panoptic_mapper.core.field.schedule import phase_at
from panoptic_mapper.core.field.token_init import seeds_from_prior
from panoptic_mapper.core.field.trainer import FieldTrainer, PriorTargets, TrainingProgress
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate, PanopticMap
from panoptic_mapper.core.mapping.instant_map import InstantMapConfig, InstantPanopticMap
from panoptic_mapper.core.tracking.instance_geometry import gravity_box, representative_color
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import (NO_INSTANCE_ID, VOID_LABEL_ID, CameraIntrinsics,
                                        LabelRender, MapInstance, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame,
                                        validate_rigid_transform)

LOGGER = logging.getLogger(__name__)

SAVE_FORMAT_VERSION = 2
"""Version 2 added the restart count and, during a restart, the serving field's checkpoint."""
READABLE_FORMAT_VERSIONS = (1, 2)
BUDGET_CHECK_STEPS = 10
"""``finalize`` re-fits the step budget to the time budget every this many steps."""
BUDGET_SAFETY = 0.9
"""Share of the remaining time the re-fitted budget plans to use (the rate fluctuates)."""
KEYFRAME_ARRAYS = ("depth_m", "semantic_class", "thing_mask", "thing_classes", "T_world_cam")
OPTIONAL_KEYFRAME_ARRAYS = ("rgb", "score")
SAVED_META_KEYS = ("config", "selector", "bindings", "published", "finalized", "keyframes")
"""Meta entries ``load`` needs besides the format version, method and class list."""


@dataclass
class RefinedMapConfig(ConfigBase):
    """The refined map: prior, keyframes, field training and publishing."""

    instant: InstantMapConfig = field(default_factory=InstantMapConfig)
    """The instant map used as prior (its geometry, instances and the answers until ready)."""
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    """Keyframe selection and storage."""
    training: FieldTrainingConfig = field(default_factory=FieldTrainingConfig)
    """The neural field, its losses, schedule and budget."""
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    """The optional gsplat colour branch (CUDA only), trained in ``finalize()``."""
    scene_box: SceneBoxConfig = field(default_factory=SceneBoxConfig)
    """The field's scene box: a fixed workspace, or grown (field restarted) as keyframes see
    beyond it."""
    tokens_from_prior: bool = True
    """Seed one token per prior thing instance (and one per instance the prior confirms later),
    and distil the prior's labels and instances at its mesh vertices (the mesh at training
    setup) into the field from the first step until ``training.schedule.prior_distill_until``,
    which by default (1.0) is the end of the schedule; False: the paper's tokens from
    back-projected pixels and no distillation."""
    min_keyframes: int = 3
    """Training starts once this many keyframes are stored."""
    ready_fraction: float = 0.6
    """The field replaces the prior once this fraction of the step budget is trained."""
    finalize_max_s: float = 240.0
    """Wall-time budget of ``finalize()`` for training, seconds (0 = no limit)."""
    auto_budget: bool = True
    """``finalize()`` keeps timing its steps and re-fits the step budget (at most
    ``training.trainer.total_steps``) so that the whole schedule fits ``finalize_max_s`` (on a
    loaded machine: fewer steps, complete schedule)."""
    thing_label_from_token: bool = True
    """A thing vertex takes its token's class (h_SI); False: the semantic branch (ablation)."""
    stuff_ambiguity: tuple[float, float] = (0.0, 0.0)
    """Points whose stuff mass lies strictly inside this interval become unlabelled (the code
    uses (0.2, 0.8)); equal bounds disable the rule."""
    id_binding_min_iou: float = 0.2
    """A token inherits a prior instance id when their vertex IoU reaches this."""
    min_token_vertices: int = 40
    """A token that wins fewer mesh vertices than this is not published: its vertices keep the
    prior's labels (at 2 cm voxels, 40 vertices are about 160 cm^2 of surface, less than the
    smallest benchmark object shows). Such fragments are tokens squeezed out by their
    neighbours; as instances they would be phantom objects. 0 = publish every token."""
    query_max_abs_sdf_m: float = 0.2
    """``query_labels`` answers 0 for points farther than this from the field's surface."""
    prior_fallback_confidence: float = 0.7
    """Where the field's winning panoptic probability is below this, a vertex (or queried
    point) keeps the prior's label and instance; 0 = labels purely from the field (the paper)
    inside its scene box (outside it the prior always answers).
    Not in the paper: on a CPU budget the field is not converged everywhere, and the prior is
    the better answer where the field is unsure."""

    def validate(self) -> None:
        require(self.min_keyframes >= 1, "min_keyframes", self.min_keyframes, "must be >= 1")
        require(0 <= self.ready_fraction <= 1, "ready_fraction", self.ready_fraction,
                "must be in [0, 1]")
        require(self.finalize_max_s >= 0, "finalize_max_s", self.finalize_max_s, "must be >= 0")
        require(len(self.stuff_ambiguity) == 2, "stuff_ambiguity", self.stuff_ambiguity,
                "must be [low, high]")
        require(0 <= self.id_binding_min_iou <= 1, "id_binding_min_iou",
                self.id_binding_min_iou, "must be in [0, 1]")
        require(self.min_token_vertices >= 0, "min_token_vertices", self.min_token_vertices,
                "must be >= 0")
        require(self.query_max_abs_sdf_m > 0, "query_max_abs_sdf_m", self.query_max_abs_sdf_m,
                "must be > 0")
        require(0 <= self.prior_fallback_confidence <= 1, "prior_fallback_confidence",
                self.prior_fallback_confidence, "must be in [0, 1]")


@dataclass
class _Published:
    """What the getters serve once the field is ready (replaced, never mutated)."""

    mesh: PanopticMesh
    raycaster: MeshRaycaster
    instances: list[MapInstance]
    step: int
    """Training step of the field that labelled it."""
    trainer: FieldTrainer
    """The field that labelled it (it also answers ``query_labels``); during a restart the
    previous field, not the one in training."""
    box: SceneBox
    """That field's scene box: outside it the prior's answer was kept."""


class RefinedPanopticMap:
    """PanopticRecon++ over a prior map (see module docstring); implements ``PanopticMap``.

    Args:
        registry: the label registry.
        config: settings (defaults when None).
        prior: the prior map; by default an :class:`InstantPanopticMap` built from
            ``config.instant``. Any ``PanopticMap`` works (tests use a stand-in).
    """

    method_name = "refined"

    def __init__(self, registry: LabelRegistry, config: RefinedMapConfig | None = None,
                 prior: PanopticMap | None = None):
        self.registry = registry
        self.config = config or RefinedMapConfig()
        self.prior = prior if prior is not None else InstantPanopticMap(registry,
                                                                       self.config.instant)
        self.classes = ClassSpace.from_registry(registry)
        self._is_stuff = ~registry.is_thing_table()
        self._is_stuff[VOID_LABEL_ID] = False
        self._lock = threading.RLock()
        self._build_state()

    @classmethod
    def from_config(cls, config: dict[str, Any] | RefinedMapConfig | None,
                    registry: LabelRegistry) -> "RefinedPanopticMap":
        """Build from a nested dict (YAML section), a config object or None (defaults)."""
        if isinstance(config, RefinedMapConfig):
            return cls(registry, config)
        return cls(registry, RefinedMapConfig.from_dict(config))

    def _build_state(self) -> None:
        sampler = self.config.training.sampler
        keyframe_config = self.config.keyframes
        if self.config.appearance.enabled:
            keyframe_config = keyframe_config.replace(keep_rgb=True)
        self.store = KeyframeStore(keyframe_config, sampler.near_m)
        self.selector = KeyframeSelector(self.config.keyframes)
        self.trainer = self._new_trainer()
        self._published: _Published | None = None
        self._restarts = 0
        """Times the field was restarted on a grown box."""
        self._box_checked: tuple[FieldTrainer | None, set[int]] = (None, set())
        """(trainer, stamps of the keyframes that do not see beyond its box)."""
        self._bindings = IdBindingState()
        self._finalized = False
        self.appearance: GsplatAppearance | None = None
        self._seeded_prior_ids: set[int] = set()
        """Prior thing instances that seeded a token (initially or later)."""

    def _new_trainer(self) -> FieldTrainer:
        try:
            return FieldTrainer(self.config.training, self.classes, self.store)
        except ConfigError as exc:  # the device or a grid does not fit this machine
            raise ConfigError(f"training.{exc.field}", exc.value, exc.reason) from exc

    # ---- integration ---------------------------------------------------------------------------
    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        """Feed the prior; keep the frame as a keyframe when the selector says so."""
        report = self.prior.integrate_frame(frame, segmentation)
        if not report.accepted:
            return report
        keyframe = False
        with self._lock:
            if self.selector.is_keyframe(frame.T_world_cam, frame.stamp_ns):
                try:
                    stored, warnings = Keyframe.from_frame(frame, segmentation, self.classes,
                                                           self.registry, self.store.config)
                except InvalidInputError as exc:
                    report.warnings.append(f"refined map: frame not kept as keyframe: {exc}")
                else:
                    report.warnings.extend(warnings)
                    evicted = self.store.add(stored)
                    self.selector.accept(frame.T_world_cam, frame.stamp_ns)
                    keyframe = True
                    if evicted is not None:
                        report.stats["refined_evicted_keyframe"] = float(evicted)
        report.stats["refined_keyframe"] = float(keyframe)
        report.stats["refined_keyframes"] = float(len(self.store))
        return report

    # ---- training ------------------------------------------------------------------------------
    @property
    def is_ready(self) -> bool:
        """True once the field answers instead of the prior."""
        return self._published is not None

    def can_train(self) -> bool:
        """Enough keyframes are stored to start (or continue) training."""
        return self.trainer.is_setup or len(self.store) >= self.config.min_keyframes

    @property
    def field_restarts(self) -> int:
        """Times the field was restarted on a grown scene box."""
        return self._restarts

    @property
    def field_box(self) -> SceneBox | None:
        """The scene box of the field in training (None before the first training call)."""
        field_ = self.trainer.field
        return field_.box if field_ is not None else None

    @property
    def serving_trainer(self) -> FieldTrainer | None:
        """The trainer whose field labels what the getters serve (None while the prior
        answers): the one in training, except during a restart on a grown box, when the
        previous one serves until the new one is ready."""
        published = self._published
        return published.trainer if published is not None else None

    def train_steps(self, num_steps: int, deadline_s: float | None = None) -> TrainingProgress:
        """Train up to ``num_steps`` steps (see :meth:`FieldTrainer.train_steps`), first
        restarting the field on a grown box when a keyframe sees beyond the current one;
        publishes the field in training once its schedule passes ``ready_fraction`` (the first
        time, and after a restart, when it replaces the previous field).

        Raises:
            InvalidInputError: fewer than ``min_keyframes`` keyframes are stored.
        """
        self._ensure_setup()
        self._grow_box_if_due()
        self._seed_new_prior_instances()
        trainer = self.trainer
        progress = trainer.train_steps(num_steps, deadline_s)
        if self._field_ready() and not self._serves(trainer):
            self._publish(trainer)
        return self._with_box_state(progress, trainer)

    def progress(self) -> TrainingProgress:
        """Training progress without training (the restart count, and whether a keyframe sees
        beyond the box, included)."""
        trainer = self.trainer  # once: a restart may replace it meanwhile
        return self._with_box_state(trainer.progress(), trainer)

    def _with_box_state(self, progress: TrainingProgress,
                        trainer: FieldTrainer) -> TrainingProgress:
        """``progress`` of ``trainer`` with the restart count and whether its box must grow."""
        progress.field_restarts = self._restarts
        progress.box_growth_due = self._keyframe_beyond_box(trainer) is not None
        return progress

    def _serves(self, trainer: FieldTrainer) -> bool:
        """The published products come from ``trainer``'s field."""
        return self.serving_trainer is trainer

    def _seed_new_prior_instances(self) -> None:
        """Give a token to every thing instance the prior confirmed since the last call."""
        if not self.config.tokens_from_prior:
            return
        instances = [inst for inst in self.prior.get_instances()
                     if inst.is_thing and inst.id not in self._seeded_prior_ids]
        if not instances:
            return
        self._seeded_prior_ids.update(inst.id for inst in instances)
        seeds = seeds_from_prior(instances, self.config.training.tokens)
        ids = self.trainer.add_tokens(seeds)
        LOGGER.info("refined map: %d tokens for new prior instances %s (token ids %s)",
                    len(ids), [inst.id for inst in instances], ids)

    def _field_ready(self) -> bool:
        return (self.trainer.is_setup
                and self.trainer.step_count >= self.config.ready_fraction
                * self.trainer.total_steps)

    def _ensure_setup(self) -> None:
        if self.trainer.is_setup:
            return
        if len(self.store) < self.config.min_keyframes:
            raise InvalidInputError("keyframes", len(self.store),
                                    f"training needs at least {self.config.min_keyframes} "
                                    "keyframes", kind="field")
        self._setup(self.trainer, grow_from=None)

    def _setup(self, trainer: FieldTrainer, grow_from: SceneBox | None) -> None:
        """Set ``trainer`` up from the prior (tokens, distillation targets) on the user's fixed
        box, a box grown from ``grow_from``, or (neither) the box around the keyframes and the
        prior's mesh."""
        self.prior.update_mesh()
        mesh = self.prior.get_mesh()
        seeds, targets = None, None
        if self.config.tokens_from_prior:
            instances = self.prior.get_instances()
            self._seeded_prior_ids = {inst.id for inst in instances if inst.is_thing}
            seeds = seeds_from_prior(instances, self.config.training.tokens)
            if seeds.count == 0:
                seeds = None
        if seeds is not None and mesh.num_vertices:
            targets = PriorTargets(mesh.vertices_m.astype(np.float32),
                                   self.classes.label_to_semantic_class(mesh.label_ids),
                                   mesh.instance_ids.astype(np.int64))
        box = self.config.scene_box.fixed_box
        if grow_from is not None:
            box = grown_box(grow_from, np.concatenate([trainer.scene_points(), mesh.vertices_m]),
                            self.config.training.field.scene_margin_m,
                            self.config.scene_box.headroom)
        trainer.setup(seeds, mesh.vertices_m, targets, box)

    # ---- the scene box -------------------------------------------------------------------------
    def _keyframe_beyond_box(self, trainer: FieldTrainer) -> tuple[Keyframe, float] | None:
        """A stored keyframe that sees beyond the box of ``trainer``'s field, with the share of
        its points beyond it; None when none does (or the box does not grow). Keyframes found
        inside are remembered per field, so each is checked once."""
        rule = self.config.scene_box
        if not rule.grows or not trainer.is_setup:
            return None
        box = trainer.field.box
        # No lock: status polls call this beside training and queries, and a race between two
        # callers only checks a keyframe twice.
        checked_for, inside = self._box_checked
        if checked_for is not trainer:
            inside = set()
            self._box_checked = (trainer, inside)
        for keyframe in self.store.snapshot():
            if keyframe.stamp_ns in inside:
                continue
            share = outside_share(keyframe_surface_sample(keyframe, self.store.near_m), box,
                                  rule.outside_tolerance_m)
            if share > rule.outside_share:
                return keyframe, share
            inside.add(keyframe.stamp_ns)
        return None

    def _grow_box_if_due(self, cover_everything: bool = False) -> None:
        """Restart the field on a grown box when a keyframe sees beyond the current one, or,
        with ``cover_everything`` (``finalize``), when any point of the keyframes or of the
        prior's mesh lies beyond it (as a first setup at that time would cover them all).

        The new field is set up exactly like the first one (tokens and distillation targets
        from the prior), with the same step budget, from step 0. The published products (and
        their field, which answers ``query_labels``) stay until the new field is ready.
        """
        previous = self.trainer
        reason = self._growth_reason(previous, cover_everything)
        if reason is None:
            return
        trainer = self._new_trainer()
        trainer.set_total_steps(previous.total_steps)
        self._setup(trainer, grow_from=previous.field.box)
        with self._lock:
            self.trainer = trainer
            self._restarts += 1
        LOGGER.info("refined map: %s; restart %d on a grown box: %s -> %s (%d steps; until the "
                    "new field is ready at step %d, %s answers)", reason, self._restarts,
                    previous.field.box, trainer.field.box, trainer.total_steps,
                    int(np.ceil(self.config.ready_fraction * trainer.total_steps)),
                    "the previous field" if self.is_ready else "the prior")

    def _growth_reason(self, trainer: FieldTrainer, cover_everything: bool) -> str | None:
        """Why ``trainer``'s box must grow (for the log), or None."""
        if cover_everything and self.config.scene_box.grows and trainer.is_setup:
            self.prior.update_mesh()
            points = np.concatenate([trainer.scene_points(), self.prior.get_mesh().vertices_m])
            share = outside_share(points, trainer.field.box,
                                  self.config.scene_box.outside_tolerance_m)
            if share > 0:
                return (f"{100 * share:.1f} % of the keyframes' points and the prior's mesh lie "
                        "beyond the field's box")
        beyond = self._keyframe_beyond_box(trainer)
        if beyond is None:
            return None
        keyframe, share = beyond
        return (f"the keyframe at {keyframe.stamp_ns} ns sees beyond the field's box "
                f"({100 * share:.0f} % of its points)")

    # ---- PanopticMap ---------------------------------------------------------------------------
    def update_mesh(self) -> MeshUpdate:
        """Update the prior's mesh; once ready, relabel it with the serving field (only when
        that field trained or the prior's mesh changed since the last time). The serving field
        is the one in training, except during a restart on a grown box: then the previous field
        labels the mesh until the new one is ready."""
        update = self.prior.update_mesh()
        published = self._published
        if self._field_ready() and not self._serves(self.trainer):
            serving, stale = self.trainer, True
        elif published is None:
            return update
        else:
            serving = published.trainer
            stale = update.changed or published.step != serving.step_count
        if stale:
            self._publish(serving)
        mesh = self._published.mesh
        return MeshUpdate(changed=stale, num_vertices=mesh.num_vertices,
                          num_triangles=mesh.num_triangles)

    def get_mesh(self) -> PanopticMesh:
        published = self._published
        return published.mesh if published is not None else self.prior.get_mesh()

    def get_instances(self) -> list[MapInstance]:
        published = self._published
        return list(published.instances) if published is not None else self.prior.get_instances()

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label and instance ids at [N, 3] world points: from the field once ready (0 away
        from its surface), else from the prior. Outside the field's scene box the prior answers
        (the box grows as keyframes see beyond it, ``scene_box``; during a restart on a grown
        box the previous field and its box answer until the new field is ready)."""
        points = np.asarray(points_m, np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise InvalidInputError("points_m", list(points.shape), "must be [N, 3]",
                                    kind="query")
        if not np.all(np.isfinite(points)):
            raise InvalidInputError("points_m", "non-finite entries", "must be finite",
                                    kind="query")
        published = self._published
        if published is None:
            return self.prior.query_labels(points)
        with self._lock:
            published = self._published
            labels, token_ids, sdf, confidence = self._label_points(points, True,
                                                                    published.trainer)
            bindings = IdBindingState.from_dict(self._bindings.to_dict())
        inside = self._box_contains(points, published.box)
        known = (np.abs(sdf) <= self.config.query_max_abs_sdf_m) & inside
        stuff = np.where(token_ids == 0, labels, 0)
        instances = published_instance_ids(bindings, token_ids, stuff)
        unbound = (token_ids != 0) & ~np.isin(token_ids, list(bindings.token_to_map))
        instances[unbound] = NO_INSTANCE_ID
        from_prior = (known & (confidence < self.config.prior_fallback_confidence)) | ~inside
        if from_prior.any():
            prior_labels, prior_ids = self.prior.query_labels(points[from_prior])
            labels = labels.copy()
            labels[from_prior] = prior_labels
            instances[from_prior] = passthrough_ids(bindings, prior_ids, prior_labels,
                                                    self._is_stuff)
        known |= ~inside  # the prior's own answer there (void where it knows nothing)
        labels = np.where(known, labels, VOID_LABEL_ID).astype(np.int32)
        return labels, np.where(known, instances, NO_INSTANCE_ID).astype(np.int32)

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        """Raycast the labelled mesh (once ready), else the prior's render."""
        published = self._published
        if published is None:
            return self.prior.render_labels(T_world_cam, intrinsics)
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        return published.raycaster.render(T, intrinsics)

    def finalize(self) -> None:
        """Finish the prior, train to the end of the step budget (within ``finalize_max_s``)
        and publish. With too few keyframes the map keeps answering from the prior.

        A field set up earlier is first restarted on a grown box if any keyframe point or
        prior mesh vertex lies beyond its box (see ``scene_box``), so that the field of an
        offline run covers everything it saw."""
        self.prior.finalize()
        if not self.can_train():
            LOGGER.warning("refined map: %d keyframes (< %d), field not trained; answering "
                           "from the prior", len(self.store), self.config.min_keyframes)
            return
        self._ensure_setup()
        self._grow_box_if_due(cover_everything=True)
        self._seed_new_prior_instances()
        limit = self.config.finalize_max_s
        started = (time.monotonic(), self.trainer.step_count)
        deadline = started[0] + limit if limit > 0 else None
        while self.trainer.step_count < self.trainer.total_steps:
            if deadline is not None and time.monotonic() >= deadline:
                LOGGER.warning("refined map: time budget of %.0f s reached at step %d of %d",
                               limit, self.trainer.step_count, self.trainer.total_steps)
                break
            chunk = BUDGET_CHECK_STEPS if self.config.auto_budget else self.trainer.total_steps
            self.trainer.train_steps(
                min(chunk, self.trainer.total_steps - self.trainer.step_count), deadline)
            if self.config.auto_budget and deadline is not None:
                self._fit_budget(started, deadline)
        self._publish(self.trainer)
        self._finalized = True
        if self.config.appearance.enabled:
            self._train_appearance()

    def _train_appearance(self) -> None:
        """Train the gsplat colour branch on the field's device, or say why it is skipped."""
        reason = appearance_unavailable_reason(self.trainer.device)
        if reason is not None:
            LOGGER.warning("refined map: %s", reason)
            return
        if self.appearance is None:
            self.appearance = GsplatAppearance(self.config.appearance, self.store.snapshot(),
                                               self.config.training.trainer.seed,
                                               self.trainer.device)
        remaining = self.config.appearance.steps - self.appearance.step_count
        if remaining > 0:
            self.appearance.train_steps(remaining)

    def render_color(self, T_world_cam: np.ndarray,  # noqa: N803
                     intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
        """([H, W, 3] uint8 colour, [H, W] float32 depth) from the appearance branch.

        Raises:
            InvalidInputError: the branch was not trained (disabled, or no CUDA / gsplat).
        """
        if self.appearance is None:
            reason = (appearance_unavailable_reason(self.trainer.device)
                      or "it is disabled or not trained yet")
            raise InvalidInputError("appearance", None, f"no appearance model: {reason}",
                                    kind="appearance")
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        with torch.no_grad():
            rgb, depth, _ = self.appearance.render(T, intrinsics)
        return ((rgb.clamp(0, 1) * 255).round().byte().cpu().numpy(),
                depth.float().cpu().numpy())

    def _fit_budget(self, started: tuple[float, int], deadline: float) -> None:
        """Re-fit the step budget so that the schedule ends by ``deadline`` at the step rate
        measured since ``started`` (time, step). Phases are fractions of the budget, so a
        shrunk schedule stays complete; the budget grows back (up to the configured one) only
        where that does not return training to an earlier phase."""
        trainer = self.trainer
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

    # ---- publishing ----------------------------------------------------------------------------
    def _label_points(self, points_m: np.ndarray, with_sdf: bool, trainer: FieldTrainer
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Registry label id [P], token id [P] (0 = none), SDF [P] (empty without) and the
        winning panoptic probability [P] at points, from ``trainer``'s field."""
        prediction = trainer.predict(points_m, with_sdf=with_sdf)
        decoding = decode_panoptic(
            prediction.semantic_probs, prediction.token_masks, prediction.token_class_probs,
            self.classes.num_stuff, self.config.training.schedule.panoptic_head,
            self.config.thing_label_from_token, tuple(self.config.stuff_ambiguity))
        labels = self.classes.semantic_class_labels()[decoding.semantic_class.numpy()]
        token_rows = decoding.token_index.numpy()
        token_ids = np.zeros(len(token_rows), np.int64)
        has_token = token_rows != NO_TOKEN
        token_ids[has_token] = np.asarray(prediction.token_ids, np.int64)[token_rows[has_token]]
        return (labels, token_ids, prediction.sdf_m.numpy(),
                decoding.confidence.numpy().astype(np.float32))

    def _publish(self, trainer: FieldTrainer) -> None:
        """Label the prior's mesh with ``trainer``'s field and swap in the products.

        When ``trainer`` replaces the field that published so far (a restart on a grown box),
        its tokens first take the ids published until now (:func:`rebind_tokens`), on the
        current mesh: if the prior's mesh changed since, the previous field labels it once
        more to give those ids."""
        prior_mesh = self.prior.get_mesh()
        previous = self._published
        if (previous is not None and previous.trainer is not trainer
                and not _same_vertices(previous.mesh, prior_mesh)):
            self._publish(previous.trainer)
            previous = self._published
        step = trainer.step_count
        box = trainer.field.box
        labels, token_ids, _, confidence = self._label_points(prior_mesh.vertices_m, False,
                                                              trainer)
        # Outside the field's box the field only extrapolates.
        unsure = ((confidence < self.config.prior_fallback_confidence)
                  | ~self._box_contains(prior_mesh.vertices_m, box))
        unsure |= self._fragment_vertices(np.where(unsure, 0, token_ids))
        labels = np.where(unsure, prior_mesh.label_ids, labels)
        token_ids = np.where(unsure, 0, token_ids)
        prior_instances = self.prior.get_instances()
        prior_things = {inst.id for inst in prior_instances if inst.is_thing}
        prior_stuff = {inst.label_id: inst.id for inst in prior_instances if not inst.is_thing}
        is_stuff = self._is_stuff[np.clip(labels, 0, len(self._is_stuff) - 1)]
        stuff_labels = np.where((token_ids == 0) & is_stuff, labels, VOID_LABEL_ID)
        present_stuff = [lab for lab in np.unique(stuff_labels) if lab != VOID_LABEL_ID]
        with self._lock:
            bindings = self._bindings
            if previous is not None and previous.trainer is not trainer:
                bindings = rebind_tokens(bindings, token_ids, previous.mesh.instance_ids,
                                         {i.id for i in previous.instances if i.is_thing},
                                         self.config.id_binding_min_iou)
            bind_ids(bindings, token_ids, prior_mesh.instance_ids, prior_things,
                     prior_stuff, np.asarray(present_stuff), self.config.id_binding_min_iou)
            instance_ids = published_instance_ids(bindings, token_ids, stuff_labels)
            kept_things = unsure & ~is_stuff & (labels != VOID_LABEL_ID)
            instance_ids[kept_things] = passthrough_ids(
                bindings, prior_mesh.instance_ids[kept_things], labels[kept_things],
                self._is_stuff)
            mesh = PanopticMesh(prior_mesh.vertices_m, prior_mesh.triangles, prior_mesh.colors,
                                labels.astype(np.int32), instance_ids)
            instances = self._instances(mesh, token_ids, prior_instances, trainer)
            if previous is not None and previous.trainer is not trainer:
                LOGGER.info("refined map: the field restarted on %s is ready at step %d and "
                            "replaces the previous field (restart %d)", box, step,
                            self._restarts)
            self._bindings = bindings
            self._published = _Published(mesh, MeshRaycaster(mesh), instances, step, trainer,
                                         box)

    def _fragment_vertices(self, token_ids: np.ndarray) -> np.ndarray:
        """[V] bool: vertices of tokens (ids > 0) that win fewer than ``min_token_vertices``
        vertices."""
        tokens, counts = np.unique(token_ids[token_ids > 0], return_counts=True)
        fragments = tokens[counts < self.config.min_token_vertices]
        return np.isin(token_ids, fragments) if len(fragments) else np.zeros(len(token_ids), bool)

    def _instances(self, mesh: PanopticMesh, token_ids: np.ndarray,
                   prior_instances: list[MapInstance],
                   trainer: FieldTrainer) -> list[MapInstance]:
        """One MapInstance per published id present on the mesh (token classes from
        ``trainer``'s field)."""
        prediction = trainer.predict(np.zeros((0, 3)), with_sdf=False)
        class_probs = prediction.token_class_probs.numpy()
        column = {token: i for i, token in enumerate(prediction.token_ids)}
        token_labels = self.classes.token_class_labels()
        prior_observations = {inst.id: inst.num_observations for inst in prior_instances}
        out = []
        for instance_id in np.unique(mesh.instance_ids):
            if instance_id == NO_INSTANCE_ID:
                continue
            selected = mesh.instance_ids == instance_id
            label_id = int(np.bincount(mesh.label_ids[selected]).argmax())
            if label_id == VOID_LABEL_ID:
                continue
            label = self.registry.by_id(label_id)
            tokens = np.unique(token_ids[selected])
            distribution = {label_id: 1.0}
            confidence = 1.0
            if label.is_thing and tokens[0] in column:
                probs = class_probs[column[int(tokens[0])], 1:]
                probs = probs / max(float(probs.sum()), 1e-12)
                distribution = {int(token_labels[i + 1]): float(p) for i, p in enumerate(probs)
                                if p > 1e-3}
                confidence = float(distribution.get(label_id, 0.0))
            points = mesh.vertices_m[selected].astype(np.float64)
            # Same box and colour rules as the prior's instances, so that a planner sees no
            # jump in either when the field takes over.
            summary = self.config.instant.instances
            out.append(MapInstance(
                id=int(instance_id), label=label.name, label_id=label_id,
                is_thing=label.is_thing, confidence=confidence, centroid_m=points.mean(axis=0),
                bbox=gravity_box(points, summary.up_axis, padding_m=0.0),
                num_observations=int(prior_observations.get(int(instance_id), 0)),
                label_distribution=distribution, num_voxels=int(selected.sum()),
                mean_color_rgb=representative_color(mesh.colors[selected],
                                                    summary.color_brightness_percentile)))
        return out

    def _box_contains(self, points_m: np.ndarray, box: SceneBox) -> np.ndarray:
        """[N] bool: points inside a field's scene box (where the field labels)."""
        return box.contains(points_m)

    def _load_appearance(self, state: dict) -> None:
        reason = appearance_unavailable_reason(self.trainer.device)
        if reason is not None:
            LOGGER.warning("refined map: the saved appearance model is not restored: %s", reason)
            return
        self.appearance = GsplatAppearance(self.config.appearance, self.store.snapshot(),
                                           self.config.training.trainer.seed,
                                           self.trainer.device)
        self.appearance.load_state_dict(state)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the prior, the keyframes and the field checkpoint to one ``.npz`` file (during
        a restart on a grown box also the checkpoint of the previous field, which serves)."""
        with self._lock:
            with tempfile.TemporaryDirectory() as tmp:
                prior_file = Path(tmp) / "prior.npz"
                self.prior.save(prior_file)
                prior_bytes = prior_file.read_bytes()
            checkpoint = io.BytesIO()
            state = self.trainer.state_dict()
            if self.appearance is not None:
                state["appearance"] = self.appearance.state_dict()
            torch.save(state, checkpoint)
            published = self._published
            serving_arrays = {}
            if published is not None and published.trainer is not self.trainer:
                serving_checkpoint = io.BytesIO()
                torch.save(published.trainer.state_dict(), serving_checkpoint)
                serving_arrays["serving_field"] = np.frombuffer(serving_checkpoint.getvalue(),
                                                                np.uint8)
            keyframes = self.store.snapshot()
            meta = {"format_version": SAVE_FORMAT_VERSION, "method": self.method_name,
                    "config": self.config.to_dict(),
                    "semantic_labels": self.classes.semantic_class_labels().tolist(),
                    "bindings": self._bindings.to_dict(), "published": self.is_ready,
                    "seeded_prior_ids": sorted(self._seeded_prior_ids),
                    "finalized": self._finalized, "field_restarts": self._restarts,
                    "selector": {"last_stamp_ns": self.selector.last_stamp_ns,
                                 "last_T_world_cam": None if self.selector.last_T_world_cam
                                 is None else self.selector.last_T_world_cam.tolist()},
                    "keyframes": [{"stamp_ns": k.stamp_ns, "has_segmentation": k.has_segmentation,
                                   "intrinsics": [k.intrinsics.width, k.intrinsics.height,
                                                  k.intrinsics.fx, k.intrinsics.fy,
                                                  k.intrinsics.cx, k.intrinsics.cy]}
                                  for k in keyframes]}
            arrays = {f"kf{i}_{name}": np.asarray(getattr(k, name))
                      for i, k in enumerate(keyframes) for name in KEYFRAME_ARRAYS}
            arrays.update({f"kf{i}_{name}": getattr(k, name) for i, k in enumerate(keyframes)
                           for name in OPTIONAL_KEYFRAME_ARRAYS if getattr(k, name) is not None})
            buffer = io.BytesIO()
            np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                     prior=np.frombuffer(prior_bytes, np.uint8),
                     field=np.frombuffer(checkpoint.getvalue(), np.uint8), **serving_arrays,
                     **arrays)
        Path(path).write_bytes(buffer.getvalue())

    def load(self, path: str | Path) -> None:
        """Replace the state with one written by :meth:`save`, atomically.

        The complete new state (configuration, keyframes, field checkpoint, id bindings) is
        built in a fresh map first. Then the prior loads the file's prior part (its ``load``
        keeps its state on a bad file), the loaded field is published over it (the previous
        field's, when the file was saved during a restart on a grown box), and only then
        is the new state swapped in. If the prior part or the publishing fails, the prior is
        restored from a backup written just before. The file's configuration is used except
        for the machine-dependent settings, which stay this map's: ``training.trainer.device``
        and the grids' ``implementation`` (the checkpoint loads on any device, with either).

        Raises:
            DataFormatError: the file is missing, truncated or corrupt in any part, holds
                another method or format version, or was written with another label
                registry; the message names the path and the part. The map is then unchanged.
        """
        path = Path(path)
        if not path.is_file():
            raise DataFormatError("path", str(path), "map file not found", kind="map_file")
        saved = _read_map_file(path)
        self._check_saved_meta(saved.meta)
        fresh = self._restored(saved, path)
        serving = fresh.trainer
        if saved.serving_checkpoint is not None:
            with _file_part(path, "serving field checkpoint"):
                serving = fresh._new_trainer()
                serving.load_state_dict(saved.serving_checkpoint)
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            backup = Path(tmp) / "current_prior.npz"
            self.prior.save(backup)
            try:
                with _file_part(path, "prior"):
                    prior_file = Path(tmp) / "prior.npz"
                    prior_file.write_bytes(saved.prior_bytes)
                    self.prior.load(prior_file)
                if saved.meta["published"]:
                    with _file_part(path, "field checkpoint (publishing it)"):
                        fresh._publish(serving)
            except BaseException:
                self.prior.load(backup)
                raise
            state = dict(fresh.__dict__)
            del state["_lock"]
            self.__dict__.update(state)

    def _check_saved_meta(self, meta: dict[str, Any]) -> None:
        if meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise DataFormatError("format_version", meta.get("format_version"),
                                  f"unsupported map file version (expected one of "
                                  f"{list(READABLE_FORMAT_VERSIONS)})", kind="map_file")
        if meta.get("method") != self.method_name:
            raise DataFormatError("method", meta.get("method"),
                                  f"file holds a '{meta.get('method')}' map, not "
                                  f"'{self.method_name}'", kind="map_file")
        if meta.get("semantic_labels") != self.classes.semantic_class_labels().tolist():
            raise DataFormatError("semantic_labels", meta.get("semantic_labels"),
                                  "map was built with another label registry", kind="map_file")

    def _restored(self, saved: _SavedMap, path: Path) -> "RefinedPanopticMap":
        """A new map over the same prior object with the file's state except the prior's
        (not published yet); raises :class:`DataFormatError` naming the failing part."""
        meta = saved.meta
        with _file_part(path, "meta"):
            config = RefinedMapConfig.from_dict(meta["config"])
            _keep_machine_settings(config, self.config)
            fresh = RefinedPanopticMap(self.registry, config, prior=self.prior)
            selector = meta["selector"]
            fresh.selector.last_stamp_ns = int(selector["last_stamp_ns"])
            if selector["last_T_world_cam"] is not None:
                fresh.selector.last_T_world_cam = validate_rigid_transform(
                    np.asarray(selector["last_T_world_cam"], np.float64), "last_T_world_cam")
            fresh._bindings = IdBindingState.from_dict(meta["bindings"])
            fresh._finalized = bool(meta["finalized"])
            fresh._seeded_prior_ids = {int(i) for i in meta.get("seeded_prior_ids", [])}
            fresh._restarts = int(meta.get("field_restarts", 0))
        with _file_part(path, "keyframes"):
            fresh.store.replace_all([_keyframe_from_arrays(info, arrays) for info, arrays in
                                     zip(meta["keyframes"], saved.keyframe_arrays)])
        with _file_part(path, "field checkpoint"):
            fresh.trainer.load_state_dict(saved.checkpoint)
            if "appearance" in saved.checkpoint:
                fresh._load_appearance(saved.checkpoint["appearance"])
        return fresh


def _same_vertices(a: PanopticMesh, b: PanopticMesh) -> bool:
    return a.vertices_m is b.vertices_m or (a.vertices_m.shape == b.vertices_m.shape
                                            and np.array_equal(a.vertices_m, b.vertices_m))


def _keep_machine_settings(saved: RefinedMapConfig, running: RefinedMapConfig) -> None:
    """Give a loaded map's config the running map's device and grid implementations: where a
    field trained is no part of the map (a map trained on a GPU loads on a CPU)."""
    saved.training.trainer.device = running.training.trainer.device
    for name in GRID_NAMES:
        getattr(saved.training.field, name).implementation = \
            getattr(running.training.field, name).implementation


@dataclass
class _SavedMap:
    """The parts of a map file, decoded but not yet turned into map state."""

    meta: dict[str, Any]
    prior_bytes: bytes
    """The prior's own save file."""
    checkpoint: dict
    """``FieldTrainer.state_dict()`` (plus ``"appearance"`` when it was trained)."""
    serving_checkpoint: dict | None
    """The previous field's ``FieldTrainer.state_dict()`` when the map was saved during a
    restart on a grown box (that field served), else None."""
    keyframe_arrays: list[dict[str, np.ndarray]]
    """Per keyframe: its arrays by name (``KEYFRAME_ARRAYS`` and the optional ones present)."""


@contextlib.contextmanager
def _file_part(path: Path, part: str) -> Iterator[None]:
    """Turn any failure while reading ``part`` of the map file into a DataFormatError."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (zip, numpy, json, pickle, torch and our own
        # checks fail with many exception types; every one means this part is unusable)
        raise DataFormatError("path", str(path), f"{part} part of the map file is unusable: "
                              f"{type(exc).__name__}: {exc}", kind="map_file") from exc


def _read_map_file(path: Path) -> _SavedMap:
    """Decode every part of a map file written by ``RefinedPanopticMap.save``."""
    with _file_part(path, "archive"):
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
    with data:
        with _file_part(path, "meta"):
            meta = json.loads(bytes(data["meta"]).decode())
            if not isinstance(meta, dict):
                raise ValueError("meta is not a JSON object")
            missing = [key for key in SAVED_META_KEYS if key not in meta]
            if missing:
                raise ValueError(f"meta lacks {missing}")
        with _file_part(path, "prior"):
            prior_bytes = bytes(data["prior"])
        with _file_part(path, "field checkpoint"):
            checkpoint = torch.load(io.BytesIO(bytes(data["field"])), map_location="cpu",
                                    weights_only=True)
            if not isinstance(checkpoint, dict):
                raise ValueError("the checkpoint is not a dict")
        serving_checkpoint = None
        if "serving_field" in data.files:
            with _file_part(path, "serving field checkpoint"):
                serving_checkpoint = torch.load(io.BytesIO(bytes(data["serving_field"])),
                                                map_location="cpu", weights_only=True)
                if not isinstance(serving_checkpoint, dict):
                    raise ValueError("the checkpoint is not a dict")
        with _file_part(path, "keyframes"):
            keyframe_arrays = []
            for i in range(len(meta.get("keyframes", []))):
                arrays = {name: data[f"kf{i}_{name}"] for name in KEYFRAME_ARRAYS}
                arrays.update({name: data[f"kf{i}_{name}"] for name in OPTIONAL_KEYFRAME_ARRAYS
                               if f"kf{i}_{name}" in data.files})
                keyframe_arrays.append(arrays)
    return _SavedMap(meta, prior_bytes, checkpoint, serving_checkpoint, keyframe_arrays)


def _keyframe_from_arrays(info: dict, arrays: dict[str, np.ndarray]) -> Keyframe:
    """A saved keyframe; raises ValueError when its arrays do not fit its image size."""
    width, height, fx, fy, cx, cy = info["intrinsics"]
    image = (int(height), int(width))
    expected = {"depth_m": (image, np.floating), "semantic_class": (image, np.integer),
                "thing_mask": (image, np.integer), "T_world_cam": ((4, 4), np.floating),
                "rgb": ((*image, 3), np.integer), "score": (image, np.integer)}
    for name, (shape, kind) in expected.items():
        array = arrays.get(name)
        if array is not None and (array.shape != shape or not np.issubdtype(array.dtype, kind)):
            raise ValueError(f"keyframe at {info['stamp_ns']} ns: {name} is {array.dtype} "
                             f"{list(array.shape)}, expected {kind.__name__} {list(shape)}")
    thing_classes = arrays["thing_classes"]
    if thing_classes.ndim != 1 or not np.issubdtype(thing_classes.dtype, np.integer):
        raise ValueError(f"keyframe at {info['stamp_ns']} ns: thing_classes is "
                         f"{thing_classes.dtype} {list(thing_classes.shape)}, expected a 1-D "
                         "integer array")
    return Keyframe(int(info["stamp_ns"]), arrays["T_world_cam"],
                    CameraIntrinsics(int(width), int(height), fx, fy, cx, cy),
                    arrays["depth_m"], arrays["semantic_class"], arrays["thing_mask"],
                    arrays["thing_classes"], bool(info["has_segmentation"]), arrays.get("rgb"),
                    arrays.get("score"))


