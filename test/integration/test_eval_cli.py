"""``panoptic-mapper eval`` end to end on tiny dataset folders written by hand.

The folders follow ``docs/dataset_format.md`` (ScanNet export layout with ground truth, the 2D
input segmentation and ``gt_mesh.ply``); the ground truth is ray cast from a labelled mesh, so
the oracle method must score 100.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from panoptic_mapper.core.eval.oracle import MeshLabelRenderer
from panoptic_mapper.core.types import CameraIntrinsics, PanopticMesh
from panoptic_mapper.tools.cli import main

WALL, FLOOR, CHAIR = 1, 2, 10
K = CameraIntrinsics(width=48, height=36, fx=30.0, fy=30.0, cx=23.5, cy=17.5)


def scene_mesh() -> PanopticMesh:
    """A 3 x 3 m floor, one wall (y = 3) and two touching chairs (boxes) against it."""
    vertices, faces, labels, instances = [], [], [], []

    def add(corners, tris, label, instance):
        faces.extend((np.asarray(tris) + len(vertices)).tolist())
        vertices.extend(corners)
        labels.extend([label] * len(corners))
        instances.extend([instance] * len(corners))

    add([[0, 0, 0], [3, 0, 0], [3, 3, 0], [0, 3, 0]], [[0, 1, 2], [0, 2, 3]], FLOOR, 0)
    add([[0, 3, 0], [3, 3, 0], [3, 3, 2], [0, 3, 2]], [[0, 1, 2], [0, 2, 3]], WALL, 0)
    box = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
           [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    for instance, (x0, x1) in enumerate([(1.0, 1.5), (1.5, 2.0)], start=1):
        add([[x, y, z] for x in (x0, x1) for y in (2.2, 2.7) for z in (0.0, 0.8)], box, CHAIR,
            instance)
    n = len(vertices)
    return PanopticMesh(np.array(vertices, float), np.array(faces), np.full((n, 3), 200),
                        np.array(labels), np.array(instances))


def camera_pose(i: int) -> np.ndarray:
    eye = np.array([0.9 + 0.3 * i, 0.3, 1.3])
    z = np.array([1.5, 2.45, 0.4]) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = eye
    return T


def write_ascii_ply(path, mesh: PanopticMesh) -> None:
    lines = ["ply", "format ascii 1.0", f"element vertex {mesh.num_vertices}",
             "property float x", "property float y", "property float z",
             "property uchar red", "property uchar green", "property uchar blue",
             "property int label_id", "property int instance_id",
             f"element face {mesh.num_triangles}", "property list uchar int vertex_indices",
             "end_header"]
    for v, c, label, instance in zip(mesh.vertices_m, mesh.colors, mesh.label_ids,
                                     mesh.instance_ids):
        lines.append(f"{v[0]} {v[1]} {v[2]} {c[0]} {c[1]} {c[2]} {label} {instance}")
    lines += [f"3 {a} {b} {c}" for a, b, c in mesh.triangles]
    path.write_text("\n".join(lines) + "\n")


def write_dataset(root, num_frames=6, registry=None):
    """A ScanNet-layout scene with GT images, the 2D input (GT with per-frame ids), the mesh."""
    mesh = scene_mesh()
    renderer = MeshLabelRenderer(mesh)
    for name in ("color", "depth", "pose", "intrinsic", "label-filt", "instance-filt",
                 "panoptic"):
        (root / name).mkdir(parents=True)
    intrinsic = np.eye(4)
    intrinsic[:3, :3] = K.K
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", intrinsic)
    for i in range(num_frames):
        T = camera_pose(i)
        gt = renderer.render(T, K)
        Image.fromarray(np.full((K.height, K.width, 3), 90, np.uint8)).save(
            root / "color" / f"{i}.png")
        Image.fromarray(np.round(gt.depth_m * 1000).astype(np.uint16)).save(
            root / "depth" / f"{i}.png")
        np.savetxt(root / "pose" / f"{i}.txt", T)
        Image.fromarray(gt.label_ids.astype(np.uint16)).save(root / "label-filt" / f"{i}.png")
        Image.fromarray(gt.instance_ids.astype(np.uint16)).save(
            root / "instance-filt" / f"{i}.png")
        # 2D input: stuff = one segment per label; things = one per instance, ids shuffled.
        keys = gt.label_ids * 100 + gt.instance_ids
        segment_ids = np.zeros(keys.shape, np.uint16)
        segments = []
        for k, key in enumerate(np.random.default_rng(i).permutation(np.unique(keys))):
            if key == 0:
                continue
            segment_ids[keys == key] = k + 1
            label = int(key // 100)
            name = {WALL: "wall", FLOOR: "floor", CHAIR: "chair"}[label]
            segments.append({"id": k + 1, "label": name, "label_id": label,
                             "is_thing": label == CHAIR, "score": 0.9, "phrase": name})
        Image.fromarray(segment_ids).save(root / "panoptic" / f"{i}.png")
        (root / "panoptic" / f"{i}.json").write_text(json.dumps({"segments": segments}))
    write_ascii_ply(root / "gt_mesh.ply", mesh)
    if registry is not None:
        registry.to_yaml(root / "labels.yaml")
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, label_registry):
    base = tmp_path_factory.mktemp("eval_cli")
    return [write_dataset(base / f"scene_{k}", registry=label_registry) for k in range(2)]


def test_eval_cli_oracle_on_two_scenes(scenes, tmp_path, capsys):
    config = tmp_path / "oracle.yaml"
    config.write_text("{}\n")
    eval_config = tmp_path / "eval.yaml"
    eval_config.write_text("gt_surface_samples: 20000\npred_surface_samples: 20000\n"
                           "eval_every: 3\n")
    out = tmp_path / "out"
    code = main(["eval", str(scenes[0]), str(scenes[1]), "--method", "oracle",
                 "--method", "truth=oracle", "--config", f"truth={config}", "--out", str(out),
                 "--eval-config", str(eval_config), "--eval-every", "2",
                 "--eval-pixel-step", "1", "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scenes"][0]["config"]["gt_surface_samples"] == 20000
    rows = {(r["scene"], r["method"]): r for r in metrics["rows"]}
    assert set(rows) == {(s, m) for s in ("scene_0", "scene_1") for m in ("oracle", "truth")}
    for row in rows.values():
        assert row["pq"] == pytest.approx(100.0) and row["miou_2d"] == pytest.approx(100.0)
        assert row["pq_th"] == pytest.approx(100.0) and row["pq_st"] == pytest.approx(100.0)
        assert row["miou_3d"] == pytest.approx(100.0) and row["mcov"] == pytest.approx(100.0)
        assert row["f1"] == pytest.approx(100.0) and row["chamfer_l1_cm"] < 1e-3
        # Depth PNGs hold millimetres: the render differs by at most the rounding.
        assert row["depth_median_cm"] <= 0.05
        assert row["integrate_ms_median"] is not None
    assert metrics["mean"]["oracle"]["pq"] == pytest.approx(100.0)
    assert metrics["mean"]["oracle"]["scenes"] == 2
    scene = metrics["scenes"][0]
    assert scene["eval_positions"] == [0, 2, 4] and scene["num_frames"] == 6
    assert metrics["input_segmentation"][0]["pq"] == pytest.approx(100.0)
    table = (out / "metrics.md").read_text()
    assert table.splitlines()[0].startswith("| scene | method | PQ | SQ | RQ | PQ_th")
    assert "| mean of 2 | oracle | 100.0 |" in table
    assert "2D input segmentation" in table
    printed = capsys.readouterr().out
    assert "| scene_1 | truth | 100.0 |" in printed and "metrics.json" in printed


def test_eval_cli_stride_and_max_frames(scenes, tmp_path):
    out = tmp_path / "out"
    assert main(["eval", str(scenes[0]), "--method", "oracle", "--stride", "2",
                 "--max-frames", "2", "--out", str(out), "--no-progress"]) == 0
    scene = json.loads((out / "metrics.json").read_text())["scenes"][0]
    assert scene["num_frames"] == 2 and scene["config"]["stride"] == 2


def test_eval_cli_reads_a_bag_with_ground_truth_beside_it(scenes, tmp_path):
    from panoptic_mapper.core.io.bag import write_bag
    from panoptic_mapper.core.io.datasets import open_dataset

    dataset = open_dataset(scenes[0])
    bag = scenes[0].parent / "scene_0_bag" / "recording"
    bag.parent.mkdir(exist_ok=True)
    write_bag(bag, dataset, dataset.intrinsics, progress=False)
    for name in ("gt_mesh.ply", "labels.yaml"):
        (bag.parent / name).write_bytes((scenes[0] / name).read_bytes())
    out = tmp_path / "out"
    assert main(["eval", str(bag), "--method", "oracle", "--stride", "2", "--out", str(out),
                 "--eval-every", "1", "--eval-pixel-step", "1", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scene = metrics["scenes"][0]
    assert scene["num_frames"] == 3 and scene["eval_positions"] == [0, 1, 2]
    row = metrics["rows"][0]
    assert row["pq"] == pytest.approx(100.0) and row["mcov"] == pytest.approx(100.0)


def test_eval_cli_errors(scenes, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["eval", str(scenes[0]), "--method", "oracle", "--config", "other=x.yaml",
                 "--out", out]) == 2
    assert "no --method named 'other'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--method", "oracle", "--out", out]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert main(["eval", str(scenes[0]), "--method", "no_such_method", "--out", out]) == 2
    assert "unknown map method" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([1, 2]))
    assert main(["eval", str(scenes[0]), "--method", "oracle", "--config", f"oracle={bad}",
                 "--out", out]) == 2
    assert "mapping" in capsys.readouterr().err
    assert main(["eval", str(scenes[0]), "--method", "oracle", "--poses", "estimated",
                 "--out", out]) == 2
    assert "no pose_estimated/" in capsys.readouterr().err


def test_eval_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for option in ("--method", "--config", "--out", "--max-frames", "--stride", "--eval-every",
                   "--poses"):
        assert option in text
