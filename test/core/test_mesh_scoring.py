"""Scoring a finished mesh (what the ROS graph serves) gives the scores ``evaluate`` gives the map
that made it: the instant map run by the evaluator and its own mesh, scored by
``score_meshes`` (in memory and through a PLY file), agree on every metric."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.eval.mesh_scoring import MESH_METHOD, MeshMap, score_meshes
from panoptic_mapper.core.eval.runner import EvalConfig, EvalSource, MethodSpec, evaluate
from panoptic_mapper.core.io.ply import write_ply
from panoptic_mapper.core.mapping.base import create_map
from panoptic_mapper.core.tsdf.raycast import MeshRaycaster
from panoptic_mapper.core.types import DatasetSample, PanopticMesh, PanopticSegmentation2D

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_runner import INTRINSICS, tiny_scene_mesh, tiny_scene_samples  # noqa: E402

NUM_FRAMES = 30
CONFIG = EvalConfig(eval_every=3, eval_pixel_step=1, gt_surface_samples=20_000,
                    pred_surface_samples=20_000)


def registry_samples(registry):
    """The tiny scene's frames, with segments named as the label registry names their ids."""
    samples = []
    for sample in tiny_scene_samples(tiny_scene_mesh(), num_frames=NUM_FRAMES):
        seg = sample.segmentation
        segments = tuple(dataclasses.replace(s, label=registry.by_id(s.label_id).name)
                         for s in seg.segments)
        samples.append(DatasetSample(sample.frame, PanopticSegmentation2D(
            seg.segment_ids, segments, sample.frame.stamp_ns), sample.ground_truth))
    return samples


def source(registry):
    samples = registry_samples(registry)
    return EvalSource(name="tiny", samples=samples, registry=registry, num_frames=len(samples),
                      gt_mesh=tiny_scene_mesh())


def scores(method_result) -> dict:
    r = method_result
    return {"pq": r.panoptic.pq, "pq_th": r.panoptic.pq_th, "pq_st": r.panoptic.pq_st,
            "sq": r.panoptic.sq, "rq": r.panoptic.rq, "miou_2d": r.semantic_2d.miou,
            "miou_3d": r.semantic_3d.miou, "mcov": r.coverage_3d.mcov,
            "chamfer": r.geometry.chamfer_l1_cm, "depth": r.depth.median_abs_error_cm,
            "depth_coverage": r.depth.coverage}


@pytest.fixture(scope="module")
def instant_run(label_registry):
    maps = {}

    def factory(registry):
        maps["instant"] = create_map("instant", registry)
        return maps["instant"]

    result = evaluate(source(label_registry), [MethodSpec("instant", factory=factory)], CONFIG)
    return result, maps["instant"].get_mesh()


def test_instant_map_mesh_scores_like_the_map(instant_run, label_registry, tmp_path):
    result, mesh = instant_run
    expected = scores(result.methods["instant"])
    # The instant map learnt the scene (stuff; the small things are fragmented in these 64x48
    # frames), so the equality below is not 0 == 0.
    assert expected["pq"] > 20 and expected["miou_3d"] > 20 and expected["mcov"] > 0
    ply = write_ply(tmp_path / "served.ply", mesh, color_mode="semantic",
                    registry=label_registry)
    scored = score_meshes(source(label_registry), {"memory": mesh, "ply": ply}, CONFIG)
    assert scored.eval_positions == result.eval_positions
    for name in ("memory", "ply"):
        method = scored.methods[name]
        assert method.method == MESH_METHOD
        assert (method.mesh_vertices, method.mesh_triangles) == (mesh.num_vertices,
                                                                 mesh.num_triangles)
        assert scores(method) == pytest.approx(expected, abs=1e-9), name
        assert method.panoptic.per_class.keys() == \
            result.methods["instant"].panoptic.per_class.keys()


