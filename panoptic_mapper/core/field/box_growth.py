"""The neural field's scene box: a fixed workspace, or a box that grows with the keyframes.

The hash grids cover one cube (:class:`SceneBox`) chosen when the field is created, and a grid
cannot be re-mapped to another cube cheaply. A robot that explores beyond the cube gets no
refinement there, so the refined map restarts its field on a larger cube when a keyframe sees
beyond the current one (``core/mapping/refined_map.py``). This module holds the rule:

* a keyframe sees beyond the box when more than ``outside_share`` of its surface points lie
  farther than ``outside_tolerance_m`` outside it (a share, so that a few far depth readings do
  not restart the field; a tolerance, so that walls just past the margin do not either);
* the grown box covers the previous box, all keyframes and the prior's mesh plus the scene
  margin, and then ``headroom`` times more, so that a robot that keeps exploring restarts the
  field a number of times logarithmic in the explored extent.

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
    headroom: float = 1.5
    """A grown box's half size is this multiple of the half size that covers the previous box,
    all keyframes and the prior's mesh (plus ``training.field.scene_margin_m``). Larger: fewer
    restarts, but coarser hash-grid cells (the grids' resolution is per box edge)."""
    fixed_min_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Minimum corner of a known workspace, world frame, metres. When it differs from
    ``fixed_max_m``, the field's box is the smallest cube around that workspace from the start
    and never grows (``growth`` is ignored); equal corners = no fixed box."""
    fixed_max_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Maximum corner of the known workspace, world frame, metres (see ``fixed_min_m``)."""

    def validate(self) -> None:
        require(0 <= self.outside_share < 1, "outside_share", self.outside_share,
                "must be in [0, 1)")
        require(self.outside_tolerance_m >= 0, "outside_tolerance_m", self.outside_tolerance_m,
                "must be >= 0")
        require(self.headroom >= 1, "headroom", self.headroom, "must be >= 1")
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
        """The cube around the user's workspace, or None when there is none."""
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
    """Share of ``points_m`` [N, 3] farther than ``tolerance_m`` outside ``box`` (0 for none)."""
    points = np.asarray(points_m, np.float64).reshape(-1, 3)
    if len(points) == 0:
        return 0.0
    offset = np.abs(points - np.asarray(box.center_m)).max(axis=1)
    return float(np.mean(offset > box.half_size_m + tolerance_m))


def grown_box(box: SceneBox, points_m: np.ndarray, margin_m: float, headroom: float) -> SceneBox:
    """The cube around ``box`` and ``points_m`` [N, 3] plus ``margin_m``, its half size then
    multiplied by ``headroom`` (same centre)."""
    low, high = box.bounds_m
    covered = SceneBox.from_points(np.concatenate([np.asarray(points_m, np.float64)
                                                   .reshape(-1, 3), [low, high]]), margin_m)
    return SceneBox(covered.center_m, covered.half_size_m * headroom)
