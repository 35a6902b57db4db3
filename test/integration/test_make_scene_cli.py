"""`panoptic-mapper make-scene`: dataset folder + bag that read back to what was rendered."""
import numpy as np

from panoptic_mapper.core.io.bag import bag_info, read_bag
from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.scene import (CameraConfig, RenderConfig, SceneConfig, TrajectoryConfig,
                                        generate_scene, generate_trajectory, render_sequence)
from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset
from panoptic_mapper.tools import cli


def test_make_scene_writes_dataset_and_bag(tmp_path, capsys):
    out = tmp_path / "scene"
    code = cli.main(["make-scene", "--seed", "3", "--noise", "hard", "--frames", "6",
                     "--scale", "0.25", "--no-progress", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote 6 frames" in captured.out and "wrote bag" in captured.out
    dataset = open_dataset(out)
    assert len(dataset) == 6 and dataset.layout == "scannet"
    assert dataset.has_segmentation and dataset.has_ground_truth
    assert dataset.intrinsics.width == 160 and dataset.intrinsics.height == 120
    assert dataset.metadata["config"]["seed"] == 3
    assert dataset.metadata["config"]["arrangement"] == "dense"
    assert dataset.metadata["emulator"]["level"] == "hard"
    samples = list(dataset)

    # the same seed through the Python API renders the same frames (no disk involved)
    scene = generate_scene(SceneConfig(seed=3))
    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=6, seed=3))
    emulator = GroundedSamEmulator(emulator_preset("hard", seed=3), scene.registry)
    expected = list(render_sequence(scene, trajectory,
                                    RenderConfig(camera=CameraConfig().scaled(0.25), seed=3),
                                    emulator))
    for got, want in zip(samples, expected):
        assert got.frame.stamp_ns == want.frame.stamp_ns
        np.testing.assert_array_equal(got.frame.rgb, want.frame.rgb)
        np.testing.assert_allclose(got.frame.depth_m, want.frame.depth_m, atol=6e-4)  # mm PNG
        np.testing.assert_allclose(got.frame.T_world_cam, want.frame.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(got.ground_truth.label_ids, want.ground_truth.label_ids)
        np.testing.assert_array_equal(got.ground_truth.instance_ids,
                                      want.ground_truth.instance_ids)
        np.testing.assert_array_equal(got.segmentation.segment_ids,
                                      want.segmentation.segment_ids)
        assert [s.phrase for s in got.segmentation.segments] == \
            [s.phrase for s in want.segmentation.segments]

    mesh = read_ply(out / "gt_mesh.ply")
    assert mesh.num_vertices == scene.gt_mesh.num_vertices
    np.testing.assert_array_equal(mesh.instance_ids, scene.gt_mesh.instance_ids)

    info = bag_info(out / "bag")
    assert info.storage == "mcap"
    assert all(t.message_count == 6 for t in info.topics.values())
    assert "/panoptic/segmentation" in info.topics and "/ground_truth/instances" in info.topics
    from_bag = list(read_bag(out / "bag"))
    np.testing.assert_array_equal(from_bag[2].frame.rgb, samples[2].frame.rgb)
    np.testing.assert_array_equal(from_bag[2].segmentation.segment_ids,
                                  samples[2].segmentation.segment_ids)


def test_make_scene_arrangement_spaced_gives_the_earlier_scene(tmp_path, capsys):
    out = tmp_path / "spaced"
    code = cli.main(["make-scene", "--seed", "3", "--arrangement", "spaced", "--frames", "2",
                     "--scale", "0.1", "--no-bag", "--no-progress", str(out)])
    assert code == 0, capsys.readouterr().err
    meta = open_dataset(out).metadata
    assert meta["config"]["arrangement"] == "spaced"
    scene = generate_scene(SceneConfig(seed=3, arrangement="spaced"))
    assert [i["label"] for i in meta["instances"]] == [i.label for i in scene.instances]
    np.testing.assert_allclose([i["bbox_center_m"] for i in meta["instances"]],
                               [i.bbox.center_m for i in scene.instances], atol=1e-12)
    dense = generate_scene(SceneConfig(seed=3))
    assert len(meta["instances"]) < len(dense.instances)


def test_make_scene_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "taken.txt").write_text("x")
    code = cli.main(["make-scene", "--frames", "2", "--scale", "0.1", "--no-bag",
                     "--no-progress", str(tmp_path)])
    assert code == 1
    assert "out_dir" in capsys.readouterr().err


def test_make_scene_with_pose_drift_keeps_the_truth_beside_the_estimate(tmp_path, capsys):
    from panoptic_mapper.core.scene import pose_drift_preset, simulate_slam_poses

    out = tmp_path / "drift"
    code = cli.main(["make-scene", "--seed", "1", "--frames", "8", "--rate", "10", "--scale",
                     "0.1", "--pose-drift", "vo", "--no-progress", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "pose drift 'vo'" in captured.out
    dataset = open_dataset(out)
    meta = dataset.metadata["pose_drift"]
    assert meta["config"]["preset"] == "vo" and meta["estimated_poses"] == "pose_estimated/"
    assert meta["live_errors"]["max_error_m"] > 0
    trajectory = generate_trajectory(generate_scene(SceneConfig(seed=1)),
                                     TrajectoryConfig(num_frames=8, rate_hz=10, seed=1))
    slam = simulate_slam_poses(trajectory.T_world_cam, trajectory.stamps_ns,
                               pose_drift_preset("vo", seed=1))
    estimate = dataset.slam_estimate
    for i, sample in enumerate(dataset):  # ground truth where it always was
        np.testing.assert_allclose(sample.frame.T_world_cam, trajectory.T_world_cam[i], atol=1e-9)
        np.testing.assert_allclose(estimate.pose_at(sample.frame.stamp_ns), slam.T_world_cam[i],
                                   atol=1e-9)
    for i, sample in enumerate(read_bag(out / "bag")):  # the bag streams the estimate
        np.testing.assert_allclose(sample.frame.T_world_cam, slam.T_world_cam[i], atol=1e-9)