def test_mesh_scores_follow_the_mesh(instant_run, label_registry):
    _, mesh = instant_run
    gt = tiny_scene_mesh()
    things = np.isin(gt.label_ids, label_registry.thing_ids)
    # The ground truth: near perfect (MeshRaycaster, which the maps render with, casts Open3D's
    # rays through (u + 0.5, v + 0.5) while the ground truth looks through (u, v), so boundary
    # pixels differ). Its ids renumbered consistently: the same scores. The table cut in two
    # instances: worse thing PQ, stuff untouched. Nothing: zero.
    renumbered = dataclasses.replace(gt, instance_ids=np.where(
        things, gt.instance_ids * 7 + 3, gt.instance_ids))
    split = dataclasses.replace(gt, instance_ids=np.where(
        things & (gt.vertices_m[:, 0] > 3.0), gt.instance_ids + 1000, gt.instance_ids))
    result = score_meshes(source(label_registry), {
        "gt": gt, "renumbered": renumbered, "split": split, "empty": PanopticMesh.empty(),
        "map": mesh}, CONFIG)
    perfect = scores(result.methods["gt"])
    assert perfect["pq"] > 85 and perfect["pq_th"] > 85 and perfect["pq_st"] > 85
    assert perfect["miou_3d"] == pytest.approx(100.0) and perfect["mcov"] == pytest.approx(100.0)
    assert scores(result.methods["renumbered"]) == pytest.approx(perfect, abs=1e-9)
    split_scores = result.methods["split"].panoptic
    assert split_scores.pq_th < perfect["pq_th"] - 10
    assert split_scores.pq_st == pytest.approx(perfect["pq_st"], abs=1e-9)
    empty = result.methods["empty"]
    assert empty.panoptic.pq == 0.0 and empty.depth.coverage == 0.0
    assert empty.geometry is None and any("no triangle" in n for n in empty.notes)
    assert result.methods["map"].panoptic.pq < perfect["pq"]


def test_mesh_map_renders_as_the_maps_and_ignores_frames():
    mesh = tiny_scene_mesh()
    the_map = MeshMap(mesh)
    sample = tiny_scene_samples(mesh, num_frames=1)[0]
    assert the_map.integrate_frame(sample.frame, None).accepted and the_map.frames_fed == 1
    render = the_map.render_labels(sample.frame.T_world_cam, INTRINSICS)
    expected = MeshRaycaster(mesh).render(sample.frame.T_world_cam, INTRINSICS)
    for name in ("label_ids", "instance_ids", "depth_m"):
        assert np.array_equal(getattr(render, name), getattr(expected, name)), name
    assert {10, 11} <= set(np.unique(render.label_ids).tolist())
    labels, instances = the_map.query_labels(np.array([[1.05, 2.85, 0.85]]))
    assert (labels[0], instances[0]) == (10, 1)   # a corner of the first chair
    assert MeshMap(PanopticMesh.empty()).query_labels(np.zeros((2, 3)))[0].tolist() == [0, 0]


def test_no_mesh_is_an_error(label_registry):
    with pytest.raises(InvalidInputError, match="meshes"):
        score_meshes(source(label_registry), {}, CONFIG)


def test_ground_truth_labelled_mesh_is_the_ceiling_of_its_geometry(instant_run, label_registry):
    from panoptic_mapper.core.eval.mesh_scoring import ground_truth_labelled

    result, mesh = instant_run
    gt_mesh = tiny_scene_mesh()
    scrambled = dataclasses.replace(mesh, label_ids=np.zeros_like(mesh.label_ids),
                                    instance_ids=np.zeros_like(mesh.instance_ids))
    ceiling = ground_truth_labelled(scrambled, gt_mesh)
    np.testing.assert_array_equal(ceiling.vertices_m, mesh.vertices_m)  # geometry kept
    # The instant map of this clean scene labels nearly every vertex right: the ceiling agrees.
    labelled = mesh.label_ids > 0
    assert labelled.mean() > 0.3 and (ceiling.label_ids > 0).all()
    assert np.mean(ceiling.label_ids[labelled] == mesh.label_ids[labelled]) > 0.9
    scored = score_meshes(source(label_registry), {"ceiling": ceiling}, CONFIG)
    assert scored.methods["ceiling"].panoptic.pq >= result.methods["instant"].panoptic.pq - 1e-6
    assert ground_truth_labelled(dataclasses.replace(
        mesh, vertices_m=np.zeros((0, 3)), triangles=np.zeros((0, 3), np.int64),
        label_ids=np.zeros(0, np.int32), instance_ids=np.zeros(0, np.int32),
        colors=np.zeros((0, 3), np.uint8)), gt_mesh).num_vertices == 0
