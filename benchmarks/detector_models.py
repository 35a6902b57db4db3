"""The packaged detectors side by side on the real 7-Scenes kitchen: cost and what each finds.

Runs the ``detector`` segmenter backend (defaults: depth masks, geometric stuff, one detector
thread) once per model on every ``--stride``-th frame of
``../shared/data/7scenes_redkitchen_stride4`` (640x480) and reports, per model, the median and
95th percentile of the detection stage and of the whole frame (first frame left out: it warms
the runtime up), and per registry label how many frames have at least one box of it and how
many boxes it gets per frame. There is no ground truth for the frames: the label counts say
what each model reports, not whether it is right (the hand-boxed frames are in the tests).

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/detector_models.py \\
      [--data ../shared/data/7scenes_redkitchen_stride4] [--stride 1] \\
      [--models ssd_mobilenetv2_oidv4 centernet_mobilenetv3_coco]

CenterNet must be fetched first (``panoptic-mapper models --fetch --model
centernet_mobilenetv3_coco``).
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np

from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.segmentation.detector_backend import DetectorSegmenter

LABELS = ("chair", "table", "desk", "mug", "monitor", "box", "sofa", "plant", "bed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data" / "7scenes_redkitchen_stride4"))
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--models", nargs="+",
                        default=["ssd_mobilenetv2_oidv4", "centernet_mobilenetv3_coco"])
    args = parser.parse_args()
    registry = LabelRegistry.default()
    gravity = np.loadtxt(Path(args.data) / "gravity-direction.txt").tolist()
    frames = [s.frame for s in open_dataset(args.data, stride=args.stride).iter_samples()]
    print(f"{len(frames)} frames of {args.data} (every {args.stride}), 640x480, 1 thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    costs, found = {}, {}
    for model in args.models:
        segmenter = DetectorSegmenter.from_config(
            {"model": model, "stuff": {"gravity_in_map": gravity}}, registry)
        detect, total = [], []
        frames_with, boxes = Counter(), Counter()
        for frame in frames:
            result = segmenter.segment_with_stats(SegmentationRequest(
                rgb=frame.rgb, depth_m=frame.depth_m, intrinsics=frame.intrinsics,
                T_world_cam=frame.T_world_cam))
            detect.append(result.stats.detect_ms)
            total.append(result.stats.total_ms)
            labels = [registry.by_id(d.label_id).name for d in result.detections]
            boxes.update(labels)
            frames_with.update(set(labels))
        detect, total = np.array(detect[1:]), np.array(total[1:])
        costs[model] = (f"{np.median(detect):.1f} / {np.percentile(detect, 95):.1f}",
                        f"{np.median(total):.1f} / {np.percentile(total, 95):.1f}",
                        f"{sum(boxes.values()) / len(frames):.1f}",
                        f"{segmenter.min_score:.2f}")
        found[model] = (frames_with, boxes)
        print(f"  {model} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    print("\n| model | min_score | detect median / p95 ms | total median / p95 ms | boxes / frame |")
    print("|---|---|---|---|---|")
    for model, (det, tot, per_frame, score) in costs.items():
        print(f"| {model} | {score} | {det} | {tot} | {per_frame} |")
    print("\nframes with the label (boxes per frame):\n")
    print("| label | " + " | ".join(args.models) + " |")
    print("|---" * (len(args.models) + 1) + "|")
    for label in LABELS:
        cells = [f"{found[m][0][label]} ({found[m][1][label] / len(frames):.2f})"
                 for m in args.models]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
