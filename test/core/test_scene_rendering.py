"""Ray-cast rendering of synthetic scenes: depth and ids agree with the GT mesh; depth noise."""
import numpy as np
import open3d as o3d
import pytest

from panoptic_mapper.core.geometry.camera import back_project_to_world, world_rays
from panoptic_mapper.core.scene import (CameraConfig, DepthNoiseConfig, RenderConfig, SceneConfig,
                                        SceneRenderer, TrajectoryConfig, apply_depth_noise,
                                        generate_scene, generate_trajectory, render_sequence)
from panoptic_mapper.core.scene.depth_noise import depth_sigma_m
from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset
from panoptic_mapper.core.types import DatasetSample

SCALE = 0.25  # 160 x 120 images keep the tests fast


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneConfig(seed=2))


@pytest.fixture(scope="module")
def trajectory(scene):
    return generate_trajectory(scene, TrajectoryConfig(num_frames=60, seed=2))


@pytest.fixture(scope="module")
def clean_renderer(scene):
    config = RenderConfig(camera=CameraConfig().scaled(SCALE),
                          depth_noise=DepthNoiseConfig(enabled=False), rgb_noise_std=0.0)
    return SceneRenderer(scene, config)


def _back_project(depth_m, T_world_cam, intrinsics):
    v, u = np.nonzero(depth_m > 0)
    z = depth_m[v, u].astype(np.float64)
    return back_project_to_world(T_world_cam, intrinsics, u, v, z), v, u


def test_depth_equals_an_independent_raycast_of_the_gt_mesh(scene, trajectory, clean_renderer):
    """Our own unit rays through pixel centres (u, v), cast on the GT mesh: t * cos = z-depth."""
    k = clean_renderer.intrinsics
    mesh = o3d.t.geometry.RaycastingScene()
    mesh.add_triangles(o3d.core.Tensor(scene.gt_mesh.vertices_m),
                       o3d.core.Tensor(scene.gt_mesh.triangles.astype(np.uint32)))
    v, u = np.mgrid[0:k.height, 0:k.width]
    for i in (0, 30, 59):
        T = trajectory.T_world_cam[i]
        origins, directions, range_per_depth = world_rays(T, k, u, v)
        rays = np.concatenate([origins, directions], -1)
        t_hit = mesh.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        expected = t_hit / range_per_depth
        view = clean_renderer.render(T, i)
        assert np.isfinite(expected).all() and (view.depth_m > 0).all()  # closed room
        np.testing.assert_allclose(view.depth_m, expected, atol=2e-4)
        np.testing.assert_array_equal(view.depth_m, view.clean_depth_m)


def test_back_projected_depth_lies_on_the_mesh_with_matching_ids(scene, trajectory,
                                                                clean_renderer):
    mesh = o3d.t.geometry.RaycastingScene()
    mesh.add_triangles(o3d.core.Tensor(scene.vertices_m.astype(np.float32)),
                       o3d.core.Tensor(scene.triangles.astype(np.uint32)))
    for i in (10, 45):
        T = trajectory.T_world_cam[i]
        view = clean_renderer.render(T, i)
        points, v, u = _back_project(view.depth_m, T, clean_renderer.intrinsics)
        closest = mesh.compute_closest_points(o3d.core.Tensor(points.astype(np.float32)))
        gap = np.linalg.norm(closest["points"].numpy() - points, axis=1)
        assert np.quantile(gap, 0.99) < 1e-3 and gap.max() < 1e-2
        tri = closest["primitive_ids"].numpy()
        label_ok = scene.triangle_label_ids[tri] == view.label_ids[v, u]
        inst_ok = scene.triangle_instance_ids[tri] == view.instance_ids[v, u]
        # touching objects share surfaces within 2 mm: only there may the closest triangle differ
        assert label_ok.mean() > 0.995 and inst_ok.mean() > 0.995
        # the mesh's vertex ids agree as well: nearest GT vertex of each point
        from scipy.spatial import cKDTree
        nearest = cKDTree(scene.gt_mesh.vertices_m).query(points)[1]
        assert (scene.gt_mesh.instance_ids[nearest] == view.instance_ids[v, u]).mean() > 0.97


def test_each_rendered_instance_has_one_label(scene, trajectory, clean_renderer):
    thing = scene.registry.is_thing_table()
    seen = set()
    for i in range(0, 60, 6):
        view = clean_renderer.render(trajectory.T_world_cam[i], i)
        pairs = np.unique(np.stack([view.instance_ids.ravel(), view.label_ids.ravel()]), axis=1)
        inst, lab = pairs
        assert len(np.unique(inst[inst > 0])) == int((inst > 0).sum())  # one label per instance
        assert (thing[lab[inst > 0]]).all() and not thing[lab[inst == 0]].any()
        labels = {i.id: i.label_id for i in scene.instances}
        assert all(labels[a] == b for a, b in zip(inst, lab) if a > 0)
        seen |= set(inst[inst > 0].tolist())
    assert len(seen) >= 5  # the camera looks at objects


def test_rgb_has_texture_and_shading(scene, trajectory, clean_renderer):
    view = clean_renderer.render(trajectory.T_world_cam[0], 0)
    assert view.rgb.dtype == np.uint8 and view.rgb.shape == (120, 160, 3)
    assert view.rgb.std() > 15
    assert np.abs(np.diff(view.rgb.astype(int), axis=1)).mean() > 1.0  # not flat colour
    floor = view.label_ids == scene.registry.by_name("floor").id
    assert floor.sum() > 100 and view.rgb[floor].std() > 3  # the floor has a pattern


