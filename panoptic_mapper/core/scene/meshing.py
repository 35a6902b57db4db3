"""Triangle-mesh primitives of the synthetic scenes: tessellated boxes, frusta, spheres, planes.

Every primitive is tessellated so that no edge is longer than ``max_edge_m``: the ground-truth mesh
vertices then sample every surface about evenly, which the 3D metrics (labels queried at GT
vertices, accuracy/completion) rely on. Faces of a primitive keep their own vertices (no sharing
across a crease), so per-vertex attributes never blur across an edge.

Owns: :class:`MeshPart` (vertices, triangles, one material) and the primitive builders.
Does not own: what the parts mean (``furniture``/``layout``) or how they look (``materials``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOX_FACES = ("+x", "-x", "+y", "-y", "+z", "-z")
"""Face names of a box, by outward normal in the box frame."""


@dataclass
class MeshPart:
    """A piece of geometry with one material, in the frame its builder was given."""

    vertices_m: np.ndarray
    """[V, 3] float64 vertex positions, metres."""
    triangles: np.ndarray
    """[F, 3] int64 vertex indices, counter-clockwise seen from outside."""
    material_id: int = 0
    """Index into the scene's material table."""

    def transformed(self, T_dst_src: np.ndarray) -> "MeshPart":
        """The part with its vertices mapped by the 4x4 rigid transform ``T_dst_src``."""
        vertices = self.vertices_m @ T_dst_src[:3, :3].T + T_dst_src[:3, 3]
        return MeshPart(vertices, self.triangles, self.material_id)

    def with_material(self, material_id: int) -> "MeshPart":
        """The same geometry with another material."""
        return MeshPart(self.vertices_m, self.triangles, material_id)


def merge_parts(parts: list[MeshPart]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate parts into one mesh.

    Returns:
        ``(vertices_m [V, 3], triangles [F, 3], triangle_material_ids [F])``.
    """
    vertices, triangles, materials = [], [], []
    offset = 0
    for part in parts:
        vertices.append(part.vertices_m)
        triangles.append(part.triangles + offset)
        materials.append(np.full(len(part.triangles), part.material_id, np.int32))
        offset += len(part.vertices_m)
    if not parts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int32)
    return np.concatenate(vertices), np.concatenate(triangles), np.concatenate(materials)


def pose_matrix(translation_m=(0.0, 0.0, 0.0), yaw_rad: float = 0.0) -> np.ndarray:
    """4x4 transform: rotation by ``yaw_rad`` about +z, then translation."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = translation_m
    return T


def _segments(length_m: float, max_edge_m: float, minimum: int = 1) -> int:
    return max(minimum, int(math.ceil(length_m / max_edge_m - 1e-9)))


def grid_patch(origin_m, axis_u_m, axis_v_m, max_edge_m: float) -> tuple[np.ndarray, np.ndarray]:
    """A planar parallelogram ``origin + s*u + t*v`` (s, t in [0, 1]) as a triangle grid.

    The normal of the triangles is ``u x v``.

    Returns:
        ``(vertices_m [V, 3], triangles [F, 3])``.
    """
    origin = np.asarray(origin_m, float)
    u, v = np.asarray(axis_u_m, float), np.asarray(axis_v_m, float)
    nu = _segments(float(np.linalg.norm(u)), max_edge_m)
    nv = _segments(float(np.linalg.norm(v)), max_edge_m)
    s = np.linspace(0.0, 1.0, nu + 1)
    t = np.linspace(0.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing="ij")  # [nu+1, nv+1]
    vertices = origin + ss.reshape(-1, 1) * u + tt.reshape(-1, 1) * v
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, triangles


def box(size_m, max_edge_m: float, center_m=(0.0, 0.0, 0.0), faces=BOX_FACES,
        material_id: int = 0) -> MeshPart:
    """An axis-aligned box of edge lengths ``size_m`` centred at ``center_m``.

    Args:
        size_m: ``(sx, sy, sz)`` edge lengths, metres.
        max_edge_m: longest allowed triangle edge.
        center_m: box centre.
        faces: which faces to build (names of :data:`BOX_FACES`); hidden faces (against a wall or
            the floor) are left out so the ground truth holds only surfaces a camera can see.
        material_id: material of every face.
    """
    half = np.asarray(size_m, float) / 2.0
    center = np.asarray(center_m, float)
    ex, ey, ez = np.diag(2.0 * half)
    corner = center - half
    specs = {  # face -> (origin, u, v) with u x v pointing outward
        "+x": (corner + ex, ey, ez), "-x": (corner, ez, ey),
        "+y": (corner + ey, ez, ex), "-y": (corner, ex, ez),
        "+z": (corner + ez, ex, ey), "-z": (corner, ey, ex),
    }
    vertices, triangles = [], []
    offset = 0
    for name in faces:
        v, t = grid_patch(*specs[name], max_edge_m)
        vertices.append(v)
        triangles.append(t + offset)
        offset += len(v)
    return MeshPart(np.concatenate(vertices), np.concatenate(triangles), material_id)


def frustum(radius_bottom_m: float, radius_top_m: float, height_m: float, max_edge_m: float,
            base_center_m=(0.0, 0.0, 0.0), caps: tuple[bool, bool] = (True, True),
            min_segments: int = 12, material_id: int = 0) -> MeshPart:
    """A closed cone frustum (a cylinder when both radii agree) standing on ``base_center_m``.

    Args:
        caps: ``(bottom, top)``: which end discs to build.
        min_segments: fewest sides of the polygon approximating the circle.
    """
    r_max = max(radius_bottom_m, radius_top_m)
    n_seg = _segments(2.0 * math.pi * r_max, max_edge_m, min_segments)
    slant = math.hypot(height_m, radius_top_m - radius_bottom_m)
    n_h = _segments(slant, max_edge_m)
    angles = np.linspace(0.0, 2.0 * math.pi, n_seg, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1)  # [S, 2]
    base = np.asarray(base_center_m, float)
    levels = np.linspace(0.0, 1.0, n_h + 1)
    radii = radius_bottom_m + (radius_top_m - radius_bottom_m) * levels
    side = np.concatenate([np.column_stack([ring * r, np.full(n_seg, h * height_m)])
                           for r, h in zip(radii, levels)]) + base
    idx = np.arange((n_h + 1) * n_seg).reshape(n_h + 1, n_seg)
    nxt = np.roll(idx, -1, axis=1)
    a, b = idx[:-1].ravel(), nxt[:-1].ravel()
    c, d = nxt[1:].ravel(), idx[1:].ravel()
    vertices = [side]
    triangles = [np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])]
    offset = len(side)
    for is_top, wanted in ((False, caps[0]), (True, caps[1])):
        radius = radius_top_m if is_top else radius_bottom_m
        if not wanted or radius <= 0.0:
            continue
        v, t = _disc(radius, n_seg, max_edge_m, ring)
        z = height_m if is_top else 0.0
        v = np.column_stack([v, np.full(len(v), z)]) + base
        if not is_top:
            t = t[:, ::-1]
        vertices.append(v)
        triangles.append(t + offset)
        offset += len(v)
    return MeshPart(np.concatenate(vertices), np.concatenate(triangles), material_id)


