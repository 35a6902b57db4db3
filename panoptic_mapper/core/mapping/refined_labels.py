"""What the refined layer serves: the prior's mesh relabelled by a trained field.

:class:`FieldLabeller` turns a field (a :class:`FieldTrainer`) and a prior snapshot into the
published products (:class:`PublishedField`): the prior's mesh geometry with vertex labels from
the field's Bayes panoptic head, and one instance per published id. Where the field is unsure
(winning probability below ``prior_fallback_confidence``), outside its scene box, or on a token
too small to be an object (``min_token_vertices``), a vertex keeps the prior's label and
instance. Tokens keep the ids a planner already knows (``core/field/instance_ids.py``).

Owns: labelling points and mesh vertices with a field, the published instance table.
Does not own: when to publish (``refined_layer.py``) or training (``core/field``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.instance_ids import (IdBindingState, bind_ids,
                                                     passthrough_ids, published_instance_ids,
                                                     rebind_tokens)
from panoptic_mapper.core.field.panoptic_field import SceneBox
from panoptic_mapper.core.field.panoptic_head import NO_TOKEN, decode_panoptic
from panoptic_mapper.core.field.trainer import FieldTrainer
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.prior import PriorSnapshot
from panoptic_mapper.core.mapping.refined_config import RefinedLayerConfig
from panoptic_mapper.core.tracking.instance_geometry import (InstanceSummaryConfig,
                                                             gravity_box, representative_color)
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import NO_INSTANCE_ID, VOID_LABEL_ID, MapInstance, PanopticMesh

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedField:
    """What the layer serves once its field is ready (replaced, never mutated)."""

    mesh: PanopticMesh
    raycaster: MeshRaycaster
    instances: tuple[MapInstance, ...]
    step: int
    """Training step of the field that labelled it."""
    trainer: FieldTrainer
    """The field that labelled it (it also answers ``query_labels``); during a restart the
    previous field, not the one in training."""
    box: SceneBox
    """That field's scene box: outside it the prior's answer was kept."""
    prior_version: int
    """Version of the prior snapshot whose mesh was labelled."""


@dataclass(frozen=True)
class PointLabels:
    """A field's answer at points."""

    label_ids: np.ndarray
    """[P] registry label id."""
    token_ids: np.ndarray
    """[P] token id (0 = none)."""
    sdf_m: np.ndarray
    """[P] signed distance (empty when not asked for)."""
    confidence: np.ndarray
    """[P] winning panoptic probability."""