def test_rendering_is_deterministic_per_frame_index(scene, trajectory):
    renderer = SceneRenderer(scene, RenderConfig(camera=CameraConfig().scaled(SCALE), seed=4))
    T = trajectory.T_world_cam[5]
    a, b, c = renderer.render(T, 5), renderer.render(T, 5), renderer.render(T, 6)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    assert not np.array_equal(a.depth_m, c.depth_m)
    np.testing.assert_array_equal(a.clean_depth_m, c.clean_depth_m)


def test_noisy_depth_stays_close_and_has_holes(scene, trajectory):
    renderer = SceneRenderer(scene, RenderConfig(camera=CameraConfig().scaled(0.5)))
    view = renderer.render(trajectory.T_world_cam[20], 20)
    valid = view.depth_m > 0
    lost = 1.0 - valid.mean()
    assert 0.002 < lost < 0.3
    z = view.clean_depth_m[valid]
    err = view.depth_m[valid] - z
    step = z ** 2 / (525.0 * 0.075) * 0.125  # disparity quantisation step at the 640 px width
    sigma = np.sqrt(depth_sigma_m(z, DepthNoiseConfig()) ** 2 + step ** 2 / 12)
    normalised = np.abs(err) / sigma
    assert 0.4 < np.median(normalised) < 1.0  # 0.67 for a Gaussian
    assert np.quantile(normalised, 0.99) < 4.0


def test_depth_noise_sigma_and_quantisation_on_a_flat_wall():
    depth = np.full((240, 320), 2.0, np.float32)
    no_drop = dict(edge_dropout_prob=0.0, pixel_dropout_prob=0.0, holes_per_frame=0.0,
                   grazing_cos_min=0.0)
    rng = np.random.default_rng(0)
    noisy = apply_depth_noise(depth, rng, DepthNoiseConfig(disparity_step_px=0.0, **no_drop),
                              fx=525.0)
    expected_sigma = 0.0012 + 0.0019 * (2.0 - 0.4) ** 2  # 6.06 mm
    assert noisy.std() == pytest.approx(expected_sigma, rel=0.03)
    assert abs(noisy.mean() - 2.0) < 1e-3
    # a 320 px wide image with fx 262.5 is the 640 px reference camera (fx 525) at half size
    quantised = apply_depth_noise(depth, np.random.default_rng(0),
                                  DepthNoiseConfig(**no_drop), fx=262.5)
    levels = np.unique(quantised)
    disparity = 525.0 * 0.075 / levels
    steps = disparity / 0.125  # whole multiples of the disparity step
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.diff(levels).min() == pytest.approx(2.0 ** 2 / (525 * 0.075) * 0.125, rel=0.05)


def test_depth_noise_drops_edges_and_range():
    depth = np.full((100, 100), 1.0, np.float32)
    depth[:, 50:] = 6.0  # beyond max range
    config = DepthNoiseConfig(edge_dropout_prob=1.0, pixel_dropout_prob=0.0,
                              holes_per_frame=0.0, disparity_step_px=0.0)
    noisy = apply_depth_noise(depth, np.random.default_rng(1), config, fx=100.0)
    assert (noisy[:, 50:] == 0).all()
    assert (noisy[:, 49] == 0).all()  # the edge pixels next to the jump
    assert (noisy[:, :40] > 0).all()
    off = apply_depth_noise(depth, np.random.default_rng(1), DepthNoiseConfig(enabled=False), 1.0)
    np.testing.assert_array_equal(off, depth)


def test_render_sequence_yields_validated_samples_with_emulated_segmentation(scene, trajectory):
    emulator = GroundedSamEmulator(emulator_preset("medium", seed=1), scene.registry)
    config = RenderConfig(camera=CameraConfig().scaled(SCALE))
    samples = list(render_sequence(scene, trajectory, config, emulator))
    assert len(samples) == len(trajectory)
    for i, sample in enumerate(samples[:10]):
        assert isinstance(sample, DatasetSample)
        assert sample.frame.index == i and sample.frame.stamp_ns == trajectory.stamps_ns[i]
        np.testing.assert_array_equal(sample.frame.T_world_cam, trajectory.T_world_cam[i])
        assert sample.segmentation.stamp_ns == sample.frame.stamp_ns
        assert sample.segmentation.shape == sample.ground_truth.label_ids.shape == (120, 160)
        assert len(sample.segmentation.segments) >= 2


def test_worker_processes_give_the_same_samples(scene, trajectory):
    emulator = GroundedSamEmulator(emulator_preset("hard", seed=2), scene.registry)
    config = RenderConfig(camera=CameraConfig().scaled(0.1), frames_per_batch=2)
    short = trajectory.__class__(trajectory.T_world_cam[:7], trajectory.stamps_ns[:7])
    serial = list(render_sequence(scene, short, config, emulator))
    parallel = list(render_sequence(scene, short, config, emulator, workers=2))
    assert [s.frame.index for s in parallel] == list(range(7))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.frame.rgb, b.frame.rgb)
        np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
        np.testing.assert_array_equal(a.ground_truth.instance_ids, b.ground_truth.instance_ids)
        np.testing.assert_array_equal(a.segmentation.segment_ids, b.segmentation.segment_ids)
