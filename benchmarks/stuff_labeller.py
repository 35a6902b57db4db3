"""Geometric floor / wall / ceiling labelling (detector backend) against synthetic ground truth.

Real frames have no stuff labels, so the stuff labeller of the ``detector`` backend
(``core/segmentation/stuff_labeller.py``) is scored on generated rooms: every ``--stride``-th frame
of a trajectory is rendered at 640x480 with the sensor's depth noise, labelled from depth,
intrinsics and pose only (gravity -z), and compared per pixel with the rendered ground truth.
Reports, per stuff class, IoU, precision and recall over all scored pixels, and the median time
per frame. A second row labels the same frames without poses (level camera assumed).

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/stuff_labeller.py \\
      [--scenes 3] [--frames 120] [--stride 6]
"""
from __future__ import annotations

import argparse

import numpy as np

from panoptic_mapper.core.scene import (RenderConfig, SceneConfig, SceneRenderer, TrajectoryConfig,
                                        generate_scene, generate_trajectory)
from panoptic_mapper.core.segmentation.stuff_labeller import StuffLabeller, StuffLabellerConfig

STUFF = ("floor", "wall", "ceiling")


def score(scenes: int, frames: int, stride: int, use_pose: bool) -> tuple[dict, float]:
    counts = {name: np.zeros(3, np.int64) for name in STUFF}  # tp, fp, fn
    times = []
    for seed in range(1, scenes + 1):
        scene = generate_scene(SceneConfig(seed=seed))
        registry = scene.registry
        ids = {name: registry.by_name(name).id for name in STUFF}
        labeller = StuffLabeller(StuffLabellerConfig(), registry)
        trajectory = generate_trajectory(scene, TrajectoryConfig(num_frames=frames, seed=seed))
        renderer = SceneRenderer(scene, RenderConfig(seed=seed))
        for i in range(0, frames, stride):
            view = renderer.render(trajectory.T_world_cam[i], i)
            result = labeller.label(view.depth_m, renderer.intrinsics,
                                    trajectory.T_world_cam[i] if use_pose else None)
            times.append(result.ms)
            scored = view.depth_m > 0
            for name, label_id in ids.items():
                predicted = (result.label_ids == label_id) & scored
                truth = (view.label_ids == label_id) & scored
                counts[name] += [np.sum(predicted & truth), np.sum(predicted & ~truth),
                                 np.sum(~predicted & truth)]
    return counts, float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--stride", type=int, default=6)
    args = parser.parse_args()
    print(f"{args.scenes} scenes, frames 0..{args.frames - 1} every {args.stride}, 640x480, "
          "depth noise on")
    print("| poses | class | ground-truth pixels | IoU | precision | recall | median ms / frame |")
    print("|---|---|---|---|---|---|---|")
    for use_pose in (True, False):
        counts, median_ms = score(args.scenes, args.frames, args.stride, use_pose)
        for name in STUFF:
            tp, fp, fn = (int(v) for v in counts[name])
            iou = tp / max(tp + fp + fn, 1)
            precision = tp / max(tp + fp, 1)
            recall = tp / max(tp + fn, 1)
            print(f"| {'yes' if use_pose else 'no (level camera)'} | {name} | {tp + fn} | "
                  f"{100 * iou:.1f} | "
                  f"{100 * precision:.1f} | {100 * recall:.1f} | {median_ms:.1f} |")


if __name__ == "__main__":
    main()
