"""Open any supported RGB-D dataset folder, and write our own layout: the public dataset API.

>>> dataset = open_dataset("shared/data/7scenes_redkitchen_stride4", stride=2, max_frames=20)
>>> for sample in dataset:            # DatasetSample(frame, segmentation, ground_truth)
...     ...
>>> dataset.skipped                   # frames that could not be read, with the reason

Layouts (see ``docs/dataset_format.md``): 7-Scenes, NICE-SLAM/Replica, and the ScanNet export
layout with panoptic_mapper's extras (written by :func:`write_scannet_layout`).

Owns: layout detection and the names other components import. Does not own: decoding (one
module per layout) or the iteration/error contract (``rgbd_dataset``).
"""
from __future__ import annotations

from pathlib import Path

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.replica import ReplicaDataset, is_replica
from panoptic_mapper.core.io.rgbd_dataset import (DEFAULT_CAMERA_FRAME_ID, FrameRecord,
                                                  RgbdDataset, SkippedFrame)
from panoptic_mapper.core.io.scannet_layout import ScanNetLayoutDataset, is_scannet_layout
from panoptic_mapper.core.io.scannet_writer import DatasetWriteReport, write_scannet_layout
from panoptic_mapper.core.io.seven_scenes import SevenScenesDataset, is_seven_scenes
from panoptic_mapper.core.types import DatasetSample

__all__ = [
    "DEFAULT_CAMERA_FRAME_ID", "DatasetSample", "DatasetWriteReport", "FrameRecord",
    "LAYOUTS", "RgbdDataset", "SkippedFrame", "detect_layout", "open_dataset",
    "write_scannet_layout",
]

LAYOUTS: dict[str, type[RgbdDataset]] = {
    "scannet": ScanNetLayoutDataset,
    "replica": ReplicaDataset,
    "7scenes": SevenScenesDataset,
}
"""Layout name -> reader class, in detection order."""
_DETECTORS = {"scannet": is_scannet_layout, "replica": is_replica, "7scenes": is_seven_scenes}


def detect_layout(path: str | Path) -> str:
    """The layout name of a dataset folder (a key of :data:`LAYOUTS`).

    Raises:
        DataFormatError: the folder does not exist or matches no known layout.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataFormatError("dataset", str(root), "folder not found", kind="missing_file")
    for name, detector in _DETECTORS.items():
        if detector(root):
            return name
    raise DataFormatError(
        "dataset", str(root),
        "unknown layout: expected color/ depth/ pose/ intrinsic/ (ScanNet export), "
        "cam_params.json + */results/ (NICE-SLAM Replica) or frames/frame-*.color.jpg "
        "(7-Scenes)", kind="layout")


def open_dataset(path: str | Path, stride: int = 1, max_frames: int | None = None,
                 start: int = 0, layout: str | None = None) -> RgbdDataset:
    """Open a dataset folder, detecting its layout.

    Frames are selected as ``frames[start::stride][:max_frames]`` (positions in the sorted frame
    list, not frame numbers). Opening reads only file lists, intrinsics and stamps; images are
    decoded when a frame is requested.

    Args:
        path: the dataset folder (for Replica: the scene folder or the folder holding
            ``cam_params.json`` and exactly one scene).
        stride: keep every ``stride``-th frame.
        max_frames: keep at most this many frames (None: all).
        start: position of the first frame kept.
        layout: force a layout (a key of :data:`LAYOUTS`) instead of detecting it.

    Raises:
        DataFormatError: missing folder, unknown layout, or dataset-level files (intrinsics,
            ``labels.yaml``, ``timestamps.txt``) missing or malformed; the message names the file.
        InvalidInputError: bad ``stride``, ``max_frames``, ``start`` or ``layout``.
    """
    if layout is None:
        layout = detect_layout(path)
    elif layout not in LAYOUTS:
        raise InvalidInputError("layout", layout, f"unknown layout; known: {list(LAYOUTS)}",
                                kind="config")
    return LAYOUTS[layout](Path(path), start=start, stride=stride, max_frames=max_frames)
