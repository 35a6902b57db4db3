"""``eval --poses estimated --corrections apply|ignore``: the evaluated map follows the published
loop corrections (``runtime/corrected_map``), or feeds the drifting estimate alone as before."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from panoptic_mapper.core.eval.runner import EvalConfig, EvalSource, MethodSpec, evaluate, \
    open_source
from panoptic_mapper.core.types import DatasetSample, GroundTruthLabels, LoopCorrection, \
    PanopticMesh

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from box_scene import INTR, NUM_FRAMES, OBJECTS, Scene, drift, frame, pose  # noqa: E402

CONFIG = {"tsdf": {"block_count": 3000}}
PUBLISHED_AT = 30
"""The correction is published with this frame; the live stream is corrected from it on."""
EVAL = dict(gt_surface_samples=10_000, pred_surface_samples=10_000, eval_every=4)


def gt_mesh(registry) -> PanopticMesh:
    vertices, triangles, labels, instances = [], [], [], []
    for centre, size, name, inst, _ in OBJECTS:
        box = o3d.geometry.TriangleMesh.create_box(*size)
        box.translate(np.asarray(centre) - np.asarray(size) / 2.0)
        triangles.append(np.asarray(box.triangles) + sum(len(v) for v in vertices))
        vertices.append(np.asarray(box.vertices))
        labels += [registry.by_name(name).id] * len(box.vertices)
        instances += [inst] * len(box.vertices)
    vertices = np.concatenate(vertices)
    return PanopticMesh(vertices, np.concatenate(triangles), np.full((len(vertices), 3), 128),
                        np.array(labels), np.array(instances))


@pytest.fixture(scope="module")
def drifting(label_registry):
    """Samples at the true poses, the drifting live estimate, and one loop correction."""
    scene = Scene(label_registry)
    rng = np.random.default_rng(0)
    samples, estimate = [], {}
    for k in range(NUM_FRAMES):
        depth, rgb, labels, instances = scene.render(pose(k))
        f = frame(k, depth, rgb)
        samples.append(DatasetSample(f, scene.segmentation(labels, instances, rng),
                                     GroundTruthLabels(labels, instances)))
        estimate[f.stamp_ns] = drift(k, 0.03) @ pose(k) if k < PUBLISHED_AT else pose(k)
    keyframes = list(range(0, PUBLISHED_AT, 3))
    correction = LoopCorrection(
        loop_index=keyframes[-1], matched_index=0, publish_index=PUBLISHED_AT,
        stamp_ns=samples[PUBLISHED_AT].frame.stamp_ns, keyframe_indices=keyframes,
        keyframe_stamps_ns=[samples[k].frame.stamp_ns for k in keyframes],
        T_world_keyframe=np.stack([pose(k) for k in keyframes]))
    return samples, estimate, correction, gt_mesh(label_registry)


def run(drifting, registry, corrections, applied=True, estimated=True):
    samples, estimate, correction, mesh = drifting
    source = EvalSource("box", samples, registry, len(samples), mesh,
                        integration_poses=estimate if estimated else None,
                        corrections=[correction] if applied and estimated else [])
    config = EvalConfig(**EVAL, corrections=corrections)
    return evaluate(source, [MethodSpec("instant", config=CONFIG)], config).methods["instant"]


def test_applied_corrections_bring_the_map_back_to_the_truth(drifting, label_registry):
    truth = run(drifting, label_registry, "apply", estimated=False)
    ignored = run(drifting, label_registry, "ignore")
    applied = run(drifting, label_registry, "apply")
    assert truth.corrections == [] and ignored.corrections == []
    [record] = applied.corrections
    assert "error" not in record, record
    assert record["position"] == PUBLISHED_AT and record["keyframes"] == 10
    assert 0 < record["frames_fused"] <= PUBLISHED_AT and record["duration_s"] > 0
    assert record["max_shift_m"] == pytest.approx(np.linalg.norm(drift(27, 0.03)[:3, 3]),
                                                  rel=0.05)
    assert applied.to_dict()["corrections"] == [record]
    # drift makes a worse map; the correction wins most of it back (the rebuild fuses the kept
    # frames at half resolution: a little less complete than the map of every full frame)
    gap = ignored.geometry.chamfer_l1_cm - truth.geometry.chamfer_l1_cm
    assert gap > 0.5, (ignored.geometry, truth.geometry)
    assert applied.geometry.chamfer_l1_cm < truth.geometry.chamfer_l1_cm + 0.4 * gap
    assert applied.depth.mean_abs_error_cm < 0.5 * ignored.depth.mean_abs_error_cm
    assert applied.panoptic.pq > ignored.panoptic.pq + 10
    assert applied.num_instances == truth.num_instances


def test_ignore_is_the_evaluation_without_corrections(drifting, label_registry):
    ignored = run(drifting, label_registry, "ignore").to_dict()
    before = run(drifting, label_registry, "apply", applied=False).to_dict()  # no corrections
    for result in (ignored, before):
        result.pop("timing")
    assert ignored == before


def test_open_source_reads_the_corrections_only_to_apply_them(drifting, label_registry,
                                                              tmp_path):
    from panoptic_mapper.core.io.datasets import write_scannet_layout
    from panoptic_mapper.core.io.slam_estimate import write_slam_estimate

    samples, estimate, correction, mesh = drifting
    write_scannet_layout(tmp_path / "scene", samples, label_registry, INTR, gt_mesh=mesh,
                         progress=False)
    write_slam_estimate(tmp_path / "scene",
                        np.stack([estimate[s.frame.stamp_ns] for s in samples]), [correction])
    applied = open_source(tmp_path / "scene", EvalConfig(poses="estimated"))
    assert [c.stamp_ns for c in applied.corrections] == [correction.stamp_ns]
    assert any("applied its 1 loop corrections" in note for note in applied.notes)
    ignored = open_source(tmp_path / "scene", EvalConfig(poses="estimated",
                                                         corrections="ignore"))
    assert ignored.corrections == []
    assert any("loop corrections not applied" in note for note in ignored.notes)
    assert open_source(tmp_path / "scene").corrections == []  # true poses
    with pytest.raises(Exception, match="corrections"):
        EvalConfig(corrections="later")
