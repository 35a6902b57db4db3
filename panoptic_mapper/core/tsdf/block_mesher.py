"""Marching cubes of the TSDF grid, kept up to date block by block.

A triangle of Open3D's marching cubes lies in one cell, the cube between voxel ``c`` and
``c + (1, 1, 1)``; it belongs to the block holding ``c`` and depends on the voxels of that block
and of its neighbours at +1 along each axis. So when the voxels of some blocks change, only the
triangles of those blocks and of their neighbours at -1 along each axis (the *affected* blocks)
change. :class:`BlockMesher` keeps the mesh with each triangle's block, and an update re-meshes
the affected blocks only: their geometry and that of their +1 neighbours is copied into a
private ``VoxelBlockGrid``, meshed there, and the new triangles replace the old ones of the
affected blocks. A vertex on an edge between an affected and a kept cell is computed from the
same two voxels in both meshes, so it comes out bit-identical and the two sides weld by position:
the result equals a full extraction (tested).

Canonical form (so that the same grid content always gives the same arrays, however it was
updated): vertices welded by position and sorted (x, y, z); each triangle rotated to start at
its smallest index, triangles sorted.

Use: ``job = mesher.plan(grid, changed_block_keys)`` while the grid cannot change (it copies what
it needs), then ``patch = job.run()`` and ``delta = mesher.apply(patch)`` without any lock on the
grid (``apply`` calls must come in ``plan`` order: one update at a time).

Owns: :class:`BlockMesher`, :class:`ExtractedMesh`, :class:`MeshDelta`.
Does not own: the grid (``core/tsdf/grid.py``) or vertex labels (``core/mapping``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
import open3d.core as o3c

from panoptic_mapper.core.tsdf.grid import (GeometryBlocks, PanopticVoxelGrid, pack_block_keys,
                                            unpack_block_keys)

_CPU = o3c.Device("CPU:0")
_LOWER = np.array([[x, y, z] for x in (0, -1) for y in (0, -1) for z in (0, -1)], np.int64)
"""A block and its neighbours at -1: the blocks whose cells read a block's voxels."""


@dataclass
class ExtractedMesh:
    """Marching-cubes output of the grid, in canonical form (see module docstring)."""

    vertices_m: np.ndarray
    """[V, 3] float32 world positions."""
    triangles: np.ndarray
    """[F, 3] int32 vertex indices."""
    colors: np.ndarray
    """[V, 3] uint8 RGB."""

    @classmethod
    def empty(cls) -> "ExtractedMesh":
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                   np.zeros((0, 3), np.uint8))


@dataclass
class MeshDelta:
    """The mesh after an update, and how it relates to the mesh before."""

    mesh: ExtractedMesh
    previous_index: np.ndarray
    """[V] int64 index of each vertex in the previous mesh, -1 for a new vertex."""
    affected_block_keys: np.ndarray
    """[B] int64 packed keys of the blocks that were re-meshed (:func:`pack_block_keys`)."""
    full: bool
    """True when every block was re-meshed."""


@dataclass
class MeshPatch:
    """The triangles of the affected blocks, meshed anew (what :meth:`MeshJob.run` returns)."""

    vertices_m: np.ndarray
    """[P, 3] float32."""
    colors: np.ndarray
    """[P, 3] uint8."""
    triangles: np.ndarray
    """[T, 3] int64 indices into ``vertices_m``."""
    triangle_blocks: np.ndarray
    """[T] int64 packed block key of each triangle."""
    affected: np.ndarray
    """[B] int64 sorted packed keys of the affected blocks."""
    full: bool
    generation: int
    """The mesher state this patch was planned against."""


