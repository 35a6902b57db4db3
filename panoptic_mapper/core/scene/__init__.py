"""Synthetic panoptic scenes with ground truth: the project's measuring stick.

Procedural rooms with furniture (:func:`generate_scene`), hand-held camera trajectories
(:func:`generate_trajectory`) and ray-cast RGB-D rendering with per-pixel ground truth and a depth
noise model (:class:`SceneRenderer`, :func:`render_sequence`). Deterministic by seed; ROS-free.

Typical use (no disk involved)::

    scene = generate_scene(SceneConfig(seed=3))
    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=100, seed=3))
    emulator = GroundedSamEmulator(emulator_preset("medium", seed=3), scene.registry)
    for sample in render_sequence(scene, trajectory, RenderConfig(seed=3), emulator):
        ...  # sample.frame, sample.segmentation, sample.ground_truth

(``GroundedSamEmulator`` and ``emulator_preset`` live in ``core/segmentation/emulator``.)

What a SLAM system would estimate for the walk (drifting poses, loop-closure corrections)::

    slam = simulate_slam_poses(trajectory.T_world_cam, trajectory.stamps_ns,
                               pose_drift_preset("vio", seed=3))
"""
from panoptic_mapper.core.scene.depth_noise import DepthNoiseConfig, apply_depth_noise
from panoptic_mapper.core.scene.generator import (SceneConfig, SceneInstance, SyntheticScene,
                                                  generate_scene)
from panoptic_mapper.core.scene.pose_drift import (PoseDriftConfig, SlamPoses, pose_drift_preset,
                                                   pose_errors, simulate_slam_poses)
from panoptic_mapper.core.scene.renderer import (CameraConfig, RenderConfig, RenderedView,
                                                 SceneRenderer)
from panoptic_mapper.core.scene.sequence import render_sequence
from panoptic_mapper.core.scene.trajectory import (CameraTrajectory, TrajectoryConfig,
                                                   generate_trajectory)

__all__ = [
    "CameraConfig", "CameraTrajectory", "DepthNoiseConfig", "PoseDriftConfig", "RenderConfig",
    "RenderedView", "SceneConfig", "SceneInstance", "SceneRenderer", "SlamPoses", "SyntheticScene",
    "TrajectoryConfig", "apply_depth_noise", "generate_scene", "generate_trajectory",
    "pose_drift_preset", "pose_errors", "render_sequence", "simulate_slam_poses",
]
