"""Contacts between a scene's objects: which things touch, which interpenetrate (box geometry).

Scene objects stand upright (their boxes turn about +z only), so the distance between two boxes
splits into a height gap and the distance between two rectangles on the floor plan.

Owns: box-to-box gaps and the list of touching pairs (scene statistics, layout checks).
Does not own: the layout (``layout``) or the objects (``generator``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.types import OrientedBox

CONTACT_GAP_M = 0.01
"""Boxes closer than this count as touching (the layout's touching gap is 2 mm)."""


@dataclass
class ContactPair:
    """Two objects whose boxes are within a gap of each other."""

    id_a: int
    id_b: int
    same_class: bool
    gap_m: float
    """Signed box gap (:func:`box_gap_m`): < 0 the boxes overlap (an object on a shelf board,
    a chair pushed under a table)."""


def _rect_xy(box: OrientedBox) -> np.ndarray:
    """[4, 2] floor-plan corners of an upright box, counter-clockwise."""
    if abs(box.R_world_box[2, 2] - 1.0) > 1e-6:
        raise ValueError(f"box is not upright (R_world_box z axis {box.R_world_box[:, 2]})")
    half = box.size_m[:2] / 2.0
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * half
    return box.center_m[:2] + local @ box.R_world_box[:2, :2].T


def _axis_overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap of the projections of two convex polygons on each edge normal of both."""
    out = []
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for n in np.stack([-edges[:, 1], edges[:, 0]], axis=1)[:2]:  # a rectangle: 2 normals
            n = n / np.linalg.norm(n)
            pa, pb = a @ n, b @ n
            out.append(min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return np.asarray(out)


def _point_segment_m(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N] distances of points p [N, 2] to the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-18), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _rect_distance_m(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two disjoint convex polygons (a corner of one to an edge of the other)."""
    best = np.inf
    for p, q in ((a, b), (b, a)):
        for i in range(len(q)):
            best = min(best, float(_point_segment_m(p, q[i], q[(i + 1) % len(q)]).min()))
    return best


def box_gap_m(a: OrientedBox, b: OrientedBox) -> float:
    """Signed gap between two upright boxes: > 0 their distance, <= 0 minus the depth they
    interpenetrate (the least push along z or a box side's normal that would separate them).

    Raises:
        ValueError: a box is tilted (not rotated about z only).
    """
    za = a.center_m[2] + np.array([-0.5, 0.5]) * a.size_m[2]
    zb = b.center_m[2] + np.array([-0.5, 0.5]) * b.size_m[2]
    z_overlap = min(za[1], zb[1]) - max(za[0], zb[0])
    ra, rb = _rect_xy(a), _rect_xy(b)
    overlaps = _axis_overlaps(ra, rb)
    if overlaps.min() >= 0:  # floor plans intersect
        return float(-z_overlap) if z_overlap < 0 else -float(min(z_overlap, overlaps.min()))
    d_xy = _rect_distance_m(ra, rb)
    return float(np.hypot(d_xy, max(0.0, -z_overlap)))


def get_contact_pairs(instances, max_gap_m: float = CONTACT_GAP_M) -> list[ContactPair]:
    """Pairs of scene instances (``SceneInstance``-like: ``id``, ``label``, ``bbox``) whose boxes
    are within ``max_gap_m`` of each other, overlapping ones included."""
    instances = list(instances)
    radius = np.array([0.5 * float(np.linalg.norm(i.bbox.size_m)) for i in instances])
    centers = np.array([i.bbox.center_m for i in instances]).reshape(-1, 3)
    pairs: list[ContactPair] = []
    for ia, ib in itertools.combinations(range(len(instances)), 2):
        if np.linalg.norm(centers[ia] - centers[ib]) > radius[ia] + radius[ib] + max_gap_m:
            continue
        a, b = instances[ia], instances[ib]
        gap = box_gap_m(a.bbox, b.bbox)
        if gap <= max_gap_m:
            pairs.append(ContactPair(a.id, b.id, a.label == b.label, gap))
    return pairs
