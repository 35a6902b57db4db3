"""Procedural indoor scenes with panoptic ground truth: :func:`generate_scene`.

A scene is one triangle mesh of rooms (stuff: wall, floor, ceiling, door, window) and furniture
(things, one instance id each), with per-triangle label, instance and material ids and the
ground-truth :class:`PanopticMesh` (per-vertex label, instance and albedo colour). Everything is
deterministic given :attr:`SceneConfig.seed`.

Owns: :class:`SceneConfig`, :class:`SyntheticScene`, :class:`SceneInstance`, label/instance
assignment and the scene metadata (``scene.json`` content).
Does not own: shapes (``furniture``, ``rooms``), placement (``layout``), cameras (``trajectory``)
or images (``renderer``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.scene.furniture import BUILDERS, BuildContext
from panoptic_mapper.core.scene.layout import ARRANGEMENTS, CORE_GROUPS, FILLER_GROUPS
from panoptic_mapper.core.scene.layout import PlacedObject
from panoptic_mapper.core.scene.layout import layout_room_furniture
from panoptic_mapper.core.scene.materials import MaterialTable
from panoptic_mapper.core.scene.meshing import MeshPart, merge_parts
from panoptic_mapper.core.scene.rooms import Room, arrange_rooms, build_room_shells
from panoptic_mapper.core.types import NO_INSTANCE_ID, OrientedBox, PanopticMesh

STUFF_NAMES = ("wall", "floor", "ceiling", "door", "window")
"""Stuff labels the room shells use; the label registry must define them."""


@dataclass
class SceneConfig(ConfigBase):
    """Parameters of a procedural scene."""

    seed: int = 0
    """Random seed; the same seed and config always give the same scene."""
    num_rooms: int = 1
    """Rooms side by side along +x, connected by doorways."""
    room_width_m: tuple[float, float] = (5.5, 7.0)
    """Range of the interior room width (along x), metres."""
    room_depth_m: tuple[float, float] = (4.5, 6.0)
    """Range of the interior room depth (along y, common to all rooms), metres."""
    room_height_m: tuple[float, float] = (2.5, 2.9)
    """Range of the ceiling height (common to all rooms), metres."""
    max_groups_per_room: int = 9
    """Furniture groups (dining set, desk corner, ...) tried per room; the five core groups,
    spread over the rooms, are always tried, the rest are random fillers."""
    group_spacing_m: float = 0.12
    """Free gap kept between furniture groups, metres (objects inside a group may touch)."""
    placement_attempts: int = 60
    """Random poses tried for a group before it is skipped."""
    arrangement: str = "dense"
    """How furniture is arranged: ``dense`` as people leave it (chairs pushed against and under
    tables and desks, identical chairs, cabinets, shelves, bins and boxes touching in rows,
    boxes stacked 2-3 high, fuller tables and shelves, groups ``group_spacing_m / 3`` apart and
    4 more groups tried per room), so same-class and different-class contacts are common; or
    ``spaced``, the earlier generator (fewer contacts; a seed gives the same scene as before)."""
    min_thing_classes: int = 10
    """Fewest distinct thing classes per scene; layouts with fewer are redrawn."""
    max_edge_m: float = 0.05
    """Longest triangle edge, metres: GT-mesh vertices sample every surface this densely."""
    label_file: str = ""
    """Label registry YAML; empty = the default registry (``config/labels/default.yaml``)."""

    def validate(self) -> None:
        require(self.num_rooms >= 1, "num_rooms", self.num_rooms, "must be >= 1")
        for name in ("room_width_m", "room_depth_m", "room_height_m"):
            lo, hi = getattr(self, name)
            require(0 < lo <= hi, name, (lo, hi), "must be a range 0 < low <= high")
        require(min(self.room_width_m) >= 3.0 and min(self.room_depth_m) >= 3.0, "room_width_m",
                (self.room_width_m, self.room_depth_m), "rooms must be at least 3 m wide and deep")
        require(self.room_height_m[0] >= 2.3, "room_height_m", self.room_height_m,
                "ceilings must be >= 2.3 m (doors are 2.05 m)")
        require(self.max_groups_per_room >= 1, "max_groups_per_room", self.max_groups_per_room,
                "must be >= 1")
        require(self.group_spacing_m >= 0, "group_spacing_m", self.group_spacing_m, "must be >= 0")
        require(self.placement_attempts >= 1, "placement_attempts", self.placement_attempts,
                "must be >= 1")
        require(self.arrangement in ARRANGEMENTS, "arrangement", self.arrangement,
                f"must be one of {sorted(ARRANGEMENTS)}")
        require(0 <= self.min_thing_classes <= len(BUILDERS), "min_thing_classes",
                self.min_thing_classes, f"must be in 0..{len(BUILDERS)}")
        require(0.005 <= self.max_edge_m <= 1.0, "max_edge_m", self.max_edge_m,
                "must be in [0.005, 1] m")


@dataclass
class SceneInstance:
    """One object (thing) of a scene."""

    id: int
    """Scene-unique instance id (> 0), the value in instance images and GT-mesh vertices."""
    label_id: int
    label: str
    bbox: OrientedBox
    """Box of the object's extent (object axes, world frame)."""
    T_world_object: np.ndarray
    """[4, 4] object frame (footprint centre on its support, +z up, front -y) -> world."""
    room_index: int
    support_id: int = NO_INSTANCE_ID
    """Instance id of the object it stands on; 0 = the floor."""
    group: str = ""
    """Furniture group template that placed it (``desk``, ``dining``, ...)."""
    variant: str = ""
    """Builder variant (``round`` table, ``nightstand`` cabinet, ...)."""