class FieldLabeller:
    """Labels points and prior meshes with a field (see the module docstring)."""

    def __init__(self, registry: LabelRegistry, classes: ClassSpace, config: RefinedLayerConfig,
                 summary: InstanceSummaryConfig):
        """Args:
            registry: label registry.
            classes: the field's class spaces.
            config: the layer's settings (fallback, fragments, id binding, ablations).
            summary: box and colour rules of the instance table (the prior's, so that a
                planner sees no jump when the field takes over).
        """
        self.registry = registry
        self.classes = classes
        self.config = config
        self.summary = summary
        self.is_stuff = ~registry.is_thing_table()
        self.is_stuff[VOID_LABEL_ID] = False

    def label_points(self, points_m: np.ndarray, with_sdf: bool,
                     trainer: FieldTrainer) -> PointLabels:
        """The field's panoptic decision at [P, 3] world points."""
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
        return PointLabels(labels, token_ids, prediction.sdf_m.numpy(),
                           decoding.confidence.numpy().astype(np.float32))

    def publish(self, trainer: FieldTrainer, prior: PriorSnapshot,
                bindings: IdBindingState, previous: PublishedField | None
                ) -> tuple[PublishedField, IdBindingState]:
        """Label ``prior``'s mesh with ``trainer``'s field; returns the products and the new
        id bindings (``bindings`` is not changed).

        When ``trainer`` replaces the field that published ``previous`` (a restart on a grown
        box), its tokens first take the ids published until now (:func:`rebind_tokens`) on
        ``previous``'s mesh, which must be ``prior``'s (the caller relabels it first otherwise).
        """
        prior_mesh = prior.mesh
        box = trainer.field.box
        answer = self.label_points(prior_mesh.vertices_m, False, trainer)
        labels, token_ids = answer.label_ids, answer.token_ids
        # Outside the field's box the field only extrapolates.
        unsure = ((answer.confidence < self.config.prior_fallback_confidence)
                  | ~box.contains(prior_mesh.vertices_m))
        unsure |= self.fragment_vertices(np.where(unsure, 0, token_ids))
        labels = np.where(unsure, prior_mesh.label_ids, labels)
        token_ids = np.where(unsure, 0, token_ids)
        prior_things = {inst.id for inst in prior.instances if inst.is_thing}
        prior_stuff = {inst.label_id: inst.id for inst in prior.instances if not inst.is_thing}
        is_stuff = self.is_stuff[np.clip(labels, 0, len(self.is_stuff) - 1)]
        stuff_labels = np.where((token_ids == 0) & is_stuff, labels, VOID_LABEL_ID)
        present_stuff = [lab for lab in np.unique(stuff_labels) if lab != VOID_LABEL_ID]
        bindings = IdBindingState.from_dict(bindings.to_dict())
        if previous is not None and previous.trainer is not trainer:
            bindings = rebind_tokens(bindings, token_ids, previous.mesh.instance_ids,
                                     {i.id for i in previous.instances if i.is_thing},
                                     self.config.id_binding_min_iou)
        bind_ids(bindings, token_ids, prior_mesh.instance_ids, prior_things, prior_stuff,
                 np.asarray(present_stuff), self.config.id_binding_min_iou)
        instance_ids = published_instance_ids(bindings, token_ids, stuff_labels)
        kept_things = unsure & ~is_stuff & (labels != VOID_LABEL_ID)
        instance_ids[kept_things] = passthrough_ids(
            bindings, prior_mesh.instance_ids[kept_things], labels[kept_things], self.is_stuff)
        mesh = PanopticMesh(prior_mesh.vertices_m, prior_mesh.triangles, prior_mesh.colors,
                            labels.astype(np.int32), instance_ids)
        instances = self.instances(mesh, token_ids, prior.instances, trainer)
        published = PublishedField(mesh, MeshRaycaster(mesh), tuple(instances),
                                   trainer.step_count, trainer, box, prior.version)
        return published, bindings

    def fragment_vertices(self, token_ids: np.ndarray) -> np.ndarray:
        """[V] bool: vertices of tokens (ids > 0) that win fewer than ``min_token_vertices``
        vertices."""
        tokens, counts = np.unique(token_ids[token_ids > 0], return_counts=True)
        fragments = tokens[counts < self.config.min_token_vertices]
        return np.isin(token_ids, fragments) if len(fragments) else np.zeros(len(token_ids), bool)

    def instances(self, mesh: PanopticMesh, token_ids: np.ndarray,
                  prior_instances: tuple[MapInstance, ...],
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
            out.append(MapInstance(
                id=int(instance_id), label=label.name, label_id=label_id,
                is_thing=label.is_thing, confidence=confidence, centroid_m=points.mean(axis=0),
                bbox=gravity_box(points, self.summary.up_axis, padding_m=0.0),
                num_observations=int(prior_observations.get(int(instance_id), 0)),
                label_distribution=distribution, num_voxels=int(selected.sum()),
                mean_color_rgb=representative_color(mesh.colors[selected],
                                                    self.summary.color_brightness_percentile)))
        return out


def same_vertices(a: PanopticMesh, b: PanopticMesh) -> bool:
    """Two meshes share their vertex positions (the same object or equal arrays)."""
    return a.vertices_m is b.vertices_m or (a.vertices_m.shape == b.vertices_m.shape
                                            and np.array_equal(a.vertices_m, b.vertices_m))
