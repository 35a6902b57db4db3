"""End-to-end tests of the instant map (and the baselines) on a tiny procedural scene.

The scene is built here from boxes and rendered with Open3D's RaycastingScene: a floor, a wall,
two boxes side by side, a cabinet and a chair that only comes into view late. Every frame's 2D
segmentation is the ground truth with per-frame ids shuffled, as a real segmenter would give.
"""
import sys
import threading
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.mapping.base import PanopticMap, create_map
from panoptic_mapper.core.mapping.instant_map import InstantMapConfig, InstantPanopticMap
from panoptic_mapper.core.types import PanopticSegmentation2D, Segment

sys.path.insert(0, str(Path(__file__).parent))
from box_scene import INTR, NUM_FRAMES, Scene, frame, pose  # noqa: E402


def build(method, registry, scene, num_frames=NUM_FRAMES, seed=0):
    rng = np.random.default_rng(seed)
    mapper = create_map(method, registry, {"tsdf": {"block_count": 3000}})
    for k in range(num_frames):
        depth, rgb, labels, instances = scene.render(pose(k))
        report = mapper.integrate_frame(frame(k, depth, rgb),
                                        scene.segmentation(labels, instances, rng))
        assert report.accepted, report.reason
    mapper.update_mesh()
    return mapper


@pytest.fixture(scope="module")
def scene(label_registry):
    return Scene(label_registry)


@pytest.fixture(scope="module")
def instant(label_registry, scene):
    return build("instant", label_registry, scene)


def majority_ids(mapper, scene, views):
    """GT thing instance -> list of (majority map id, its share) over the given views."""
    out = {}
    for k in views:
        _, _, labels, instances = scene.render(pose(k))
        render = mapper.render_labels(pose(k), INTR)
        for inst in np.unique(instances[instances > 0]):
            pred = render.instance_ids[instances == inst]
            if pred.size < 200:
                continue
            ids, counts = np.unique(pred, return_counts=True)
            out.setdefault(int(inst), []).append((int(ids[np.argmax(counts)]),
                                                  counts.max() / pred.size))
    return out


