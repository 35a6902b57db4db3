"""What a real SLAM system would publish for a camera path: drifting live poses and loop closures.

:func:`simulate_slam_poses` turns the true camera poses of a trajectory into

* the **live estimate** ``T_world_cam`` [N, 4, 4] that a SLAM package streams on its pose topic:
  odometry that drifts with the distance travelled, composed with the latest ``map -> odom``
  correction (``T_world_cam = T_world_odom @ T_odom_cam``);
* **loop-closure corrections**: when the camera revisits a place, the optimised poses of all
  keyframes so far are published (true pose + a small residual), and from then on the live
  estimate continues from the corrected pose, as the ``map -> odom`` jump of a SLAM package does.

Drift model. The odometry integrates the true relative motions, perturbed: each step of length
``d`` metres turns the accumulated attitude error by ``rate * d`` (yaw about world +z, roll and
pitch about world x and y) and adds ``rate * d`` of translation error, and the true displacement is
rotated by the attitude error accumulated so far (so a yaw error bends the rest of the path). The
rates are first-order Gauss-Markov processes of the path length with RMS ``*_drift_*`` and
correlation length ``drift_correlation_m``: over stretches shorter than that, errors grow about
linearly with distance (the "% of distance travelled" and "deg per metre" of odometry
benchmarks); over longer ones they wander like a random walk. Nothing drifts while the camera
stands still.

Presets (:data:`POSE_DRIFT_PRESETS`; ``docs/benchmark.md`` has the table and the figures they
are based on). ``vio``: 1 % of the distance and 0.1 deg/m yaw, 0.01 deg/m roll/pitch (observable
through gravity with an IMU). ``vo`` (RGB-D or stereo odometry without IMU): 3 %, 0.5 deg/m yaw
and 0.25 deg/m roll/pitch. The translation rates sit in the range odometry without loop closing
is commonly reported at (about 1-3 % of the distance); the rotation rates, the 1 cm / 0.2 deg
residual of optimised poses and the 0.5 s latency of a correction are our choices (a hand-held
camera in a room turns far more per metre than the cars and drones of odometry benchmarks).

Owns: :class:`PoseDriftConfig` and its presets, :class:`SlamPoses`, :func:`simulate_slam_poses`,
:func:`pose_errors`.
Does not own: the true trajectory (``trajectory``) or how the result is stored (``core/io``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.types import LoopCorrection


@dataclass
class PoseDriftConfig(ConfigBase):
    """Pose error of the simulated SLAM system (defaults: the ``none`` preset, exact poses)."""

    preset: str = "none"
    """Name of the preset these values started from (:data:`POSE_DRIFT_PRESETS`); recorded with
    the scene. The fields below are what is applied."""
    translation_drift_percent: float = 0.0
    """RMS translational drift rate (3D), % of the distance travelled."""
    yaw_drift_deg_per_m: float = 0.0
    """RMS drift rate of the yaw (rotation about world +z, gravity), degrees per metre."""
    roll_pitch_drift_deg_per_m: float = 0.0
    """RMS drift rate of roll and of pitch (about world x and y), each, degrees per metre."""
    drift_correlation_m: float = 5.0
    """Path length over which the drift rates decorrelate, metres (errors grow linearly below
    it, like a random walk above it)."""
    keyframe_distance_m: float = 0.25
    """A frame becomes a keyframe once the camera moved this far since the last one, metres."""
    keyframe_angle_deg: float = 15.0
    """... or turned this much since the last one, degrees."""
    max_corrections: int = 0
    """Most loop closures published; 0 = none (odometry only)."""
    revisit_radius_m: float = 0.5
    """A keyframe revisits an earlier one within this distance (true positions), metres ..."""
    revisit_angle_deg: float = 30.0
    """... whose optical axis is within this angle of its own, degrees ..."""
    min_loop_path_m: float = 3.0
    """... and at least this much path before it, metres."""
    min_correction_spacing_m: float = 2.0
    """Path travelled after a correction is published before the next revisit counts, metres."""
    correction_latency_s: float = 0.5
    """Time from the revisit to the publication of the optimised poses (the optimisation runs
    in the background), seconds; the correction is published with the first frame at or after."""
    residual_translation_m: float = 0.01
    """RMS (3D) position error of the optimised keyframe poses, metres."""
    residual_rotation_deg: float = 0.2
    """RMS (3D) orientation error of the optimised keyframe poses, degrees."""
    seed: int = 0
    """Seed of the drift and residual draws."""

    def validate(self) -> None:
        require(self.preset in POSE_DRIFT_PRESETS, "preset", self.preset,
                f"must be one of {sorted(POSE_DRIFT_PRESETS)}")
        for name in ("translation_drift_percent", "yaw_drift_deg_per_m",
                     "roll_pitch_drift_deg_per_m", "correction_latency_s",
                     "residual_translation_m", "residual_rotation_deg",
                     "min_correction_spacing_m", "min_loop_path_m"):
            require(getattr(self, name) >= 0.0, name, getattr(self, name), "must be >= 0")
        for name in ("drift_correlation_m", "keyframe_distance_m", "keyframe_angle_deg",
                     "revisit_radius_m"):
            require(getattr(self, name) > 0.0, name, getattr(self, name), "must be > 0")
        require(0.0 < self.revisit_angle_deg <= 180.0, "revisit_angle_deg",
                self.revisit_angle_deg, "must be in (0, 180]")
        require(self.max_corrections >= 0, "max_corrections", self.max_corrections,
                "must be >= 0")

    @property
    def enabled(self) -> bool:
        """False when the estimate is the truth (no drift, no corrections)."""
        return (self.translation_drift_percent > 0 or self.yaw_drift_deg_per_m > 0
                or self.roll_pitch_drift_deg_per_m > 0 or self.max_corrections > 0)


POSE_DRIFT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "vio": dict(translation_drift_percent=1.0, yaw_drift_deg_per_m=0.1,
                roll_pitch_drift_deg_per_m=0.01, max_corrections=5),
    "vo": dict(translation_drift_percent=3.0, yaw_drift_deg_per_m=0.5,
               roll_pitch_drift_deg_per_m=0.25, max_corrections=5),
}
"""Preset name -> overrides of the :class:`PoseDriftConfig` defaults (sources: module
docstring)."""


def pose_drift_preset(name: str, **overrides: Any) -> PoseDriftConfig:
    """The config of a preset (``none``, ``vio``, ``vo``) with optional overrides."""
    if name not in POSE_DRIFT_PRESETS:
        raise ConfigError("pose_drift.preset", name,
                          f"unknown preset; known: {sorted(POSE_DRIFT_PRESETS)}")
    return PoseDriftConfig.from_dict({"preset": name, **POSE_DRIFT_PRESETS[name], **overrides})


@dataclass
class SlamPoses:
    """What the simulated SLAM system estimates for a trajectory."""

    T_world_cam: np.ndarray
    """[N, 4, 4] live estimate: the pose stream, ``T_world_odom @ T_odom_cam``."""
    T_odom_cam: np.ndarray
    """[N, 4, 4] odometry alone (drifts forever; equals the truth at frame 0)."""
    T_world_odom: np.ndarray
    """[N, 4, 4] the ``map -> odom`` correction in force at each frame (identity before the
    first loop closure)."""
    keyframe_indices: np.ndarray
    """[K] int64 frames that are keyframes."""
    corrections: list[LoopCorrection] = field(default_factory=list)
    """Loop closures in publication order."""


def simulate_slam_poses(T_world_cam: np.ndarray, stamps_ns: np.ndarray,  # noqa: N803
                        config: PoseDriftConfig | None = None) -> SlamPoses:
    """The SLAM estimate of a true trajectory (see module docstring).

    Args:
        T_world_cam: [N, 4, 4] true camera poses.
        stamps_ns: [N] increasing stamps, ns.
        config: drift and loop-closure settings (default: none, the estimate is the truth).

    Returns:
        :class:`SlamPoses`; with a disabled config the live estimate is a copy of the input,
        exactly.
    """
    config = config or PoseDriftConfig()
    T_true = np.asarray(T_world_cam, dtype=np.float64)  # noqa: N806
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    if T_true.ndim != 3 or T_true.shape[1:] != (4, 4) or len(T_true) == 0:
        raise InvalidInputError("T_world_cam", T_true.shape, "must be [N, 4, 4] with N >= 1",
                                kind="pose")
    if stamps.shape != (len(T_true),) or np.any(np.diff(stamps) <= 0):
        raise InvalidInputError("stamps_ns", stamps.shape, "must be [N] strictly increasing",
                                kind="stamp")
    n = len(T_true)
    identity = np.tile(np.eye(4), (n, 1, 1))
    keyframes = _keyframes(T_true, config)
    if not config.enabled:
        return SlamPoses(T_true.copy(), T_true.copy(), identity, keyframes)
    rng = np.random.default_rng([config.seed, 0xD21F])
    T_odom = _drifting_odometry(T_true, config, rng)  # noqa: N806
    corrections = _loop_corrections(T_true, T_odom, stamps, keyframes, config, rng)
    T_world_odom = identity  # noqa: N806
    for c in corrections:
        # map -> odom such that the newest covered keyframe sits at its optimised pose
        T_fix = c.T_world_keyframe[-1] @ np.linalg.inv(T_odom[c.loop_index])  # noqa: N806
        T_world_odom[c.publish_index:] = T_fix
    return SlamPoses(T_world_odom @ T_odom, T_odom, T_world_odom, keyframes, corrections)


def _path_length_m(T: np.ndarray) -> np.ndarray:  # noqa: N803
    """[N] cumulative distance travelled at each frame, metres."""
    steps = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _keyframes(T: np.ndarray, config: PoseDriftConfig) -> np.ndarray:  # noqa: N803
    keep = [0]
    cos_max = math.cos(math.radians(config.keyframe_angle_deg))
    for i in range(1, len(T)):
        last = T[keep[-1]]
        moved = np.linalg.norm(T[i, :3, 3] - last[:3, 3]) >= config.keyframe_distance_m
        # cos of the relative rotation angle from the trace of R_last^T R_i
        cos_angle = (np.trace(last[:3, :3].T @ T[i, :3, :3]) - 1.0) / 2.0
        if moved or cos_angle <= cos_max:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _drifting_odometry(T_true: np.ndarray, config: PoseDriftConfig,  # noqa: N803
                       rng: np.random.Generator) -> np.ndarray:
    """[N, 4, 4] odometry: the true motion integrated with drift (module docstring)."""
    n = len(T_true)
    step_m = np.diff(_path_length_m(T_true))
    # per-axis sigma of the rates: translation (3D RMS split over 3 axes), roll, pitch, yaw
    sigma = np.array([config.translation_drift_percent / 100.0 / math.sqrt(3.0)] * 3
                     + [math.radians(config.roll_pitch_drift_deg_per_m)] * 2
                     + [math.radians(config.yaw_drift_deg_per_m)])
    rate = rng.normal(0.0, 1.0, 6) * sigma
    noise = rng.normal(0.0, 1.0, (max(n - 1, 0), 6))
    T_odom = T_true.copy()  # noqa: N806
    R_drift = np.eye(3)  # noqa: N806
    for k in range(1, n):
        decay = math.exp(-step_m[k - 1] / config.drift_correlation_m)
        rate = decay * rate + math.sqrt(1.0 - decay * decay) * sigma * noise[k - 1]
        increment = rate * step_m[k - 1]
        displacement = T_true[k, :3, 3] - T_true[k - 1, :3, 3]
        T_odom[k, :3, 3] = T_odom[k - 1, :3, 3] + R_drift @ displacement + increment[:3]
        # roll about world x, pitch about world y, yaw about world z (gravity)
        R_drift = Rotation.from_rotvec(increment[3:]).as_matrix() @ R_drift  # noqa: N806
        T_odom[k, :3, :3] = R_drift @ T_true[k, :3, :3]
    return T_odom


def _loop_corrections(T_true: np.ndarray, T_odom: np.ndarray, stamps: np.ndarray,  # noqa: N803
                      keyframes: np.ndarray, config: PoseDriftConfig,
                      rng: np.random.Generator) -> list[LoopCorrection]:
    """Revisits among the keyframes (judged on the true poses, as place recognition would) and
    the optimised keyframe poses published for each."""
    if config.max_corrections == 0:
        return []
    s = _path_length_m(T_true)
    position = T_true[keyframes, :3, 3]
    axis = T_true[keyframes, :3, 2]
    cos_max = math.cos(math.radians(config.revisit_angle_deg))
    corrections: list[LoopCorrection] = []
    ready_at_m = 0.0
    busy_until = -1
    for k, j in enumerate(keyframes):
        if len(corrections) >= config.max_corrections:
            break
        if j <= busy_until or s[j] < ready_at_m:
            continue
        earlier = np.nonzero(s[keyframes[:k]] <= s[j] - config.min_loop_path_m)[0]
        if len(earlier) == 0:
            continue
        dist = np.linalg.norm(position[earlier] - position[k], axis=1)
        ok = (dist <= config.revisit_radius_m) & (axis[earlier] @ axis[k] >= cos_max)
        if not ok.any():
            continue
        matched = int(keyframes[earlier[ok][np.argmin(dist[ok])]])
        publish = int(np.searchsorted(stamps, stamps[j] + round(config.correction_latency_s
                                                                 * 1e9)))
        if publish >= len(stamps):
            break  # the sequence ends before the optimisation finishes
        covered = keyframes[:k + 1]
        corrections.append(LoopCorrection(
            loop_index=int(j), matched_index=matched, publish_index=publish,
            stamp_ns=int(stamps[publish]), keyframe_indices=covered.copy(),
            keyframe_stamps_ns=stamps[covered],
            T_world_keyframe=_perturbed(T_true[covered], config, rng)))
        busy_until = publish
        ready_at_m = s[publish] + config.min_correction_spacing_m
    return corrections


def _perturbed(T: np.ndarray, config: PoseDriftConfig,  # noqa: N803
               rng: np.random.Generator) -> np.ndarray:
    """[K, 4, 4] poses with an independent small error each (3D RMS as configured)."""
    out = T.copy()
    k = len(T)
    t_sigma = config.residual_translation_m / math.sqrt(3.0)
    r_sigma = math.radians(config.residual_rotation_deg) / math.sqrt(3.0)
    out[:, :3, 3] += rng.normal(0.0, t_sigma, (k, 3))
    delta = Rotation.from_rotvec(rng.normal(0.0, r_sigma, (k, 3))).as_matrix()
    out[:, :3, :3] = delta @ T[:, :3, :3]
    return out


@dataclass
class PoseErrors:
    """How far an estimated trajectory is from the truth (no alignment: both start together)."""

    path_length_m: float
    ate_rmse_m: float
    """RMS position error over all frames, metres."""
    max_error_m: float
    final_error_m: float
    """Position error of the last frame, metres."""
    final_rotation_error_deg: float
    """Angle of the last frame's rotation error, degrees."""
    final_yaw_error_deg: float
    """Yaw part (about world +z) of the last frame's rotation error, degrees."""

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in vars(self).items()}


