"""Pure-PyTorch twins of the field's fast-path operations (the tiny-cuda-nn hash grid).

The reference keeps tiny-cuda-nn's parameter layout (level offsets, dense levels, the prime hash
and the ``scale * x + 0.5`` cell convention), so a table trained by either implementation loads
into the other and a test can compare them entry for entry.

Owns: :class:`HashGridLayout` and :func:`hash_grid_encode`.
Does not own: the ``nn.Module`` wrappers and implementation choice (``encodings.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HASH_PRIMES = (1, 2654435761, 805459861)
"""Instant-NGP / tiny-cuda-nn coherent prime hash factors for x, y, z."""


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level geometry of a 3D hash grid, computed exactly as tiny-cuda-nn does."""

    scales: tuple[float, ...]
    """Per level: ``base * per_level_scale**level - 1`` (positions are ``scale * x + 0.5``)."""
    resolutions: tuple[int, ...]
    """Per level: grid vertices along an axis, ``ceil(scale) + 1``."""
    sizes: tuple[int, ...]
    """Per level: table entries, ``min(next_multiple(res**3, 8), 2**log2_hashmap_size)``."""
    offsets: tuple[int, ...]
    """Per level: first table row of the level."""
    dense: tuple[bool, ...]
    """Per level: True when ``res**3`` fits the level (direct indexing, no hash)."""

    @property
    def num_levels(self) -> int:
        return len(self.scales)

    @property
    def total_entries(self) -> int:
        """Rows of the whole table (all levels)."""
        return self.offsets[-1] + self.sizes[-1]

    @classmethod
    def create(cls, num_levels: int, log2_hashmap_size: int, base_resolution: int,
               max_resolution: int) -> "HashGridLayout":
        """Layout for a grid whose resolution grows geometrically from base to max."""
        if num_levels > 1:
            per_level_scale = math.exp((math.log(max_resolution) - math.log(base_resolution))
                                       / (num_levels - 1))
        else:
            per_level_scale = 1.0
        log2_scale = np.log2(np.float32(per_level_scale))
        scales, resolutions, sizes, offsets, dense = [], [], [], [], []
        offset = 0
        max_entries = 1 << log2_hashmap_size
        for level in range(num_levels):
            scale = float(np.float32(np.exp2(np.float32(level) * log2_scale))
                          * np.float32(base_resolution) - np.float32(1.0))
            resolution = int(math.ceil(scale)) + 1
            dense_entries = resolution ** 3
            size = min(-(-dense_entries // 8) * 8, max_entries)
            scales.append(scale)
            resolutions.append(resolution)
            sizes.append(size)
            offsets.append(offset)
            dense.append(dense_entries <= size)
            offset += size
        return cls(tuple(scales), tuple(resolutions), tuple(sizes), tuple(offsets), tuple(dense))

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The layout as tensors for :func:`hash_grid_encode`."""
        return {
            "scales": torch.tensor(self.scales, dtype=torch.float32, device=device),
            "resolutions": torch.tensor(self.resolutions, dtype=torch.int64, device=device),
            "sizes": torch.tensor(self.sizes, dtype=torch.int64, device=device),
            "offsets": torch.tensor(self.offsets, dtype=torch.int64, device=device),
            "dense": torch.tensor(self.dense, dtype=torch.bool, device=device),
        }


def hash_grid_encode(points01: torch.Tensor, table: torch.Tensor, scales: torch.Tensor,
                     resolutions: torch.Tensor, sizes: torch.Tensor, offsets: torch.Tensor,
                     dense: torch.Tensor, smoothstep: bool = False) -> torch.Tensor:
    """Encode points with a multiresolution hash grid.

    Args:
        points01: [N, 3] positions in the unit cube (clamp before calling).
        table: [P, F] feature table of all levels (rows ``offsets[l] .. offsets[l] + sizes[l]``).
        scales, resolutions, sizes, offsets, dense: [L] per-level layout
            (:meth:`HashGridLayout.tensors`); dense levels come first (tiny-cuda-nn's levels
            grow, so once a level is hashed every finer one is too), hashed sizes are powers of 2.
        smoothstep: interpolate with ``w = t^2 (3 - 2t)`` instead of ``w = t``.

    Returns:
        [N, L * F] features, level-major (level 0's F channels first), differentiable with
        respect to ``table`` and ``points01``.
    """
    num_points = points01.shape[0]
    num_levels = scales.shape[0]
    num_features = table.shape[1]
    pos = points01[:, None, :] * scales[None, :, None] + 0.5  # [N, L, 3]
    cell = torch.floor(pos)
    t = pos - cell
    if smoothstep:
        t = t * t * (3.0 - 2.0 * t)
    cell = cell.long()
    # Per axis the two corner coordinates and weights; the 8 corners are their outer products,
    # which keeps every full-size [N, L, 8] tensor to one or two operations.
    corner = torch.stack([cell, cell + 1], dim=-1)  # [N, L, 3, 2]
    axis_weight = torch.stack([1.0 - t, t], dim=-1)  # [N, L, 3, 2]
    weight = (axis_weight[:, :, 0, :, None, None] * axis_weight[:, :, 1, None, :, None]
              * axis_weight[:, :, 2, None, None, :]).reshape(num_points, num_levels, 8)
    num_dense = int(dense.sum())
    parts = []
    if num_dense:
        res = resolutions[:num_dense].view(1, num_dense, 1)
        c = corner[:, :num_dense]
        ix, iy, iz = c[:, :, 0], c[:, :, 1] * res, c[:, :, 2] * (res * res)
        index = (ix[:, :, :, None, None] + iy[:, :, None, :, None]
                 + iz[:, :, None, None, :]).reshape(num_points, num_dense, 8)
        parts.append(index % sizes[:num_dense].view(1, num_dense, 1)
                     + offsets[:num_dense].view(1, num_dense, 1))
    if num_dense < num_levels:
        num_hashed = num_levels - num_dense
        c = corner[:, num_dense:]
        hx = c[:, :, 0] * HASH_PRIMES[0]
        hy = c[:, :, 1] * HASH_PRIMES[1]
        hz = c[:, :, 2] * HASH_PRIMES[2]
        index = (hx[:, :, :, None, None] ^ hy[:, :, None, :, None]
                 ^ hz[:, :, None, None, :]).reshape(num_points, num_hashed, 8)
        # (h mod 2^32) mod size == h & (size - 1) for a power-of-two size.
        parts.append((index & (sizes[num_dense:].view(1, num_hashed, 1) - 1))
                     + offsets[num_dense:].view(1, num_hashed, 1))
    index = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    # index_select's backward is an index_add, much faster on a CPU than embedding's.
    features = table.index_select(0, index.reshape(-1)).view(num_points * num_levels, 8,
                                                             num_features)
    encoded = torch.bmm(weight.view(num_points * num_levels, 1, 8), features)
    return encoded.view(num_points, num_levels * num_features)