def test_instance_ids_are_consistent_and_labels_right(instant, scene, label_registry):
    assert isinstance(instant, PanopticMap)
    seen = majority_ids(instant, scene, views=range(0, NUM_FRAMES, 5))
    assert set(seen) == {1, 2, 3, 4}
    chosen = {}
    for inst, per_view in seen.items():
        ids = {i for i, _ in per_view}
        assert len(ids) == 1, f"GT instance {inst} took map ids {ids}"
        assert min(share for _, share in per_view) > 0.75
        chosen[inst] = ids.pop()
    assert len(set(chosen.values())) == 4 and 0 not in chosen.values()
    by_id = {i.id: i for i in instant.get_instances()}
    expected = {1: "box", 2: "box", 3: "cabinet", 4: "chair"}
    for inst, map_id in chosen.items():
        assert by_id[map_id].label == expected[inst] and by_id[map_id].is_thing
    # The chair only enters the view late and still got its own, new id.
    first_seen = min(k for k in range(NUM_FRAMES) if (scene.render(pose(k))[3] == 4).sum() > 50)
    assert first_seen > 5
    assert instant.tracker.table.get(chosen[4]).first_frame >= first_seen
    stuff = sorted(i.label for i in by_id.values() if not i.is_thing)
    assert stuff == ["floor", "wall"]
    # Semantic labels of the rendered map agree with the ground truth.
    _, _, labels, _ = scene.render(pose(NUM_FRAMES // 2))
    render = instant.render_labels(pose(NUM_FRAMES // 2), INTR)
    hit = (labels > 0) & (render.depth_m > 0)
    assert (render.label_ids[hit] == labels[hit]).mean() > 0.93


def test_instances_describe_their_objects(instant):
    cabinet = next(i for i in instant.get_instances() if i.label == "cabinet")
    np.testing.assert_allclose(cabinet.centroid_m, [0.8, -0.2, 0.4], atol=0.12)
    assert cabinet.bbox.contains(np.array([[0.8, -0.2, 0.4]]))[0]
    assert 0.9 < cabinet.confidence <= 1.0
    assert cabinet.label_distribution[cabinet.label_id] == pytest.approx(cabinet.confidence)
    assert cabinet.num_voxels > 300
    assert cabinet.mean_color_rgb[2] > cabinet.mean_color_rgb[0]  # it is blue


def test_mesh_and_queries(instant, label_registry):
    mesh = instant.get_mesh()
    assert mesh.num_vertices > 10000
    assert (mesh.label_ids > 0).mean() > 0.97
    wall, box = label_registry.by_name("wall").id, label_registry.by_name("box").id
    labels, instances = instant.query_labels(np.array([[0.0, 2.0, 1.5], [-0.55, 0.05, 0.25],
                                                       [9.0, 9.0, 9.0]]))
    assert labels.tolist() == [wall, box, 0]
    assert instances[0] > 0 and instances[1] > 0 and instances[2] == 0
    update = instant.update_mesh()
    assert not update.changed and update.changed_block_ids.shape == (0, 3)


def test_bad_inputs_leave_the_map_unchanged(label_registry, scene):
    mapper = build("instant", label_registry, scene, num_frames=4)
    before = snapshot(mapper)
    depth, rgb, labels, instances = scene.render(pose(4))
    seg = scene.segmentation(labels, instances, np.random.default_rng(1))
    cases = {
        "no depth": (frame(4, np.zeros_like(depth), rgb), seg),
        "segmentation size": (frame(4, depth, rgb), PanopticSegmentation2D.empty(120, 160)),
        "pose jump": (frame(4, depth, rgb).replace(T_world_cam=pose(4) @ _shift(3.0)), seg),
    }
    nan_pose = frame(4, depth, rgb)
    nan_pose.T_world_cam[0, 0] = np.nan  # mutated after validation
    cases["nan pose"] = (nan_pose, seg)
    for name, (bad_frame, bad_seg) in cases.items():
        report = mapper.integrate_frame(bad_frame, bad_seg)
        assert not report.accepted and report.reason, name
        assert_same(before, snapshot(mapper))
    unknown = PanopticSegmentation2D(seg.segment_ids, tuple(
        Segment(s.id, "unicorn", 999, s.is_thing, s.score) if s.label == "box" else s
        for s in seg.segments))
    report = mapper.integrate_frame(frame(4, depth, rgb), unknown)
    assert report.accepted and "unicorn" in report.reason


def test_save_load_is_lossless(instant, label_registry, tmp_path):
    path = tmp_path / "map.npz"
    instant.save(path)
    loaded = InstantPanopticMap.from_config(None, label_registry)
    loaded.load(path)
    loaded.update_mesh()
    a, b = instant.get_mesh(), loaded.get_mesh()
    for name in ("vertices_m", "triangles", "colors", "label_ids", "instance_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert [(i.id, i.label, i.num_voxels, i.num_observations) for i in instant.get_instances()] \
        == [(i.id, i.label, i.num_voxels, i.num_observations) for i in loaded.get_instances()]
    points = a.vertices_m[::97]
    for x, y in zip(instant.query_labels(points), loaded.query_labels(points)):
        np.testing.assert_array_equal(x, y)
    assert loaded.num_frames == instant.num_frames
    assert_same(snapshot(instant), snapshot(loaded))
    other = create_map("per_frame", label_registry)
    with pytest.raises(DataFormatError, match="instant"):
        other.load(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a map")
    with pytest.raises(DataFormatError, match="not a readable map file"):
        loaded.load(garbage)
    with pytest.raises(DataFormatError, match="not found"):
        loaded.load(tmp_path / "missing.npz")
    assert_same(snapshot(instant), snapshot(loaded))


def test_ply_export_keeps_labels_and_instances(instant, tmp_path):
    mesh = instant.get_mesh()
    path = instant.export_ply(tmp_path / "map.ply", color_mode="semantic")
    back = read_ply(path)
    np.testing.assert_array_equal(back.label_ids, mesh.label_ids)
    np.testing.assert_array_equal(back.instance_ids, mesh.instance_ids)
    np.testing.assert_allclose(back.vertices_m, mesh.vertices_m)
    legacy = o3d.io.read_triangle_mesh(str(path))
    assert len(legacy.vertices) == mesh.num_vertices
    assert len(legacy.triangles) == mesh.num_triangles


def test_reset_and_config(label_registry, scene):
    mapper = build("instant", label_registry, scene, num_frames=2)
    mapper.reset()
    assert mapper.num_frames == 0 and mapper.get_instances() == []
    assert mapper.query_labels(np.zeros((1, 3)))[0].tolist() == [0]
    empty = mapper.render_labels(pose(0), INTR)
    assert empty.label_ids.shape == INTR.shape and not empty.depth_m.any()
    assert mapper.update_mesh().num_vertices == 0
    cfg = InstantMapConfig.from_dict({"tsdf": {"voxel_size_m": 0.04}, "voting": {"count_cap": 5}})
    assert cfg.tsdf.voxel_size_m == 0.04 and cfg.voting.count_cap == 5.0
    assert "tracking.confirm_observations" in cfg.to_flat_dict()


def test_readers_run_while_a_writer_integrates(label_registry, scene):
    mapper = build("instant", label_registry, scene, num_frames=2)
    errors = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                mapper.get_instances()
                mapper.query_labels(np.array([[0.0, 0.3, 0.25]]))
                mapper.get_mesh()
            except Exception as exc:  # noqa: BLE001 (the test reports any failure)
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    rng = np.random.default_rng(5)
    for k in range(2, 8):
        depth, rgb, labels, instances = scene.render(pose(k))
        mapper.integrate_frame(frame(k, depth, rgb), scene.segmentation(labels, instances, rng))
    stop.set()
    reader.join()
    assert not errors


@pytest.mark.parametrize("method", ["per_frame", "components"])
def test_baselines_run_through_the_same_protocol(method, label_registry, scene, tmp_path):
    mapper = build(method, label_registry, scene, num_frames=12)
    assert isinstance(mapper, PanopticMap)
    labels = {i.label for i in mapper.get_instances()}
    assert {"box", "cabinet", "floor", "wall"} <= labels
    seen = majority_ids(mapper, scene, views=(2, 10))
    if method == "per_frame":
        # Per-frame ids are reshuffled every frame: the boxes do not keep one id.
        assert any(len({i for i, _ in v}) > 1 or min(s for _, s in v) < 0.75
                   for v in seen.values())
    mapper.save(tmp_path / "b.npz")
    again = create_map(method, label_registry)
    again.load(tmp_path / "b.npz")
    again.update_mesh()
    np.testing.assert_array_equal(mapper.get_mesh().instance_ids, again.get_mesh().instance_ids)


def _shift(x):
    T = np.eye(4)
    T[0, 3] = x
    return T


def snapshot(mapper):
    state = mapper.grid.export_state()
    return state, mapper.tracker.to_dict(), mapper.num_frames


def assert_same(a, b):
    (state_a, tracker_a, frames_a), (state_b, tracker_b, frames_b) = a, b
    assert frames_a == frames_b and tracker_a == tracker_b
    np.testing.assert_array_equal(state_a.block_keys, state_b.block_keys)
    for name, arr in state_a.attributes.items():
        np.testing.assert_array_equal(arr, state_b.attributes[name])


def full_remesh(mapper, label_registry, tmp_path):
    """The mesh a fresh map computes in one go from the same state (save, load, update)."""
    path = tmp_path / "state.npz"
    mapper.save(path)
    fresh = InstantPanopticMap.from_config(None, label_registry)
    fresh.load(path)
    fresh.update_mesh()
    return fresh.get_mesh()


def assert_same_mesh(a, b):
    for name in ("vertices_m", "triangles", "colors", "label_ids", "instance_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_incremental_mesh_updates_equal_a_full_remesh(label_registry, scene, tmp_path):
    rng = np.random.default_rng(0)
    mapper = create_map("instant", label_registry, {"tsdf": {"block_count": 3000}})
    remeshed = []
    for k in range(NUM_FRAMES):
        depth, rgb, labels, instances = scene.render(pose(k))
        mapper.integrate_frame(frame(k, depth, rgb), scene.segmentation(labels, instances, rng))
        if k % 4 == 3:
            update = mapper.update_mesh()
            assert update.changed
            remeshed.append(update.changed_block_ids.shape[0])
        if k % 9 == 5:
            mapper.render_labels(pose(k), INTR)  # advances the mesh without publishing it
    mapper.update_mesh()
    # Later updates re-meshed part of the map only.
    assert min(remeshed[1:]) < mapper.grid.num_blocks
    assert_same_mesh(mapper.get_mesh(), full_remesh(mapper, label_registry, tmp_path))
    # A label-only change (candidates retired at the end) relabels without new geometry.
    mapper.finalize()
    update = mapper.update_mesh()
    assert update.changed and update.changed_block_ids.shape == (0, 3)
    assert_same_mesh(mapper.get_mesh(), full_remesh(mapper, label_registry, tmp_path))


def test_mesh_updates_run_beside_integration(label_registry, scene, tmp_path):
    rng = np.random.default_rng(1)
    mapper = build("instant", label_registry, scene, num_frames=4)
    errors, meshes = [], []
    stop = threading.Event()

    def refresh():
        while not stop.is_set():
            try:
                mapper.update_mesh()
                meshes.append(mapper.get_mesh())
            except Exception as exc:  # noqa: BLE001 (the test reports any failure)
                errors.append(exc)

    reader = threading.Thread(target=refresh)
    reader.start()
    for k in range(4, 20):
        depth, rgb, labels, instances = scene.render(pose(k))
        mapper.integrate_frame(frame(k, depth, rgb), scene.segmentation(labels, instances, rng))
    stop.set()
    reader.join()
    assert not errors and len(meshes) > 1
    mapper.update_mesh()
    assert_same_mesh(mapper.get_mesh(), full_remesh(mapper, label_registry, tmp_path))
    # A reset while nothing is meshed leaves an empty map that meshes again from scratch.
    mapper.reset()
    assert mapper.update_mesh().num_vertices == 0 and mapper.get_mesh().num_vertices == 0
