"""The refined map's scene box follows a robot that explores: the per-axis box (normalisation,
containment, minimum size and aspect ratio), the growth rule and the grown box against hand
values (only the crossed faces move), one restart on a grown box when a keyframe sees far beyond it (none near
its edge), the previous products served until the restarted field is ready, instance ids kept
across the restart, save/load in the middle of a restart, a fixed workspace box that never
grows, ``finalize`` growing the box to cover every keyframe, and version 1 map files."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.field.box_growth import SceneBoxConfig, grown_box, outside_share
from panoptic_mapper.core.field.instance_ids import IdBindingState, rebind_tokens
from panoptic_mapper.core.field.panoptic_field import MAX_ASPECT_RATIO, MIN_HALF_SIZE_M, SceneBox
from panoptic_mapper.core.field.trainer import FieldTrainer
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)
from field_toy_scene import integrated_refined_map as _integrated  # noqa: E402
from field_toy_scene import refined_config as _config  # noqa: E402

MARGIN_M = 0.5
"""``training.field.scene_margin_m`` (default)."""
ROOM_LOW = np.array([-0.1, -0.1, -0.1])
ROOM_HIGH = np.array([3.1, 3.1, 2.2])
"""Bounds of the toy room's mesh (walls 0.1 m thick around a 3 m floor, 2.2 m high)."""
FIRST_BOX = SceneBox((1.5, 1.5, 1.05), (1.6 + MARGIN_M, 1.6 + MARGIN_M, 1.15 + MARGIN_M))
"""The box of the first setup: the room's mesh (which holds every keyframe point) + margin, per
axis (the room is lower than it is wide)."""
HEADROOM = 0.25
"""``scene_box.headroom_fraction`` (default)."""


@pytest.fixture(scope="module")
def toy_scene():
    # 32 x 24 pixels: fewer than the 2000 points per keyframe that the box rules sample, so
    # they see every valid pixel and the expected boxes follow from the pixels alone.
    return make_toy_scene(num_frames=16, width=32, height=24)


def _add_shifted_frame(refined, scene, shift_m, index: int = 0) -> np.ndarray:
    """Integrate frame ``index`` of the toy room moved by ``shift_m`` (the robot drove on: a
    room like the first one, elsewhere); returns the world points of all its valid pixels."""
    frame, segmentation = scene.frames[index], scene.segmentations[index]
    stamp = 10**12 + refined.selector.last_stamp_ns
    T = frame.T_world_cam.copy()  # noqa: N806
    T[:3, 3] += shift_m
    moved = dataclasses.replace(frame, stamp_ns=stamp, T_world_cam=T)
    assert refined.integrate_frame(moved, dataclasses.replace(segmentation,
                                                              stamp_ns=stamp)).accepted
    keyframe = refined.store.snapshot()[-1]
    assert keyframe.stamp_ns == stamp
    return keyframe.surface_points(keyframe.valid_pixels(refined.store.near_m))


def _assert_box(box: SceneBox, expected: SceneBox):
    np.testing.assert_allclose(box.center_m, expected.center_m, atol=1e-6)
    np.testing.assert_allclose(box.half_size_m, expected.half_size_m, atol=1e-6)


