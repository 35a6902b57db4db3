"""Procedural scene generator: classes, ids, ground-truth mesh, determinism, the hard cases."""
import itertools

import numpy as np
import pytest
from scipy.spatial import cKDTree

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.scene import SceneConfig, generate_scene
from panoptic_mapper.core.scene.generator import STUFF_NAMES


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneConfig(seed=0))


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(SceneConfig(seed=s)) for s in range(1, 4)]


def test_scene_has_stuff_and_at_least_ten_thing_classes(scene):
    registry = scene.registry
    present = set(np.unique(scene.triangle_label_ids).tolist())
    assert {registry.by_name(n).id for n in STUFF_NAMES} <= present
    thing_classes = {i.label for i in scene.instances}
    assert len(thing_classes) >= 10
    assert all(registry.by_id(i.label_id).is_thing for i in scene.instances)


def test_instance_ids_unique_and_one_label_each(scene):
    ids = [i.id for i in scene.instances]
    assert ids == list(range(1, len(ids) + 1))
    for inst in scene.instances:
        tri = scene.triangle_instance_ids == inst.id
        assert tri.any()
        assert set(np.unique(scene.triangle_label_ids[tri]).tolist()) == {inst.label_id}
    stuff = ~scene.registry.is_thing_table()[scene.triangle_label_ids]
    assert (scene.triangle_instance_ids[stuff] == 0).all()
    assert (scene.triangle_instance_ids[~stuff] > 0).all()


def test_gt_mesh_carries_the_triangle_ids(scene):
    mesh = scene.gt_mesh
    assert mesh.num_vertices == len(scene.vertices_m)
    assert mesh.num_triangles == len(scene.triangles)
    # every corner of every triangle holds that triangle's label and instance
    for corner in range(3):
        v = scene.triangles[:, corner]
        np.testing.assert_array_equal(mesh.label_ids[v], scene.triangle_label_ids)
        np.testing.assert_array_equal(mesh.instance_ids[v], scene.triangle_instance_ids)
    assert set(np.unique(mesh.instance_ids).tolist()) == {0} | {i.id for i in scene.instances}
    assert mesh.colors.std() > 10  # textured albedo, not a constant colour


def test_gt_mesh_samples_surfaces_densely(scene):
    """Triangle edges are about max_edge_m long at most (so GT vertices sample every surface)."""
    v = scene.vertices_m[scene.triangles]
    edges = np.linalg.norm(v - np.roll(v, 1, axis=1), axis=2)
    longest = edges.max(axis=1)
    foliage = scene.triangle_label_ids == scene.registry.by_name("plant").id
    # a grid quad's diagonal is at most sqrt(2) * max_edge; bumpy foliage is stretched a bit
    assert longest[~foliage].max() <= np.sqrt(2) * scene.config.max_edge_m + 1e-6
    assert longest[foliage].max() <= 2.5 * scene.config.max_edge_m


def test_same_seed_same_scene_other_seed_other_scene(scene):
    again = generate_scene(SceneConfig(seed=0))
    np.testing.assert_array_equal(again.vertices_m, scene.vertices_m)
    np.testing.assert_array_equal(again.triangle_label_ids, scene.triangle_label_ids)
    np.testing.assert_array_equal(again.gt_mesh.colors, scene.gt_mesh.colors)
    other = generate_scene(SceneConfig(seed=1))
    assert other.vertices_m.shape != scene.vertices_m.shape or \
        not np.array_equal(other.vertices_m, scene.vertices_m)


def test_objects_stand_inside_their_room_and_rooms_are_closed(scene):
    lo, hi = scene.bounds_m
    room = scene.rooms[0]
    for inst in scene.instances:
        corners = inst.bbox.corners_m()
        assert room.contains_xy(corners[:, :2], -1e-6).all(), inst
        assert corners[:, 2].min() >= -1e-6 and corners[:, 2].max() <= room.height_m
    # the shell: floor at 0, ceiling at the room height, walls at the interior bounds
    assert lo[2] == pytest.approx(0.0) and hi[2] == pytest.approx(room.height_m)
    np.testing.assert_allclose(lo[:2], room.min_xy_m, atol=1e-9)
    np.testing.assert_allclose(hi[:2], room.max_xy_m, atol=1e-9)


def _min_gap_m(scene, a, b) -> float:
    pa = scene.gt_mesh.vertices_m[scene.gt_mesh.instance_ids == a]
    pb = scene.gt_mesh.vertices_m[scene.gt_mesh.instance_ids == b]
    return float(cKDTree(pa).query(pb, k=1)[0].min())


def test_hard_cases_present(scenes):
    """Objects on top of others, and same-class objects touching each other."""
    on_top = touching_same_class = 0
    for sc in scenes:
        by_id = sc.instance_by_id()
        for inst in sc.instances:
            if inst.support_id:
                on_top += 1
                support = by_id[inst.support_id]
                # it rests on the support: its bottom is at the support's top surface or below
                bottom = inst.bbox.corners_m()[:, 2].min()
                assert bottom <= support.bbox.corners_m()[:, 2].max() + 1e-9
        for a, b in itertools.combinations(sc.instances, 2):
            if a.label != b.label or a.support_id or b.support_id:
                continue
            if np.linalg.norm(a.bbox.center_m[:2] - b.bbox.center_m[:2]) > 3.0:
                continue
            if _min_gap_m(sc, a.id, b.id) < 0.06:
                touching_same_class += 1
    assert on_top >= 6
    assert touching_same_class >= 2


def test_multi_room_scene_has_doorways():
    sc = generate_scene(SceneConfig(seed=5, num_rooms=2, max_groups_per_room=4,
                                    min_thing_classes=8))
    assert len(sc.rooms) == 2
    doorways = [o for r in sc.rooms for o in r.openings if o.kind == "doorway"]
    assert len(doorways) == 2  # one opening, seen from both rooms
    assert {i.room_index for i in sc.instances} == {0, 1}
    assert sc.rooms[1].min_xy_m[0] > sc.rooms[0].max_xy_m[0]


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError) as err:
        SceneConfig(num_rooms=0)
    assert err.value.field == "num_rooms"
    with pytest.raises(ConfigError) as err:
        SceneConfig(room_width_m=(6.0, 5.0))
    assert err.value.field == "room_width_m"


def test_registry_without_stuff_labels_is_rejected():
    registry = LabelRegistry.from_dict({"labels": [
        {"id": 1, "name": "wall", "is_thing": False},
        {"id": 2, "name": "chair", "is_thing": True}]})
    with pytest.raises(ConfigError) as err:
        generate_scene(SceneConfig(seed=0), registry)
    assert "floor" in str(err.value)
