"""Geometric attributes of map instances for queries: relations between boxes, relative size.

Boxes are the instances' oriented boxes, reduced to their extents along a gravity-aligned frame
(``up_axis`` and two horizontal axes), which is what "on", "under" and "near" are about:

* ON: the target's centre lies over the anchor's footprint (grown by ``footprint_margin_m``) and
  its bottom is within ``on_tolerance_m`` of the anchor's top, or raised off the anchor's bottom
  but not above its top: it is supported by the anchor, on its top or on an inner surface (a box
  on a shelf board, which box extents cannot tell from a box in a cabinet compartment);
* UNDER: the target's top is below the anchor's top and its centre lies within the footprint
  (a box under a table; the table's box reaches the floor, so "below its bottom" would never hold);
* IN: the target's centre is inside the anchor's oriented box;
* NEAR: the gap between the two extents is at most ``near_distance_m``.

Size words compare an instance's box volume with the median of its class in the current map: big
means more than ``size_ratio`` times the median, small less than the median over ``size_ratio``.
With no size differences in the class (e.g. a single instance) the word cannot discriminate and
every instance passes.

Owns: :class:`SpatialConfig`, :class:`GravityExtents`, :func:`relation_matrix`,
:func:`size_scores`.
Does not own: parsing (``query_parser``) or combining scores (``engine``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.query.query_parser import Relation, SizeWord
from panoptic_mapper.core.types import OrientedBox


@dataclass
class SpatialConfig(ConfigBase):
    """Relations and size words (YAML section ``query.spatial``)."""

    up_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World direction opposite to gravity (unit length after normalisation)."""
    on_tolerance_m: float = 0.05
    """ON: largest gap between the target's bottom and the anchor's top, metres."""
    footprint_margin_m: float = 0.05
    """ON/UNDER: the anchor's footprint is grown by this much on every side, metres."""
    near_distance_m: float = 0.5
    """NEAR: largest gap between the two boxes, metres."""
    size_ratio: float = 1.15
    """Size words: big = volume above ratio x class median, small = below median / ratio."""

    def validate(self) -> None:
        super().validate()
        up = np.asarray(self.up_axis, float)
        require(up.shape == (3,) and np.all(np.isfinite(up)) and np.linalg.norm(up) > 1e-6,
                "up_axis", self.up_axis, "must be a non-zero 3-vector")
        for name in ("on_tolerance_m", "footprint_margin_m", "near_distance_m"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        require(self.size_ratio >= 1.0, "size_ratio", self.size_ratio, "must be >= 1")


@dataclass
class GravityExtents:
    """Axis-aligned extents of boxes in the gravity frame (horizontal 1, horizontal 2, up)."""

    lo: np.ndarray
    """[N, 3] minimum corner, metres."""
    hi: np.ndarray
    """[N, 3] maximum corner, metres."""
    center: np.ndarray
    """[N, 3] box centre in the gravity frame, metres."""

    @classmethod
    def from_boxes(cls, boxes: list[OrientedBox], up_axis: tuple[float, float, float]
                   ) -> "GravityExtents":
        """Extents of the 8 corners of each box, projected on the gravity frame."""
        basis = gravity_basis(up_axis)
        if not boxes:
            empty = np.zeros((0, 3))
            return cls(empty, empty.copy(), empty.copy())
        corners = np.stack([b.corners_m() for b in boxes]) @ basis.T  # [N, 8, 3]
        centers = np.stack([b.center_m for b in boxes]) @ basis.T
        return cls(corners.min(axis=1), corners.max(axis=1), centers)


def gravity_basis(up_axis: tuple[float, float, float]) -> np.ndarray:
    """[3, 3] rows: two horizontal unit axes and the up axis (a right-handed frame)."""
    up = np.asarray(up_axis, float)
    up = up / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    h1 = np.cross(helper, up)
    h1 /= np.linalg.norm(h1)
    h2 = np.cross(up, h1)
    return np.stack([h1, h2, up])


def relation_matrix(relation: Relation, targets: GravityExtents, anchors: GravityExtents,
                    anchor_boxes: list[OrientedBox], target_centroids_m: np.ndarray,
                    config: SpatialConfig) -> np.ndarray:
    """[T, A] bool: whether ``relation(target t, anchor a)`` holds.

    Args:
        relation: the relation asked for.
        targets, anchors: gravity-frame extents of the candidate targets and anchors.
        anchor_boxes: the anchors' oriented boxes (for IN).
        target_centroids_m: [T, 3] world centroids of the targets (for IN).
        config: tolerances.
    """
    margin = config.footprint_margin_m
    t_c = targets.center[:, None, :]
    inside_footprint = np.all(
        (t_c[..., :2] >= anchors.lo[None, :, :2] - margin)
        & (t_c[..., :2] <= anchors.hi[None, :, :2] + margin), axis=-1)
    if relation is Relation.ON:
        bottom = targets.lo[:, None, 2]
        tol = config.on_tolerance_m
        on_top = np.abs(bottom - anchors.hi[None, :, 2]) <= tol
        on_inner = (bottom > anchors.lo[None, :, 2] + tol) & (bottom <= anchors.hi[None, :, 2])
        return inside_footprint & (on_top | on_inner)
    if relation is Relation.UNDER:
        return inside_footprint & (targets.hi[:, None, 2] < anchors.hi[None, :, 2]
                                   - config.on_tolerance_m)
    if relation is Relation.IN:
        centroids = np.asarray(target_centroids_m, float).reshape(-1, 3)
        if not anchor_boxes:
            return np.zeros((len(centroids), 0), bool)
        return np.stack([box.contains(centroids) for box in anchor_boxes], axis=1)
    if relation is Relation.NEAR:
        gaps = np.maximum(0.0, np.maximum(targets.lo[:, None, :] - anchors.hi[None, :, :],
                                          anchors.lo[None, :, :] - targets.hi[:, None, :]))
        return np.linalg.norm(gaps, axis=-1) <= config.near_distance_m
    raise ValueError(f"unhandled relation {relation}")


def size_scores(volumes_m3: np.ndarray, class_ids: np.ndarray, word: SizeWord,
                size_ratio: float) -> np.ndarray:
    """[N] 1.0 where an instance fits the size word among its class, else 0.0.

    Args:
        volumes_m3: [N] box volumes.
        class_ids: [N] class (label id) of each instance; sizes are compared within a class.
        word: the size word.
        size_ratio: a volume counts as big above ``ratio x median`` (small below median/ratio).
    """
    volumes = np.asarray(volumes_m3, float)
    classes = np.asarray(class_ids)
    out = np.ones(len(volumes))
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        vol = volumes[members]
        median = float(np.median(vol))
        if vol.max() <= median * size_ratio and vol.min() >= median / size_ratio:
            continue  # no size differences in this class: the word cannot discriminate
        if word is SizeWord.BIG:
            fits = vol > median * size_ratio
        elif word is SizeWord.SMALL:
            fits = vol < median / size_ratio
        elif word is SizeWord.BIGGEST:
            fits = vol == vol.max()
        else:
            fits = vol == vol.min()
        out[members] = fits.astype(float)
    return out
