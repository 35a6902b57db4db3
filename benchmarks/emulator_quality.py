"""2D quality of the Grounded-SAM emulator per noise level, and the cost of rendering a room.

Part 1 (quality): for a few generated scenes, renders the ground truth along a trajectory and
scores the emulated segmentation of every ``--stride``-th frame against it with the project's
metrics (``panoptic_mapper.core.eval.metrics``): per-frame PQ / SQ / RQ (segments matched inside
each frame, counts pooled over frames per class, COCO style; and the mean of per-frame PQs),
PQ_th / PQ_st, 2D mIoU / mAcc of the label images (unlabelled pixels count as wrong), plus the
corruption rates actually realised (from the emulator's reports).

Part 2 (cost): renders a ``--render-frames`` frame trajectory of one room at 640x480 with depth
noise, as ``make-scene`` does (without disk), in this process and with two worker processes, and
compares it with the bare ray casting of the same frames in the same process (Open3D
``cast_rays``; the floor any renderer pays). Also times the emulator per frame.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/emulator_quality.py \\
      [--scenes 3] [--frames 240] [--stride 8] [--render-frames 300]

``--scenes 0`` skips part 1, ``--render-frames 0`` part 2.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from panoptic_mapper.core.eval.metrics import (ConfusionMatrix, image_wise_panoptic_quality,
                                               panoptic_image_from_segmentation)
from panoptic_mapper.core.geometry.camera import open3d_pinhole_K
from panoptic_mapper.core.scene import (RenderConfig, SceneConfig, SceneRenderer, TrajectoryConfig,
                                        generate_scene, generate_trajectory, render_sequence)
from panoptic_mapper.core.segmentation.emulator import GroundedSamEmulator, emulator_preset

LEVELS = ("clean", "medium", "hard")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def quality(scenes: int, frames: int, stride: int) -> None:
    gts, depths, registry = [], [], None
    for seed in range(1, scenes + 1):
        scene = generate_scene(SceneConfig(seed=seed))
        registry = scene.registry
        trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=frames, seed=seed))
        renderer = SceneRenderer(scene, RenderConfig(seed=seed))
        for i in range(0, frames, stride):
            view = renderer.render(trajectory.T_world_cam[i], i)
            gts.append(view.ground_truth)
            depths.append(view.depth_m)
    print(f"{len(gts)} frames (640x480) from {scenes} scenes, every {stride}th of {frames}\n")
    print("| level | PQ | SQ | RQ | PQ_th | PQ_st | mean frame PQ | mIoU | mAcc | "
          "things missed | same-class pairs merged | things split | things mislabelled | "
          "FP / frame | unlabelled px | ms / frame |")
    print("|" + "---|" * 16)
    for level in LEVELS:
        emulator = GroundedSamEmulator(emulator_preset(level, seed=7), registry)
        preds, matrix = [], ConfusionMatrix(registry.max_id + 1)
        things = missed = split = wrong = fps = detected = 0
        same_pairs = same_merged = 0
        unlabelled = []
        started = time.process_time()
        for k, (gt, depth) in enumerate(zip(gts, depths)):
            out = emulator.emulate(gt, depth, frame_key=k)
            pred = panoptic_image_from_segmentation(out.segmentation)
            preds.append(pred)
            matrix.add(gt.label_ids, pred.label_ids)
            unlabelled.append(float((out.segmentation.segment_ids == 0).mean()))
            report = out.report
            fps += len(report.false_positive_ids)
            merged = set(report.merged_pairs)
            for a, b, same in report.candidate_pairs:
                if same:
                    same_pairs += 1
                    same_merged += (a, b) in merged
            for o in report.outcomes:
                if not o.gt_instance_id or o.dropped in ("too_small", "too_big"):
                    continue
                things += 1
                missed += o.dropped == "missed"
                if not o.dropped:
                    detected += 1
                    split += o.split
                    wrong += o.label_id != o.gt_label_id
        ms = 1000 * (time.process_time() - started) / len(gts)
        pq = image_wise_panoptic_quality(gts, preds, registry.thing_ids)
        sem = matrix.scores()
        p = pq.pooled
        print(f"| {level} | {_fmt(p.pq)} | {_fmt(p.sq)} | {_fmt(p.rq)} | {_fmt(p.pq_th)} | "
              f"{_fmt(p.pq_st)} | {_fmt(pq.mean_frame_pq)} | {_fmt(sem.miou)} | "
              f"{_fmt(sem.macc)} | {100 * missed / max(things, 1):.1f} % | "
              f"{100 * same_merged / max(same_pairs, 1):.0f} % of {same_pairs} | "
              f"{100 * split / max(detected, 1):.1f} % | {100 * wrong / max(detected, 1):.1f} % | "
              f"{fps / len(gts):.2f} | {100 * np.mean(unlabelled):.1f} % | {ms:.0f} |")


def render_cost(num_frames: int) -> None:
    import open3d as o3d

    scene = generate_scene(SceneConfig(seed=0))
    trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=num_frames, seed=0))
    config = RenderConfig()
    emulator = GroundedSamEmulator(emulator_preset("medium", seed=0), scene.registry)

    wall, cpu = time.perf_counter(), time.process_time()
    renderer = SceneRenderer(scene, config)
    renderer.render(trajectory.T_world_cam[0], 0)  # builds the BVH (lazy in Open3D)
    setup_s = time.perf_counter() - wall

    raycaster = renderer._raycaster  # noqa: SLF001 (the same BVH, for the reference)
    k = renderer.intrinsics
    K = o3d.core.Tensor(open3d_pinhole_K(k))  # noqa: N806
    started = time.perf_counter()
    for T in trajectory.T_world_cam:
        rays = raycaster.create_rays_pinhole(K, o3d.core.Tensor(np.linalg.inv(T)), k.width,
                                             k.height)
        raycaster.cast_rays(rays)
    cast_s = time.perf_counter() - started

    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in render_sequence(scene, trajectory, config))
    render_s, render_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall = time.perf_counter()
    count2 = sum(1 for _ in render_sequence(scene, trajectory, config, workers=2))
    render2_s = time.perf_counter() - wall

    views = [renderer.render(trajectory.T_world_cam[i], i) for i in range(0, num_frames, 10)]
    cpu = time.process_time()
    for i, view in enumerate(views):
        emulator.emulate(view.ground_truth, view.depth_m, i)
    emulate_ms = 1000 * (time.process_time() - cpu) / len(views)

    print(f"\nscene 0: {len(scene.triangles)} triangles, {len(scene.instances)} objects; "
          f"{count} frames 640x480, depth noise on; load average before: "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| what | time | per frame | vs bare cast_rays |")
    print("|---|---|---|---|")
    print(f"| renderer setup + BVH build (first frame) | {setup_s:.2f} s | | |")
    print(f"| bare `cast_rays` of all frames (reference) | {cast_s:.1f} s | "
          f"{1000 * cast_s / count:.0f} ms | 1.00x |")
    print(f"| `render_sequence` (RGB, depth + noise, GT) | {render_s:.1f} s wall, "
          f"{render_cpu:.1f} s CPU | {1000 * render_s / count:.0f} ms | "
          f"{render_s / cast_s:.2f}x |")
    print(f"| same, `workers=2` (spawned processes, incl. their start) | {render2_s:.1f} s wall "
          f"| {1000 * render2_s / count2:.0f} ms | {render2_s / cast_s:.2f}x |")
    print(f"| emulator (medium), 640x480 | | {emulate_ms:.0f} ms CPU | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--render-frames", type=int, default=300)
    args = parser.parse_args()
    if args.scenes > 0:
        quality(args.scenes, args.frames, args.stride)
    if args.render_frames > 0:
        render_cost(args.render_frames)


if __name__ == "__main__":
    main()
