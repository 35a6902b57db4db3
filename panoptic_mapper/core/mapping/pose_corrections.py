"""Loop-closure corrections: what SLAM publishes, checked, and the corrected pose of every frame.

A SLAM system that closes a loop publishes the optimised poses of its keyframes (a
``nav_msgs/Path`` in ROS, :class:`KeyframeCorrection` here) and from then on streams live poses
in the corrected map frame (the ``map -> odom`` jump). Frames the map fused *before* that must
move with the keyframes; frames after it are already right.

How a fused frame moves (:func:`corrected_poses`). Each keyframe ``k`` whose stamp matches a fused
frame (within ``match_tolerance_ns``) gives a correction ``D_k = T_new_k @ inv(T_old_k)`` in the
world frame, where ``T_old_k`` is the pose that frame was fused with. A frame between two
matched keyframes takes the correction interpolated in time between theirs (translation
linearly, rotation by slerp), as the odometry chain between two optimised keyframes bends; a
frame before the first or after the last takes that keyframe's correction (frames after the newest
keyframe were tracked from it with the old ``map -> odom``).

Checks (:func:`check_correction`): finite rigid poses, strictly increasing keyframe stamps,
at least one keyframe that matches a fused frame, and a publication stamp newer than the last
applied correction (an older one is out of order: it would undo a newer optimisation). A failing
check raises :class:`InvalidInputError` naming the problem; nothing is changed.

ROS-free. Owns: :class:`KeyframeCorrection`, :func:`check_correction`, :func:`corrected_poses`.
Does not own: re-fusing the frames (``map_rebuild``) or scheduling (``runtime/map_session``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.types import LoopCorrection, validate_rigid_transform

DEFAULT_MATCH_TOLERANCE_NS = 1_000_000
"""A keyframe matches a fused frame whose stamp is this close (1 ms: the same image)."""


@dataclass(frozen=True)
class KeyframeCorrection:
    """Optimised keyframe poses published at one loop closure."""

    stamp_ns: int
    """Publication stamp (the message header), ns."""
    keyframe_stamps_ns: np.ndarray
    """[K] int64 keyframe stamps, strictly increasing, ns."""
    T_world_keyframe: np.ndarray
    """[K, 4, 4] float64 optimised poses of the frame the pose stream reports (the camera)."""

    @classmethod
    def from_loop_correction(cls, correction: LoopCorrection) -> "KeyframeCorrection":
        return cls(int(correction.stamp_ns), np.asarray(correction.keyframe_stamps_ns, np.int64),
                   np.asarray(correction.T_world_keyframe, np.float64))

    @property
    def num_keyframes(self) -> int:
        return int(len(self.keyframe_stamps_ns))


@dataclass(frozen=True)
class MatchedCorrection:
    """A checked correction, matched to the fused frames' poses."""

    correction: KeyframeCorrection
    stamps_ns: np.ndarray
    """[M] int64 stamps of the matched keyframes (increasing)."""
    delta: np.ndarray
    """[M, 4, 4] world-frame correction of each matched keyframe, ``T_new @ inv(T_old)``."""

    @property
    def max_shift_m(self) -> float:
        """Largest keyframe displacement the correction asks for, metres."""
        return float(np.linalg.norm(self.delta[:, :3, 3], axis=1).max())


def check_correction(correction: KeyframeCorrection, fused_stamps_ns: np.ndarray,
                     fused_T_world_cam: np.ndarray, last_applied_stamp_ns: int = -1,  # noqa: N803
                     match_tolerance_ns: int = DEFAULT_MATCH_TOLERANCE_NS) -> MatchedCorrection:
    """Check ``correction`` against the poses the frames were fused with (module docstring).

    Args:
        fused_stamps_ns: [N] increasing stamps of the fused frames.
        fused_T_world_cam: [N, 4, 4] the poses they were fused with.
        last_applied_stamp_ns: publication stamp of the newest correction applied (-1: none).

    Raises:
        InvalidInputError: the correction is malformed, out of order, or matches no frame.
    """
    stamps = np.asarray(correction.keyframe_stamps_ns)
    poses = np.asarray(correction.T_world_keyframe, np.float64)
    if stamps.ndim != 1 or stamps.size == 0 or poses.shape != (stamps.size, 4, 4):
        raise InvalidInputError("keyframes", f"{stamps.shape} stamps, {poses.shape} poses",
                                "a correction needs K >= 1 stamps and [K, 4, 4] poses",
                                kind="correction")
    if np.any(np.diff(stamps) <= 0):
        raise InvalidInputError("keyframe_stamps_ns", "not increasing",
                                "keyframe stamps must increase strictly", kind="correction")
    for k, T in enumerate(poses):  # noqa: N806
        validate_rigid_transform(T, f"keyframes[{k}].T_world_cam")
    if correction.stamp_ns <= last_applied_stamp_ns:
        raise InvalidInputError("stamp_ns", correction.stamp_ns,
                                f"out of order: a correction stamped {last_applied_stamp_ns} "
                                "was applied already", kind="correction")
    fused = np.asarray(fused_stamps_ns, np.int64)
    order = np.argsort(fused, kind="stable")  # frames may have been fused out of stamp order
    fused, fused_poses = fused[order], np.asarray(fused_T_world_cam, np.float64)[order]
    if fused.size == 0:
        raise InvalidInputError("keyframes", stamps.size, "no frame is fused yet",
                                kind="correction")
    pos = np.clip(np.searchsorted(fused, stamps), 1, max(fused.size - 1, 1))
    left = np.clip(pos - 1, 0, fused.size - 1)
    right = np.clip(pos, 0, fused.size - 1)
    nearest = np.where(np.abs(fused[left] - stamps) <= np.abs(fused[right] - stamps),
                       left, right)
    matched = np.abs(fused[nearest] - stamps) <= match_tolerance_ns
    if not matched.any():
        raise InvalidInputError("keyframe_stamps_ns", f"{stamps.size} keyframes",
                                "no keyframe stamp matches a fused frame (is the path of the "
                                "same camera, and are the stamps the images'?)",
                                kind="correction")
    old = fused_poses[nearest[matched]]
    delta = poses[matched] @ np.linalg.inv(old)
    return MatchedCorrection(correction, stamps[matched], delta)


def corrected_poses(matched: MatchedCorrection, stamps_ns: np.ndarray,
                    T_world_cam: np.ndarray) -> np.ndarray:  # noqa: N803
    """[N, 4, 4] the poses of frames stamped ``stamps_ns`` [N] and fused with ``T_world_cam``
    [N, 4, 4], moved by the correction (module docstring)."""
    stamps = np.asarray(stamps_ns, np.int64)
    poses = np.asarray(T_world_cam, np.float64)
    return interpolated_deltas(matched, stamps) @ poses


def interpolated_deltas(matched: MatchedCorrection, stamps_ns: np.ndarray) -> np.ndarray:
    """[N, 4, 4] the world-frame correction at each stamp (module docstring)."""
    stamps = np.asarray(stamps_ns, np.int64)
    kf = matched.stamps_ns
    out = np.tile(np.eye(4), (stamps.size, 1, 1))
    if stamps.size == 0:
        return out
    if kf.size == 1:
        out[:] = matched.delta[0]
        return out
    t = np.clip(stamps, kf[0], kf[-1]).astype(np.float64)
    rotations = Slerp(kf.astype(np.float64), Rotation.from_matrix(matched.delta[:, :3, :3]))
    out[:, :3, :3] = rotations(t).as_matrix()
    for axis in range(3):
        out[:, axis, 3] = np.interp(t, kf.astype(np.float64), matched.delta[:, axis, 3])
    return out
