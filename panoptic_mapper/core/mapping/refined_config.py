"""Settings of the refined map (PanopticRecon++ over the instant map): prior, keyframes, field
training, scene box and publishing.

Owns: :class:`RefinedLayerConfig` (the layer derived from a prior map: what the mapper node
configures under ``map``) and :class:`RefinedMapConfig` (the layer plus the instant map it is
derived from, for the stand-alone ``"refined"`` map of ``create_map``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.field.appearance import AppearanceConfig
from panoptic_mapper.core.field.box_growth import SceneBoxConfig
from panoptic_mapper.core.field.config import FieldTrainingConfig, KeyframeConfig
from panoptic_mapper.core.field.field_mesh import FieldMeshConfig
from panoptic_mapper.core.mapping.instant_map import InstantMapConfig


@dataclass
class RefinedLayerConfig(ConfigBase):
    """The refined layer: keyframes, field training and publishing over a prior map."""

    REMOVED_SETTINGS = {"instant": "the refined layer derives from the instant semantics node's "
                        "map: configure it there (instant_semantics_node: map)"}

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
    prior_refresh_steps: int = 50
    """The prior keeps integrating while the field trains: the distilled prior labels (and the
    tokens' ties to prior instances) are moved to the prior's newest mesh at most every this
    many steps, when it changed (0: keep the mesh of the field's setup, as an offline run
    does)."""
    min_keyframes: int = 3
    """Training starts once this many keyframes are stored."""
    ready_fraction: float = 0.6
    """The field replaces the prior once this fraction of the step budget is trained."""
    finalize_max_s: float = 240.0
    """Wall-time budget of ``finalize()`` for training, seconds (0 = no limit)."""
    mesh_source: str = "tsdf"
    """The geometry served once the field is ready: ``"tsdf"``, the prior's TSDF mesh relabelled
    by the field (its vertices are the fused depth, the better surface at a CPU step budget:
    docs/refined_map.md, "Geometry from the field"), or ``"field"``, the marching-cubes surface of
    the field's SDF near the observed surface (``field_mesh``), labelled the same way (costs an
    SDF evaluation per observed grid point at every publish)."""
    field_mesh: FieldMeshConfig = field(default_factory=FieldMeshConfig)
    """The grid of the field's surface (``mesh_source = "field"``)."""
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
        require(self.prior_refresh_steps >= 0, "prior_refresh_steps", self.prior_refresh_steps,
                "must be >= 0")
        require(0 <= self.ready_fraction <= 1, "ready_fraction", self.ready_fraction,
                "must be in [0, 1]")
        require(self.mesh_source in ("tsdf", "field"), "mesh_source", self.mesh_source,
                "must be 'tsdf' (the prior's mesh) or 'field' (the field's SDF surface)")
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
class RefinedMapConfig(RefinedLayerConfig):
    """The stand-alone refined map: the layer's settings plus the instant map it derives from."""

    instant: InstantMapConfig = field(default_factory=InstantMapConfig)
    """The instant map used as prior (its geometry, instances and the answers until ready)."""

    def layer_config(self) -> RefinedLayerConfig:
        """The layer's part of this configuration (a copy)."""
        data = self.to_dict()
        data.pop("instant")
        return RefinedLayerConfig.from_dict(data)
