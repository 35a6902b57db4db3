"""Pinhole camera geometry: pixel <-> camera frame <-> world frame, the one implementation.

Conventions (the whole project uses them):

* camera frame: OpenCV axes, x right, y down, z forward; ``T_world_cam`` [4, 4] maps camera
  points to the world (``p_world = R p_cam + t``);
* pixel (u, v) = (column, row), and the centre of pixel (u, v) is at exactly (u, v): a camera
  point projects to ``u = fx x / z + cx``, ``v = fy y / z + cy``, and pixel (u, v) back-projects
  along ``((u - cx) / fx, (v - cy) / fy, 1)``;
* depth is z-depth (along the optical axis); a range is the distance along the ray, ``range =
  depth * |((u - cx) / fx, (v - cy) / fy, 1)|``.

Open3D's ``create_rays_pinhole`` casts pixel (u, v) through (u + 0.5, v + 0.5):
:func:`open3d_pinhole_K` gives the camera matrix that makes it cast through our pixel centres.

All functions are numpy, float64 unless the inputs say otherwise, and broadcast ``u``, ``v`` and
``depth_m`` against each other (pass ``u[None, :]`` and ``v[:, None]`` for an image grid).

Owns: the functions below. Does not own: image resampling (``CameraIntrinsics.scaled``), pose
validation (``core/types.py``) or ray casting.
"""
from __future__ import annotations

import numpy as np

from panoptic_mapper.core.types import CameraIntrinsics

MIN_PROJECT_DEPTH_M = 1e-6
"""Camera points whose z is not above this (at or behind the camera) do not project."""


def pixel_grid(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """([H, W] u, [H, W] v) float64 coordinates of every pixel centre."""
    v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
    return u, v


def pixel_directions(intrinsics: CameraIntrinsics, u, v) -> np.ndarray:
    """[..., 3] camera-frame directions through pixels (u, v), scaled to z = 1 (a point at
    z-depth d is ``d`` times it); float32 for float32 (u, v), else float64."""
    x = (np.asarray(u) - intrinsics.cx) / intrinsics.fx
    y = (np.asarray(v) - intrinsics.cy) / intrinsics.fy
    x, y = np.broadcast_arrays(x, y)
    return np.stack([x, y, np.ones(x.shape, x.dtype)], axis=-1)


def back_project(intrinsics: CameraIntrinsics, u, v, depth_m) -> np.ndarray:
    """[..., 3] camera-frame points seen at pixels (u, v) with z-depth ``depth_m``."""
    depth = np.asarray(depth_m)
    x = (np.asarray(u) - intrinsics.cx) / intrinsics.fx * depth
    y = (np.asarray(v) - intrinsics.cy) / intrinsics.fy * depth
    x, y, z = np.broadcast_arrays(x, y, depth)
    return np.stack([x, y, z], axis=-1)


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:  # noqa: N803
    """[..., 3] points of frame b expressed in frame a (``R p + t``)."""
    T = np.asarray(T_a_b, np.float64)  # noqa: N806
    return np.asarray(points_b) @ np.ascontiguousarray(T[:3, :3].T) + T[:3, 3]


def back_project_to_world(T_world_cam: np.ndarray, intrinsics: CameraIntrinsics,  # noqa: N803
                          u, v, depth_m) -> np.ndarray:
    """[..., 3] world points seen at pixels (u, v) with z-depth ``depth_m``."""
    return transform_points(T_world_cam, back_project(intrinsics, u, v, depth_m))


def world_rays(T_world_cam: np.ndarray, intrinsics: CameraIntrinsics, u, v,  # noqa: N803
               unit: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays through pixels (u, v) in the world frame.

    Returns:
        origins [..., 3] (the camera centre, broadcast), directions [..., 3] (unit length, or
        with ``unit=False`` scaled so the camera-frame z is 1: then a ray parameter is the
        z-depth), and range per depth [...] (the range along a unit ray of a point at z-depth
        1: ``range = depth * it``).
    """
    T = np.asarray(T_world_cam, np.float64)  # noqa: N806
    directions = pixel_directions(intrinsics, u, v)
    range_per_depth = np.linalg.norm(directions, axis=-1)
    if unit:
        directions = directions / range_per_depth[..., None]
    directions = directions @ np.ascontiguousarray(T[:3, :3].T)
    return np.broadcast_to(T[:3, 3], directions.shape), directions, range_per_depth


def world_to_camera(T_world_cam: np.ndarray, points_world: np.ndarray) -> np.ndarray:  # noqa: N803
    """[..., 3] world points in the camera frame (``R^T (p - t)``)."""
    T = np.asarray(T_world_cam, np.float64)  # noqa: N806
    return (np.asarray(points_world) - T[:3, 3]) @ np.ascontiguousarray(T[:3, :3])


def project(intrinsics: CameraIntrinsics,
            points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame points [..., 3] -> (u [...], v [...], in_front [...] bool).

    ``u``, ``v`` are continuous pixel coordinates (pixel centres at integers); where a point is
    not in front of the camera (z <= :data:`MIN_PROJECT_DEPTH_M`) they are NaN and ``in_front``
    is False. Whether (u, v) lies in the image is :func:`pixel_indices`'s business.
    """
    points = np.asarray(points_cam, np.float64)
    z = points[..., 2]
    in_front = z > MIN_PROJECT_DEPTH_M
    safe_z = np.where(in_front, z, np.nan)
    u = intrinsics.fx * points[..., 0] / safe_z + intrinsics.cx
    v = intrinsics.fy * points[..., 1] / safe_z + intrinsics.cy
    return u, v, in_front


def project_world(T_world_cam: np.ndarray, intrinsics: CameraIntrinsics,  # noqa: N803
                  points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points [..., 3] -> (u [...], v [...], z-depth [...]); u, v are NaN where the
    point is not in front of the camera (see :func:`project`)."""
    points_cam = world_to_camera(T_world_cam, points_world)
    u, v, _ = project(intrinsics, points_cam)
    return u, v, points_cam[..., 2]


def pixel_indices(intrinsics: CameraIntrinsics, u,
                  v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row [...], col [...] int64, inside [...] bool): the pixel whose centre is nearest to
    (u, v), and whether it lies in the image (NaN coordinates are outside; their row and column
    are 0)."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    finite = np.isfinite(u) & np.isfinite(v)
    col = np.rint(np.where(finite, u, 0.0)).astype(np.int64)
    row = np.rint(np.where(finite, v, 0.0)).astype(np.int64)
    inside = (finite & (col >= 0) & (col < intrinsics.width) & (row >= 0)
              & (row < intrinsics.height))
    return row, col, inside


def open3d_pinhole_K(intrinsics: CameraIntrinsics) -> np.ndarray:  # noqa: N802
    """[3, 3] the camera matrix to give Open3D's ``create_rays_pinhole`` (which casts pixel
    (u, v) through (u + 0.5, v + 0.5)) so that it casts through our pixel centres (u, v). Its
    rays have a unit optical-axis component, so a hit distance is the z-depth."""
    K = np.array(intrinsics.K, np.float64)  # noqa: N806
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    return K