# ---- the per-axis box, the rule and the grown box, by hand --------------------------------------
def test_scene_box_is_per_axis():
    box = SceneBox((1.0, 2.0, 0.5), (2.0, 1.0, 0.5))  # [-1, 3] x [1, 3] x [0, 1]
    low, high = box.bounds_m
    np.testing.assert_allclose(low, [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(high, [3.0, 3.0, 1.0])
    np.testing.assert_allclose(box.size_m, [4.0, 2.0, 1.0])
    assert str(box) == "[-1.00, 1.00, 0.00] .. [3.00, 3.00, 1.00] m"
    # each axis maps to [0, 1] on its own: the corners go to the unit cube's corners
    corners = torch.tensor([[-1.0, 1.0, 0.0], [3.0, 3.0, 1.0], [1.0, 2.0, 0.5],
                            [0.0, 2.5, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(box.normalize(corners), torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.25, 0.75, 0.75]],
        dtype=torch.float64))
    inside = box.contains(np.array([[2.9, 2.9, 0.9], [0.0, 2.0, 1.1], [3.0, 3.0, 1.0],
                                    [-1.5, 2.0, 0.5]]))
    np.testing.assert_array_equal(inside, [True, False, True, False])
    np.testing.assert_allclose(box.outside_distance_m(np.array([[0.0, 2.0, 1.1],
                                                                [1.0, 2.0, 0.5]])), [0.1, -0.5])
    # a cube (one number, as checkpoints before per-axis boxes held) is the same box
    assert SceneBox((0.0, 0.0, 0.0), 2.0) == SceneBox((0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    with pytest.raises(InvalidInputError, match="scene_box"):
        SceneBox((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))


def test_scene_box_from_points_keeps_size_and_aspect_bounds():
    room = SceneBox.from_points(np.array([[0.0, 0.0, 0.0], [5.9, 5.5, 2.7]]), margin_m=0.5)
    _assert_box(room, SceneBox((2.95, 2.75, 1.35), (3.45, 3.25, 1.85)))  # no cube: 6.9 m
    # a flat cloud (a floor) gets a z axis of a quarter of the longest axis, about its centre
    floor = SceneBox.from_points(np.array([[0.0, 0.0, 1.0], [8.0, 2.0, 1.0]]), margin_m=0.0)
    _assert_box(floor, SceneBox((4.0, 1.0, 1.0), (4.0, 1.0, 1.0)))
    point = SceneBox.from_points(np.array([[1.0, 2.0, 3.0]]), margin_m=0.0)
    _assert_box(point, SceneBox((1.0, 2.0, 3.0), MIN_HALF_SIZE_M))
    assert MAX_ASPECT_RATIO == 4.0
    with pytest.raises(InvalidInputError, match="points_m"):
        SceneBox.from_points(np.zeros((0, 3)), 0.5)


def test_outside_share_counts_points_beyond_the_tolerance():
    box = SceneBox((0.0, 0.0, 0.0), (1.0, 2.0, 1.0))
    points = np.array([[0.0, 0.0, 0.0],     # inside
                       [1.2, 0.0, 0.0],     # 0.2 m beyond a face: within the tolerance
                       [0.0, -2.3, 0.0],    # 0.3 m beyond (y is longer)
                       [0.0, 1.9, 1.5],     # inside on y, 0.5 m beyond on z
                       [0.0, 1.2, 0.0]])    # inside (beyond the x half size, not the y one)
    assert outside_share(points, box, 0.25) == pytest.approx(0.4)
    assert outside_share(points, box, 0.0) == pytest.approx(0.6)
    assert outside_share(np.zeros((0, 3)), box, 0.25) == 0.0


def test_grown_box_moves_only_the_crossed_faces_with_margin_and_headroom():
    box = SceneBox((0.0, 0.0, 0.0), 1.0)  # [-1, 1]^3
    points = np.array([[3.0, 0.0, 0.0], [0.0, 0.5, -1.5], [0.0, 0.9, 0.0]])
    grown = grown_box(box, points, margin_m=0.5, headroom_fraction=0.25)
    # +x crossed: needs [-1, 3.5] (4.5 m), so the face goes to 3.5 + 0.25 * 4.5 = 4.625;
    # -z crossed: needs [-2, 1] (3 m): -2 - 0.75 = -2.75; y (0.9 + margin is inside) and the
    # -x, +z faces stay
    low, high = grown.bounds_m
    np.testing.assert_allclose(low, [-1.0, -1.0, -2.75])
    np.testing.assert_allclose(high, [4.625, 1.0, 1.0])
    assert np.all(grown.contains(points)) and np.all(grown.contains(np.array(box.bounds_m)))
    assert grown.half_size_m[1] == 1.0 and grown.center_m[1] == 0.0  # y did not grow
    # nothing crossed: the box stays
    assert grown_box(box, np.array([[0.9, 0.9, 0.9]]), 0.5, 0.25) == box


def test_scene_box_config_fixed_box_and_validation(caplog):
    config = SceneBoxConfig()
    assert config.fixed_box is None and config.grows
    assert config.headroom_fraction == HEADROOM
    fixed = SceneBoxConfig(fixed_min_m=(-1.0, 0.0, 0.0), fixed_max_m=(4.0, 2.0, 3.0))
    _assert_box(fixed.fixed_box, SceneBox((1.5, 1.0, 1.5), (2.5, 1.0, 1.5)))
    assert not fixed.grows
    assert not SceneBoxConfig(growth=False).grows
    with pytest.raises(ConfigError, match="fixed_max_m"):
        SceneBoxConfig(fixed_min_m=(0.0, 0.0, 0.0), fixed_max_m=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match="headroom_fraction"):
        SceneBoxConfig(headroom_fraction=-0.1)
    with pytest.raises(ConfigError, match="scene_box.outside_share"):
        RefinedMapConfig.from_dict({"scene_box": {"outside_share": 1.0}})
    with caplog.at_level("WARNING"):  # a file written when the box was a cube x headroom
        old = RefinedMapConfig.from_dict({"scene_box": {"headroom": 1.5}})
    assert old.scene_box.headroom_fraction == HEADROOM and "scene_box.headroom" in caplog.text


def test_rebind_tokens_keeps_published_ids_including_fresh_ones():
    # Before the restart: token 1 -> prior id 101, token 2 -> fresh id 7, stuff label 2 -> 50.
    state = IdBindingState({1: 101, 2: 7}, {2: 50}, next_id=102, fresh_ids=[7])
    published = np.array([101, 101, 101, 7, 7, 7, 50, 50])
    # The restarted field numbers its tokens anew: token 1 now covers the old fresh instance,
    # token 2 the old prior instance, token 3 something new.
    tokens = np.array([2, 2, 2, 1, 1, 1, 0, 3])
    rebound = rebind_tokens(state, tokens, published, {101, 7}, min_iou=0.2)
    assert rebound.token_to_map == {1: 7, 2: 101, 3: 102}
    assert rebound.stuff_to_map == {2: 50} and rebound.fresh_ids == [7, 102]
    assert rebound.next_id == 103
    assert state.token_to_map == {1: 101, 2: 7}  # the previous bindings are not changed


# ---- restarts on a grown box --------------------------------------------------------------------
def test_setup_box_then_far_keyframe_grows_it_once(toy_scene, caplog):
    refined = _integrated(toy_scene, _config(20))
    refined.train_steps(1)
    first_box = refined.trainer.field.box
    _assert_box(first_box, FIRST_BOX)
    assert refined.progress().field_restarts == 0 and not refined.progress().box_growth_due
    points = _add_shifted_frame(refined, toy_scene, [6.0, 0.0, 0.0])
    progress = refined.progress()
    assert progress.box_growth_due and not progress.done
    with caplog.at_level("INFO"):
        progress = refined.train_steps(2)
    assert progress.field_restarts == 1 and refined.field_restarts == 1
    assert progress.step == 2 and progress.total_steps == 20  # a new schedule from step 0
    assert not progress.box_growth_due
    # The first box (which holds the room's mesh) with its +x face moved beyond the new
    # keyframe's points by the margin and the headroom; its y and z lie inside the first box.
    low, high = first_box.bounds_m
    assert np.all(points[:, 1:].min(axis=0) >= low[1:]) and np.all(points[:, 1:].max(axis=0)
                                                                    <= high[1:])
    needed_x = points[:, 0].max() + MARGIN_M
    high = high.copy()
    high[0] = needed_x + HEADROOM * (needed_x - low[0])
    _assert_box(progress.box, SceneBox.around_bounds(low, high))
    assert progress.box.half_size_m[1:] == first_box.half_size_m[1:]  # exactly: not grown
    assert progress.box.center_m[1:] == first_box.center_m[1:]
    assert progress.box.contains(points).all()
    assert "restart 1 on a grown box" in caplog.text and str(FIRST_BOX) in caplog.text
    assert refined.trainer.field.tokens.num_tokens == 4  # seeded from the prior again
    assert refined.trainer.prior_targets is not None
    refined.train_steps(1)
    assert refined.field_restarts == 1  # the new box holds every keyframe


def test_keyframe_near_the_edge_does_not_grow_the_box(toy_scene):
    refined = _integrated(toy_scene, _config(20))
    refined.train_steps(1)
    points = _add_shifted_frame(refined, toy_scene, [-0.7, 0.0, 0.0])  # frame 0 looks to -x
    beyond = FIRST_BOX.outside_distance_m(points).max()
    assert 0.0 < beyond < 0.25  # past the face, within the tolerance
    assert not refined.progress().box_growth_due
    refined.train_steps(1)
    assert refined.field_restarts == 0
    _assert_box(refined.trainer.field.box, FIRST_BOX)
    # without the tolerance, the quarter of its points past the face would grow the box
    strict = _integrated(toy_scene, _config(20, scene_box=SceneBoxConfig(outside_tolerance_m=0)))
    strict.train_steps(1)
    _add_shifted_frame(strict, toy_scene, [-0.7, 0.0, 0.0])
    assert outside_share(points, FIRST_BOX, 0.0) > 0.1 and strict.progress().box_growth_due


def test_a_done_field_grows_and_trains_again(toy_scene):
    refined = _integrated(toy_scene, _config(3, ready_fraction=0.5))
    refined.train_steps(3)
    assert refined.progress().done and refined.is_ready
    _add_shifted_frame(refined, toy_scene, [0.0, -6.0, 0.0])
    assert not refined.progress().done  # the worker keeps training: the box must grow
    progress = refined.train_steps(0)
    assert progress.field_restarts == 1 and progress.step == 0 and not progress.done


def test_previous_products_serve_until_the_restarted_field_is_ready(toy_scene):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.5))
    refined.train_steps(6)
    assert refined.is_ready
    frame = toy_scene.frames[5]
    points = toy_scene.mesh.vertices_m[::37]
    mesh, instances = refined.get_mesh(), refined.get_instances()
    queried = refined.query_labels(points)
    rendered = refined.render_labels(frame.T_world_cam, frame.intrinsics).label_ids
    serving = refined.trainer
    _add_shifted_frame(refined, toy_scene, [6.0, 0.0, 0.0])
    refined.train_steps(4)  # restarted, at step 4 of 10: not ready (5)
    assert refined.field_restarts == 1 and refined.trainer is not serving
    assert refined.is_ready
    for _ in range(2):
        assert refined.update_mesh().changed is False
        assert refined.get_mesh() is mesh
        assert [(i.id, i.label, i.num_voxels) for i in refined.get_instances()] == \
            [(i.id, i.label, i.num_voxels) for i in instances]
        for a, b in zip(refined.query_labels(points), queried):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(
            refined.render_labels(frame.T_world_cam, frame.intrinsics).label_ids, rendered)
    refined.train_steps(1)  # step 5: the restarted field is ready and replaces the previous
    assert refined.get_mesh() is not mesh
    assert refined.layer._published.trainer is refined.trainer
    assert refined.layer._published.box == refined.trainer.field.box
    assert refined.update_mesh().changed is False


def test_instance_ids_survive_the_restart(toy_scene):
    config = _config(30, ready_fraction=0.5, prior_fallback_confidence=0.0,
                     min_token_vertices=0)
    refined = _integrated(toy_scene, config)
    refined.train_steps(30)
    before = refined.get_mesh().instance_ids.copy()
    assert {i.id for i in refined.get_instances() if i.is_thing} == {101, 102, 103, 104}
    _add_shifted_frame(refined, toy_scene, [6.0, 0.0, 0.0])
    refined.train_steps(5)  # restarted, not ready yet
    # Meanwhile the prior renumbers its instances: binding the new tokens to the prior's ids
    # would change every id a planner knows; they bind to the published ids instead.
    renumbered = ToyPriorMap(toy_scene, id_offset=200)
    refined.prior.mesh, refined.prior.id_offset = renumbered.mesh, 200
    refined.train_steps(10)  # ready again: the restarted field publishes
    assert refined.field_restarts == 1 and refined.layer._published.trainer is refined.trainer
    after = refined.get_mesh().instance_ids
    assert {i.id for i in refined.get_instances() if i.is_thing} == {101, 102, 103, 104}
    for instance_id in (101, 102, 103, 104):  # each id still names about the same surface
        was, now = before == instance_id, after == instance_id
        assert (was & now).sum() / (was | now).sum() > 0.3


def test_save_and_load_during_and_after_a_restart(toy_scene, tmp_path):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.5))
    refined.train_steps(6)
    _add_shifted_frame(refined, toy_scene, [6.0, 0.0, 0.0])
    refined.train_steps(2)  # restarted, not ready: the previous field serves
    path = tmp_path / "restarting.npz"
    refined.save(path)
    restored = RefinedPanopticMap(toy_scene.registry, _config(5), prior=ToyPriorMap(toy_scene))
    restored.load(path)
    assert restored.field_restarts == 1 and restored.progress().field_restarts == 1
    assert restored.trainer.step_count == 2 and len(restored.store) == 17
    assert restored.trainer.field.box == refined.trainer.field.box
    assert restored.layer._published.box == refined.layer._published.box != refined.trainer.field.box
    points = toy_scene.mesh.vertices_m[::41]
    np.testing.assert_array_equal(restored.get_mesh().label_ids, refined.get_mesh().label_ids)
    np.testing.assert_array_equal(restored.get_mesh().instance_ids,
                                  refined.get_mesh().instance_ids)
    for a, b in zip(restored.query_labels(points), refined.query_labels(points)):
        np.testing.assert_array_equal(a, b)
    for refined_map in (refined, restored):  # both switch to the restarted field alike
        refined_map.train_steps(3)
        assert refined_map.layer._published.trainer is refined_map.trainer
    np.testing.assert_array_equal(restored.get_mesh().instance_ids,
                                  refined.get_mesh().instance_ids)
    path = tmp_path / "restarted.npz"
    refined.save(path)
    again = RefinedPanopticMap(toy_scene.registry, _config(5), prior=ToyPriorMap(toy_scene))
    again.load(path)
    assert again.field_restarts == 1 and again.layer._published.trainer is again.trainer
    assert again.trainer.field.box == refined.trainer.field.box


