"""Simulated SLAM poses: drift rates over distance, yaw vs roll/pitch, loop-closure corrections."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from panoptic_mapper.core.errors import ConfigError, InvalidInputError
from panoptic_mapper.core.scene import (PoseDriftConfig, pose_drift_preset, pose_errors,
                                        simulate_slam_poses)
from panoptic_mapper.core.scene.trajectory import camera_rotation


def _straight(length_m: float, n: int = 101):
    """A camera walking along +x, looking along +x, 10 Hz."""
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.linspace(0.0, length_m, n)
    T[:, 2, 3] = 1.4
    T[:, :3, :3] = camera_rotation(np.zeros(n), np.zeros(n), np.zeros(n))
    return T, 1_000_000_000 + np.arange(n, dtype=np.int64) * 100_000_000


def _circle_walk(laps: float = 1.3, n: int = 300):
    """A camera walking laps of a 1 m radius circle at 0.26 m/s, looking outwards (10 Hz)."""
    angle = 2 * math.pi * laps * np.arange(n) / n
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = np.cos(angle), np.sin(angle), 1.4
    T[:, :3, :3] = camera_rotation(angle, np.full(n, -0.3), np.zeros(n))
    return T, 1_000_000_000 + np.arange(n, dtype=np.int64) * 100_000_000


def _final_errors(T, stamps, config, seeds=range(150)):
    """[S] final position errors (m) and [S, 3] final roll/pitch/yaw errors (deg) of the
    odometry over seeds."""
    position, angles = [], []
    for seed in seeds:
        odom = simulate_slam_poses(T, stamps, config.replace(seed=seed)).T_odom_cam
        position.append(np.linalg.norm(odom[-1, :3, 3] - T[-1, :3, 3]))
        error = Rotation.from_matrix(odom[-1, :3, :3] @ T[-1, :3, :3].T)
        angles.append(np.degrees(error.as_euler("xyz")))
    return np.array(position), np.array(angles)


def test_none_preset_is_the_identity():
    T, stamps = _circle_walk()
    slam = simulate_slam_poses(T, stamps, pose_drift_preset("none", seed=4))
    assert np.array_equal(slam.T_world_cam, T) and np.array_equal(slam.T_odom_cam, T)
    assert slam.corrections == []
    np.testing.assert_array_equal(slam.T_world_odom, np.tile(np.eye(4), (len(T), 1, 1)))
    assert not PoseDriftConfig().enabled
    assert np.array_equal(simulate_slam_poses(T, stamps).T_world_cam, T)


def test_presets_and_validation():
    vio, vo = pose_drift_preset("vio"), pose_drift_preset("vo", seed=2)
    assert vio.preset == "vio" and vio.enabled and vo.seed == 2
    assert vo.translation_drift_percent > vio.translation_drift_percent
    assert vio.roll_pitch_drift_deg_per_m < vio.yaw_drift_deg_per_m
    with pytest.raises(ConfigError, match="preset"):
        pose_drift_preset("lidar")
    with pytest.raises(ConfigError, match="yaw_drift_deg_per_m"):
        PoseDriftConfig(yaw_drift_deg_per_m=-1.0)
    T, stamps = _straight(2.0)
    with pytest.raises(InvalidInputError, match="stamps_ns"):
        simulate_slam_poses(T, stamps[::-1], vio)


def test_translation_drift_grows_with_distance_at_the_configured_rate():
    config = PoseDriftConfig(translation_drift_percent=2.0, drift_correlation_m=50.0)
    rms = {}
    for length in (1.0, 4.0):
        T, stamps = _straight(length)
        position, angles = _final_errors(T, stamps, config)
        assert np.abs(angles).max() == 0.0  # no rotation drift configured
        rms[length] = float(np.sqrt(np.mean(position ** 2)))
        # well below the correlation length the error is rate * distance (RMS over seeds)
        assert 0.8 * 0.02 * length < rms[length] < 1.2 * 0.02 * length, rms
    assert 3.0 < rms[4.0] / rms[1.0] < 5.0


def test_no_drift_while_standing_still():
    T = np.tile(np.eye(4), (50, 1, 1))
    stamps = np.arange(50, dtype=np.int64) * 100_000_000
    slam = simulate_slam_poses(T, stamps, pose_drift_preset("vo", max_corrections=0))
    np.testing.assert_allclose(slam.T_world_cam, T, atol=1e-12)


def test_yaw_drifts_roll_and_pitch_stay_small_and_yaw_bends_the_path():
    T, stamps = _straight(4.0)
    config = pose_drift_preset("vio", max_corrections=0)
    position, angles = _final_errors(T, stamps, config)
    roll_pitch_rms = np.sqrt(np.mean(angles[:, :2] ** 2))
    yaw_rms = np.sqrt(np.mean(angles[:, 2] ** 2))
    # about yaw rate * distance (the correlation length, 5 m, shortens it a little)
    assert 0.6 * 0.1 * 4.0 < yaw_rms < 1.2 * 0.1 * 4.0, yaw_rms
    assert roll_pitch_rms < 0.2 * yaw_rms
    # yaw alone displaces the end point sideways by about yaw * distance / 2
    yaw_only = PoseDriftConfig(yaw_drift_deg_per_m=1.0, drift_correlation_m=50.0)
    position, _ = _final_errors(T, stamps, yaw_only, seeds=range(60))
    sideways = math.radians(1.0) * 4.0 * 4.0 / 2
    assert 0.6 * sideways < np.sqrt(np.mean(position ** 2)) < 1.4 * sideways


def test_loop_closure_at_the_revisit_brings_the_estimate_back():
    T, stamps = _circle_walk()
    config = pose_drift_preset("vo", seed=1)
    slam = simulate_slam_poses(T, stamps, config)
    assert len(slam.corrections) >= 1
    keyframes = set(slam.keyframe_indices.tolist())
    for c in slam.corrections:
        # a revisit: the loop keyframe is back near the matched one, looking the same way
        assert {c.loop_index, c.matched_index} <= keyframes
        assert np.linalg.norm(T[c.loop_index, :3, 3] - T[c.matched_index, :3, 3]) <= 0.5
        assert T[c.loop_index, :3, 2] @ T[c.matched_index, :3, 2] >= math.cos(math.radians(30))
        assert c.loop_index - c.matched_index >= 100  # 3 m of path at 2.6 cm per frame
        # published 0.5 s later, covering every keyframe so far, close to the truth
        assert c.publish_index == c.loop_index + 5 and c.stamp_ns == stamps[c.publish_index]
        np.testing.assert_array_equal(c.keyframe_indices,
                                      slam.keyframe_indices[slam.keyframe_indices
                                                            <= c.loop_index])
        np.testing.assert_array_equal(c.keyframe_stamps_ns, stamps[c.keyframe_indices])
        errors = pose_errors(T[c.keyframe_indices], c.T_world_keyframe)
        assert errors.max_error_m < 0.04 and errors.ate_rmse_m < 0.02
    first = slam.corrections[0]
    # before the first correction the live estimate is the odometry; after it, near the truth
    np.testing.assert_array_equal(slam.T_world_cam[:first.publish_index],
                                  slam.T_odom_cam[:first.publish_index])
    after = first.publish_index
    live_error = np.linalg.norm(slam.T_world_cam[after, :3, 3] - T[after, :3, 3])
    odom_error = np.linalg.norm(slam.T_odom_cam[after, :3, 3] - T[after, :3, 3])
    assert live_error < 0.04 < odom_error
    # the jump is a map -> odom change: the live estimate keeps the odometry's relative motion
    rel_live = np.linalg.inv(slam.T_world_cam[after]) @ slam.T_world_cam[-1]
    rel_odom = np.linalg.inv(slam.T_odom_cam[after]) @ slam.T_odom_cam[-1]
    if len(slam.corrections) == 1:
        np.testing.assert_allclose(rel_live, rel_odom, atol=1e-9)


def test_corrections_respect_the_limits():
    T, stamps = _circle_walk(laps=2.5, n=600)
    slam = simulate_slam_poses(T, stamps, pose_drift_preset("vio", max_corrections=2))
    assert len(slam.corrections) == 2
    publish = [c.publish_index for c in slam.corrections]
    assert publish == sorted(publish)
    assert slam.corrections[1].loop_index > publish[0]
    none = simulate_slam_poses(T, stamps, pose_drift_preset("vio", max_corrections=0))
    assert none.corrections == []
    np.testing.assert_array_equal(none.T_world_cam, none.T_odom_cam)