@dataclass
class SyntheticScene:
    """A generated scene: geometry with per-triangle ids, instances, rooms and materials."""

    config: SceneConfig
    registry: LabelRegistry
    rooms: list[Room]
    instances: list[SceneInstance]
    vertices_m: np.ndarray
    """[V, 3] float64 world vertices."""
    triangles: np.ndarray
    """[F, 3] int64 vertex indices."""
    triangle_label_ids: np.ndarray
    """[F] int32 registry label id per triangle."""
    triangle_instance_ids: np.ndarray
    """[F] int32 instance id per triangle (0 for stuff)."""
    triangle_material_ids: np.ndarray
    """[F] int32 index into :attr:`materials`."""
    materials: MaterialTable
    gt_mesh: PanopticMesh = field(repr=False, default=None)  # type: ignore[assignment]
    """Ground-truth mesh: per-vertex label, instance and albedo colour."""

    def instance_by_id(self) -> dict[int, SceneInstance]:
        return {inst.id: inst for inst in self.instances}

    @property
    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """``(min [3], max [3])`` of all vertices."""
        return self.vertices_m.min(axis=0), self.vertices_m.max(axis=0)

    def metadata(self) -> dict:
        """JSON-ready description (``scene.json``): config, rooms and instances."""
        return {
            "generator": "panoptic_mapper.core.scene",
            "config": self.config.to_dict(),
            "rooms": [{"index": r.index, "min_xy_m": r.min_xy_m.tolist(),
                       "max_xy_m": r.max_xy_m.tolist(), "height_m": r.height_m,
                       "openings": [vars(o) for o in r.openings]} for r in self.rooms],
            "instances": [{"id": i.id, "label": i.label, "label_id": i.label_id,
                           "room": i.room_index, "support_id": i.support_id, "group": i.group,
                           "variant": i.variant,
                           "bbox_center_m": i.bbox.center_m.tolist(),
                           "bbox_size_m": i.bbox.size_m.tolist(),
                           "bbox_R_world_box": i.bbox.R_world_box.tolist()}
                          for i in self.instances],
            "num_vertices": int(len(self.vertices_m)),
            "num_triangles": int(len(self.triangles)),
        }


def load_registry(label_file: str) -> LabelRegistry:
    """The registry named by a config's ``label_file`` (empty = default)."""
    return LabelRegistry.from_yaml(label_file) if label_file else LabelRegistry.default()


def generate_scene(config: SceneConfig | None = None,
                   registry: LabelRegistry | None = None) -> SyntheticScene:
    """Build a procedural scene.

    Args:
        config: scene parameters (defaults: one room, seed 0).
        registry: label registry; default: the one named by ``config.label_file``. It must
            define the stuff labels of :data:`STUFF_NAMES`; thing classes it lacks are not built.

    Raises:
        ConfigError: a needed stuff label is missing, or no layout reached
            ``min_thing_classes`` classes.
    """
    config = config or SceneConfig()
    registry = registry or load_registry(config.label_file)
    names = {lab.name for lab in registry}
    missing = [n for n in STUFF_NAMES if n not in names]
    if missing:
        raise ConfigError("label_file", config.label_file or "default",
                          f"label registry lacks the stuff labels {missing}")
    available = [n for n in BUILDERS if n in names and registry.by_name(n).is_thing]
    wanted = min(config.min_thing_classes, len(available))
    best = None
    for retry in range(10):
        scene = _generate_once(config, registry, retry)
        classes = {i.label for i in scene.instances}
        if len(classes) >= wanted:
            return scene
        if best is None or len(classes) > len({i.label for i in best.instances}):
            best = scene
    raise ConfigError("min_thing_classes", config.min_thing_classes,
                      f"no layout reached it in 10 tries (best: "
                      f"{len({i.label for i in best.instances})} classes); use larger rooms")


