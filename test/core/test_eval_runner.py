"""The evaluation runner with test-double maps on a tiny ray-cast scene (no real map needed)."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.eval.oracle import GroundTruthMeshMap, MeshLabelRenderer
from panoptic_mapper.core.eval.runner import (EvalConfig, EvalSource, MethodSpec, evaluate,
                                              open_source, pixel_grid,
                                              pixel_grid_camera)
from panoptic_mapper.core.eval.surface import (SurfaceSamples, VisibilityAccumulator,
                                               closest_surface_points, point_to_mesh_distance_m,
                                               sample_surface)
from panoptic_mapper.core.geometry.camera import project
from panoptic_mapper.core.mapping.base import IntegrationReport, MeshUpdate
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        LabelRender, PanopticMesh, PanopticSegmentation2D,
                                        RgbdFrame, Segment)

WALL, FLOOR, CEILING, CHAIR, TABLE = 1, 2, 3, 10, 11
INTRINSICS = CameraIntrinsics(width=64, height=48, fx=40.0, fy=40.0, cx=31.5, cy=23.5)


# ---- a tiny scene: a 4 x 4 x 2.5 m room, two touching chairs and a table ---------------------
def box_parts(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return corners, np.array(faces)


def quad(corners):
    return np.asarray(corners, float), np.array([[0, 1, 2], [0, 2, 3]])


def tiny_scene_mesh() -> PanopticMesh:
    parts = [  # (vertices, faces, label, instance)
        (*quad([[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]]), FLOOR, 0),
        (*quad([[0, 0, 2.5], [4, 0, 2.5], [4, 4, 2.5], [0, 4, 2.5]]), CEILING, 0),
        (*quad([[0, 0, 0], [4, 0, 0], [4, 0, 2.5], [0, 0, 2.5]]), WALL, 0),
        (*quad([[0, 4, 0], [4, 4, 0], [4, 4, 2.5], [0, 4, 2.5]]), WALL, 0),
        (*quad([[0, 0, 0], [0, 4, 0], [0, 4, 2.5], [0, 0, 2.5]]), WALL, 0),
        (*quad([[4, 0, 0], [4, 4, 0], [4, 4, 2.5], [4, 0, 2.5]]), WALL, 0),
        (*box_parts([1.0, 2.8, 0], [1.5, 3.3, 0.9]), CHAIR, 1),
        (*box_parts([1.5, 2.8, 0], [2.0, 3.3, 0.9]), CHAIR, 2),   # touches chair 1
        (*box_parts([2.5, 2.6, 0], [3.5, 3.4, 0.75]), TABLE, 3),
    ]
    vertices, faces, labels, instances, offset = [], [], [], [], 0
    for v, f, label, instance in parts:
        vertices.append(v)
        faces.append(f + offset)
        labels += [label] * len(v)
        instances += [instance] * len(v)
        offset += len(v)
    vertices = np.concatenate(vertices)
    return PanopticMesh(vertices, np.concatenate(faces), np.full((len(vertices), 3), 128),
                        np.array(labels), np.array(instances))


def look_at(eye, target):
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def tiny_scene_samples(mesh, num_frames=8, with_labels=True, seed=0):
    """Frames on an arc facing the furniture; the 2D input is the GT with per-frame ids."""
    renderer = MeshLabelRenderer(mesh)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(num_frames):
        angle = -0.5 + i / max(1, num_frames - 1)
        eye = [2.0 + 1.2 * np.sin(angle), 0.8 + 0.3 * np.cos(angle), 1.4]
        T = look_at(eye, [2.2, 3.0, 0.5])
        gt = renderer.render(T, INTRINSICS)
        frame = RgbdFrame(stamp_ns=i * 33_000_000, rgb=np.zeros((48, 64, 3), np.uint8),
                          depth_m=gt.depth_m, T_world_cam=T, intrinsics=INTRINSICS, index=i)
        segmentation = None
        if with_labels:
            segmentation = segmentation_from(gt, rng)
        samples.append(DatasetSample(
            frame, segmentation,
            GroundTruthLabels(gt.label_ids, gt.instance_ids) if with_labels else None))
    return samples


def segmentation_from(gt: LabelRender, rng) -> PanopticSegmentation2D:
    """A perfect 2D segmentation of a render, with fresh random segment ids."""
    keys = gt.label_ids.astype(np.int64) * 1000 + np.where(gt.label_ids >= CHAIR,
                                                           gt.instance_ids, 0)
    unique, inverse = np.unique(keys, return_inverse=True)
    ids = rng.permutation(len(unique)) + 1
    segments, image = [], np.zeros(gt.label_ids.shape, np.int32)
    for k, key in enumerate(unique):
        label = int(key // 1000)
        if label == 0:
            continue
        image[inverse.reshape(gt.label_ids.shape) == k] = ids[k]
        segments.append(Segment(int(ids[k]), f"l{label}", label, label >= CHAIR))
    return PanopticSegmentation2D(image, tuple(segments))


@pytest.fixture(scope="module")
def scene():
    mesh = tiny_scene_mesh()
    return mesh, tiny_scene_samples(mesh)


def source_of(scene, label_registry, with_mesh=True, samples=None):
    mesh, default_samples = scene
    samples = default_samples if samples is None else samples
    return EvalSource(name="tiny", samples=samples, registry=label_registry,
                      num_frames=len(samples), gt_mesh=mesh if with_mesh else None)


SMALL = dict(gt_surface_samples=20_000, pred_surface_samples=20_000)


# ---- test doubles --------------------------------------------------------------------------
class PerRenderIdsOracle(GroundTruthMeshMap):
    """Ground truth, but thing ids change with every render (like per-frame lifting)."""

    def __init__(self, mesh):
        super().__init__(mesh)
        self.renders = 0

    def render_labels(self, T_world_cam, intrinsics):
        render = super().render_labels(T_world_cam, intrinsics)
        self.renders += 1
        things = render.instance_ids > 0
        render.instance_ids = np.where(things, render.instance_ids + 100 * self.renders, 0)
        return render


class BlindMap(GroundTruthMeshMap):
    """Accepts every other frame, renders nothing and has an empty mesh."""

    def __init__(self, mesh):
        super().__init__(mesh)
        self.count = 0

    def integrate_frame(self, frame, segmentation):
        self.count += 1
        if self.count % 2:
            return IntegrationReport(accepted=False, reason="odd frame")
        return IntegrationReport(accepted=True, warnings=["label 'x' unknown"])

    def update_mesh(self):
        return MeshUpdate(changed=False)

    def get_mesh(self):
        return PanopticMesh.empty()

    def render_labels(self, T_world_cam, intrinsics):
        shape = intrinsics.shape
        return LabelRender(np.zeros(shape, np.int32), np.zeros(shape, np.int32),
                           np.zeros(shape, np.float32))


def oracle_spec(mesh, name="oracle", cls=GroundTruthMeshMap):
    return MethodSpec(name, factory=lambda registry: cls(mesh))


# ---- tests ---------------------------------------------------------------------------------
def test_oracle_scores_100(scene, label_registry):
    mesh, _ = scene
    config = EvalConfig(eval_every=2, eval_pixel_step=1, **SMALL)
    result = evaluate(source_of(scene, label_registry), [oracle_spec(mesh)], config)
    oracle = result.methods["oracle"]
    assert result.num_frames == 8 and result.eval_positions == [0, 2, 4, 6]
    assert oracle.panoptic.pq == pytest.approx(100.0)
    assert oracle.panoptic.pq_th == pytest.approx(100.0)
    assert oracle.panoptic.pq_st == pytest.approx(100.0)
    assert set(oracle.panoptic.per_class) >= {WALL, FLOOR, CHAIR, TABLE}
    assert oracle.semantic_2d.miou == pytest.approx(100.0)
    assert oracle.semantic_2d.macc == pytest.approx(100.0)
    assert oracle.semantic_3d.miou == pytest.approx(100.0)
    assert oracle.coverage_3d.mcov == pytest.approx(100.0)
    assert oracle.coverage_3d.num_gt_instances == 3
    assert oracle.geometry.chamfer_l1_cm == pytest.approx(0.0, abs=1e-3)
    assert oracle.geometry.f1 == pytest.approx(100.0)
    assert oracle.depth.median_abs_error_cm == pytest.approx(0.0, abs=1e-4)
    assert oracle.depth.coverage == pytest.approx(100.0)
    assert oracle.timing.frames == 8 and oracle.timing.integrate_ms_median >= 0
    assert oracle.frames_rejected == 0
    # The input segmentation is perfect too (its ids differ per frame: image-wise PQ).
    assert result.input_segmentation.panoptic.pooled.pq == pytest.approx(100.0)
    assert result.input_segmentation.semantic.miou == pytest.approx(100.0)
    assert 0 < result.gt_points_scored < 20_000   # culling kept only the observed surface


@pytest.mark.parametrize("step", [2, 3])
def test_pixel_step_evaluation_is_exact(scene, label_registry, step):
    mesh, _ = scene
    config = EvalConfig(eval_every=2, eval_pixel_step=step, **SMALL)
    scores = evaluate(source_of(scene, label_registry), [oracle_spec(mesh)], config)
    scores = scores.methods["oracle"]
    # The render of the strided camera sees exactly the strided ground-truth pixels.
    assert scores.panoptic.pq == pytest.approx(100.0)
    assert scores.semantic_2d.miou == pytest.approx(100.0)
    assert scores.depth.median_abs_error_cm == pytest.approx(0.0, abs=1e-4)
    assert scores.depth.num_pixels <= 4 * 48 * 64 / step**2


def test_ids_changing_between_frames_lower_only_thing_pq(scene, label_registry):
    mesh, _ = scene
    config = EvalConfig(eval_every=2, eval_pixel_step=1, **SMALL)
    result = evaluate(source_of(scene, label_registry),
                      [oracle_spec(mesh), oracle_spec(mesh, "shuffled", PerRenderIdsOracle)],
                      config)
    good, shuffled = result.methods["oracle"].panoptic, result.methods["shuffled"].panoptic
    assert shuffled.pq_st == pytest.approx(100.0)
    assert shuffled.pq_th < 50.0 < good.pq_th
    assert shuffled.pq < good.pq
    # Semantics do not depend on instance ids.
    assert result.methods["shuffled"].semantic_2d.miou == pytest.approx(100.0)


def test_empty_map_and_rejections_are_reported(scene, label_registry):
    mesh, _ = scene
    config = EvalConfig(eval_every=4, **SMALL)
    result = evaluate(source_of(scene, label_registry),
                      [oracle_spec(mesh, "blind", BlindMap)], config)
    blind = result.methods["blind"]
    assert blind.frames_rejected == 4
    assert "rejected: odd frame" in blind.warnings and "label 'x' unknown" in blind.warnings
    assert blind.panoptic.pq == 0.0 and blind.semantic_2d.miou == 0.0
    assert blind.depth.coverage == 0.0 and blind.depth.median_abs_error_cm is None
    assert blind.geometry is None and blind.semantic_3d is None
    assert any("mesh" in note for note in blind.notes)


def test_without_labels_or_mesh_only_depth_and_timing(scene, label_registry):
    mesh, _ = scene
    samples = tiny_scene_samples(mesh, num_frames=5, with_labels=False)
    result = evaluate(source_of(scene, label_registry, with_mesh=False, samples=samples),
                      [oracle_spec(mesh)], EvalConfig(**SMALL))
    oracle = result.methods["oracle"]
    assert oracle.panoptic is None and oracle.semantic_2d is None and oracle.geometry is None
    assert result.input_segmentation is None
    assert oracle.depth.median_abs_error_cm == pytest.approx(0.0, abs=1e-3)
    assert oracle.timing.integrate_ms_median is not None
    assert len(result.notes) == 2
    assert result.to_dict()["methods"]["oracle"]["panoptic"] is None


def test_automatic_eval_every(scene, label_registry):
    mesh, _ = scene
    config = EvalConfig(target_eval_frames=3, **SMALL)
    result = evaluate(source_of(scene, label_registry, with_mesh=False), [oracle_spec(mesh)],
                      config)
    assert result.eval_every == 3 and result.eval_positions == [0, 3, 6]


def test_method_spec_and_config_validation(label_registry):
    spec = MethodSpec.parse("fine=instant")
    assert (spec.name, spec.method) == ("fine", "instant")
    assert MethodSpec.parse("per_frame").method == "per_frame"
    with pytest.raises(ConfigError):
        MethodSpec("nope").create(label_registry)
    with pytest.raises(ConfigError, match="eval_pixel_step"):
        EvalConfig(eval_pixel_step=0)
    with pytest.raises(ConfigError):
        EvalConfig.from_dict({"eval_every": -1})
    with pytest.raises(InvalidInputError, match="unique"):
        evaluate(EvalSource("s", [], label_registry), [MethodSpec("a"), MethodSpec("a")])


def test_pixel_grid_camera_projects_onto_strided_pixels():
    K = CameraIntrinsics(width=65, height=47, fx=50.0, fy=45.0, cx=32.3, cy=22.9)
    grid = pixel_grid_camera(K, 3)
    assert grid.shape == (len(range(1, 47, 3)), len(range(1, 65, 3))) == (16, 22)
    image = np.arange(47 * 65).reshape(47, 65)
    assert pixel_grid(image, 3).shape == grid.shape
    point = np.array([0.3, -0.2, 2.0])
    u, v, _ = project(K, point)
    u3, v3, _ = project(grid, point)
    assert (3 * u3 + 1, 3 * v3 + 1) == (pytest.approx(u), pytest.approx(v))
    assert pixel_grid_camera(K, 1) is K


# ---- surface tools -------------------------------------------------------------------------
def test_sampling_is_uniform_and_deterministic():
    # Two unit squares, the second 3x the area: it should get ~3/4 of the samples.
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                  [5, 0, 0], [8, 0, 0], [8, 1, 0], [5, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    a = sample_surface(v, f, 40_000, seed=3)
    b = sample_surface(v, f, 40_000, seed=3)
    assert np.array_equal(a.points_m, b.points_m)
    assert np.mean(a.points_m[:, 0] >= 5) == pytest.approx(0.75, abs=0.01)
    assert np.all(a.points_m[:, 2] == 0)
    assert np.mean(a.points_m[a.points_m[:, 0] < 1, 0]) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(InvalidInputError):
        sample_surface(v, np.zeros((0, 3), int), 10)


def test_parallel_planes_chamfer():
    # Two parallel 1 x 1 squares 3 cm apart: every distance is 3 cm (away from the borders).
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    points = sample_surface(square, f, 1000).points_m
    d = point_to_mesh_distance_m(points, square + [0, 0, 0.03], f)
    assert d == pytest.approx(np.full(1000, 0.03), abs=1e-6)
    closest = closest_surface_points(np.array([[0.9, 0.05, 0.5]]), square, f)
    assert closest.distance_m[0] == pytest.approx(0.5, abs=1e-6)
    assert closest.nearest_vertex[0] == 1


def test_visibility_marks_only_seen_points():
    # A floor quad (z = 0) with a box standing on it, seen from above.
    mesh = PanopticMesh(
        np.array([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]], float),
        np.array([[0, 1, 2], [0, 2, 3]]), np.zeros((4, 3)), np.full(4, FLOOR), np.zeros(4))
    box_v, box_f = box_parts([-0.2, -0.2, 0], [0.2, 0.2, 0.5])
    mesh = PanopticMesh(np.concatenate([mesh.vertices_m, box_v]),
                        np.concatenate([mesh.triangles, box_f + 4]), np.zeros((12, 3)),
                        np.r_[mesh.label_ids, np.full(8, CHAIR)],
                        np.r_[mesh.instance_ids, np.ones(8)])
    points = np.array([[1.0, 1.0, 0.0],      # floor: seen
                       [0.0, 0.0, 0.0],      # floor under the box: hidden
                       [0.0, 0.0, 0.5],      # box top: seen
                       [0.19, 0.0, 0.0],     # box bottom, touching the floor: hidden
                       [0.0, 0.19, 0.0]])    # box bottom too, near the edge
    triangle_of = closest_surface_points(points, mesh.vertices_m, mesh.triangles).triangle_ids
    # The samples on the box bottom lie on a box triangle (not on the coincident floor).
    bottom = [k for k, f in enumerate(box_f) if np.all(box_v[f][:, 2] == 0)]
    triangle_of[3:] = 2 + bottom[0]
    samples = SurfaceSamples(points, triangle_of, mesh.triangles[triangle_of, 0])
    visibility = VisibilityAccumulator(mesh, samples)
    K = CameraIntrinsics(width=80, height=60, fx=40.0, fy=40.0, cx=39.5, cy=29.5)
    T = look_at([0.0, -1.5, 3.0], [0.0, 0.0, 0.0])
    depth = np.full((60, 80), 3.0, np.float32)
    assert visibility.observe(depth, T, K) == 2
    assert visibility.observed.tolist() == [True, False, True, False, False]
    # Without a depth measurement nothing is observed.
    again = VisibilityAccumulator(mesh, samples)
    assert again.observe(np.zeros_like(depth), T, K) == 0


def test_open_source_reads_seven_scenes(seven_scenes_dir, label_registry):
    source = open_source(seven_scenes_dir, EvalConfig(stride=10, max_frames=3))
    assert source.num_frames == 3 and source.gt_mesh is None
    samples = list(source.samples)
    assert samples[0].ground_truth is None
    assert samples[1].frame.index != samples[0].frame.index


class PoseRecordingOracle(GroundTruthMeshMap):
    """Renders the ground truth; remembers the pose of every frame it integrates."""

    def __init__(self, mesh):
        super().__init__(mesh)
        self.fed_poses = []

    def integrate_frame(self, frame, segmentation):
        self.fed_poses.append(frame.T_world_cam.copy())
        return super().integrate_frame(frame, segmentation)

    def get_instances(self):
        return [object()] * 3  # only the count is reported


def test_maps_integrate_the_given_poses_and_are_scored_at_the_true_ones(scene, label_registry):
    mesh, samples = scene
    shifted = {}
    for sample in samples:
        T = sample.frame.T_world_cam.copy()
        T[0, 3] += 0.3
        shifted[sample.frame.stamp_ns] = T
    source = source_of(scene, label_registry)
    source.integration_poses, source.notes = shifted, ["fed a drifting estimate"]
    maps = []

    def factory(registry):
        maps.append(PoseRecordingOracle(mesh))
        return maps[-1]

    result = evaluate(source, [MethodSpec("rec", factory=factory)],
                      EvalConfig(eval_every=2, **SMALL))
    for sample, fed in zip(samples, maps[0].fed_poses):
        np.testing.assert_array_equal(fed, shifted[sample.frame.stamp_ns])
    # the scored renders use the true poses (this double renders the truth wherever it is fed)
    assert result.methods["rec"].panoptic.pq == pytest.approx(100.0)
    assert result.methods["rec"].num_instances == 3
    assert "fed a drifting estimate" in result.notes
    source.integration_poses = {}
    with pytest.raises(InvalidInputError, match="integration_poses"):
        evaluate(source, [oracle_spec(mesh)], EvalConfig(**SMALL))


def test_open_source_with_estimated_poses(scene, label_registry, tmp_path):
    from panoptic_mapper.core.io.bag import write_bag
    from panoptic_mapper.core.io.datasets import write_scannet_layout
    from panoptic_mapper.core.io.slam_estimate import write_slam_estimate

    mesh, _ = scene
    samples = tiny_scene_samples(mesh, num_frames=4, with_labels=False)
    write_scannet_layout(tmp_path / "scene", samples, label_registry, INTRINSICS, gt_mesh=mesh,
                         progress=False)
    config = EvalConfig(poses="estimated")
    with pytest.raises(ConfigError, match="pose_estimated"):
        open_source(tmp_path / "scene", config)
    poses = np.array([s.frame.T_world_cam for s in samples])
    poses[:, 2, 3] += 0.05
    write_slam_estimate(tmp_path / "scene", poses, [])
    source = open_source(tmp_path / "scene", config)
    assert sorted(source.integration_poses) == [s.frame.stamp_ns for s in samples]
    np.testing.assert_allclose(source.integration_poses[samples[3].frame.stamp_ns], poses[3],
                               atol=1e-12)
    assert any("SLAM estimate" in note for note in source.notes)
    assert open_source(tmp_path / "scene").integration_poses is None
    write_bag(tmp_path / "bag", samples, INTRINSICS, progress=False)
    with pytest.raises(ConfigError, match="bag"):
        open_source(tmp_path / "bag", config)
    with pytest.raises(ConfigError, match="poses"):
        EvalConfig(poses="odometry")
