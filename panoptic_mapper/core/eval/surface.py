"""Surface tools for 3D evaluation: area-uniform sampling of a mesh, exact point-to-mesh
distances and closest points, and which surface points the camera actually observed.

Owns: sampling (deterministic by seed), distances via Open3D's ``RaycastingScene`` (exact
point-to-triangle distances, no dependence on the mesh's vertex density) and the visibility test.
Does not own: the scores computed from them (``metrics.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.geometry.camera import pixel_indices, project_world
from panoptic_mapper.core.types import CameraIntrinsics, PanopticMesh


@dataclass
class SurfaceSamples:
    """Points drawn uniformly (by area) on a triangle mesh."""

    points_m: np.ndarray
    """[N, 3] float64 sample positions, metres."""
    triangle_ids: np.ndarray
    """[N] int64 index of the triangle each sample lies on."""
    nearest_vertex: np.ndarray
    """[N] int64 the corner of that triangle closest to the sample (largest barycentric weight);
    per-vertex attributes (labels, instance ids) are read there."""


def sample_surface(vertices_m: np.ndarray, triangles: np.ndarray, num_points: int,
                   seed: int = 0) -> SurfaceSamples:
    """Draw ``num_points`` points uniformly over the area of a mesh.

    Args:
        vertices_m: [V, 3] vertex positions, metres.
        triangles: [F, 3] vertex indices.
        num_points: number of samples (> 0).
        seed: seed of the generator (same inputs + seed -> same samples).

    Raises:
        InvalidInputError: no triangle with a positive area, or ``num_points`` < 1.
    """
    vertices = np.asarray(vertices_m, np.float64).reshape(-1, 3)
    faces = np.asarray(triangles, np.int64).reshape(-1, 3)
    if num_points < 1:
        raise InvalidInputError("num_points", num_points, "must be >= 1", kind="metric_option")
    corners = vertices[faces]  # [F, 3, 3]
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0],
                                          corners[:, 2] - corners[:, 0]), axis=1)
    total = float(areas.sum())
    if not total > 0:
        raise InvalidInputError("mesh", f"{len(faces)} triangles, area {total}",
                                "mesh has no surface to sample", kind="empty")
    rng = np.random.default_rng(seed)
    triangle_ids = rng.choice(len(faces), size=num_points, p=areas / total)
    # Uniform barycentric coordinates: fold the unit square onto the triangle.
    u, v = rng.random(num_points), rng.random(num_points)
    fold = u + v > 1.0
    u[fold], v[fold] = 1.0 - u[fold], 1.0 - v[fold]
    weights = np.stack([1.0 - u - v, u, v], axis=1)  # [N, 3]
    chosen = corners[triangle_ids]
    points = np.einsum("nk,nkd->nd", weights, chosen)
    nearest = faces[triangle_ids, np.argmax(weights, axis=1)]
    return SurfaceSamples(points_m=points, triangle_ids=triangle_ids.astype(np.int64),
                          nearest_vertex=nearest)


def point_to_mesh_distance_m(points_m: np.ndarray, vertices_m: np.ndarray,
                             triangles: np.ndarray) -> np.ndarray:
    """Unsigned distance (m) from each point to the closest point of a triangle mesh.

    Uses ``open3d.t.geometry.RaycastingScene.compute_distance`` (a BVH over the triangles).

    Args:
        points_m: [N, 3] query points, metres.
        vertices_m: [V, 3] mesh vertices, metres.
        triangles: [F, 3] vertex indices (F > 0).

    Returns:
        [N] float64 distances, metres.
    """
    import open3d as o3d

    scene, _ = _raycasting_scene(vertices_m, triangles)
    query = np.ascontiguousarray(points_m, dtype=np.float32).reshape(-1, 3)
    if len(query) == 0:
        return np.zeros(0)
    return scene.compute_distance(o3d.core.Tensor(query)).numpy().astype(np.float64)


@dataclass
class ClosestSurfacePoints:
    """For each query point, the closest point of a triangle mesh."""

    distance_m: np.ndarray
    """[N] float64 distance to the mesh, metres."""
    triangle_ids: np.ndarray
    """[N] int64 triangle holding the closest point."""
    nearest_vertex: np.ndarray
    """[N] int64 the corner of that triangle closest to the closest point (largest barycentric
    weight): where per-vertex attributes are read."""


def closest_surface_points(points_m: np.ndarray, vertices_m: np.ndarray,
                           triangles: np.ndarray) -> ClosestSurfacePoints:
    """Closest points on a triangle mesh (``RaycastingScene.compute_closest_points``).

    Transferring per-vertex labels through the closest surface point (rather than the closest
    vertex) does not depend on how finely the mesh is tessellated.

    Args:
        points_m: [N, 3] query points, metres.
        vertices_m: [V, 3] mesh vertices, metres.
        triangles: [F, 3] vertex indices (F > 0).
    """
    import open3d as o3d

    scene, faces = _raycasting_scene(vertices_m, triangles)
    query = np.ascontiguousarray(points_m, dtype=np.float32).reshape(-1, 3)
    if len(query) == 0:
        empty = np.zeros(0, np.int64)
        return ClosestSurfacePoints(np.zeros(0), empty, empty)
    found = scene.compute_closest_points(o3d.core.Tensor(query))
    closest = found["points"].numpy().astype(np.float64)
    triangle_ids = found["primitive_ids"].numpy().astype(np.int64)
    uv = found["primitive_uvs"].numpy().astype(np.float64)
    weights = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
    return ClosestSurfacePoints(
        distance_m=np.linalg.norm(closest - query.astype(np.float64), axis=1),
        triangle_ids=triangle_ids,
        nearest_vertex=faces[triangle_ids, np.argmax(weights, axis=1)].astype(np.int64))


def _raycasting_scene(vertices_m: np.ndarray, triangles: np.ndarray):
    import open3d as o3d

    faces = np.ascontiguousarray(np.asarray(triangles).reshape(-1, 3), dtype=np.uint32)
    if len(faces) == 0:
        raise InvalidInputError("triangles", 0, "mesh has no triangle", kind="empty")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(vertices_m, dtype=np.float32).reshape(-1, 3)),
        o3d.core.Tensor(faces))
    return scene, faces


class VisibilityAccumulator:
    """Marks which surface samples of a mesh some camera frame observed.

    A sample counts as observed by a frame when it projects inside the image onto a pixel where
    the frame measured a depth, and the ray from the camera centre towards it first meets the
    mesh on the sample's own triangle. Ray casting the mesh itself (rather than comparing with
    the noisy measured depth) keeps hidden surfaces out, including faces that touch visible ones
    (the underside of a chair standing on the floor, the shared side of two touching boxes).
    """

    def __init__(self, mesh: PanopticMesh, samples: SurfaceSamples):
        self._scene, _ = _raycasting_scene(mesh.vertices_m, mesh.triangles)
        self.points_m = np.asarray(samples.points_m, np.float64).reshape(-1, 3)
        """[N, 3] world points."""
        self._triangle_ids = np.asarray(samples.triangle_ids, np.int64).reshape(-1)
        self.observed = np.zeros(len(self.points_m), bool)
        """[N] True once any frame observed the sample."""

    def observe(self, depth_m: np.ndarray, T_world_cam: np.ndarray,  # noqa: N803
                intrinsics: CameraIntrinsics) -> int:
        """Mark the samples this frame observes; returns how many it newly observes.

        Args:
            depth_m: [H, W] measured depth, metres, 0 = no measurement.
            T_world_cam: [4, 4] camera-to-world transform.
            intrinsics: pinhole intrinsics of ``depth_m``.
        """
        import open3d as o3d

        depth = np.asarray(depth_m)
        if depth.shape != intrinsics.shape:
            raise InvalidInputError("depth_m", list(depth.shape),
                                    f"must match the intrinsics {list(intrinsics.shape)}",
                                    kind="size_mismatch")
        T = np.asarray(T_world_cam, np.float64)  # noqa: N806
        # Samples observed before need no ray: consecutive frames mostly see the same surface.
        pending = np.flatnonzero(~self.observed)
        u, v, _ = project_world(T, intrinsics, self.points_m[pending])
        row, col, inside = pixel_indices(intrinsics, u, v)
        candidates = np.flatnonzero(inside)
        candidates = candidates[depth[row[candidates], col[candidates]] > 0]
        if candidates.size == 0:
            return 0
        offsets = self.points_m[pending[candidates]] - T[:3, 3]  # camera centre -> sample
        rays = np.concatenate([np.broadcast_to(T[:3, 3], (candidates.size, 3)), offsets], axis=1)
        hits = self._scene.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays, np.float32)))
        first = hits["primitive_ids"].numpy().astype(np.int64)
        seen = pending[candidates[first == self._triangle_ids[pending[candidates]]]]
        self.observed[seen] = True
        return int(seen.size)
