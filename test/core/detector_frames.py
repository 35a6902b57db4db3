"""Two real 7-Scenes kitchen frames and the boxes of the objects a detector must find on them
(shared by the detector backend tests of each packaged model)."""
from __future__ import annotations

import numpy as np

from panoptic_mapper.core.io.datasets import open_dataset

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