def disc(radius_m: float, max_edge_m: float, center_m=(0.0, 0.0, 0.0), min_segments: int = 12,
         material_id: int = 0) -> MeshPart:
    """A horizontal disc facing +z (a liquid surface, the floor of an open container)."""
    n_seg = _segments(2.0 * math.pi * radius_m, max_edge_m, min_segments)
    angles = np.linspace(0.0, 2.0 * math.pi, n_seg, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1)
    v, t = _disc(radius_m, n_seg, max_edge_m, ring)
    vertices = np.column_stack([v, np.zeros(len(v))]) + np.asarray(center_m, float)
    return MeshPart(vertices, t, material_id)


def _disc(radius_m: float, n_seg: int, max_edge_m: float, ring: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """A disc in the xy-plane facing +z: concentric rings plus a centre vertex."""
    n_rings = _segments(radius_m, max_edge_m)
    vertices = [np.zeros((1, 2))]
    for k in range(1, n_rings + 1):
        vertices.append(ring * radius_m * k / n_rings)
    vertices_2d = np.concatenate(vertices)
    tris = []
    inner = np.arange(1, n_seg + 1)
    tris.append(np.stack([np.zeros(n_seg, int), inner, np.roll(inner, -1)], 1))
    for k in range(1, n_rings):
        a = 1 + (k - 1) * n_seg + np.arange(n_seg)
        b = a + n_seg
        a2, b2 = np.roll(a, -1), np.roll(b, -1)
        tris.append(np.stack([a, b, b2], 1))
        tris.append(np.stack([a, b2, a2], 1))
    return vertices_2d, np.concatenate(tris)


def sphere(radius_m, max_edge_m: float, center_m=(0.0, 0.0, 0.0), bumpiness: float = 0.0,
           rng: np.random.Generator | None = None, material_id: int = 0) -> MeshPart:
    """A UV sphere (an ellipsoid when ``radius_m`` is a 3-vector), optionally bumpy.

    Args:
        bumpiness: relative random radial displacement of the vertices (foliage), 0 = smooth.
        rng: random source for the bumps (required when ``bumpiness > 0``).
    """
    radii = np.broadcast_to(np.asarray(radius_m, float), (3,))
    n_lon = _segments(2.0 * math.pi * float(radii.max()), max_edge_m, 12)
    n_lat = max(6, n_lon // 2)
    theta = np.linspace(0.0, math.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0.0, 2.0 * math.pi, n_lon, endpoint=False)
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(tt) * np.cos(pp), np.sin(tt) * np.sin(pp), np.cos(tt)], -1)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], unit.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    scale = np.ones(len(unit))
    if bumpiness > 0.0:
        scale = 1.0 + bumpiness * rng.uniform(-1.0, 1.0, len(unit))
    vertices = unit * radii * scale[:, None] + np.asarray(center_m, float)
    rows = n_lat - 1
    idx = 1 + np.arange(rows * n_lon).reshape(rows, n_lon)
    nxt = np.roll(idx, -1, axis=1)
    tris = [np.stack([np.zeros(n_lon, int), idx[0], nxt[0]], 1)[:, [0, 2, 1]]]
    a, b, c, d = idx[:-1].ravel(), nxt[:-1].ravel(), nxt[1:].ravel(), idx[1:].ravel()
    tris.append(np.stack([a, d, c], 1))
    tris.append(np.stack([a, c, b], 1))
    south = len(vertices) - 1
    tris.append(np.stack([np.full(n_lon, south), idx[-1], nxt[-1]], 1))
    return MeshPart(vertices, np.concatenate(tris), material_id)
