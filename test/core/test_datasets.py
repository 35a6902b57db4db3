"""Dataset readers (7-Scenes, Replica, ScanNet layout) and the ScanNet-layout writer.

Unit conventions are checked against the real shared data, read in place.
"""
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.geometry.camera import back_project_to_world
from panoptic_mapper.core.io.datasets import detect_layout, open_dataset, write_scannet_layout
from panoptic_mapper.core.io.ply import read_ply
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        PanopticMesh, PanopticSegmentation2D, RgbdFrame, Segment)


# --------------------------------------------------------------------------------------------
# 7-Scenes (real data)
# --------------------------------------------------------------------------------------------
def test_seven_scenes_conventions(seven_scenes_dir):
    dataset = open_dataset(seven_scenes_dir)
    assert dataset.layout == "7scenes" and len(dataset) == 250
    assert dataset.intrinsics == CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    assert dataset.registry is None and dataset.gt_mesh_path is None
    assert not dataset.has_segmentation and not dataset.has_ground_truth
    # no timestamps: frame number n (stride 4 in the file names) is n / 30 s
    assert dataset.frame_names[:2] == ["frame-000000", "frame-000004"]
    assert dataset.stamps_ns[:3].tolist() == [0, 133_333_333, 266_666_667]

    sample = dataset[214]  # frame-000856 holds 3992 pixels with the invalid marker 65535
    assert sample.frame.stamp_ns == round(856e9 / 30)
    raw = np.asarray(Image.open(seven_scenes_dir / "frames" / "frame-000856.depth.png"))
    depth = sample.frame.depth_m
    assert depth.dtype == np.float32 and depth.shape == (480, 640)
    assert int((raw == 65535).sum()) == 3992
    assert np.all(depth[(raw == 65535) | (raw == 0)] == 0.0)
    valid = (raw > 0) & (raw < 65535)
    np.testing.assert_allclose(depth[valid], raw[valid] / 1000.0, rtol=1e-6)
    assert 0.5 < depth[valid].min() and depth[valid].max() < 4.5

    file_pose = np.loadtxt(seven_scenes_dir / "frames" / "frame-000856.pose.txt")
    T = sample.frame.T_world_cam
    np.testing.assert_allclose(T, file_pose, atol=1e-3)  # T_world_cam as stored (camera-to-world)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    assert sample.frame.frame_id == "camera_color_optical_frame" and sample.frame.index == 214


def _world_points(frame, T_world_cam, step=6):
    """Back-project every ``step``-th pixel with OpenCV axes: ((u-cx) z/fx, (v-cy) z/fy, z)."""
    k = frame.intrinsics
    v, u = np.mgrid[0:k.height:step, 0:k.width:step]
    z = frame.depth_m[v, u]
    valid = z > 0
    return back_project_to_world(T_world_cam, k, u[valid], v[valid], z[valid])


def _median_gap(points, reference):
    from scipy.spatial import cKDTree

    return float(np.median(cKDTree(reference).query(points)[0]))


def test_seven_scenes_poses_are_camera_to_world(seven_scenes_dir):
    dataset = open_dataset(seven_scenes_dir)
    a, b = dataset[0].frame, dataset[10].frame  # frame-000000 and frame-000040
    gap = _median_gap(_world_points(a, a.T_world_cam), _world_points(b, b.T_world_cam))
    inverse_gap = _median_gap(_world_points(a, np.linalg.inv(a.T_world_cam)),
                              _world_points(b, np.linalg.inv(b.T_world_cam)))
    assert gap < 0.03 and inverse_gap > 0.08  # README: 1.7 cm vs 13.9 cm


def test_seven_scenes_selection(seven_scenes_dir):
    dataset = open_dataset(seven_scenes_dir, start=1, stride=2, max_frames=3)
    assert dataset.frame_names == ["frame-000004", "frame-000012", "frame-000020"]
    samples = list(dataset)
    assert [s.frame.index for s in samples] == [0, 1, 2] and dataset.skipped == []
    assert samples[0].frame.rgb.shape == (480, 640, 3) and samples[0].frame.rgb.dtype == np.uint8
    with pytest.raises(InvalidInputError, match="stride"):
        open_dataset(seven_scenes_dir, stride=0)
    with pytest.raises(InvalidInputError, match="start"):
        open_dataset(seven_scenes_dir, start=250)


def _copy_seven_scenes(src, dst, names):
    (dst / "frames").mkdir(parents=True)
    shutil.copy(src / "camera-intrinsics.txt", dst)
    for name in names:
        for suffix in (".color.jpg", ".depth.png", ".pose.txt"):
            shutil.copy(src / "frames" / f"{name}{suffix}", dst / "frames")


