"""Geometry summaries of map instances from their surface voxels: voxel count, centroid, PCA
oriented box and mean fused colour.

Owns: :func:`summarize_groups`. Does not own: which voxel belongs to which instance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.types import OrientedBox


@dataclass
class GroupGeometry:
    """Geometry of one group of voxels."""

    num_voxels: int
    centroid_m: np.ndarray
    """[3] mean voxel centre, world frame."""
    bbox: OrientedBox
    """Box along the principal axes of the voxel centres, grown by one voxel."""
    mean_color_rgb: np.ndarray
    """[3] uint8 mean colour."""


def oriented_box(points_m: np.ndarray, padding_m: float) -> OrientedBox:
    """PCA box of points [N, 3] (right-handed axes, largest spread first), padded per side."""
    center = points_m.mean(axis=0)
    if points_m.shape[0] < 3:
        R = np.eye(3)  # noqa: N806
    else:
        _, vecs = np.linalg.eigh(np.cov((points_m - center).T))
        R = vecs[:, ::-1].copy()  # noqa: N806
        if np.linalg.det(R) < 0:
            R[:, 2] = -R[:, 2]
    local = (points_m - center) @ R
    lo, hi = local.min(axis=0), local.max(axis=0)
    return OrientedBox(center_m=center + R @ ((lo + hi) / 2.0), R_world_box=R,
                       size_m=(hi - lo) + 2.0 * padding_m)


def summarize_groups(group_ids: np.ndarray, positions_m: np.ndarray, colors: np.ndarray,
                     voxel_size_m: float) -> dict[int, GroupGeometry]:
    """Summaries per distinct positive id.

    Args:
        group_ids: [M] int ids (entries <= 0 are ignored).
        positions_m: [M, 3] voxel centres.
        colors: [M, 3] colours, 0-255.
        voxel_size_m: voxel size (boxes are padded by half a voxel per side).
    """
    keep = group_ids > 0
    ids, pos, col = group_ids[keep], positions_m[keep], colors[keep]
    if ids.size == 0:
        return {}
    order = np.argsort(ids, kind="stable")
    ids, pos, col = ids[order], pos[order], col[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    out: dict[int, GroupGeometry] = {}
    for s, e in zip(starts, ends):
        points = pos[s:e]
        out[int(ids[s])] = GroupGeometry(
            num_voxels=int(e - s), centroid_m=points.mean(axis=0),
            bbox=oriented_box(points, voxel_size_m / 2.0),
            mean_color_rgb=np.clip(col[s:e].mean(axis=0) + 0.5, 0, 255).astype(np.uint8))
    return out
