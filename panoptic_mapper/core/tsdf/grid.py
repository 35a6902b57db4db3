"""A colour TSDF on Open3D's ``VoxelBlockGrid`` with per-voxel panoptic attributes.

Owns: the sparse voxel-block grid (geometry, colour, label evidence, instance slot), block
preallocation and zero-initialisation, point -> voxel lookups (on the live grid or on a
:class:`BlockIndex` snapshot), copies of blocks' geometry for meshing, and the lossless state
export/import of the grid.
Does not own: marching cubes (``core/tsdf/block_mesher.py``), what the label and instance
attributes mean or how they are voted (``core/labels/voting.py``, ``core/tracking``), nor any
map-level policy.

Layout (checked against Open3D 0.20): voxel ``(x, y, z)`` of the block with hash-map buffer index
``b`` sits at flat index ``b * R^3 + x + R * y + R^2 * z`` (``R`` = block resolution) and its
centre at ``(block_key * R + (x, y, z)) * voxel_size``; so the voxel nearest to a point ``p`` is
``round(p / voxel_size)``. The stored TSDF is ``sdf / trunc`` clamped to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import open3d as o3d
import open3d.core as o3c

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.types import CameraIntrinsics

_CPU = o3c.Device("CPU:0")
_PACK_OFFSET = 1 << 20


@dataclass
class TsdfConfig(ConfigBase):
    """Geometry of the voxel grid and of TSDF integration."""

    voxel_size_m: float = 0.02
    """Voxel edge length, metres."""
    block_resolution: int = 8
    """Voxels per block edge (8 is 3-4x faster than 16 on CPU)."""
    block_count: int = 8000
    """Blocks allocated up front (a 2 cm block is a 16 cm cube; about 55 kB with the default
    registry's 19 label channels, so 8000 blocks take 440 MB). A 6 x 5.5 m room needs about
    5000. Growing past 7/8 of it rehashes the whole grid: integration stalls (2 s at 4000
    blocks on a 2-core CPU) and memory doubles for a moment; set it for the largest space you
    map."""
    trunc_voxels: float = 4.0
    """TSDF truncation distance, in voxels."""
    depth_min_m: float = 0.1
    """Depth below this is treated as invalid, metres."""
    depth_max_m: float = 4.0
    """Depth above this is not integrated, metres."""

    def validate(self) -> None:
        require(0.001 <= self.voxel_size_m <= 1.0, "voxel_size_m", self.voxel_size_m,
                "must be in [0.001, 1] m")
        require(self.block_resolution in (4, 8, 16), "block_resolution", self.block_resolution,
                "must be 4, 8 or 16")
        require(self.block_count >= 16, "block_count", self.block_count, "must be >= 16")
        require(1.0 <= self.trunc_voxels <= 32.0, "trunc_voxels", self.trunc_voxels,
                "must be in [1, 32] voxels")
        require(self.depth_min_m >= 0.0, "depth_min_m", self.depth_min_m, "must be >= 0 m")
        require(self.depth_max_m > self.depth_min_m, "depth_max_m", self.depth_max_m,
                "must be > depth_min_m")

    @property
    def trunc_m(self) -> float:
        """Truncation distance, metres."""
        return self.trunc_voxels * self.voxel_size_m


def pack_block_keys(block_keys: np.ndarray) -> np.ndarray:
    """[N] int64 scalar keys of [N, 3] integer block coordinates (each in [-2^20, 2^20)); the
    order of the packed keys is the lexicographic (x, y, z) order of the coordinates."""
    keys = np.asarray(block_keys, np.int64).reshape(-1, 3) + _PACK_OFFSET
    return (keys[:, 0] << 42) | (keys[:, 1] << 21) | keys[:, 2]


def unpack_block_keys(packed: np.ndarray) -> np.ndarray:
    """[N, 3] int32 block coordinates of keys from :func:`pack_block_keys`."""
    packed = np.asarray(packed, np.int64)
    mask = (1 << 21) - 1
    return (np.stack([packed >> 42, (packed >> 21) & mask, packed & mask], axis=1)
            - _PACK_OFFSET).astype(np.int32)


@dataclass(frozen=True)
class BlockIndex:
    """Block coordinates -> attribute buffer index of a grid at one moment.

    A snapshot: lookups through it stay consistent with attribute arrays copied at the same
    moment while the live grid goes on allocating blocks (and even after it grows).
    """

    packed_keys: np.ndarray
    """[B] int64 sorted packed block keys (:func:`pack_block_keys`)."""
    buffers: np.ndarray
    """[B] int64 buffer index of each block."""
    block_resolution: int
    capacity: int
    """Blocks the grid could hold when the snapshot was taken."""

    def flat_indices(self, voxel_coords: np.ndarray) -> np.ndarray:
        """Flat attribute index of integer voxel coordinates [N, 3]; -1 where not allocated."""
        coords = np.asarray(voxel_coords, np.int64).reshape(-1, 3)
        if coords.shape[0] == 0 or self.packed_keys.size == 0:
            return np.full(coords.shape[0], -1, np.int64)
        shift = self.block_resolution.bit_length() - 1
        packed = pack_block_keys(coords >> shift)
        pos = np.minimum(np.searchsorted(self.packed_keys, packed), self.packed_keys.size - 1)
        local = coords & (self.block_resolution - 1)
        flat = (self.buffers[pos] << (3 * shift)) + local[:, 0] + (local[:, 1] << shift) \
            + (local[:, 2] << (2 * shift))
        flat[self.packed_keys[pos] != packed] = -1
        return flat

    def block_keys_of_flat(self, flat: np.ndarray) -> np.ndarray:
        """[N] packed keys of the blocks holding voxels given by flat index."""
        order = np.argsort(self.buffers)
        buffers = self.buffers[order]
        block = np.asarray(flat, np.int64) >> (3 * (self.block_resolution.bit_length() - 1))
        pos = np.minimum(np.searchsorted(buffers, block), max(buffers.size - 1, 0))
        if buffers.size == 0 or np.any(buffers[pos] != block):
            raise ValueError("flat index of a block that the snapshot does not hold")
        return self.packed_keys[order][pos]


@dataclass
class GeometryBlocks:
    """A copy of the TSDF, weight and colour of some blocks (what marching cubes reads)."""

    block_keys: np.ndarray
    """[B, 3] int32 block coordinates."""
    tsdf: np.ndarray
    """[B, R, R, R, 1] float32."""
    weight: np.ndarray
    """[B, R, R, R, 1] float32."""
    color: np.ndarray
    """[B, R, R, R, 3] float32, 0-1."""
    voxel_size_m: float


@dataclass
class GridState:
    """The grid's full content as plain arrays (what ``save`` writes)."""

    block_keys: np.ndarray
    """[B, 3] int32 block coordinates, sorted lexicographically."""
    attributes: dict[str, np.ndarray]
    """Attribute name -> [B, R, R, R, C] array of those blocks."""


class PanopticVoxelGrid:
    """Sparse TSDF voxel grid with extra per-voxel attributes kept in the same hash map.

    Attributes (all per voxel): ``tsdf`` (f32, sdf/trunc), ``weight`` (f32, integration count),
    ``color`` (f32 RGB, 0-255), ``label_evidence`` (f32 x ``num_label_channels``),
    ``label_mass`` (f32, the sum of ``label_evidence``, kept separately so that finding the
    labelled voxels reads 4 bytes per voxel), ``instance_id`` (i32) and ``instance_weight``
    (f32). Views returned by the accessors are
    zero-copy numpy arrays of shape ``[capacity * R^3, C]`` (or ``[capacity * R^3]``); fetch them
    again after every integration, because growing the grid reallocates the buffers.

    Not thread-safe: the owning map serialises access.
    """

    GEOMETRY_ATTRIBUTES = ("tsdf", "weight", "color")
    PANOPTIC_ATTRIBUTES = ("label_evidence", "label_mass", "instance_id", "instance_weight")

    def __init__(self, config: TsdfConfig, num_label_channels: int):
        self.config = config
        self.num_label_channels = int(num_label_channels)
        self._res = config.block_resolution
        self._vpb = self._res ** 3
        self._vbg = self._new_vbg()

    def _new_vbg(self) -> o3d.t.geometry.VoxelBlockGrid:
        return o3d.t.geometry.VoxelBlockGrid(
            attr_names=self.GEOMETRY_ATTRIBUTES + self.PANOPTIC_ATTRIBUTES,
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32, o3c.float32, o3c.float32,
                         o3c.int32, o3c.float32),
            attr_channels=(1, 1, 3, self.num_label_channels, 1, 1, 1),
            voxel_size=self.config.voxel_size_m, block_resolution=self._res,
            block_count=self.config.block_count, device=_CPU)

    # ---- views ---------------------------------------------------------------------------------
    def attribute(self, name: str) -> np.ndarray:
        """Zero-copy [capacity * R^3, C] view of an attribute (C dropped when 1)."""
        arr = self._vbg.attribute(name).numpy()
        channels = arr.shape[-1]
        flat = arr.reshape(-1, channels)
        return flat[:, 0] if channels == 1 else flat

    @property
    def voxels_per_block(self) -> int:
        return self._vpb

    @property
    def num_blocks(self) -> int:
        """Number of allocated (active) blocks."""
        return int(self._vbg.hashmap().size())

    @property
    def capacity(self) -> int:
        """Blocks the grid can hold before it grows."""
        return int(self._vbg.hashmap().capacity())

    # ---- integration -----------------------------------------------------------------------
    def integrate(self, depth_m: np.ndarray, rgb: np.ndarray, intrinsics: CameraIntrinsics,
                  T_world_cam: np.ndarray) -> np.ndarray:  # noqa: N803
        """Fuse one depth + colour image; returns the [B, 3] int32 block keys it touched.

        ``depth_m`` must already be cleaned (0 outside the valid range). Newly allocated blocks
        are zeroed first: Open3D hands out buffers without clearing them.
        """
        K = o3c.Tensor(intrinsics.K)
        extrinsic = o3c.Tensor(np.linalg.inv(T_world_cam))
        depth = o3d.t.geometry.Image(o3c.Tensor.from_numpy(np.ascontiguousarray(depth_m)))
        color = o3d.t.geometry.Image(o3c.Tensor.from_numpy(
            np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1.0 / 255.0)))
        cfg = self.config
        keys = self._vbg.compute_unique_block_coordinates(
            depth, K, extrinsic, 1.0, cfg.depth_max_m, cfg.trunc_voxels)
        self._activate(keys)
        self._vbg.integrate(keys, depth, color, K, K, extrinsic, 1.0, cfg.depth_max_m,
                            cfg.trunc_voxels)
        return keys.numpy()

    def allocate_blocks(self, block_keys: np.ndarray) -> np.ndarray:
        """Activate blocks [B, 3] (duplicates allowed) and zero the new ones; returns buffer
        indices [B] int64."""
        keys = np.ascontiguousarray(np.asarray(block_keys, np.int32).reshape(-1, 3))
        if keys.shape[0] == 0:
            return np.zeros(0, np.int64)
        keys = o3c.Tensor(np.unique(keys, axis=0))
        self._activate(keys)
        found, _ = self._vbg.hashmap().find(keys)
        return found.numpy().astype(np.int64)

    def _activate(self, unique_keys: o3c.Tensor) -> None:
        """Activate distinct block keys and zero every attribute of the new blocks."""
        buf, is_new = self._vbg.hashmap().activate(unique_keys)
        is_new = is_new.numpy()
        if is_new.any():
            new_bufs = buf.numpy()[is_new].astype(np.int64)
            for name in self.GEOMETRY_ATTRIBUTES + self.PANOPTIC_ATTRIBUTES:
                self._vbg.attribute(name).numpy()[new_bufs] = 0

    # ---- lookups ---------------------------------------------------------------------------
    def voxel_coords(self, points_m: np.ndarray) -> np.ndarray:
        """[N, 3] int64 integer coordinates of the voxels nearest to world points [N, 3]."""
        return np.floor(np.asarray(points_m, np.float64) / self.config.voxel_size_m
                        + 0.5).astype(np.int64)

    def flat_indices(self, voxel_coords: np.ndarray) -> np.ndarray:
        """Flat attribute index of integer voxel coordinates [N, 3]; -1 where not allocated."""
        coords = np.asarray(voxel_coords, np.int64).reshape(-1, 3)
        if coords.shape[0] == 0:
            return np.zeros(0, np.int64)
        shift = self._res.bit_length() - 1  # the resolution is a power of two
        blocks = (coords >> shift).astype(np.int32)
        local = coords & (self._res - 1)
        buf, found = self._vbg.hashmap().find(o3c.Tensor(blocks))
        flat = buf.numpy().astype(np.int64) << (3 * shift)
        flat += local[:, 0] + (local[:, 1] << shift) + (local[:, 2] << (2 * shift))
        flat[~found.numpy()] = -1
        return flat

    def lookup(self, points_m: np.ndarray) -> np.ndarray:
        """Flat index of the voxel nearest to each world point [N, 3]; -1 where unallocated."""
        return self.flat_indices(self.voxel_coords(points_m))

    def neighbourhood(self, points_m: np.ndarray, radius_voxels: int = 1
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The voxels around each point with tent-filter weights (see :func:`neighbourhood`)."""
        return neighbourhood(points_m, radius_voxels, self.config.voxel_size_m,
                             self.flat_indices)

    def block_index(self) -> BlockIndex:
        """Snapshot of the block -> buffer mapping (see :class:`BlockIndex`)."""
        hashmap = self._vbg.hashmap()
        bufs = hashmap.active_buf_indices().numpy().astype(np.int64)
        packed = pack_block_keys(hashmap.key_tensor().numpy()[bufs])
        order = np.argsort(packed)
        return BlockIndex(packed_keys=packed[order], buffers=bufs[order],
                          block_resolution=self._res, capacity=self.capacity)

    def copy_geometry(self, block_keys: np.ndarray) -> GeometryBlocks:
        """Copy of the TSDF, weight and colour of the allocated blocks among ``block_keys``
        [B, 3] (the others are left out)."""
        keys = np.asarray(block_keys, np.int32).reshape(-1, 3)
        if keys.shape[0]:
            buf, found = self._vbg.hashmap().find(o3c.Tensor(np.ascontiguousarray(keys)))
            found = found.numpy().astype(bool)
            keys, bufs = keys[found], buf.numpy().astype(np.int64)[found]
        else:
            bufs = np.zeros(0, np.int64)
        return GeometryBlocks(
            block_keys=keys, tsdf=self._vbg.attribute("tsdf").numpy()[bufs],
            weight=self._vbg.attribute("weight").numpy()[bufs],
            color=self._vbg.attribute("color").numpy()[bufs],
            voxel_size_m=self.config.voxel_size_m)

    def block_keys(self) -> np.ndarray:
        """[B, 3] int32 coordinates of every allocated block, sorted (x, y, z)."""
        return unpack_block_keys(self.block_index().packed_keys)

    def active_flat_indices(self) -> np.ndarray:
        """[M] int64 flat indices of every voxel of every allocated block (block-major)."""
        bufs = np.sort(self._vbg.hashmap().active_buf_indices().numpy().astype(np.int64))
        return (bufs[:, None] * self._vpb + np.arange(self._vpb)[None]).reshape(-1)

    def voxel_positions(self, flat: np.ndarray) -> np.ndarray:
        """[N, 3] float64 world centres of voxels given by flat index (allocated ones only)."""
        flat = np.asarray(flat, np.int64)
        keys = self._vbg.hashmap().key_tensor().numpy().astype(np.int64)
        res = self._res
        buf, local = np.divmod(flat, self._vpb)
        xyz = np.stack([local % res, (local // res) % res, local // (res * res)], axis=1)
        return (keys[buf] * res + xyz) * self.config.voxel_size_m

    # ---- state -----------------------------------------------------------------------------
    def export_state(self) -> GridState:
        """Copy of every allocated block (keys sorted, attributes in the same order)."""
        hashmap = self._vbg.hashmap()
        bufs = hashmap.active_buf_indices().numpy().astype(np.int64)
        keys = hashmap.key_tensor().numpy()[bufs]
        order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
        bufs, keys = bufs[order], keys[order]
        attrs = {name: self._vbg.attribute(name).numpy()[bufs].copy()
                 for name in self.GEOMETRY_ATTRIBUTES + self.PANOPTIC_ATTRIBUTES}
        return GridState(block_keys=keys.astype(np.int32), attributes=attrs)

    def import_state(self, state: GridState) -> None:
        """Replace the content with ``state`` (from :meth:`export_state`)."""
        res = self._res
        for name in self.GEOMETRY_ATTRIBUTES + self.PANOPTIC_ATTRIBUTES:
            arr = state.attributes.get(name)
            expected = (state.block_keys.shape[0], res, res, res)
            if arr is None or tuple(arr.shape[:4]) != expected:
                raise ValueError(f"grid attribute '{name}' missing or not {expected}")
        self._vbg = self._new_vbg()
        bufs = self.allocate_blocks(state.block_keys)
        order = np.lexsort((state.block_keys[:, 2], state.block_keys[:, 1],
                            state.block_keys[:, 0]))
        for name in self.GEOMETRY_ATTRIBUTES + self.PANOPTIC_ATTRIBUTES:
            view = self._vbg.attribute(name).numpy()
            view[bufs] = state.attributes[name][order].reshape(view[bufs].shape)

    def reset(self) -> None:
        """Drop every block (the preallocated capacity is kept)."""
        self._vbg = self._new_vbg()


def neighbourhood(points_m: np.ndarray, radius_voxels: int, voxel_size_m: float,
                  flat_lookup: Callable[[np.ndarray], np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The voxels around each point with tent-filter weights.

    With ``radius_voxels`` r, the (2r)^3 voxels whose centres are less than r voxels away
    along every axis, weighted by prod_axis max(0, 1 - |offset| / r); r = 1 gives the 8 cell
    corners with trilinear weights. Voxels of (near) zero weight are not looked up: a mesh
    vertex lies on a voxel edge, so only that edge's two voxels count.

    Args:
        points_m: [N, 3] world points.
        radius_voxels: r.
        voxel_size_m: voxel edge length.
        flat_lookup: integer voxel coordinates [M, 3] -> flat index [M] (-1 = unallocated), of
            the live grid or of a :class:`BlockIndex` snapshot.

    Returns:
        ``(flat [N, K] int64 (-1 where unallocated or weightless), weights [N, K] float32)``.
    """
    r = int(radius_voxels)
    grid = np.asarray(points_m, np.float64).reshape(-1, 3) / voxel_size_m
    base = np.floor(grid)
    frac = (grid - base).astype(np.float32)  # [N, 3]
    steps = np.arange(-r + 1, r + 1)
    offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    # Per-axis tent weights [N, 3, 2r], then their outer product in offset order (x slowest).
    axis_w = np.clip(1.0 - np.abs(steps.astype(np.float32)[None, None, :]
                                  - frac[:, :, None]) / r, 0.0, None)
    w = (axis_w[:, 0, :, None, None] * axis_w[:, 1, None, :, None]
         * axis_w[:, 2, None, None, :]).reshape(grid.shape[0], -1)
    used = w > 1e-4
    rows, cols = np.nonzero(used)
    flat = np.full(w.shape, -1, np.int64)
    flat[rows, cols] = flat_lookup(base.astype(np.int64)[rows] + offsets[cols])
    return flat, np.where(used, w, 0.0).astype(np.float32)
