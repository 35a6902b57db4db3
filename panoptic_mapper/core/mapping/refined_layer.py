"""The refined layer: a PanopticRecon++ field derived from a prior map, never integrating itself.

Like nvblox's mesh and ESDF layers over its TSDF, the layer reads what the prior map integrated
(``core/mapping/prior.py``: its labelled mesh, instance table and point labels) and keeps its
own keyframe store; it serves labels and instances as a view over the prior:

* ``observe_frame`` keeps a frame the prior accepted as a keyframe when the camera moved,
  turned or waited enough (``KeyframeConfig``);
* training starts from the prior: one token per prior thing instance (and later ones for
  instances the prior confirms afterwards), and the prior's vertex labels are distilled into the
  field while the 2D masks of all keyframes refine it jointly; ``train_steps(n)`` trains in
  chunks (for a background worker);
* until the field is ready (the schedule passed ``ready_fraction`` and the field was published)
  every getter answers from the prior; afterwards ``update()`` relabels the prior's current mesh
  with the field (``refined_labels.py``): labels from the Bayes panoptic head, instances from the
  tokens, which inherit the prior's ids by 3D overlap;
* the field's scene box is set at the first training call; when a keyframe later sees beyond it
  (``scene_box``, ``core/field/box_growth.py``), the next training call restarts the field on a
  grown box (tokens and distillation targets from the prior again). Until the restarted field is
  ready, the previous field keeps labelling what the getters serve; its tokens then take the ids
  published before (``rebind_tokens``). A user-given workspace box never grows;
* ``save``/``load`` write one file with the prior's part, the keyframes and the field checkpoint
  (``refined_persistence.py``); ``load`` is atomic (the prior's part is restored from a backup
  when anything after it fails).

Thread safety: ``observe_frame``, ``train_steps``, ``update`` and the getters may run on
different threads (integration, training, refresh, services); the caller serialises ``save``,
``load``, ``reset`` and ``train_steps`` among themselves (``runtime/refined_session.py``).

Owns: :class:`RefinedLayer`. Does not own: the prior, the field (``core/field``), labelling a
mesh (``refined_labels.py``), the file format (``refined_persistence.py``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.field.appearance import (GsplatAppearance,
                                                  appearance_unavailable_reason)
from panoptic_mapper.core.field.box_growth import grown_box
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.instance_ids import (IdBindingState, passthrough_ids,
                                                     published_instance_ids)
from panoptic_mapper.core.field.keyframes import Keyframe, KeyframeSelector, KeyframeStore
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.token_init import seeds_from_prior
from panoptic_mapper.core.field.trainer import FieldTrainer, PriorTargets, TrainingProgress
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping import refined_persistence as files
from panoptic_mapper.core.mapping.prior import PriorSnapshot, PriorSource
from panoptic_mapper.core.mapping.refined_box import BoxWatch
from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig
from panoptic_mapper.core.mapping.refined_geometry import served_geometry
from panoptic_mapper.core.mapping.refined_labels import (FieldLabeller, PublishedField,
                                                         same_vertices)
from panoptic_mapper.core.tracking.instance_geometry import InstanceSummaryConfig
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import (NO_INSTANCE_ID, VOID_LABEL_ID, CameraIntrinsics,
                                        LabelRender, MapInstance, PanopticMesh,
                                        PanopticSegmentation2D, RgbdFrame,
                                        validate_query_points, validate_rigid_transform)

LOGGER = logging.getLogger(__name__)



@dataclass
class KeyframeReport:
    """What :meth:`RefinedLayer.observe_frame` did with a frame."""

    kept: bool = False
    """The frame became a keyframe."""
    warnings: list[str] = field(default_factory=list)
    evicted_stamp_ns: int | None = None
    """Stamp of the keyframe dropped to make room (the store is bounded), if any."""
    num_keyframes: int = 0


class RefinedLayer:
    """PanopticRecon++ over a prior source (see the module docstring).

    Args:
        registry: the label registry.
        config: the layer's settings.
        prior: the prior it derives from.
        summary: box and colour rules of the published instances (the prior's own, so that a
            planner sees no jump when the field takes over).
    """

    def __init__(self, registry: LabelRegistry, config: RefinedLayerConfig, prior: PriorSource,
                 summary: InstanceSummaryConfig | None = None):
        self.registry = registry
        self.config = config
        self.prior = prior
        self.summary = summary or InstanceSummaryConfig()
        self.classes = ClassSpace.from_registry(registry)
        self.labeller = FieldLabeller(registry, self.classes, config, self.summary)
        self._lock = threading.RLock()
        self._publish_lock = threading.RLock()
        self._prior_raycaster: tuple[int, MeshRaycaster] | None = None
        self._build_state()

    def _build_state(self) -> None:
        keyframe_config = self.config.keyframes
        if self.config.appearance.enabled:
            keyframe_config = keyframe_config.replace(keep_rgb=True)
        self.store = KeyframeStore(keyframe_config, self.config.training.sampler.near_m)
        self.selector = KeyframeSelector(self.config.keyframes)
        self.trainer = self.new_trainer()
        self._published: PublishedField | None = None
        self._restarts = 0
        """Times the field was restarted on a grown box."""
        self.box_watch = BoxWatch(self.config.scene_box, self.store)
        self._bindings = IdBindingState()
        self._finalized = False
        self.appearance: GsplatAppearance | None = None
        self._seeded_prior_ids: set[int] = set()
        """Prior thing instances that seeded a token (initially or later)."""
        self._new_ties: tuple[dict[int, int], dict[int, int]] = ({}, {})
        """(prior id -> token id, token id -> token class) of tokens seeded after the field's
        setup, not yet in its distillation."""
        self._distilled: tuple[FieldTrainer | None, int, int] = (None, -1, 0)
        """(trainer, prior snapshot version, step) of the distilled prior mesh."""

    def new_trainer(self) -> FieldTrainer:
        try:
            return FieldTrainer(self.config.training, self.classes, self.store)
        except ConfigError as exc:  # the device or a grid does not fit this machine
            raise ConfigError(f"training.{exc.field}", exc.value, exc.reason) from exc

    def reset(self) -> None:
        """Forget keyframes, field and bindings (the prior is not ours to reset)."""
        with self._lock, self._publish_lock:
            self._build_state()

    # ---- keyframes -----------------------------------------------------------------------------
    def observe_frame(self, frame: RgbdFrame,
                      segmentation: PanopticSegmentation2D | None) -> KeyframeReport:
        """Keep a frame the prior accepted as a keyframe when the selector says so."""
        report = KeyframeReport()
        with self._lock:
            if self.selector.is_keyframe(frame.T_world_cam, frame.stamp_ns):
                try:
                    stored, warnings = Keyframe.from_frame(frame, segmentation, self.classes,
                                                           self.registry, self.store.config)
                except InvalidInputError as exc:
                    report.warnings.append(f"refined map: frame not kept as keyframe: {exc}")
                else:
                    report.warnings.extend(warnings)
                    report.evicted_stamp_ns = self.store.add(stored)
                    self.selector.accept(frame.T_world_cam, frame.stamp_ns)
                    report.kept = True
            report.num_keyframes = len(self.store)
        return report

    def move_keyframes(self, T_world_cam_by_stamp: dict[int, np.ndarray]) -> int:  # noqa: N803
        """A loop correction moved the prior's frames: keyframes with these stamps take their
        corrected poses (training goes on from them); returns how many moved."""
        with self._lock:
            return self.store.move_keyframes(T_world_cam_by_stamp)

    def wants_keyframe(self, T_world_cam: np.ndarray, stamp_ns: int) -> bool:  # noqa: N803
        """Whether a frame at this pose and stamp would be kept (read-only; lets a caller skip
        decoding the images of frames that would not be)."""
        with self._lock:
            return self.selector.is_keyframe(T_world_cam, stamp_ns)

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
        answers): the one in training, except during a restart on a grown box."""
        published = self._published
        return published.trainer if published is not None else None

    @property
    def published_step(self) -> int:
        """Training step of the field that labelled what is served (-1: the prior answers)."""
        published = self._published
        return published.step if published is not None else -1

    def train_steps(self, num_steps: int, deadline_s: float | None = None) -> TrainingProgress:
        """Train up to ``num_steps`` steps (see :meth:`FieldTrainer.train_steps`), first
        restarting the field on a grown box when a keyframe sees beyond the current one;
        publishes the field in training once its schedule passes ``ready_fraction`` (the first
        time, and after a restart, when it replaces the previous field).

        Raises:
            InvalidInputError: fewer than ``min_keyframes`` keyframes are stored.
        """
        self.prepare_training()
        trainer = self.trainer
        progress = trainer.train_steps(num_steps, deadline_s)
        if self._field_ready() and not self._serves(trainer):
            self._publish(trainer)
        return self._with_box_state(progress, trainer)

    def prepare_training(self, cover_everything: bool = False) -> None:
        """Before training: set the field up (at ``min_keyframes``), restart it on a grown box
        when due (``cover_everything``: when anything seen lies beyond it), give tokens to new
        prior instances, distil the prior's newest mesh when due.

        Raises:
            InvalidInputError: fewer than ``min_keyframes`` keyframes are stored.
        """
        self._ensure_setup()
        self.grow_box_if_due(cover_everything)
        self._seed_new_prior_instances()
        self._refresh_distillation()

    def mark_finalized(self) -> None:
        """An offline run trained to its end (kept in saved maps)."""
        self._finalized = True

    def progress(self) -> TrainingProgress:
        """Training progress without training (restart count and box state included)."""
        trainer = self.trainer  # once: a restart may replace it meanwhile
        return self._with_box_state(trainer.progress(), trainer)

    def _with_box_state(self, progress: TrainingProgress,
                        trainer: FieldTrainer) -> TrainingProgress:
        progress.field_restarts = self._restarts
        progress.box_growth_due = self.box_watch.keyframe_beyond(trainer) is not None
        return progress

    def _serves(self, trainer: FieldTrainer) -> bool:
        return self.serving_trainer is trainer

    def _seed_new_prior_instances(self) -> None:
        """Give a token to every thing instance the prior confirmed since the last call."""
        if not self.config.tokens_from_prior:
            return
        instances = [inst for inst in self.prior.get_prior_snapshot().instances
                     if inst.is_thing and inst.id not in self._seeded_prior_ids]
        if not instances:
            return
        self._seeded_prior_ids.update(inst.id for inst in instances)
        seeds = seeds_from_prior(instances, self.config.training.tokens)
        ids = self.trainer.add_tokens(seeds)
        ties, classes = self._new_ties
        ties.update({int(p): t for p, t in zip(seeds.prior_ids, ids) if p > 0})
        if seeds.label_ids is not None:
            token_class = self.classes.semantic_to_token_class(
                self.classes.label_to_semantic_class(seeds.label_ids))
            classes.update({t: int(c) for t, c in zip(ids, token_class) if c > 0})
        LOGGER.info("refined map: %d tokens for new prior instances %s (token ids %s)",
                    len(ids), [inst.id for inst in instances], ids)

    def _refresh_distillation(self) -> None:
        """Distil the prior's newest mesh (see ``prior_refresh_steps``)."""
        every = self.config.prior_refresh_steps
        trainer = self.trainer
        if not (every and self.config.tokens_from_prior and trainer.is_setup):
            return
        prior = self.prior.get_prior_snapshot()
        distilled_by, version, step = self._distilled
        if distilled_by is not trainer:  # a new field was set up from the prior just now
            self._distilled = (trainer, prior.version, trainer.step_count)
            return
        if prior.version == version or trainer.step_count - step < every \
                or not prior.mesh.num_vertices:
            return
        mesh = prior.mesh
        targets = PriorTargets(mesh.vertices_m.astype(np.float32),
                               self.classes.label_to_semantic_class(mesh.label_ids),
                               mesh.instance_ids.astype(np.int64))
        ties, classes = self._new_ties
        trainer.update_prior_targets(targets, ties, classes)
        self._new_ties = ({}, {})
        self._distilled = (trainer, prior.version, trainer.step_count)

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
        prior = self.prior.get_prior_snapshot()
        mesh = prior.mesh
        seeds, targets = None, None
        if self.config.tokens_from_prior:
            self._seeded_prior_ids = {inst.id for inst in prior.instances if inst.is_thing}
            self._new_ties = ({}, {})
            seeds = seeds_from_prior(list(prior.instances), self.config.training.tokens)
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
                            self.config.scene_box.headroom_fraction)
        trainer.setup(seeds, mesh.vertices_m, targets, box)

    # ---- the scene box -------------------------------------------------------------------------
    def grow_box_if_due(self, cover_everything: bool = False) -> None:
        """Restart the field on a grown box when a keyframe sees beyond the current one, or,
        with ``cover_everything`` (the end of an offline run), when any point of the keyframes
        or of the prior's mesh lies beyond it. The new field is set up like the first one, with
        the same step budget, from step 0; the published products stay until it is ready."""
        previous = self.trainer
        reason = self.box_watch.growth_reason(
            previous, self.prior.get_prior_snapshot().mesh.vertices_m, cover_everything)
        if reason is None:
            return
        trainer = self.new_trainer()
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

    # ---- serving -------------------------------------------------------------------------------
    def update(self) -> bool:
        """Relabel the prior's current mesh with the serving field when the prior or the field
        changed since it was last labelled; True when what the getters serve changed. The
        serving field is the one in training, except during a restart on a grown box."""
        published = self._published
        if self._field_ready() and not self._serves(self.trainer):
            self._publish(self.trainer)
            return True
        if published is None:
            return False
        prior = self.prior.get_prior_snapshot()
        serving = published.trainer
        if prior.version == published.prior_version and published.step == serving.step_count:
            return False
        self._publish(serving, prior)
        return True

    def get_mesh(self) -> PanopticMesh:
        published = self._published
        return published.mesh if published is not None else \
            self.prior.get_prior_snapshot().mesh

    def get_instances(self) -> list[MapInstance]:
        published = self._published
        return list(published.instances if published is not None
                    else self.prior.get_prior_snapshot().instances)

    def query_labels(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label and instance ids at [N, 3] world points: from the field once ready (0 away
        from its surface), else from the prior. Outside the field's scene box, and where the
        field is unsure, the prior answers."""
        points = validate_query_points(points_m)
        published = self._published
        if published is None:
            return self.prior.query_prior_labels(points)
        with self._publish_lock:
            published = self._published
            answer = self.labeller.label_points(points, True, published.trainer)
            bindings = IdBindingState.from_dict(self._bindings.to_dict())
        labels, token_ids = answer.label_ids, answer.token_ids
        inside = published.box.contains(points)
        known = (np.abs(answer.sdf_m) <= self.config.query_max_abs_sdf_m) & inside
        stuff = np.where(token_ids == 0, labels, 0)
        instances = published_instance_ids(bindings, token_ids, stuff)
        unbound = (token_ids != 0) & ~np.isin(token_ids, list(bindings.token_to_map))
        instances[unbound] = NO_INSTANCE_ID
        from_prior = (known & (answer.confidence < self.config.prior_fallback_confidence)) \
            | ~inside
        if from_prior.any():
            prior_labels, prior_ids = self.prior.query_prior_labels(points[from_prior])
            labels = labels.copy()
            labels[from_prior] = prior_labels
            instances[from_prior] = passthrough_ids(bindings, prior_ids, prior_labels,
                                                    self.labeller.is_stuff)
        known |= ~inside  # the prior's own answer there (void where it knows nothing)
        labels = np.where(known, labels, VOID_LABEL_ID).astype(np.int32)
        return labels, np.where(known, instances, NO_INSTANCE_ID).astype(np.int32)

    def render_labels(self, T_world_cam: np.ndarray,  # noqa: N803
                      intrinsics: CameraIntrinsics) -> LabelRender:
        """Raycast the labelled mesh (once ready), else the prior's mesh."""
        T = validate_rigid_transform(T_world_cam, "T_world_cam")  # noqa: N806
        published = self._published
        if published is not None:
            return published.raycaster.render(T, intrinsics)
        prior = self.prior.get_prior_snapshot()
        cached = self._prior_raycaster
        if cached is None or cached[0] != prior.version:
            cached = (prior.version, MeshRaycaster(prior.mesh))
            self._prior_raycaster = cached
        return cached[1].render(T, intrinsics)

    def _publish(self, trainer: FieldTrainer, prior: PriorSnapshot | None = None) -> None:
        """Label the prior's mesh (with ``mesh_source = "field"``: ``trainer``'s own surface,
        ``refined_geometry.py``) with ``trainer``'s field and swap in the products.

        When ``trainer`` replaces the field that published so far (a restart on a grown box),
        its tokens first take the ids published until now, on the current mesh: if the prior's
        mesh changed since, the previous field labels it once more to give those ids."""
        with self._publish_lock:
            prior = served_geometry(self.config.mesh_source, trainer,
                                    prior or self.prior.get_prior_snapshot(),
                                    self.config.field_mesh)
            previous = self._published
            if (previous is not None and previous.trainer is not trainer
                    and not same_vertices(previous.mesh, prior.mesh)):
                previous, self._bindings = self.labeller.publish(previous.trainer, prior,
                                                                 self._bindings, previous)
                self._published = previous
            published, bindings = self.labeller.publish(trainer, prior, self._bindings,
                                                         previous)
            if previous is not None and previous.trainer is not trainer:
                LOGGER.info("refined map: the field restarted on %s is ready at step %d and "
                            "replaces the previous field (restart %d)", published.box,
                            published.step, self._restarts)
            self._bindings = bindings
            self._published = published

    # ---- appearance (gsplat, CUDA only) ---------------------------------------------------------
    def load_appearance(self, state: dict) -> None:
        """Restore a saved appearance branch (where CUDA and gsplat allow)."""
        reason = appearance_unavailable_reason(self.trainer.device)
        if reason is not None:
            LOGGER.warning("refined map: the saved appearance model is not restored: %s", reason)
            return
        self.appearance = GsplatAppearance(self.config.appearance, self.store.snapshot(),
                                           self.config.training.trainer.seed,
                                           self.trainer.device)
        self.appearance.load_state_dict(state)

    # ---- persistence (the file format: refined_persistence.py) ---------------------------------
    def save(self, path: str | Path, full_config: dict | None = None) -> None:
        """Write the prior's part, the keyframes and the field checkpoint to one file (during
        a restart on a grown box also the checkpoint of the previous field, which serves).
        ``full_config``: the configuration to store (default: the layer's)."""
        files.save_layer(self, path, full_config)

    def load(self, path: str | Path) -> dict:
        """Replace the whole state (the prior's too) with a saved one, atomically; returns the
        file's stored configuration. See :func:`refined_persistence.load_layer`."""
        return files.load_layer(self, Path(path))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Excludes keyframe selection, publishing and state swaps (save and load hold it)."""
        with self._lock, self._publish_lock:
            yield

    def state_meta(self) -> dict:
        """The JSON part of the layer's state (``restore_meta`` reads it back)."""
        selector = self.selector
        return {"bindings": self._bindings.to_dict(), "published": self.is_ready,
                "seeded_prior_ids": sorted(self._seeded_prior_ids),
                "new_ties": [sorted(self._new_ties[0].items()),
                             sorted(self._new_ties[1].items())],
                "finalized": self._finalized, "field_restarts": self._restarts,
                "prior_kind": self.prior.kind,
                "selector": {"last_stamp_ns": selector.last_stamp_ns,
                             "last_T_world_cam": None if selector.last_T_world_cam is None
                             else selector.last_T_world_cam.tolist()}}

    def restore_meta(self, meta: dict) -> None:
        """Take the JSON part of a saved state (a fresh layer; raises on a malformed one)."""
        selector = meta["selector"]
        self.selector.last_stamp_ns = int(selector["last_stamp_ns"])
        if selector["last_T_world_cam"] is not None:
            self.selector.last_T_world_cam = validate_rigid_transform(
                np.asarray(selector["last_T_world_cam"], np.float64), "last_T_world_cam")
        self._bindings = IdBindingState.from_dict(meta["bindings"])
        self._finalized = bool(meta["finalized"])
        self._seeded_prior_ids = {int(i) for i in meta.get("seeded_prior_ids", [])}
        ties, classes = meta.get("new_ties", [[], []])
        self._new_ties = ({int(p): int(t) for p, t in ties},
                          {int(t): int(c) for t, c in classes})
        self._restarts = int(meta.get("field_restarts", 0))

    def serving_checkpoint(self) -> dict | None:
        """The checkpoint of the field that serves while another one trains (a restart on a
        grown box), else None."""
        published = self._published
        if published is not None and published.trainer is not self.trainer:
            return published.trainer.state_dict()
        return None

    def publish_field(self, trainer: FieldTrainer) -> None:
        """Label the prior's current mesh with ``trainer``'s field and serve it."""
        self._publish(trainer)

    def adopt(self, fresh: "RefinedLayer") -> None:
        """Take over the state of ``fresh`` (a loaded layer over the same prior); the caller
        holds :meth:`locked`."""
        state = dict(fresh.__dict__)
        for name in ("_lock", "_publish_lock"):
            del state[name]
        self.__dict__.update(state)
