"""What every box detector of the ``detector`` backend returns, and the NMS they share.

Owns: :class:`BoxDetection`, :func:`per_class_nms`, :func:`checked_rgb`.
Does not own: a model's decoding (``ssd_detector``, ``centernet_detector``), label mapping
(``detector_classes``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.segmentation.grounded_sam_merge import box_iou


@dataclass(frozen=True)
class BoxDetection:
    """One detector box before label mapping."""

    box_xyxy: tuple[float, float, float, float]
    """Pixels of the input image (x right, y down)."""
    score: float
    class_name: str
    """The detector's own class name, e.g. ``"Coffee cup"``."""


def per_class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                  iou_threshold: float, max_detections: int) -> np.ndarray:
    """Indices kept by greedy NMS within each class, best first, at most ``max_detections``."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    iou = box_iou(boxes[order], boxes[order]) if order.size else np.zeros((0, 0))
    suppressed = np.zeros(order.size, bool)
    for rank, index in enumerate(order):
        if suppressed[rank]:
            continue
        kept.append(int(index))
        if len(kept) >= max_detections:
            break
        same = classes[order] == classes[index]
        suppressed |= same & (iou[rank] > iou_threshold)
    return np.array(kept, np.int64)


def checked_rgb(rgb: np.ndarray) -> np.ndarray:
    """The detector input as an array, or ``InvalidInputError`` (kind ``encoding``) when it is
    not a non-empty [H, W, 3] uint8 image."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise InvalidInputError("rgb", f"{rgb.dtype}{list(rgb.shape)}",
                                "colour image must be a non-empty uint8 [H, W, 3]",
                                kind="encoding")
    return rgb