def test_bad_frames_are_reported_per_frame(seven_scenes_dir, tmp_path):
    names = ["frame-000000", "frame-000004", "frame-000008", "frame-000012"]
    _copy_seven_scenes(seven_scenes_dir, tmp_path, names)
    frames = tmp_path / "frames"
    depth = frames / "frame-000004.depth.png"
    depth.write_bytes(depth.read_bytes()[:5000])  # truncated PNG
    shear = np.eye(4)
    shear[0, 1] = 0.2
    np.savetxt(frames / "frame-000008.pose.txt", shear)  # not a rigid transform
    (frames / "frame-000012.pose.txt").unlink()

    dataset = open_dataset(tmp_path)
    samples = list(dataset)
    assert [s.frame.stamp_ns for s in samples] == [0]
    assert [s.name for s in dataset.skipped] == names[1:]
    assert [s.position for s in dataset.skipped] == [1, 2, 3]
    truncated, sheared, missing = (s.error for s in dataset.skipped)
    assert isinstance(truncated, DataFormatError) and "frame-000004.depth.png" in truncated.field
    assert "truncated" in truncated.reason
    assert "frame-000008.pose.txt" in sheared.field and sheared.kind == "pose"
    assert "not orthonormal" in sheared.reason
    assert "frame-000012.pose.txt" in missing.field
    with pytest.raises(DataFormatError, match="frame-000004.depth.png"):
        dataset[1]
    with pytest.raises(DataFormatError, match="frame-000004"):
        list(dataset.iter_samples(on_error="raise"))


def test_seven_scenes_without_intrinsics(seven_scenes_dir, tmp_path):
    _copy_seven_scenes(seven_scenes_dir, tmp_path, ["frame-000000"])
    (tmp_path / "camera-intrinsics.txt").unlink()
    with pytest.raises(DataFormatError, match="camera-intrinsics.txt"):
        open_dataset(tmp_path)


# --------------------------------------------------------------------------------------------
# Replica / NICE-SLAM (real data)
# --------------------------------------------------------------------------------------------
def test_replica_conventions(replica_dir):
    dataset = open_dataset(replica_dir)
    assert dataset.layout == "replica" and dataset.name == "office0" and len(dataset) == 4
    assert dataset.intrinsics == CameraIntrinsics(1200, 680, 600.0, 600.0, 599.5, 339.5)
    assert dataset.gt_mesh_path == replica_dir / "office0_mesh.ply"
    assert open_dataset(replica_dir / "office0").frame_names == dataset.frame_names

    frame = dataset[0].frame
    raw = np.asarray(Image.open(replica_dir / "office0" / "results" / "depth000000.png"))
    assert frame.rgb.shape == (680, 1200, 3) and frame.depth_m.shape == (680, 1200)
    np.testing.assert_allclose(frame.depth_m, raw / 6553.5, rtol=1e-6)
    valid = frame.depth_m[frame.depth_m > 0]
    assert 1.11 < valid.min() < 1.13 and 3.62 < valid.max() < 3.64  # README: 1.12-3.63 m
    line = (replica_dir / "office0" / "traj.txt").read_text().splitlines()[0]
    np.testing.assert_allclose(frame.T_world_cam, np.array(line.split(), float).reshape(4, 4),
                               atol=1e-3)  # OpenCV axes, no y/z flip

    mesh = read_ply(dataset.gt_mesh_path)
    assert (mesh.num_vertices, mesh.num_triangles) == (25149, 50000)
    gap = _median_gap(_world_points(frame, frame.T_world_cam), mesh.vertices_m)
    inverse_gap = _median_gap(_world_points(frame, np.linalg.inv(frame.T_world_cam)),
                              mesh.vertices_m)
    assert gap < 0.1 and inverse_gap > 0.18  # README: about 7 cm vs 24 cm


def test_replica_trajectory_too_short(replica_dir, tmp_path):
    scene = tmp_path / "office0"
    shutil.copytree(replica_dir / "office0" / "results", scene / "results")
    shutil.copy(replica_dir / "cam_params.json", tmp_path)
    lines = (replica_dir / "office0" / "traj.txt").read_text().splitlines()
    (scene / "traj.txt").write_text("\n".join(lines[:2]) + "\n")
    dataset = open_dataset(tmp_path)
    assert len(list(dataset)) == 2
    assert [s.name for s in dataset.skipped] == ["frame000002", "frame000003"]
    assert "traj.txt:line 3" in dataset.skipped[0].error.field


