"""A surface mesh from the field's SDF: marching cubes of the zero level, where it was observed.

PanopticRecon++ serves the surface of its SDF volume, not the TSDF it started from. The field's
SDF is evaluated at the voxel centres of a regular grid (``voxel_size_m``, voxel centres at
integer multiples of it, as in the TSDF grid) and Open3D's block-grid marching cubes (the one
the TSDF mesh uses, ``core/tsdf/block_mesher.py``) extracts the level ``iso_level_m``.

Only grid points near the *observed* surface are meshed: within ``observed_margin_m`` of an
observed point (the prior map's mesh vertices) and inside the field's scene box. Elsewhere the
hash grids only extrapolate, and their zero crossings there are phantom surfaces; a cell with a
corner outside the observed region gets no triangle (its corners carry weight 0).

Owns: :class:`FieldMeshConfig`, :class:`FieldMesh`, :func:`extract_field_mesh`,
:func:`field_sdf`. Does not own: the labels of the vertices (``core/mapping/refined_geometry``)
or which mesh the refined map serves.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import open3d as o3d
import open3d.core as o3c
import torch
from scipy.spatial import cKDTree

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox
from panoptic_mapper.core.tsdf.block_mesher import _canonical_triangles

BLOCK_RESOLUTION = 8
"""Voxels per block edge of the marching-cubes grid (a power of two)."""
_CPU = o3c.Device("CPU:0")
_NEIGHBOUR_BLOCKS = np.array([[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1)
                              for z in (-1, 0, 1)], np.int64)

SdfFunction = Callable[[np.ndarray], np.ndarray]
"""[P, 3] float32 world points, metres -> [P] signed distance, metres (positive outside)."""


@dataclass
class FieldMeshConfig(ConfigBase):
    """Marching cubes of the field's SDF."""

    voxel_size_m: float = 0.02
    """Grid spacing of the SDF samples, metres (the TSDF's default: the two meshes compare at
    the same resolution)."""
    observed_margin_m: float = 0.06
    """Grid points farther than this from every observed surface point (the prior's mesh
    vertices) are not meshed, metres: unobserved space would give phantom surfaces. At least a
    voxel (a cell needs all 8 corners inside); at most 7 voxels (one block of halo)."""
    iso_level_m: float = 0.0
    """The level extracted, metres: a field whose zero level sits systematically in front of or
    behind the surface is corrected by this offset (0: the paper's zero level)."""
    chunk_points: int = 65536
    """SDF evaluations per forward pass (memory bound of the extraction)."""

    def validate(self) -> None:
        require(self.voxel_size_m > 0, "voxel_size_m", self.voxel_size_m, "must be > 0")
        require(self.voxel_size_m <= self.observed_margin_m
                <= (BLOCK_RESOLUTION - 1) * self.voxel_size_m, "observed_margin_m",
                self.observed_margin_m,
                f"must lie between 1 and {BLOCK_RESOLUTION - 1} voxels (voxel_size_m)")
        require(np.isfinite(self.iso_level_m), "iso_level_m", self.iso_level_m,
                "must be finite")
        require(self.chunk_points >= 1, "chunk_points", self.chunk_points, "must be >= 1")


@dataclass(frozen=True)
class FieldMesh:
    """The extracted surface (vertices welded by Open3D's marching cubes)."""

    vertices_m: np.ndarray
    """[V, 3] float32 world positions, metres."""
    triangles: np.ndarray
    """[F, 3] int32 vertex indices."""
    num_samples: int
    """SDF evaluations spent (the observed grid points)."""

    @property
    def num_vertices(self) -> int:
        return int(self.vertices_m.shape[0])

    @classmethod
    def empty(cls) -> "FieldMesh":
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), 0)


def field_sdf(field: PanopticField, lock: threading.RLock | None = None) -> SdfFunction:
    """``field``'s SDF as an :data:`SdfFunction` (no autograd; under ``lock`` when given, e.g.
    the trainer's, so that a training step never runs in between)."""
    device = next(field.parameters()).device

    def evaluate(points_m: np.ndarray) -> np.ndarray:
        points = torch.as_tensor(np.asarray(points_m, np.float32), device=device)
        with lock if lock is not None else contextlib.nullcontext(), torch.no_grad():
            return field.sdf(points).float().cpu().numpy()
    return evaluate