def _generate_once(config: SceneConfig, registry: LabelRegistry, retry: int) -> SyntheticScene:
    rng = np.random.default_rng([config.seed, retry])
    materials = MaterialTable()
    ctx = BuildContext(rng, materials, config.max_edge_m)
    rooms = arrange_rooms(rng, config.num_rooms, config.room_width_m, config.room_depth_m,
                          config.room_height_m)
    stuff = build_room_shells(ctx, rooms)
    group_names = _group_plan(rng, config)
    placed = layout_room_furniture(ctx, rooms, group_names, config.group_spacing_m,
                                   config.placement_attempts, config.arrangement)
    names = {lab.name for lab in registry}
    parts: list[MeshPart] = []
    labels: list[np.ndarray] = []
    instance_ids: list[np.ndarray] = []
    for s in stuff:
        parts.append(s.part)
        labels.append(np.full(len(s.part.triangles), registry.by_name(s.label).id, np.int32))
        instance_ids.append(np.zeros(len(s.part.triangles), np.int32))
    instances: list[SceneInstance] = []
    id_of_placed: dict[int, int] = {}
    for index, obj in enumerate(placed):
        if obj.model.label not in names:
            continue
        label = registry.by_name(obj.model.label)
        inst_id = len(instances) + 1
        id_of_placed[index] = inst_id
        for part in obj.model.parts:
            world = part.transformed(obj.T_world_object)
            parts.append(world)
            labels.append(np.full(len(world.triangles), label.id, np.int32))
            instance_ids.append(np.full(len(world.triangles), inst_id, np.int32))
        instances.append(SceneInstance(
            id=inst_id, label_id=label.id, label=label.name, bbox=_bbox(obj),
            T_world_object=obj.T_world_object, room_index=obj.room_index,
            support_id=id_of_placed.get(obj.support, NO_INSTANCE_ID), group=obj.group,
            variant=obj.model.variant))
    vertices, triangles, material_ids = merge_parts(parts)
    scene = SyntheticScene(config=config, registry=registry, rooms=rooms, instances=instances,
                           vertices_m=vertices, triangles=triangles,
                           triangle_label_ids=np.concatenate(labels),
                           triangle_instance_ids=np.concatenate(instance_ids),
                           triangle_material_ids=material_ids, materials=materials)
    scene.gt_mesh = _panoptic_mesh(scene)
    return scene


def _group_plan(rng: np.random.Generator, config: SceneConfig) -> list[list[str]]:
    """Per room, the group templates to try: the core groups spread over the rooms (so every
    class appears), then random fillers."""
    core = list(CORE_GROUPS)
    rng.shuffle(core)
    plan: list[list[str]] = [[] for _ in range(config.num_rooms)]
    for i, name in enumerate(core):
        plan[i % config.num_rooms].append(name)
    for names in plan:
        while len(names) < config.max_groups_per_room:
            names.append(str(rng.choice(FILLER_GROUPS)))
    return plan


def _bbox(obj: PlacedObject) -> OrientedBox:
    size = obj.model.size_m
    center_local = np.array([0.0, 0.0, size[2] / 2, 1.0])
    return OrientedBox(center_m=(obj.T_world_object @ center_local)[:3],
                       R_world_box=obj.T_world_object[:3, :3], size_m=size)


def _panoptic_mesh(scene: SyntheticScene) -> PanopticMesh:
    """Per-vertex attributes from the per-triangle ones (vertices are never shared between
    parts, so every vertex has exactly one label, instance and material)."""
    n = len(scene.vertices_m)
    label = np.zeros(n, np.int32)
    inst = np.zeros(n, np.int32)
    material = np.zeros(n, np.int32)
    flat = scene.triangles.reshape(-1)
    label[flat] = np.repeat(scene.triangle_label_ids, 3)
    inst[flat] = np.repeat(scene.triangle_instance_ids, 3)
    material[flat] = np.repeat(scene.triangle_material_ids, 3)
    albedo = scene.materials.albedo_at(scene.vertices_m, material)
    colors = np.round(albedo * 255.0).astype(np.uint8)
    return PanopticMesh(scene.vertices_m, scene.triangles, colors, label, inst)