def test_a_fixed_workspace_box_never_grows(toy_scene):
    config = _config(20)
    config.scene_box = SceneBoxConfig(fixed_min_m=(-1.0, -1.0, -0.5), fixed_max_m=(4.0, 4.0, 2.5))
    workspace = SceneBox((1.5, 1.5, 1.0), (2.5, 2.5, 1.5))
    refined = _integrated(toy_scene, config)
    refined.train_steps(1)
    _assert_box(refined.trainer.field.box, workspace)
    _add_shifted_frame(refined, toy_scene, [6.0, 0.0, 0.0])
    assert not refined.progress().box_growth_due
    refined.train_steps(1)
    assert refined.field_restarts == 0
    _assert_box(refined.trainer.field.box, workspace)
    no_growth = _integrated(toy_scene, _config(20, scene_box=SceneBoxConfig(growth=False)))
    no_growth.train_steps(1)
    _add_shifted_frame(no_growth, toy_scene, [6.0, 0.0, 0.0])
    no_growth.train_steps(1)
    assert no_growth.field_restarts == 0
    _assert_box(no_growth.trainer.field.box, FIRST_BOX)


@pytest.mark.parametrize("shift_m", [[0.0, 6.0, 0.0], [-0.85, 0.0, 0.0]])
def test_finalize_grows_the_box_to_cover_every_keyframe(toy_scene, shift_m):
    refined = _integrated(toy_scene, _config(6, ready_fraction=0.5))
    refined.train_steps(1)
    points = _add_shifted_frame(refined, toy_scene, shift_m, index=4)
    share = outside_share(points, FIRST_BOX, 0.25)
    # far: the whole view is beyond; near: 7 % of it, too little to restart while mapping
    assert share == 1.0 if shift_m[1] else 0.0 < share < 0.1
    assert refined.progress().box_growth_due == (share == 1.0)
    refined.finalize()
    assert refined.field_restarts == 1 and refined.is_ready
    assert refined.layer._published.trainer is refined.trainer
    assert refined.trainer.field.box.contains(points).all()
    assert refined.progress().done


