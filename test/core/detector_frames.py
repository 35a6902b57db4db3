"""Two real 7-Scenes kitchen frames and the boxes of the objects a detector must find on them
(shared by the detector backend tests of each packaged model)."""
from __future__ import annotations

import numpy as np

from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.segmentation.grounded_sam_merge import box_iou

HAND_BOXES = {
    0: {"chair": [(178, 118, 305, 465)], "table": [(215, 155, 640, 480)]},
    868: {"chair": [(335, 250, 455, 335), (0, 315, 185, 480)], "table": [(40, 245, 640, 480)]},
}
"""Stride-4 frame index -> label -> boxes of the physical objects the detector must find, read
off the frames by a person (pixels, x0 y0 x1 y1)."""


def load_frames(seven_scenes_dir):
    """Frame number -> frame (the folder holds every 4th frame), and the gravity direction."""
    frames = {number: next(iter(open_dataset(seven_scenes_dir, start=number // 4, max_frames=1)
                                .iter_samples())).frame for number in HAND_BOXES}
    gravity = np.loadtxt(seven_scenes_dir / "gravity-direction.txt")
    return frames, tuple(float(g) for g in gravity)


def best_iou_per_hand_box(detections, registry, frame_index: int, label: str) -> np.ndarray:
    """For each hand box of ``label`` in the frame, the best IoU of a detection of that label
    (asserts that the label was detected at all)."""
    label_id = registry.by_name(label).id
    found = np.array([d.box_xyxy for d in detections if d.label_id == label_id])
    assert len(found), f"no {label} detected"
    return box_iou(np.array(HAND_BOXES[frame_index][label], float), found).max(axis=1)
