"""Per-frame cost of the ``detector`` segmenter backend on the real 7-Scenes kitchen (CPU).

Runs the backend (``core/segmentation/detector_backend.py``) in this process on every
``--stride``-th frame of ``../shared/data/7scenes_redkitchen_stride4`` (640x480) with each mask
method, and reports per stage the median and 95th percentile over the frames (the first frame,
which loads the delegate, is left out), plus boxes and segments per frame. The detector runs on
one thread (``num_threads: 1``, the default). Reads the data in place.

  cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/detector_backend_speed.py \\
      [--data ../shared/data/7scenes_redkitchen_stride4] [--stride 1] \\
      [--methods depth box depth_grabcut] [--grabcut-stride 10]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.segmentation.base import SegmentationRequest
from panoptic_mapper.core.segmentation.detector_backend import DetectorSegmenter

STAGES = ("detect_ms", "stuff_ms", "masks_ms", "merge_ms", "total_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data" / "7scenes_redkitchen_stride4"))
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["depth", "box", "depth_grabcut"])
    parser.add_argument("--grabcut-stride", type=int, default=10,
                        help="extra stride for depth_grabcut (slow)")
    args = parser.parse_args()
    registry = LabelRegistry.default()
    gravity = np.loadtxt(Path(args.data) / "gravity-direction.txt").tolist()
    frames = [s.frame for s in open_dataset(args.data, stride=args.stride).iter_samples()]
    print(f"{len(frames)} frames of {args.data} (every {args.stride}), 640x480, 1 thread")
    print("| masks | frames | " + " | ".join(f"{s[:-3]} median / p95 ms" for s in STAGES)
          + " | boxes / frame | segments / frame |")
    print("|---" * (len(STAGES) + 4) + "|")
    for method in args.methods:
        segmenter = DetectorSegmenter.from_config(
            {"masks": {"method": method}, "stuff": {"gravity_in_map": gravity}}, registry)
        chosen = frames[::args.grabcut_stride] if method == "depth_grabcut" else frames
        rows = []
        for frame in chosen:
            result = segmenter.segment_with_stats(SegmentationRequest(
                rgb=frame.rgb, depth_m=frame.depth_m, intrinsics=frame.intrinsics,
                T_world_cam=frame.T_world_cam))
            rows.append(result.stats)
        rows = rows[1:]
        cells = []
        for stage in STAGES:
            values = np.array([getattr(r, stage) for r in rows])
            cells.append(f"{np.median(values):.1f} / {np.percentile(values, 95):.1f}")
        boxes = np.mean([r.num_boxes_segmented for r in rows])
        segments = np.mean([r.num_segments for r in rows])
        print(f"| {method} | {len(rows)} | " + " | ".join(cells)
              + f" | {boxes:.1f} | {segments:.1f} |")


if __name__ == "__main__":
    main()
