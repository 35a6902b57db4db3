"""A scene's SLAM estimate on disk: drifting poses and loop corrections beside the true poses.

``make-scene --pose-drift`` keeps the true poses where ground truth is read (``pose/``) and adds

* ``pose_estimated/<i>.txt``: the 4x4 ``T_world_cam`` the simulated SLAM system streams live for
  frame ``i`` (same format as ``pose/``);
* ``loop_corrections.json``: ``{"corrections": [{loop_frame, matched_frame, publish_frame,
  stamp_ns, keyframes: [{frame, stamp_ns, T_world_cam: [16 numbers, row-major]}, ...]}, ...]}``,
  the optimised keyframe poses published at each loop closure, in publication order.

Frame numbers are the dataset's (``<i>`` of the file names); stamps (``timestamps.txt``) identify
the frames everywhere else, so :class:`SlamEstimate` keys poses by stamp.

Owns: writing and reading these files. Does not own: simulating them (``core/scene/pose_drift``)
or the rest of the layout (``scannet_writer``, ``scannet_layout``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.io.image_files import file_error, read_matrix, write_matrix
from panoptic_mapper.core.io.rgbd_dataset import checked_pose
from panoptic_mapper.core.types import LoopCorrection

ESTIMATED_POSE_DIR = "pose_estimated"
CORRECTIONS_FILE = "loop_corrections.json"


@dataclass
class SlamEstimate:
    """What a SLAM system published for a sequence: the live pose stream and loop closures."""

    T_world_cam_by_stamp: dict[int, np.ndarray]
    """Frame stamp (ns) -> [4, 4] live pose estimate."""
    corrections: list[LoopCorrection] = field(default_factory=list)
    """Loop closures in publication order (frame indices = dataset frame numbers)."""

    def pose_at(self, stamp_ns: int) -> np.ndarray:
        """The estimate of the frame with this stamp; :class:`InvalidInputError` if none."""
        try:
            return self.T_world_cam_by_stamp[int(stamp_ns)]
        except KeyError:
            raise InvalidInputError("stamp_ns", int(stamp_ns), "no estimated pose for this "
                                    "frame", kind="pose") from None


def has_slam_estimate(root: str | Path) -> bool:
    """True when a dataset folder carries ``pose_estimated/``."""
    return (Path(root) / ESTIMATED_POSE_DIR).is_dir()


def write_slam_estimate(root: str | Path, T_world_cam: np.ndarray,  # noqa: N803
                        corrections: Sequence[LoopCorrection]) -> None:
    """Write the live estimate [N, 4, 4] of frames ``0..N-1`` and the corrections into a dataset
    folder written by ``write_scannet_layout`` (which numbers frames 0..N-1).

    Raises:
        InvalidInputError: ``pose_estimated/`` exists already, or a pose is not [4, 4].
    """
    root = Path(root)
    poses = np.asarray(T_world_cam, np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise InvalidInputError("T_world_cam", poses.shape, "must be [N, 4, 4]", kind="pose")
    folder = root / ESTIMATED_POSE_DIR
    if folder.exists():
        raise InvalidInputError("out_dir", str(folder), "exists already", kind="file_exists")
    folder.mkdir(parents=True)
    for i, T in enumerate(poses):  # noqa: N806
        write_matrix(folder / f"{i}.txt", T)
    entries = [{
        "loop_frame": int(c.loop_index), "matched_frame": int(c.matched_index),
        "publish_frame": int(c.publish_index), "stamp_ns": int(c.stamp_ns),
        # repr() of a float64 round-trips exactly through JSON
        "keyframes": [{"frame": int(i), "stamp_ns": int(s), "T_world_cam": T.reshape(-1).tolist()}
                      for i, s, T in zip(c.keyframe_indices, c.keyframe_stamps_ns,
                                         c.T_world_keyframe)]}
        for c in corrections]
    (root / CORRECTIONS_FILE).write_text(json.dumps({"corrections": entries}, indent=1) + "\n",
                                         encoding="utf-8")


def read_slam_estimate(root: str | Path, stamps_by_number: dict[int, int]) -> SlamEstimate:
    """Read ``pose_estimated/`` (every frame of ``stamps_by_number``) and the corrections.

    Raises:
        DataFormatError: a missing or malformed file, naming it.
    """
    root = Path(root)
    poses = {}
    for number, stamp in stamps_by_number.items():
        path = root / ESTIMATED_POSE_DIR / f"{number}.txt"
        poses[int(stamp)] = checked_pose(read_matrix(path, (4, 4), "T_world_cam"), path)
    return SlamEstimate(poses, _read_corrections(root / CORRECTIONS_FILE))


def _read_corrections(path: Path) -> list[LoopCorrection]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        corrections = []
        for entry in data["corrections"]:
            keyframes = entry["keyframes"]
            corrections.append(LoopCorrection(
                loop_index=int(entry["loop_frame"]), matched_index=int(entry["matched_frame"]),
                publish_index=int(entry["publish_frame"]), stamp_ns=int(entry["stamp_ns"]),
                keyframe_indices=[k["frame"] for k in keyframes],
                keyframe_stamps_ns=[k["stamp_ns"] for k in keyframes],
                T_world_keyframe=np.array([k["T_world_cam"] for k in keyframes],
                                          np.float64).reshape(-1, 4, 4)))
    except (OSError, ValueError, KeyError, TypeError, InvalidInputError) as exc:
        raise file_error(path, type(exc).__name__, f"malformed loop corrections: {exc}",
                         kind="metadata") from exc
    return corrections
