"""Pinhole geometry (core/geometry/camera.py): hand values, the pixel <-> world round trip, rays
and ranges, projection edge cases, and Open3D's rays through our pixel centres."""
import numpy as np
import open3d as o3d
import pytest

from panoptic_mapper.core.geometry.camera import (back_project, back_project_to_world,
                                                  open3d_pinhole_K, pixel_directions,
                                                  pixel_grid, pixel_indices, project,
                                                  project_world, transform_points,
                                                  world_rays, world_to_camera)
from panoptic_mapper.core.types import CameraIntrinsics

K = CameraIntrinsics(width=64, height=48, fx=50.0, fy=40.0, cx=31.5, cy=23.0)


def _pose() -> np.ndarray:
    """A camera at (1, 2, 1.5) turned 30 degrees about world z and tilted down 20 degrees."""
    yaw, pitch = np.radians(30.0), np.radians(20.0)
    Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch),
                                                                   np.cos(pitch)]])
    T = np.eye(4)  # noqa: N806
    T[:3, :3] = Rz @ Rx
    T[:3, 3] = [1.0, 2.0, 1.5]
    return T


def test_hand_values():
    # the principal point looks straight ahead; one focal length right and down is (1, 1, 1)
    np.testing.assert_allclose(pixel_directions(K, 31.5, 23.0), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(pixel_directions(K, 81.5, 63.0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(back_project(K, 81.5, 63.0, 2.0), [2.0, 2.0, 2.0])
    u, v, in_front = project(K, np.array([2.0, 2.0, 2.0]))
    assert (float(u), float(v), bool(in_front)) == (81.5, 63.0, True)
    T = np.eye(4)  # noqa: N806
    T[:3, 3] = [0.0, 0.0, 1.0]
    np.testing.assert_allclose(back_project_to_world(T, K, 31.5, 23.0, 3.0), [0.0, 0.0, 4.0])
    u, v = pixel_grid(K)
    assert u.shape == v.shape == (48, 64) and u[5, 7] == 7.0 and v[5, 7] == 5.0


def test_pixel_to_world_and_back_round_trip():
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-0.5, 63.5, 500), rng.uniform(-0.5, 47.5, 500)
    depth = rng.uniform(0.3, 8.0, 500)
    T = _pose()  # noqa: N806
    points = back_project_to_world(T, K, u, v, depth)
    u2, v2, z = project_world(T, K, points)
    np.testing.assert_allclose(u2, u, atol=1e-9)
    np.testing.assert_allclose(v2, v, atol=1e-9)
    np.testing.assert_allclose(z, depth, atol=1e-9)
    np.testing.assert_allclose(world_to_camera(T, points), back_project(K, u, v, depth),
                               atol=1e-9)
    np.testing.assert_allclose(transform_points(np.linalg.inv(T), points),
                               back_project(K, u, v, depth), atol=1e-9)


def test_world_rays_give_ranges_and_z_depth_parameters():
    v, u = np.mgrid[0:48, 0:64]
    depth = np.full(u.shape, 2.5)
    T = _pose()  # noqa: N806
    origins, directions, range_per_depth = world_rays(T, K, u, v)
    assert origins.shape == directions.shape == (48, 64, 3)
    np.testing.assert_allclose(origins, np.broadcast_to(T[:3, 3], origins.shape))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0)
    points = back_project_to_world(T, K, u, v, depth)
    # a unit ray reaches the point at range = depth * range_per_depth
    np.testing.assert_allclose(origins + directions * (depth * range_per_depth)[..., None],
                               points, atol=1e-9)
    _, scaled, _ = world_rays(T, K, u, v, unit=False)  # the ray parameter is the z-depth
    np.testing.assert_allclose(origins + scaled * depth[..., None], points, atol=1e-9)
    # pixel (31, 23) lies half a pixel left of the principal point: x = -0.5 / fx, y = 0
    assert range_per_depth[23, 31] == pytest.approx(np.sqrt(1.0 + (0.5 / 50.0) ** 2))


def test_points_behind_the_camera_and_outside_the_image():
    u, v, in_front = project(K, np.array([[0.1, 0.1, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_array_equal(in_front, [False, False, True])
    assert np.isnan(u[:2]).all() and np.isnan(v[:2]).all()
    row, col, inside = pixel_indices(K, np.array([31.6, -0.6, 63.4, 63.6, np.nan]),
                                     np.array([23.4, 0.0, 47.4, 10.0, 5.0]))
    np.testing.assert_array_equal(col[:4], [32, -1, 63, 64])
    np.testing.assert_array_equal(row[:3], [23, 0, 47])
    np.testing.assert_array_equal(inside, [True, False, True, False, False])


def test_open3d_casts_through_our_pixel_centres():
    T = _pose()  # noqa: N806
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(open3d_pinhole_K(K)), o3d.core.Tensor(np.linalg.inv(T)),
        K.width, K.height).numpy()  # [H, W, 6]
    u, v = pixel_grid(K)
    origins, directions, _ = world_rays(T, K, u, v, unit=False)
    np.testing.assert_allclose(rays[..., :3], origins, atol=1e-5)
    # Open3D's directions have a unit optical-axis component, as ours with unit=False
    np.testing.assert_allclose(rays[..., 3:], directions, atol=1e-5)


def test_float32_pixels_stay_float32():
    u, v = pixel_grid(K)
    directions = pixel_directions(K, u.astype(np.float32), v.astype(np.float32))
    assert directions.dtype == np.float32
    assert pixel_directions(K, u, v).dtype == np.float64