def pose_errors(T_true: np.ndarray, T_est: np.ndarray) -> PoseErrors:  # noqa: N803
    """Errors of ``T_est`` [N, 4, 4] against ``T_true`` [N, 4, 4] (world frame, unaligned)."""
    T_true, T_est = np.asarray(T_true, float), np.asarray(T_est, float)  # noqa: N806
    if T_true.shape != T_est.shape or T_true.ndim != 3 or len(T_true) == 0:
        raise InvalidInputError("T_est", T_est.shape, f"must match T_true {T_true.shape}",
                                kind="size_mismatch")
    error = np.linalg.norm(T_est[:, :3, 3] - T_true[:, :3, 3], axis=1)
    R_err = T_est[-1, :3, :3] @ T_true[-1, :3, :3].T  # noqa: N806 - world-frame error
    angle = np.linalg.norm(Rotation.from_matrix(R_err).as_rotvec())
    yaw = math.atan2(R_err[1, 0], R_err[0, 0])
    return PoseErrors(path_length_m=float(_path_length_m(T_true)[-1]),
                      ate_rmse_m=float(np.sqrt(np.mean(error ** 2))),
                      max_error_m=float(error.max()), final_error_m=float(error[-1]),
                      final_rotation_error_deg=math.degrees(angle),
                      final_yaw_error_deg=math.degrees(yaw))
