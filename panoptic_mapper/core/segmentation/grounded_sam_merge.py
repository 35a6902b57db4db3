"""Turn scored, labelled box detections and their masks into one 2D panoptic segmentation.

The PanopticRecon++ recipe (``method-panopticrecon-pp.md`` section 3.3): where masks overlap, the
pixel goes to the detection with the highest score; every thing detection becomes its own segment
(its own instance), while all detections of one stuff label form a single segment. Segments that
end up smaller than a minimum area are removed and their pixels go to the next-best mask covering
them (or to no segment). Segment ids are 1..N in order of decreasing score.

Owns: :class:`Detection`, :class:`MergeResult`, :func:`merge_detection_masks`, :func:`box_iou`,
:func:`class_aware_nms`.
Does not own: producing detections or masks (``grounded_sam``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.types import PanopticSegmentation2D, Segment


BoxXYXY = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels (x right, y down)."""


@dataclass(frozen=True)
class Detection:
    """One grounded box: where, how sure, which phrase and label."""

    box_xyxy: BoxXYXY
    """Box in pixels of the original image."""
    score: float
    """Detection confidence in [0, 1] (the highest box-token probability)."""
    phrase: str
    """Prompt phrase the box was grounded to."""
    label_id: int
    """Registry label of ``phrase``."""


@dataclass
class MergeResult:
    """The merged segmentation and where each segment came from."""

    segmentation: PanopticSegmentation2D
    segment_sources: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Segment id -> indices (into the input detections) merged into it."""
    num_removed: int = 0
    """Segments removed for covering fewer than the minimum number of pixels (including those
    whose pixels all went to higher-scoring masks)."""


def merge_detection_masks(detections: Sequence[Detection], masks: np.ndarray,
                          registry: LabelRegistry, min_segment_area_px: int = 1,
                          stamp_ns: int = 0) -> MergeResult:
    """Resolve per-pixel conflicts by detection score and build the segments.

    Args:
        detections: N detections; their labels must be in ``registry``.
        masks: [N, H, W] bool, mask of each detection in the original image.
        registry: gives each label's name and thing/stuff flag.
        min_segment_area_px: segments with fewer pixels are removed (at least 1 is enforced:
            a segment never covers no pixel).
        stamp_ns: copied to the result.

    Returns:
        The segmentation (ids 1..K by decreasing score) and the detections behind each segment.

    Raises:
        InvalidInputError: masks and detections disagree in number, masks are not [N, H, W], or a
            label is unknown to the registry.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InvalidInputError("masks", list(masks.shape), "must be [N, H, W]",
                                kind="segmentation")
    if masks.shape[0] != len(detections):
        raise InvalidInputError("masks", masks.shape[0],
                                f"one mask per detection expected ({len(detections)})",
                                kind="segmentation")
    labels = [registry.by_id(d.label_id) for d in detections]
    scores = np.array([d.score for d in detections], np.float64)
    # Stuff detections of one label share a group (one segment); each thing is its own group.
    group_keys = [("stuff", lab.id) if not lab.is_thing else ("thing", i)
                  for i, lab in enumerate(labels)]
    group_index: dict[tuple[str, int], int] = {}
    group_of = np.array([group_index.setdefault(k, len(group_index)) for k in group_keys], int)
    num_groups = len(group_index)
    min_area = max(1, int(min_segment_area_px))

    active = np.ones(len(detections), bool)
    winner = _winner_map(masks, scores, active)
    group_area = _group_areas(winner, group_of, num_groups)
    small_groups = np.flatnonzero(group_area < min_area)
    if small_groups.size:
        # Removing a group only hands its pixels to others, so no new group falls below the
        # minimum: one recomputation is enough.
        active &= ~np.isin(group_of, small_groups)
        winner = _winner_map(masks, scores, active)

    kept_groups = sorted({int(group_of[i]) for i in np.flatnonzero(active)},
                         key=lambda g: -scores[group_of == g].max())
    lut = np.zeros(len(detections) + 1, np.int32)  # detection index + 1 -> segment id
    segments = []
    sources: dict[int, tuple[int, ...]] = {}
    for segment_id, group in enumerate(kept_groups, start=1):
        members = tuple(int(i) for i in np.flatnonzero((group_of == group) & active))
        best = max(members, key=lambda i: (scores[i], -i))
        lab = labels[best]
        segments.append(Segment(id=segment_id, label=lab.name, label_id=lab.id,
                                is_thing=lab.is_thing, score=float(scores[best]),
                                phrase=detections[best].phrase))
        sources[segment_id] = members
        lut[np.array(members) + 1] = segment_id
    return MergeResult(
        segmentation=PanopticSegmentation2D(lut[winner + 1], tuple(segments), stamp_ns),
        segment_sources=sources, num_removed=int(small_groups.size))


def _winner_map(masks: np.ndarray, scores: np.ndarray, active: np.ndarray) -> np.ndarray:
    """[H, W] int: index of the highest-scoring active detection covering each pixel, or -1.

    Ties go to the lower index, so equal scores resolve the same way on every run.
    """
    winner = np.full(masks.shape[1:], -1, np.int64)
    order = sorted(np.flatnonzero(active), key=lambda i: (-scores[i], i))
    for i in reversed(order):  # best painted last
        winner[masks[i].astype(bool)] = i
    return winner


def _group_areas(winner: np.ndarray, group_of: np.ndarray, num_groups: int) -> np.ndarray:
    """[G] pixel count of each group in the winner map."""
    covered = winner[winner >= 0]
    return np.bincount(group_of[covered], minlength=num_groups) if num_groups else np.zeros(0)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[A, B] intersection over union of xyxy boxes ([A, 4] and [B, 4], pixels)."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def class_aware_nms(detections: Sequence[Detection], iou_threshold: float) -> list[int]:
    """Indices of the detections kept by greedy same-label non-maximum suppression.

    A detection is dropped when a higher-scoring detection of the same label overlaps it with
    IoU above ``iou_threshold``. Kept indices are returned by decreasing score.
    """
    order = sorted(range(len(detections)), key=lambda i: (-detections[i].score, i))
    if not order:
        return []
    boxes = np.array([detections[i].box_xyxy for i in range(len(detections))], np.float64)
    iou = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(detections[k].label_id != detections[i].label_id or iou[i, k] <= iou_threshold
               for k in kept):
            kept.append(i)
    return kept
