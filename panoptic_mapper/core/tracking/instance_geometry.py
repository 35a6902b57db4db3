"""Geometry and appearance summaries of map instances from their surface voxels: voxel count,
centroid, gravity-aligned box and a shading-robust representative colour.

Boxes turn only about the world up axis (:attr:`InstanceSummaryConfig.up_axis`): the footprint
is the minimum-area rectangle of the voxels projected on the horizontal plane, the height spans
their lowest to highest voxel. A full-3D (PCA) box of a partly seen object tilts, and a tilted
box reaches below the floor or above the table in its world extent, which breaks "on" / "under"
relations and looks wrong in RViz.

The colour is meant to name the object ("the red box"), so it should be the albedo of its main
material, not the plain mean of the fused voxel colours: shading darkens that mean (a white desk
fuses to grey) and a second material pulls it towards a mixture. Shading scales the three
channels of a colour alike, so the chromaticity ``rgb / (r + g + b)`` does not depend on it: the
dominant material is the mode of the voxels' chromaticities (a 2D histogram), its hue the median
chromaticity of the voxels near that mode, and its brightness a high percentile of their
brightness (the best-lit parts of a surface are the closest to its albedo).

Owns: :class:`InstanceSummaryConfig`, :func:`summarize_groups`, :func:`gravity_box`,
:func:`representative_color`. Does not own: which voxel belongs to which instance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.types import OrientedBox

_CHROMA_BINS = 32
"""Histogram bins per chromaticity axis (r and g, each in [0, 1])."""
_MODE_RADIUS_BINS = 1.5
"""Voxels within this many bins of the histogram's peak form the dominant material."""
_MIN_CHROMA_VALUE = 8.0
"""Voxels darker than this (max channel, 0-255) carry no usable chromaticity."""


@dataclass
class InstanceSummaryConfig(ConfigBase):
    """How instances are summarised for ``get_instances`` (boxes, colour)."""

    up_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World direction opposite to gravity (normalised internally); boxes turn only about it.
    Keep it equal to ``query.spatial.up_axis``. For 7-Scenes, the negated vector of the
    dataset's ``gravity-direction.txt``."""
    color_brightness_percentile: float = 95.0
    """Brightness of the representative colour: this percentile of the brightness (max
    channel) of the voxels of the dominant material, percent (50 = median; higher undoes more
    shading)."""

    def validate(self) -> None:
        up = np.asarray(self.up_axis, float)
        require(up.shape == (3,) and bool(np.all(np.isfinite(up)))
                and float(np.linalg.norm(up)) > 1e-6, "up_axis", self.up_axis,
                "must be a finite, non-zero 3-vector")
        require(0.0 <= self.color_brightness_percentile <= 100.0, "color_brightness_percentile",
                self.color_brightness_percentile, "must be in [0, 100] percent")


@dataclass
class GroupGeometry:
    """Geometry and colour of one group of voxels."""

    num_voxels: int
    centroid_m: np.ndarray
    """[3] mean voxel centre, world frame."""
    bbox: OrientedBox
    """Gravity-aligned box of the voxel centres (see :func:`gravity_box`), grown by half a voxel
    per side."""
    color_rgb: np.ndarray
    """[3] uint8 representative colour (see :func:`representative_color`)."""