def test_a_version_1_file_loads_with_no_restarts(toy_scene, tmp_path):
    refined = _integrated(toy_scene, _config(10, ready_fraction=0.5))
    refined.train_steps(6)
    path = tmp_path / "v2.npz"
    refined.save(path)
    with np.load(path) as data:
        members = {name: data[name] for name in data.files}
    meta = json.loads(bytes(members["meta"]).decode())
    assert meta["format_version"] == 3 and meta["field_restarts"] == 0
    meta["format_version"] = 1
    del meta["field_restarts"]  # what version 1 wrote
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "v1.npz", **members)
    restored = RefinedPanopticMap(toy_scene.registry, _config(5), prior=ToyPriorMap(toy_scene))
    restored.load(tmp_path / "v1.npz")
    assert restored.field_restarts == 0 and restored.is_ready
    np.testing.assert_array_equal(restored.get_mesh().instance_ids,
                                  refined.get_mesh().instance_ids)


def test_a_checkpoint_with_a_cube_box_loads(toy_scene):
    config = _config(4)
    config.scene_box = SceneBoxConfig(fixed_min_m=(-1.0, -1.0, -1.5), fixed_max_m=(4.0, 4.0, 3.5))
    refined = _integrated(toy_scene, config)
    refined.train_steps(2)
    state = refined.trainer.state_dict()
    assert state["box_half_size_m"] == [2.5, 2.5, 2.5]
    state["box_half_size_m"] = 2.5  # what a checkpoint held before the box was per axis
    trainer = FieldTrainer(config.training, refined.classes, refined.store)
    trainer.load_state_dict(state)
    assert trainer.field.box == refined.trainer.field.box
    points = toy_scene.mesh.vertices_m[::50]
    loaded, trained = trainer.predict(points), refined.trainer.predict(points)
    for a, b in zip((loaded.sdf_m, loaded.semantic_probs, loaded.token_masks),
                    (trained.sdf_m, trained.semantic_probs, trained.token_masks)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