def observed_blocks(observed_points_m: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """[B, 3] int32 keys of the blocks holding an observed point, and their 26 neighbours
    (every grid point within a block edge of an observed point lies in one of them)."""
    block_m = voxel_size_m * BLOCK_RESOLUTION
    keys = np.unique(np.floor(observed_points_m / block_m).astype(np.int64), axis=0)
    keys = (keys[:, None, :] + _NEIGHBOUR_BLOCKS[None]).reshape(-1, 3)
    return np.unique(keys, axis=0).astype(np.int32)


def block_voxel_centres(block_keys: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """[B * R^3, 3] float64 voxel centres of the blocks, block-major, each block in Open3D's
    layout (x fastest, then y, then z)."""
    res = BLOCK_RESOLUTION
    z, y, x = np.meshgrid(np.arange(res), np.arange(res), np.arange(res), indexing="ij")
    local = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    voxels = np.asarray(block_keys, np.int64)[:, None, :] * res + local[None]
    return (voxels * voxel_size_m).reshape(-1, 3)


def extract_field_mesh(sdf: SdfFunction, observed_points_m: np.ndarray, box: SceneBox | None,
                       config: FieldMeshConfig | None = None) -> FieldMesh:
    """Marching cubes of ``sdf`` at ``config.iso_level_m`` near the observed surface.

    Args:
        sdf: the signed distance (e.g. :func:`field_sdf`).
        observed_points_m: [N, 3] points of the observed surface (the prior's mesh vertices);
            only grid points within ``observed_margin_m`` of one are meshed.
        box: the field's scene box (grid points outside are not meshed); None = no bound.
        config: grid settings (defaults when None).

    Raises:
        InvalidInputError: non-finite observed points, or an SDF answer of the wrong shape.
    """
    config = config or FieldMeshConfig()
    observed = np.asarray(observed_points_m, np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(observed)):
        raise InvalidInputError("observed_points_m", "non-finite",
                                "observed surface points must be finite", kind="field")
    if len(observed) == 0:
        return FieldMesh.empty()
    vs = config.voxel_size_m
    keys = observed_blocks(observed, vs)
    centres = block_voxel_centres(keys, vs)
    distance, _ = cKDTree(observed).query(centres, distance_upper_bound=config.observed_margin_m)
    meshed = np.isfinite(distance)
    if box is not None:
        meshed &= box.contains(centres)
    values = np.zeros(len(centres), np.float32)
    points = centres[meshed].astype(np.float32)
    answers = [np.asarray(sdf(chunk), np.float32).reshape(-1)
               for chunk in np.array_split(points, max(1, -(-len(points) // config.chunk_points)))
               if len(chunk)]
    answer = np.concatenate(answers) if answers else np.zeros(0, np.float32)
    if answer.shape != (len(points),):
        raise InvalidInputError("sdf", list(answer.shape),
                                f"must answer one distance per point ({len(points)})",
                                kind="field")
    values[meshed] = answer - np.float32(config.iso_level_m)
    vertices, triangles = _marching_cubes(keys, values, meshed, vs)
    return FieldMesh(vertices, triangles, int(meshed.sum()))


def _marching_cubes(block_keys: np.ndarray, values: np.ndarray, meshed: np.ndarray,
                    voxel_size_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Open3D's block-grid marching cubes of the zero level of ``values`` (per voxel centre,
    block-major) over the cells whose 8 corners are all ``meshed``."""
    res = BLOCK_RESOLUTION
    shape = (len(block_keys), res, res, res, 1)
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(o3c.float32, o3c.float32),
        attr_channels=(1, 1), voxel_size=voxel_size_m, block_resolution=res,
        block_count=max(1, len(block_keys)), device=_CPU)
    buf, _ = vbg.hashmap().activate(o3c.Tensor(np.ascontiguousarray(block_keys, np.int32)))
    bufs = buf.numpy().astype(np.int64)
    vbg.attribute("tsdf").numpy()[bufs] = values.reshape(shape)
    vbg.attribute("weight").numpy()[bufs] = meshed.astype(np.float32).reshape(shape)
    mesh = vbg.extract_triangle_mesh(0.5)
    if "positions" not in mesh.vertex or mesh.vertex.positions.shape[0] == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    return _canonical(mesh.vertex.positions.numpy().astype(np.float32).reshape(-1, 3),
                      mesh.triangle.indices.numpy().astype(np.int64).reshape(-1, 3))


def _canonical(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices sorted (x, y, z), triangles in the TSDF mesh's canonical order: Open3D's
    parallel extraction emits them in varying order, and the same field must give the same
    arrays (a reloaded map, a republished one)."""
    order = np.lexsort((vertices[:, 2], vertices[:, 1], vertices[:, 0]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    triangles, _ = _canonical_triangles(rank[triangles], np.zeros(len(triangles), np.int64))
    return vertices[order], triangles.astype(np.int32)
