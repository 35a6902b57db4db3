"""The neural field's scene box: a fixed workspace, or a box that grows with the keyframes.

The hash grids cover one axis-aligned box (:class:`SceneBox`, per-axis half sizes) chosen when
the field is created, and a grid cannot be re-mapped to another box cheaply. A robot that
explores beyond the box gets no refinement there, so the refined map restarts its field on a
larger box when a keyframe sees beyond the current one (``core/mapping``). This module holds the
rule:

* a keyframe sees beyond the box when more than ``outside_share`` of its surface points lie
  farther than ``outside_tolerance_m`` outside it on some axis (a share, so that a few far depth
  readings do not restart the field; a tolerance, so that walls just past the margin do not
  either);
* the grown box keeps every face that no point crossed and moves a crossed face out to the
  farthest point plus the scene margin plus ``headroom_fraction`` of the extent the box then
  needs along that axis. Only the axes and sides the robot explored grow (a room does not get taller because
  the robot drove along a corridor), and the headroom is a share of the extent, so a robot that
  keeps exploring restarts the field a number of times logarithmic in the explored extent.

Owns: :class:`SceneBoxConfig`, :func:`keyframe_surface_sample`, :func:`outside_share`,
:func:`grown_box`. Does not own: :class:`SceneBox` (``panoptic_field.py``) or the restart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.field.keyframes import Keyframe
from panoptic_mapper.core.field.panoptic_field import SceneBox


@dataclass
class SceneBoxConfig(ConfigBase):
    """Where the field's scene box lies: given by the user, or grown as the robot explores."""

    REMOVED_SETTINGS = {"headroom": "the box grows per axis; scene_box.headroom_fraction (a "
                                    "share of the extent on each grown side) replaces the "
                                    "whole cube's x headroom"}

    growth: bool = True
    """Restart the field on a larger box when a keyframe sees beyond the current one (the
    previous field keeps answering until the new one is ready); false = the box stays where the
    first training call put it (around the keyframes stored then and the prior's mesh)."""
    outside_share: float = 0.1
    """A keyframe sees beyond the box when more than this share of its surface points (at most
    2000, evenly spread over its valid pixels) lie beyond it."""
    outside_tolerance_m: float = 0.25
    """A surface point lies beyond the box when it is farther than this outside the box's
    faces, metres (the box already has ``training.field.scene_margin_m`` around what it was
    made for)."""
    headroom_fraction: float = 0.25
    """When the box grows, a face that points crossed moves beyond the farthest point plus
    ``training.field.scene_margin_m`` by this share of the extent the box then needs along that
    axis; faces no point crossed stay. 0.25 leaves the room ahead that the former ``headroom: 1.5`` (the whole
    cube's half size x 1.5) left on each side, but only where the robot explores. Larger: fewer
    restarts, but coarser hash-grid cells along that axis (the grids' resolution is per box
    axis)."""
    fixed_min_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Minimum corner of a known workspace, world frame, metres. When it differs from
    ``fixed_max_m``, the field's box is that workspace from the start (an axis shorter than a
    quarter of the longest is widened about its centre, see ``SceneBox``) and never grows
    (``growth`` is ignored); equal corners = no fixed box."""
    fixed_max_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Maximum corner of the known workspace, world frame, metres (see ``fixed_min_m``)."""

    def validate(self) -> None:
        require(0 <= self.outside_share < 1, "outside_share", self.outside_share,
                "must be in [0, 1)")
        require(self.outside_tolerance_m >= 0, "outside_tolerance_m", self.outside_tolerance_m,
                "must be >= 0")
        require(0 <= self.headroom_fraction <= 4, "headroom_fraction", self.headroom_fraction,
                "must be in [0, 4]")
        for name in ("fixed_min_m", "fixed_max_m"):
            value = getattr(self, name)
            require(len(value) == 3 and all(np.isfinite(v) for v in value), name, value,
                    "must be 3 finite numbers [x, y, z]")
        if tuple(self.fixed_min_m) != tuple(self.fixed_max_m):
            require(all(lo < hi for lo, hi in zip(self.fixed_min_m, self.fixed_max_m)),
                    "fixed_max_m", self.fixed_max_m,
                    f"must exceed fixed_min_m {list(self.fixed_min_m)} on every axis (equal "
                    "corners = no fixed box)")

    @property
    def fixed_box(self) -> SceneBox | None:
        """The box of the user's workspace, or None when there is none."""
        if tuple(self.fixed_min_m) == tuple(self.fixed_max_m):
            return None
        return SceneBox.around_bounds(np.asarray(self.fixed_min_m), np.asarray(self.fixed_max_m))

    @property
    def grows(self) -> bool:
        """The box may grow (growth on and no fixed workspace)."""
        return self.growth and self.fixed_box is None


MAX_CHECK_POINTS = 2000
"""Surface points per keyframe that the growth rule looks at."""


def keyframe_surface_sample(keyframe: Keyframe, near_m: float,
                            max_points: int = MAX_CHECK_POINTS) -> np.ndarray:
    """[M, 3] world points of at most ``max_points`` valid pixels, evenly spread (the same
    pixels every time)."""
    valid = keyframe.valid_pixels(near_m)
    if len(valid) > max_points:
        valid = valid[np.linspace(0, len(valid) - 1, max_points).astype(np.int64)]
    return keyframe.surface_points(valid)


def outside_share(points_m: np.ndarray, box: SceneBox, tolerance_m: float) -> float:
    """Share of ``points_m`` [N, 3] farther than ``tolerance_m`` outside ``box`` on some axis (0
    for none)."""
    points = np.asarray(points_m, np.float64).reshape(-1, 3)
    if len(points) == 0:
        return 0.0
    return float(np.mean(box.outside_distance_m(points) > tolerance_m))


def grown_box(box: SceneBox, points_m: np.ndarray, margin_m: float,
              headroom_fraction: float) -> SceneBox:
    """``box`` with each face that a point of ``points_m`` [N, 3] lies beyond moved out to the
    farthest such point + ``margin_m`` + ``headroom_fraction`` x the extent needed along that
    axis (``box`` and the points plus the margin); the other faces stay, so the result contains
    ``box`` (then widened to ``SceneBox``'s minimum size and aspect ratio)."""
    points = np.asarray(points_m, np.float64).reshape(-1, 3)
    low, high = box.bounds_m
    if len(points) == 0:
        return box
    needed_low = np.minimum(low, points.min(axis=0) - margin_m)
    needed_high = np.maximum(high, points.max(axis=0) + margin_m)
    extent = needed_high - needed_low
    crossed_low = points.min(axis=0) < low
    crossed_high = points.max(axis=0) > high
    new_low = np.where(crossed_low, needed_low - headroom_fraction * extent, low)
    new_high = np.where(crossed_high, needed_high + headroom_fraction * extent, high)
    # Axes no point crossed keep their exact centre and half size (no round trip via bounds).
    grows = crossed_low | crossed_high
    center = np.where(grows, (new_low + new_high) / 2.0, box.center_m)
    half = np.where(grows, (new_high - new_low) / 2.0, box.half_size_m)
    return SceneBox.widened(center, half)