@dataclass
class MeshJob:
    """Marching cubes of copied blocks; :meth:`run` needs no access to the grid."""

    blocks: GeometryBlocks
    """The affected blocks and their +1 neighbours."""
    affected: np.ndarray
    """[B] int64 sorted packed keys of the affected blocks."""
    weight_threshold: float
    block_resolution: int
    full: bool
    generation: int

    def run(self) -> MeshPatch:
        """Mesh the copied blocks and keep the triangles of the affected ones."""
        blocks = self.blocks
        n = blocks.block_keys.shape[0]
        empty = MeshPatch(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                          np.zeros((0, 3), np.int64), np.zeros(0, np.int64), self.affected,
                          self.full, self.generation)
        if n == 0:
            return empty
        vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32,) * 3,
            attr_channels=(1, 1, 3), voxel_size=blocks.voxel_size_m,
            block_resolution=self.block_resolution, block_count=n, device=_CPU)
        buf, _ = vbg.hashmap().activate(o3c.Tensor(np.ascontiguousarray(blocks.block_keys)))
        bufs = buf.numpy().astype(np.int64)
        vbg.attribute("tsdf").numpy()[bufs] = blocks.tsdf
        vbg.attribute("weight").numpy()[bufs] = blocks.weight
        vbg.attribute("color").numpy()[bufs] = blocks.color
        mesh = vbg.extract_triangle_mesh(self.weight_threshold)
        vertices = mesh.vertex.positions.numpy().astype(np.float32).reshape(-1, 3)
        if vertices.shape[0] == 0:
            return empty
        triangles = mesh.triangle.indices.numpy().astype(np.int64).reshape(-1, 3)
        colors = np.clip(mesh.vertex.colors.numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
        # The triangle's centroid lies inside its cell (voxel centres sit at integer multiples
        # of the voxel size), so its floor is the cell's voxel.
        cell = np.floor(vertices[triangles].astype(np.float64).mean(axis=1)
                        / blocks.voxel_size_m).astype(np.int64)
        tri_blocks = pack_block_keys(cell >> (self.block_resolution.bit_length() - 1))
        keep = _isin_sorted(tri_blocks, self.affected)
        return MeshPatch(vertices, colors.reshape(-1, 3), triangles[keep], tri_blocks[keep],
                         self.affected, self.full, self.generation)


class BlockMesher:
    """The grid's mesh, updated block by block (see module docstring)."""

    def __init__(self, weight_threshold: float, block_resolution: int):
        self.weight_threshold = float(weight_threshold)
        self.block_resolution = int(block_resolution)
        self.mesh = ExtractedMesh.empty()
        self.triangle_blocks = np.zeros(0, np.int64)
        """[F] packed block key of each triangle of :attr:`mesh`."""
        self.initialized = False
        """False until the first update (which meshes every block)."""
        self._generation = 0

    def plan(self, grid: PanopticVoxelGrid, changed_block_keys: np.ndarray | None) -> MeshJob:
        """Copy what re-meshing needs from ``grid``, which must not change during the call.

        Args:
            grid: the grid.
            changed_block_keys: [B, 3] blocks whose voxels changed since the last update, or
                None to re-mesh every block (also done on the first update).
        """
        allocated = grid.block_index().packed_keys
        full = changed_block_keys is None or not self.initialized
        if full:
            affected = allocated
            source = grid.block_keys()
        else:
            changed = np.asarray(changed_block_keys, np.int64).reshape(-1, 3)
            near = (changed[:, None, :] + _LOWER[None]).reshape(-1, 3)
            affected = np.unique(pack_block_keys(near))
            affected = affected[_isin_sorted(affected, allocated)]
            upper = (unpack_block_keys(affected).astype(np.int64)[:, None, :]
                     - _LOWER[None]).reshape(-1, 3)
            source = unpack_block_keys(np.unique(pack_block_keys(upper)))
        return MeshJob(blocks=grid.copy_geometry(source), affected=affected,
                       weight_threshold=self.weight_threshold,
                       block_resolution=self.block_resolution, full=full,
                       generation=self._generation)

    def apply(self, patch: MeshPatch) -> MeshDelta:
        """Replace the triangles of the affected blocks with the patch's; returns the new mesh.

        Raises:
            ValueError: the patch was planned against another state (updates out of order).
        """
        if patch.generation != self._generation:
            raise ValueError(f"mesh patch of generation {patch.generation} applied to "
                             f"generation {self._generation}")
        old = self.mesh
        keep = ~_isin_sorted(self.triangle_blocks, patch.affected) if not patch.full \
            else np.zeros(self.triangle_blocks.size, bool)
        kept_tris = old.triangles[keep].astype(np.int64)
        used_old = np.unique(kept_tris)
        used_new = np.unique(patch.triangles)
        positions = np.concatenate([old.vertices_m[used_old], patch.vertices_m[used_new]])
        colors = np.concatenate([old.colors[used_old], patch.colors[used_new]])
        source = np.concatenate([used_old, np.full(used_new.size, -1, np.int64)])
        # Old candidates first among equal positions: the welded vertex keeps its old index.
        rank = np.r_[np.zeros(used_old.size, np.int8), np.ones(used_new.size, np.int8)]
        order = np.lexsort((rank, positions[:, 2], positions[:, 1], positions[:, 0]))
        p = positions[order]
        first = np.r_[True, np.any(p[1:] != p[:-1], axis=1)][:p.shape[0]]
        final_of_sorted = np.cumsum(first) - 1
        final_of_candidate = np.empty(order.size, np.int64)
        final_of_candidate[order] = final_of_sorted
        old_map = np.full(old.vertices_m.shape[0], -1, np.int64)
        old_map[used_old] = final_of_candidate[:used_old.size]
        new_map = np.full(patch.vertices_m.shape[0], -1, np.int64)
        new_map[used_new] = final_of_candidate[used_old.size:]
        triangles = np.concatenate([old_map[kept_tris], new_map[patch.triangles]])
        blocks = np.concatenate([self.triangle_blocks[keep], patch.triangle_blocks])
        triangles, blocks = _canonical_triangles(triangles, blocks)
        self.mesh = ExtractedMesh(p[first], triangles.astype(np.int32), colors[order][first])
        self.triangle_blocks = blocks
        self.initialized = True
        self._generation += 1
        return MeshDelta(self.mesh, source[order][first], patch.affected, patch.full)


def _canonical_triangles(triangles: np.ndarray, blocks: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate each triangle to start at its smallest index, then sort (blocks alongside)."""
    if triangles.shape[0] == 0:
        return triangles.reshape(0, 3), blocks
    first = np.argmin(triangles, axis=1)
    triangles = np.take_along_axis(triangles, (first[:, None] + np.arange(3)[None]) % 3, axis=1)
    order = np.lexsort((triangles[:, 2], triangles[:, 1], triangles[:, 0]))
    return triangles[order], blocks[order]


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """[N] bool: which of ``values`` occur in the sorted array ``sorted_keys``."""
    if sorted_keys.size == 0:
        return np.zeros(values.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), sorted_keys.size - 1)
    return sorted_keys[pos] == values
