"""Panoptic labels of points (mesh vertices, queried points) from a snapshot of the voxel labels.

A point takes the support-weighted majority of the panoptic keys of the 8 voxels around it
(trilinear weights: a mesh vertex lies on a voxel edge, so only that edge's 2 voxels count), else
of the voxels within 2 voxels; mesh vertices still unlabelled then copy the nearest labelled
vertex within a radius. A panoptic key is ``label channel << 32 | instance id`` (0 = nothing).

Everything here reads a :class:`VoxelKeyTable`, a snapshot of one map version, so labelling can
run while the map goes on integrating.

Owns: :class:`VoxelKeyTable`, :func:`point_keys`, :func:`vertex_keys`,
:func:`fill_from_neighbours`, :func:`changed_block_keys`.
Does not own: how a voxel's key is decided (``instant_map``) or the mesh (``core/tsdf``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from panoptic_mapper.core.tsdf.grid import BlockIndex, neighbourhood

_POINT_CHUNK = 65536
"""Points voted at once with the 8 voxels of their cell (fewer with larger neighbourhoods)."""
_ON_EDGE_TOLERANCE = 1e-3
"""A point is on a voxel edge when two of its coordinates are this close to voxel centres
(in voxels); marching-cubes vertices are, up to float rounding."""
_MIN_WEIGHT = 1e-4
"""Voxels of smaller interpolation weight do not vote (as in ``grid.neighbourhood``)."""


@dataclass(frozen=True)
class VoxelKeyTable:
    """Panoptic key and support of every voxel slot of a grid at one map version."""

    keys: np.ndarray
    """[capacity * R^3] int64 panoptic key per flat voxel index (0 = unlabelled)."""
    support: np.ndarray
    """[capacity * R^3] float32 label mass of labelled voxels (0 elsewhere)."""
    blocks: BlockIndex
    """The block -> buffer mapping the flat indices refer to."""
    voxel_size_m: float


def point_keys(table: VoxelKeyTable, points_m: np.ndarray) -> np.ndarray:
    """[N] panoptic key at world points [N, 3]: the vote of the voxels of the point's cell, else
    of the voxels within 2 voxels (0 where none holds a label)."""
    keys = _chunked_vote(table, points_m, 1)
    missing = np.flatnonzero(keys == 0)
    keys[missing] = _chunked_vote(table, points_m[missing], 2)
    return keys


def _chunked_vote(table: VoxelKeyTable, points_m: np.ndarray, radius_voxels: int
                  ) -> np.ndarray:
    """:func:`_neighbourhood_vote` in chunks of bounded memory."""
    n = points_m.shape[0]
    keys = np.zeros(n, np.int64)
    chunk = _POINT_CHUNK // (2 * radius_voxels) ** 3 * 8
    for start in range(0, n, chunk):
        keys[start:start + chunk] = _neighbourhood_vote(table, points_m[start:start + chunk],
                                                        radius_voxels)
    return keys


def vertex_keys(table: VoxelKeyTable, vertices_m: np.ndarray) -> np.ndarray:
    """[V] panoptic key of mesh vertices [V, 3]: what :func:`point_keys` gives, computed faster
    for points on a voxel edge (every marching-cubes vertex), whose cell vote only involves the
    edge's two voxels (weights ``1 - t`` and ``t``; the lower voxel wins a tie, as in the
    general vote)."""
    grid = np.asarray(vertices_m, np.float64).reshape(-1, 3) / table.voxel_size_m
    nearest = np.rint(grid)
    off = np.abs(grid - nearest)
    axis = np.argmax(off, axis=1)
    rows = np.arange(grid.shape[0])
    off[rows, axis] = 0.0
    on_edge = off.max(axis=1, initial=0.0) < _ON_EDGE_TOLERANCE
    keys = np.zeros(grid.shape[0], np.int64)
    edge = np.flatnonzero(on_edge)
    if edge.size:
        lower = nearest[edge].astype(np.int64)
        along = grid[edge, axis[edge]]
        lower[np.arange(edge.size), axis[edge]] = np.floor(along).astype(np.int64)
        t = (along - np.floor(along)).astype(np.float32)
        upper = lower.copy()
        upper[np.arange(edge.size), axis[edge]] += 1
        flat = table.blocks.flat_indices(np.concatenate([lower, upper])).reshape(2, -1)
        weight = np.stack([1.0 - t, t])
        flat = np.where(weight > _MIN_WEIGHT, flat, -1)
        safe = np.where(flat >= 0, flat, 0)
        key = np.where(flat >= 0, table.keys[safe], 0)
        score = np.where(key != 0, table.support[safe] * weight, 0.0)
        pick = np.where(score[0] >= score[1], key[0], key[1])
        keys[edge] = np.where((score[0] > 0) | (score[1] > 0), pick, 0)
    off_edge = np.flatnonzero(~on_edge)
    keys[off_edge] = point_keys(table, vertices_m[off_edge])
    unlabelled = np.flatnonzero(on_edge & (keys == 0))
    keys[unlabelled] = _chunked_vote(table, vertices_m[unlabelled], 2)
    return keys


def _neighbourhood_vote(table: VoxelKeyTable, points_m: np.ndarray, radius_voxels: int
                        ) -> np.ndarray:
    """[n] panoptic key with the largest support-weighted share of the voxels around each
    point (0 where none of them holds a label)."""
    flat, w = neighbourhood(points_m, radius_voxels, table.voxel_size_m,
                            table.blocks.flat_indices)
    safe = np.where(flat >= 0, flat, 0)
    key = np.where(flat >= 0, table.keys[safe], 0)  # [n, K]
    score = np.where(key != 0, table.support[safe] * w, 0.0).astype(np.float32)
    # Most points see one key only: take it without voting.
    big = np.iinfo(np.int64).max
    lowest = np.where(score > 0, key, big).min(axis=1)
    highest = np.where(score > 0, key, -1).max(axis=1)
    result = np.where(lowest == highest, lowest, 0)
    mixed = np.flatnonzero((lowest != highest) & (highest >= 0))
    if mixed.size == 0:
        return result
    key, score, rows = key[mixed], score[mixed], np.arange(mixed.size)
    if key.shape[1] <= 8:
        total = ((key[:, :, None] == key[:, None, :]) * score[:, None, :]).sum(axis=2)
        best = np.argmax(total, axis=1)
        result[mixed] = np.where(total[rows, best] > 0, key[rows, best], 0)
        return result
    # Larger neighbourhoods: sort each row by key and sum the scores of equal-key runs.
    order = np.argsort(key, axis=1)
    key = np.take_along_axis(key, order, axis=1)
    score = np.take_along_axis(score, order, axis=1)
    run_start = np.ones(key.shape, bool)
    run_start[:, 1:] = key[:, 1:] != key[:, :-1]
    run_id = np.cumsum(run_start, axis=1) - 1 + rows[:, None] * key.shape[1]
    totals = np.bincount(run_id.ravel(), weights=score.ravel(), minlength=key.size)
    per_entry = totals[run_id]
    best = np.argmax(per_entry, axis=1)
    result[mixed] = np.where(per_entry[rows, best] > 0, key[rows, best], 0)
    return result


def fill_from_neighbours(vertices_m: np.ndarray, keys: np.ndarray, radius_m: float,
                         targets: np.ndarray | None = None) -> np.ndarray:
    """Keys with unlabelled vertices given the key of the nearest labelled vertex within
    ``radius_m`` (a copy; ``keys`` is not changed).

    Args:
        vertices_m: [V, 3] vertex positions.
        keys: [V] panoptic keys (0 = unlabelled).
        radius_m: search radius (<= 0 fills nothing).
        targets: [V] bool, the only vertices that may be filled (default: all).
    """
    out = keys.copy()
    empty = keys == 0
    if targets is not None:
        empty &= targets
    if radius_m <= 0 or not empty.any() or not (keys != 0).any():
        return out
    labelled = np.flatnonzero(keys != 0)
    tree = cKDTree(vertices_m[labelled])
    dist, nearest = tree.query(vertices_m[empty], distance_upper_bound=radius_m)
    found = np.isfinite(dist)
    out[np.flatnonzero(empty)[found]] = keys[labelled[nearest[found]]]
    return out


def changed_block_keys(before: VoxelKeyTable, after: VoxelKeyTable) -> np.ndarray | None:
    """[B] sorted packed keys of the blocks holding a voxel whose key or support differs
    between two tables of the same grid, or None when they cannot be compared (the grid grew
    and its buffers moved)."""
    if (before.blocks.capacity != after.blocks.capacity
            or before.keys.shape != after.keys.shape):
        return None
    differs = np.flatnonzero((before.keys != after.keys) | (before.support != after.support))
    if differs.size == 0:
        return np.zeros(0, np.int64)
    voxels_per_block = after.blocks.block_resolution ** 3
    buffers = np.unique(differs // voxels_per_block)
    return np.unique(after.blocks.block_keys_of_flat(buffers * voxels_per_block))
