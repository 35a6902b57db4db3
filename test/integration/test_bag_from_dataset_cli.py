"""`panoptic-mapper bag-from-dataset` and `panoptic-mapper demo`, run through the CLI entry."""
import numpy as np
import pytest

from panoptic_mapper.core.io.bag import bag_info, read_bag
from panoptic_mapper.core.io.datasets import open_dataset, write_scannet_layout
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        PanopticSegmentation2D, RgbdFrame, Segment)
from panoptic_mapper.tools import cli


def _labelled_scene(root, registry, n=4):
    """A tiny ScanNet-layout scene with segmentation and ground truth; frame 2 has a bad pose."""
    intrinsics = CameraIntrinsics(10, 8, 9.0, 9.0, 4.5, 3.5)
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = (0.1 * i, 0.0, 1.0)
        frame = RgbdFrame(1_000 + i * 33_000_000, rng.integers(0, 256, (8, 10, 3), np.uint8),
                          np.full((8, 10), 2.0 + 0.001 * i, np.float32), T, intrinsics)
        ids = np.zeros((8, 10), np.int32)
        ids[2:6, 2:6] = 1
        segmentation = PanopticSegmentation2D(ids, (Segment(1, "mug", 18, True, 0.6, "cup"),),
                                              frame.stamp_ns)
        truth = GroundTruthLabels(np.where(ids == 1, 18, 2), np.where(ids == 1, 7, 0))
        samples.append(DatasetSample(frame, segmentation, truth))
    write_scannet_layout(root, samples, registry, intrinsics, progress=False)
    (root / "pose" / "2.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    return samples


def test_bag_from_scannet_layout_with_segmentation(tmp_path, label_registry, capsys):
    samples = _labelled_scene(tmp_path / "scene", label_registry)
    out = tmp_path / "scene.bag"
    code = cli.main(["bag-from-dataset", str(tmp_path / "scene"), str(out), "--storage",
                     "sqlite3", "--depth-encoding", "32FC1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "skipped frame 2" in captured.err and "pose/2.txt" in captured.err
    assert f"wrote 3 frames to {out} (sqlite3)" in captured.out
    info = bag_info(out)
    assert info.storage == "sqlite3"
    assert {t: i.message_count for t, i in info.topics.items()} == {
        "/camera/color/camera_info": 3, "/camera/color/image_raw": 3,
        "/camera/depth/image_raw": 3, "/camera/pose": 3, "/panoptic/segmentation": 3,
        "/ground_truth/labels": 3, "/ground_truth/instances": 3}
    frames = read_bag(out)
    read_back = list(frames)
    assert frames.skipped == [] and len(read_back) == 3
    for source, back in zip([samples[0], samples[1], samples[3]], read_back):
        assert back.frame.stamp_ns == source.frame.stamp_ns
        np.testing.assert_array_equal(back.frame.rgb, source.frame.rgb)
        np.testing.assert_allclose(back.frame.depth_m, source.frame.depth_m, atol=1e-6)
        assert back.segmentation.segments[0].label == "mug"
        np.testing.assert_array_equal(back.ground_truth.instance_ids,
                                      source.ground_truth.instance_ids)


def test_bag_from_seven_scenes_subset(seven_scenes_dir, tmp_path, capsys):
    out = tmp_path / "kitchen"
    code = cli.main(["bag-from-dataset", str(seven_scenes_dir), str(out), "--stride", "50",
                     "--max-frames", "4"])
    captured = capsys.readouterr()
    assert code == 0 and "wrote 4 frames" in captured.out
    assert "writing bag" in captured.err  # the tqdm progress bar
    assert bag_info(out).storage == "mcap"
    dataset = open_dataset(seven_scenes_dir, stride=50, max_frames=4)
    for a, b in zip(dataset, read_bag(out)):
        np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
        np.testing.assert_allclose(a.frame.T_world_cam, b.frame.T_world_cam, atol=1e-12)

    assert cli.main(["bag-from-dataset", str(seven_scenes_dir), str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert cli.main(["bag-from-dataset", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 1
    assert "folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["bag-from-dataset", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert "usage: panoptic-mapper" in capsys.readouterr().out