def up_basis(up_axis: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """[3, 3] rotation whose columns are two horizontal unit axes and the unit up axis
    (right-handed); the first column is the world x axis projected on the horizontal plane
    when that is possible, else the world y axis."""
    up = np.asarray(up_axis, np.float64)
    up = up / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    h1 = helper - up * float(helper @ up)
    h1 /= np.linalg.norm(h1)
    return np.stack([h1, np.cross(up, h1), up], axis=1)


def min_area_rectangle(points_2d: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Smallest-area rectangle holding 2D points [N, 2].

    Returns:
        ``(angle, lo [2], hi [2])``: the rectangle's first side points along
        ``(cos angle, sin angle)``, with ``angle`` in [0, pi/2); ``lo`` / ``hi`` are the extents
        along that side and the one 90 degrees from it.
    """
    try:
        hull = points_2d[ConvexHull(points_2d).vertices]
    except (QhullError, ValueError):  # fewer than 3 points, or all on one line
        hull = points_2d
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    angles = np.concatenate([[0.0], angles])
    cos, sin = np.cos(angles), np.sin(angles)
    u = hull @ np.stack([cos, sin])  # [H, A]
    v = hull @ np.stack([-sin, cos])
    area = (u.max(axis=0) - u.min(axis=0)) * (v.max(axis=0) - v.min(axis=0))
    # Ties (e.g. an axis-aligned square) go to the smallest angle, so boxes do not flip.
    best = int(np.flatnonzero(area <= area.min() * (1.0 + 1e-9))[0])
    lo = np.array([u[:, best].min(), v[:, best].min()])
    hi = np.array([u[:, best].max(), v[:, best].max()])
    return float(angles[best]), lo, hi


def gravity_box(points_m: np.ndarray, up_axis: tuple[float, float, float] | np.ndarray,
                padding_m: float) -> OrientedBox:
    """Box of points [N, 3] that turns only about ``up_axis``: the minimum-area footprint
    rectangle of the points projected on the horizontal plane, the tight extent along up,
    padded by ``padding_m`` per side. Box axes: the longer horizontal side, the shorter one,
    up (``R_world_box[:, 2]`` is the unit up axis)."""
    basis = up_basis(up_axis)
    local = np.asarray(points_m, np.float64) @ basis  # [N, 3] in (h1, h2, up)
    angle, lo, hi = min_area_rectangle(local[:, :2])
    c, s = np.cos(angle), np.sin(angle)
    side1, side2 = basis[:, 0] * c + basis[:, 1] * s, basis[:, 1] * c - basis[:, 0] * s
    if hi[1] - lo[1] > hi[0] - lo[0]:
        side1, side2 = side2, -side1
        lo, hi = np.array([lo[1], -hi[0]]), np.array([hi[1], -lo[0]])
    height_lo, height_hi = local[:, 2].min(), local[:, 2].max()
    R = np.stack([side1, side2, basis[:, 2]], axis=1)  # noqa: N806
    center_local = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2,
                             (height_lo + height_hi) / 2])
    size = np.array([hi[0] - lo[0], hi[1] - lo[1], height_hi - height_lo])
    return OrientedBox(center_m=R @ center_local, R_world_box=R, size_m=size + 2.0 * padding_m)


def representative_color(colors: np.ndarray, brightness_percentile: float) -> np.ndarray:
    """[3] uint8 colour of the dominant material of fused voxel colours [N, 3] (0-255): the
    median chromaticity of the voxels near the mode of the chromaticity histogram, at the
    ``brightness_percentile`` of their brightness (see module docstring)."""
    col = np.asarray(colors, np.float64).reshape(-1, 3)
    value = col.max(axis=1)
    lit = value >= _MIN_CHROMA_VALUE
    if not lit.any():  # nothing bright enough to tell a hue: a black object
        return np.clip(np.median(col, axis=0) + 0.5, 0, 255).astype(np.uint8)
    col, value = col[lit], value[lit]
    chroma = col / col.sum(axis=1, keepdims=True)
    cell = np.minimum((chroma[:, :2] * _CHROMA_BINS).astype(np.int64), _CHROMA_BINS - 1)
    hist = np.zeros((_CHROMA_BINS + 2, _CHROMA_BINS + 2))
    np.add.at(hist, (cell[:, 0] + 1, cell[:, 1] + 1), 1.0)
    # A 3x3 box filter: a material whose chromaticity straddles a bin edge still forms one peak.
    # The peak is an occupied bin, so some voxels always lie within the mode radius.
    smooth = sum(np.roll(np.roll(hist, dr, 0), dg, 1) for dr in (-1, 0, 1) for dg in (-1, 0, 1))
    smooth[hist == 0] = 0.0
    peak = np.array(np.unravel_index(int(np.argmax(smooth)), smooth.shape)) - 1
    near = np.linalg.norm(chroma[:, :2] * _CHROMA_BINS - (peak + 0.5), axis=1) \
        <= _MODE_RADIUS_BINS
    hue = np.median(chroma[near], axis=0)
    brightness = np.percentile(value[near], brightness_percentile)
    return np.clip(hue / hue.max() * brightness + 0.5, 0, 255).astype(np.uint8)


def summarize_groups(group_ids: np.ndarray, positions_m: np.ndarray, colors: np.ndarray,
                     voxel_size_m: float, config: InstanceSummaryConfig | None = None
                     ) -> dict[int, GroupGeometry]:
    """Summaries per distinct positive id.

    Args:
        group_ids: [M] int ids (entries <= 0 are ignored).
        positions_m: [M, 3] voxel centres.
        colors: [M, 3] fused colours, 0-255.
        voxel_size_m: voxel size (boxes are padded by half a voxel per side).
        config: up axis and colour settings (defaults when None).
    """
    config = config or InstanceSummaryConfig()
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
            bbox=gravity_box(points, config.up_axis, voxel_size_m / 2.0),
            color_rgb=representative_color(col[s:e], config.color_brightness_percentile))
    return out