# --------------------------------------------------------------------------------------------
# ScanNet layout: a hand-made fixture with colour at another size and an invalid pose
# --------------------------------------------------------------------------------------------
DEPTH_SHAPE = (12, 16)
COLOR_SHAPE = (24, 32)  # twice the depth size, like ScanNet's 1296x968 colour vs 640x480 depth


def _write_scannet_fixture(root, label_registry):
    for name in ("color", "depth", "pose", "intrinsic", "label-filt", "instance-filt",
                 "panoptic"):
        (root / name).mkdir(parents=True)
    K = np.array([[20.0, 0, 7.5, 0], [0, 20.0, 5.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", K)
    label_registry.to_yaml(root / "labels.yaml")
    (root / "timestamps.txt").write_text("0 1000000000\n1 1100000000\n2 1200000000\n")
    (root / "scene.json").write_text(json.dumps({"seed": 7}))
    for i in range(3):
        color = np.zeros(COLOR_SHAPE + (3,), np.uint8)
        color[:, :, 0] = 40 * i + 10
        color[:, 16:, 1] = 200
        Image.fromarray(color).save(root / "color" / f"{i}.jpg", quality=95)
        depth = np.full(DEPTH_SHAPE, 1500 + i, np.uint16)
        depth[0, 0] = 0
        Image.fromarray(depth).save(root / "depth" / f"{i}.png")
        pose = np.eye(4)
        pose[:3, 3] = (i, 0.5, -1.0)
        if i == 1:
            pose[:] = -np.inf  # ScanNet's marker of a frame without a pose
        np.savetxt(root / "pose" / f"{i}.txt", pose)
        labels = np.ones(COLOR_SHAPE, np.uint16)  # wall
        labels[:, 16:] = 10  # chair
        instances = np.where(labels == 10, 3, 0).astype(np.uint16)
        Image.fromarray(labels).save(root / "label-filt" / f"{i}.png")
        Image.fromarray(instances).save(root / "instance-filt" / f"{i}.png")
        ids = np.where(labels == 10, 2, 1).astype(np.uint16)
        Image.fromarray(ids).save(root / "panoptic" / f"{i}.png")
        segments = [{"id": 1, "label": "wall", "label_id": 1, "is_thing": False, "score": 0.8,
                     "phrase": "wall"},
                    {"id": 2, "label": "chair", "label_id": 10, "is_thing": True, "score": 0.9,
                     "phrase": "office chair"}]
        (root / "panoptic" / f"{i}.json").write_text(json.dumps({"segments": segments}))


@pytest.fixture
def scannet_dir(tmp_path, label_registry):
    root = tmp_path / "scene0000_00"
    _write_scannet_fixture(root, label_registry)
    return root


def test_scannet_layout(scannet_dir, label_registry):
    assert detect_layout(scannet_dir) == "scannet"
    dataset = open_dataset(scannet_dir)
    assert dataset.intrinsics == CameraIntrinsics(16, 12, 20.0, 20.0, 7.5, 5.5)
    assert dataset.has_segmentation and dataset.has_ground_truth
    assert [label.id for label in dataset.registry] == [label.id for label in label_registry]
    assert dataset.metadata == {"seed": 7}
    assert dataset.stamps_ns.tolist() == [1_000_000_000, 1_100_000_000, 1_200_000_000]

    samples = list(dataset)
    assert [s.frame.stamp_ns for s in samples] == [1_000_000_000, 1_200_000_000]
    (skipped,) = dataset.skipped
    assert skipped.name == "1" and "pose/1.txt" in skipped.error.field
    assert "NaN or inf" in skipped.reason

    frame = samples[1].frame
    assert frame.rgb.shape == DEPTH_SHAPE + (3,)  # colour resized to the depth size
    assert abs(int(frame.rgb[5, 2, 0]) - 90) <= 3 and frame.rgb[5, 2, 1] <= 3
    assert frame.rgb[5, 12, 1] >= 197
    assert frame.depth_m[0, 0] == 0.0 and frame.depth_m[3, 3] == pytest.approx(1.502)
    np.testing.assert_allclose(frame.T_world_cam[:3, 3], [2, 0.5, -1])

    segmentation = samples[1].segmentation
    assert segmentation.shape == DEPTH_SHAPE and segmentation.stamp_ns == 1_200_000_000
    assert [(s.id, s.label, s.label_id, s.is_thing) for s in segmentation.segments] == [
        (1, "wall", 1, False), (2, "chair", 10, True)]
    assert segmentation.segments[1].phrase == "office chair"
    assert np.unique(segmentation.label_image()[:, 8:]).tolist() == [10]
    truth = samples[1].ground_truth
    assert truth.label_ids.shape == DEPTH_SHAPE
    assert np.unique(truth.instance_ids[:, :8]).tolist() == [0]
    assert np.unique(truth.instance_ids[:, 8:]).tolist() == [3]


def _segments_json(root, i):
    return json.loads((root / "panoptic" / f"{i}.json").read_text())


@pytest.mark.parametrize("corruption, field, kind", [
    ("id_missing_from_json", "panoptic/0.png", "segmentation"),
    ("unknown_label", "segments[1].label", "unknown_label"),
    ("label_id_disagrees", "segments[1].label", "unknown_label"),
    ("thing_flag_disagrees", "segments[1].is_thing", "unknown_label"),
    ("unknown_gt_label", "label-filt/0.png", "unknown_label"),
])
def test_scannet_bad_segmentation(scannet_dir, corruption, field, kind):
    data = _segments_json(scannet_dir, 0)
    chair = data["segments"][1]
    if corruption == "id_missing_from_json":
        data["segments"] = data["segments"][:1]
    elif corruption == "unknown_label":
        chair["label"] = "spaceship"
    elif corruption == "label_id_disagrees":
        chair["label_id"] = 11
    elif corruption == "thing_flag_disagrees":
        chair["is_thing"] = False
    elif corruption == "unknown_gt_label":
        labels = np.full(COLOR_SHAPE, 77, np.uint16)
        Image.fromarray(labels).save(scannet_dir / "label-filt" / "0.png")
    (scannet_dir / "panoptic" / "0.json").write_text(json.dumps(data))
    dataset = open_dataset(scannet_dir)
    with pytest.raises(DataFormatError) as info:
        dataset[0]
    assert field in info.value.field and info.value.kind == kind
    assert len(list(dataset)) == 1 and len(dataset.skipped) == 2  # frame 0 and the -inf pose


def test_scannet_dataset_level_errors(scannet_dir):
    shutil.rmtree(scannet_dir / "depth")
    with pytest.raises(DataFormatError, match="unknown layout"):
        open_dataset(scannet_dir)
    with pytest.raises(DataFormatError, match=r"\['depth'\]"):
        open_dataset(scannet_dir, layout="scannet")
    with pytest.raises(DataFormatError, match="folder not found"):
        open_dataset(scannet_dir / "nope")


def test_scannet_bad_timestamps_and_labels(scannet_dir):
    (scannet_dir / "timestamps.txt").write_text("0 1000\n2 3000\n")
    with pytest.raises(DataFormatError, match="frames without a timestamp") as info:
        open_dataset(scannet_dir)
    assert "timestamps.txt" in info.value.field and info.value.value == [1]
    (scannet_dir / "timestamps.txt").write_text("0 1000\n1 abc\n2 3000\n")
    with pytest.raises(DataFormatError, match="line 2"):
        open_dataset(scannet_dir)
    (scannet_dir / "timestamps.txt").unlink()
    assert open_dataset(scannet_dir).stamps_ns.tolist() == [0, 33_333_333, 66_666_667]
    (scannet_dir / "labels.yaml").write_text("labels: [{id: 0, name: x, is_thing: true}]")
    with pytest.raises(InvalidInputError, match="label ids must be in 1..65535"):
        open_dataset(scannet_dir)


# --------------------------------------------------------------------------------------------
# Writer round trip
# --------------------------------------------------------------------------------------------
def synthetic_samples(n, intrinsics, with_labels=True, seed=0):
    """Small random frames with a wall (stuff) + chair (thing) segmentation and ground truth."""
    rng = np.random.default_rng(seed)
    h, w = intrinsics.shape
    for i in range(n):
        angle = 0.3 * i
        T = np.eye(4)
        T[:3, :3] = [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0],
                     [0, 0, 1]]
        T[:3, 3] = rng.normal(size=3)
        depth = np.round(rng.uniform(0.5, 4.0, (h, w)), 3).astype(np.float32)
        depth[0, :3] = 0.0
        frame = RgbdFrame(stamp_ns=5_000_000_000 + i * 100_000_000,
                          rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth_m=depth,
                          T_world_cam=T, intrinsics=intrinsics, index=i)
        if not with_labels:
            yield DatasetSample(frame)
            continue
        ids = np.ones((h, w), np.int32)
        ids[:, w // 2:] = 2
        ids[0, 0] = 0
        segmentation = PanopticSegmentation2D(ids, (
            Segment(1, "wall", 1, False, 0.75, "wall panel"),
            Segment(2, "chair", 10, True, 0.5, "office chair")), frame.stamp_ns)
        labels = np.where(ids == 2, 10, 1)
        truth = GroundTruthLabels(labels, np.where(ids == 2, 40 + i % 2, 0))
        yield DatasetSample(frame, segmentation, truth)


def _assert_same_samples(written, read, exact_rgb=True):
    assert len(written) == len(read)
    for a, b in zip(written, read):
        assert a.frame.stamp_ns == b.frame.stamp_ns
        if exact_rgb:
            np.testing.assert_array_equal(a.frame.rgb, b.frame.rgb)
        np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
        np.testing.assert_allclose(a.frame.T_world_cam, b.frame.T_world_cam, atol=1e-12)
        assert a.frame.intrinsics == b.frame.intrinsics
        if a.segmentation is None:
            assert b.segmentation is None
        else:
            np.testing.assert_array_equal(a.segmentation.segment_ids, b.segmentation.segment_ids)
            assert a.segmentation.segments == b.segmentation.segments
            assert a.segmentation.stamp_ns == b.segmentation.stamp_ns
        if a.ground_truth is None:
            assert b.ground_truth is None
        else:
            np.testing.assert_array_equal(a.ground_truth.label_ids, b.ground_truth.label_ids)
            np.testing.assert_array_equal(a.ground_truth.instance_ids,
                                          b.ground_truth.instance_ids)


INTRINSICS = CameraIntrinsics(width=20, height=15, fx=18.0, fy=18.5, cx=9.5, cy=7.0)


def test_writer_round_trip(tmp_path, label_registry):
    samples = list(synthetic_samples(4, INTRINSICS))
    mesh = PanopticMesh(np.eye(3), [[0, 1, 2]], [[255, 0, 0]] * 3, [1, 10, 10], [0, 40, 40])
    report = write_scannet_layout(tmp_path / "scene", iter(samples), label_registry, INTRINSICS,
                                  gt_mesh=mesh, metadata={"seed": 3, "noise": [0.1, 0.2]},
                                  progress=False)
    assert (report.num_frames, report.has_segmentation, report.has_ground_truth) == (4, True, True)
    dataset = open_dataset(tmp_path / "scene")
    assert dataset.layout == "scannet" and dataset.intrinsics == INTRINSICS
    assert dataset.metadata == {"seed": 3, "noise": [0.1, 0.2]}
    assert dataset.registry.to_dict() == label_registry.to_dict()
    back = list(dataset)
    assert dataset.skipped == []
    _assert_same_samples(samples, back)
    mesh_back = read_ply(dataset.gt_mesh_path)
    np.testing.assert_array_equal(mesh_back.instance_ids, [0, 40, 40])


def test_writer_jpeg_and_no_labels(tmp_path, label_registry):
    samples = list(synthetic_samples(2, INTRINSICS, with_labels=False))
    report = write_scannet_layout(tmp_path / "scene", samples, label_registry, INTRINSICS,
                                  progress=False, color_format="jpg")
    assert not report.has_segmentation and not report.has_ground_truth
    assert sorted(p.name for p in (tmp_path / "scene" / "color").iterdir()) == ["0.jpg", "1.jpg"]
    dataset = open_dataset(tmp_path / "scene")
    assert not dataset.has_segmentation and not dataset.has_ground_truth
    _assert_same_samples(samples, list(dataset), exact_rgb=False)


def test_writer_rejects_bad_input(tmp_path, label_registry):
    samples = list(synthetic_samples(2, INTRINSICS))
    with pytest.raises(InvalidInputError, match="intrinsics"):
        write_scannet_layout(tmp_path / "a", samples, label_registry,
                             INTRINSICS.scaled(2.0), progress=False)
    mixed = [samples[0], DatasetSample(samples[1].frame)]
    with pytest.raises(InvalidInputError, match="samples\\[1\\].segmentation"):
        write_scannet_layout(tmp_path / "b", mixed, label_registry, INTRINSICS, progress=False)
    bad_truth = DatasetSample(samples[0].frame, samples[0].segmentation,
                              GroundTruthLabels(np.full(INTRINSICS.shape, 99),
                                                np.zeros(INTRINSICS.shape)))
    with pytest.raises(InvalidInputError, match="unknown to the label registry"):
        write_scannet_layout(tmp_path / "c", [bad_truth], label_registry, INTRINSICS,
                             progress=False)
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        write_scannet_layout(tmp_path / "c", samples, label_registry, INTRINSICS,
                             progress=False)
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        write_scannet_layout(tmp_path / "d", samples, label_registry, INTRINSICS,
                             metadata={"x": object()}, progress=False)
