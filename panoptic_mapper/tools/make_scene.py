"""Generate a synthetic panoptic scene: dataset with ground truth, emulated Grounded SAM, bag.

Builds a procedural scene from a seed, walks a camera through it, renders RGB-D (depth noise on
unless --clean-depth) with per-pixel ground truth, runs the Grounded-SAM emulator at the chosen
noise level, and writes OUT/ in the ScanNet export layout (docs/dataset_format.md):
color/, depth/, pose/, intrinsic/, timestamps.txt, label-filt/, instance-filt/ (ground truth),
panoptic/ (emulated 2D segmentation), gt_mesh.ply, labels.yaml, scene.json (all settings,
rooms and instances), and the same frames as a ROS 2 bag in OUT/bag/ (unless --no-bag).
With --pose-drift vio|vo a simulated SLAM system estimates the walk: its drifting live poses go
to pose_estimated/ and its loop-closure corrections to loop_corrections.json (pose/ keeps the
true poses, so scoring is unchanged), and the bag carries what a SLAM package publishes: the
estimate on the pose topic, each correction as a nav_msgs/Path (docs/benchmark.md).
The same seed and options always give the same scene. Exit status 0 on success, 1 on error.

Example:
  panoptic-mapper make-scene --seed 3 --noise medium --frames 300 /tmp/scene3
  panoptic-mapper make-scene --seed 0 --rate 10 --pose-drift vio /tmp/scene0_vio
  panoptic-mapper make-scene --seed 3 --arrangement spaced /tmp/scene3_spaced
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BAG_SUBDIR = "bag"
"""Folder of the bag inside OUT/."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="scene, camera and noise seed "
                        "(default: %(default)s)")
    parser.add_argument("--noise", choices=("clean", "medium", "hard"), default="medium",
                        help="Grounded-SAM emulator noise level (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=300, help="number of frames "
                        "(default: %(default)s)")
    parser.add_argument("--rooms", type=int, default=1, help="rooms side by side, connected by "
                        "doorways (default: %(default)s)")
    parser.add_argument("--arrangement", choices=("dense", "spaced"), default="dense",
                        help="furniture as people leave it, with chairs under tables, touching "
                        "rows and stacked boxes (dense), or the earlier, sparser layout (spaced; "
                        "the scenes made before arrangements existed) (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=30.0, help="frame rate, Hz "
                        "(default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="image size relative to "
                        "640x480 (default: %(default)s)")
    parser.add_argument("--clean-depth", action="store_true", help="exact depth (no sensor "
                        "noise model)")
    parser.add_argument("--pose-drift", choices=("none", "vio", "vo"), default="none",
                        help="pose error of a simulated SLAM system: drift per metre of "
                        "visual-inertial (vio) or visual (vo) odometry, with loop closures at "
                        "revisits (default: %(default)s, exact poses)")
    parser.add_argument("--no-bag", action="store_true", help="write only the dataset folder")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="bag storage format (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes that render and "
                        "segment in parallel (default: %(default)s; more only help when CPU "
                        "cores are idle)")
    parser.add_argument("--labels", default="", help="label registry YAML (default: the "
                        "packaged config/labels/default.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import InvalidInputError
    from panoptic_mapper.core.io.bag import write_bag
    from panoptic_mapper.core.io.datasets import open_dataset
    from panoptic_mapper.core.io.scannet_writer import write_scannet_layout
    from panoptic_mapper.core.io.slam_estimate import (CORRECTIONS_FILE, ESTIMATED_POSE_DIR,
                                                       write_slam_estimate)
    from panoptic_mapper.core.scene import (CameraConfig, DepthNoiseConfig, RenderConfig,
                                            SceneConfig, TrajectoryConfig, generate_scene,
                                            generate_trajectory, pose_drift_preset, pose_errors,
                                            render_sequence, simulate_slam_poses)
    from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset

    out = Path(args.out)
    try:
        if args.scale <= 0:
            raise InvalidInputError("--scale", args.scale, "must be > 0", kind="config")
        if args.workers < 1:
            raise InvalidInputError("--workers", args.workers, "must be >= 1", kind="config")
        started = time.perf_counter()
        scene_config = SceneConfig(seed=args.seed, num_rooms=args.rooms, label_file=args.labels,
                                   arrangement=args.arrangement)
        scene = generate_scene(scene_config)
        trajectory_config = TrajectoryConfig(num_frames=args.frames, rate_hz=args.rate,
                                             seed=args.seed)
        trajectory = generate_trajectory(scene, trajectory_config)
        seen = sorted({r.index for r in scene.rooms
                       if r.contains_xy(trajectory.positions_m[:, :2]).any()})
        if len(seen) < len(scene.rooms):
            print(f"warning: the {args.frames}-frame walk only enters room(s) {seen} of "
                  f"{len(scene.rooms)}; give about 600 frames per room to see them all",
                  file=sys.stderr)
        render_config = RenderConfig(camera=CameraConfig().scaled(args.scale),
                                     depth_noise=DepthNoiseConfig(enabled=not args.clean_depth),
                                     seed=args.seed)
        emulator_config = emulator_preset(args.noise, seed=args.seed)
        emulator = GroundedSamEmulator(emulator_config, scene.registry)
        print(f"scene {args.seed}: {len(scene.rooms)} room(s), {len(scene.instances)} objects "
              f"of {len({i.label for i in scene.instances})} classes, "
              f"{len(scene.triangles)} triangles; {args.frames} frames at "
              f"{render_config.camera.width}x{render_config.camera.height}, noise '{args.noise}'")
        metadata = scene.metadata()
        metadata.update(tool="panoptic-mapper make-scene", trajectory=trajectory_config.to_dict(),
                        render=render_config.to_dict(),
                        emulator={"level": args.noise, **emulator_config.to_dict()})
        drift_config = pose_drift_preset(args.pose_drift, seed=args.seed)
        slam = None
        if drift_config.enabled:  # 'none' leaves scene.json and every file as before
            slam = simulate_slam_poses(trajectory.T_world_cam, trajectory.stamps_ns, drift_config)
            live = pose_errors(trajectory.T_world_cam, slam.T_world_cam)
            metadata["pose_drift"] = {
                "config": drift_config.to_dict(), "estimated_poses": f"{ESTIMATED_POSE_DIR}/",
                "corrections": CORRECTIONS_FILE, "num_keyframes": len(slam.keyframe_indices),
                "num_corrections": len(slam.corrections),
                "live_errors": live.to_dict(),
                "odometry_errors": pose_errors(trajectory.T_world_cam,
                                               slam.T_odom_cam).to_dict()}
            print(f"pose drift '{args.pose_drift}': {live.path_length_m:.2f} m walked, live "
                  f"estimate ATE {100 * live.ate_rmse_m:.1f} cm (max {100 * live.max_error_m:.1f} "
                  f"cm), {len(slam.corrections)} loop correction(s)")
        samples = render_sequence(scene, trajectory, render_config, emulator,
                                  workers=args.workers)
        report = write_scannet_layout(out, samples, scene.registry,
                                      render_config.camera.intrinsics(), gt_mesh=scene.gt_mesh,
                                      metadata=metadata, progress=not args.no_progress)
        if slam is not None:
            write_slam_estimate(out, slam.T_world_cam, slam.corrections)
        print(f"wrote {report.num_frames} frames to {report.out_dir} "
              f"({time.perf_counter() - started:.1f} s)")
        if not args.no_bag:
            dataset = open_dataset(out)
            bag = write_bag(out / BAG_SUBDIR, dataset, dataset.intrinsics, storage=args.storage,
                            progress=not args.no_progress, slam_estimate=dataset.slam_estimate)
            print(f"wrote bag {bag.path} ({bag.storage}, {bag.num_frames} frames)")
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
